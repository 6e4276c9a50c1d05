"""Extract PgBouncer's close reasons from its source, release by release.

Usage: python tools/pgbouncer_reasons.py GIT_DIR [--out playbook/vocabulary/catalogs/pgbouncer_reasons.json]

GIT_DIR is a clone of github.com/pgbouncer/pgbouncer (a bare mirror will do). For every release tag
from 1.9.0 on and for HEAD, the script reads src/*.c and collects the literal reason of every call
that ends a connection and logs `closing because: REASON`: disconnect_client, disconnect_server,
disconnect_client_sqlstate, close_client_list, close_server_list, pkt_cb_disconnect,
kill_pool_logins, and `const char *reason = "…"` variables handed on to them. It writes JSON:
{"commit", "commit_date", "refs", "reasons": [{"format", "side", "first", "last", "files"}]},
`first`/`last` being the first and last release that prints the format ("HEAD" when master still
does; "1.9.0" means 1.9.0 or earlier, the oldest release scanned). A bare "%s" (the server's own
login error passed on, or a buffer) is left out: those texts are PostgreSQL's, not PgBouncer's.
playbook/vocabulary/pgbouncer_reasons.py reads the result from playbook/vocabulary/catalogs/, and
tests/test_vocabulary.py checks that every extracted format maps to a reason family.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

# call name -> (index of the reason argument, the side it closes); -1: the last argument
CALLS: dict[str, tuple[int, str]] = {
    "disconnect_client": (2, "client"),
    "disconnect_server": (2, "server"),
    "disconnect_client_sqlstate": (3, "client"),
    "close_client_list": (1, "client"),
    "close_server_list": (1, "server"),
    "pkt_cb_disconnect": (1, "either"),
    "kill_pool_logins": (-1, "client"),
}
_CALL = re.compile(r"\b(" + "|".join(CALLS) + r")\s*\(")
_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_REASON_VAR = re.compile(r'\bconst\s+char\s*\*\s*reason\s*=\s*"((?:[^"\\\n]|\\.)*)"')
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_FIRST = (1, 9, 0)


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True
    ).stdout


def release_tags(git_dir: Path) -> list[tuple[tuple[int, ...], str]]:
    """Release tags pgbouncer_1_9_0 and later (no -fixed/rc re-tags), oldest first."""
    tags = []
    for tag in _git(git_dir, "tag", "--list", "pgbouncer_1_*").split():
        m = re.fullmatch(r"pgbouncer_(\d+)_(\d+)(?:_(\d+))?", tag)
        if m:
            version = tuple(int(p or 0) for p in m.groups())
            if version >= _FIRST:
                tags.append((version, tag))
    return sorted(tags)


def _args(text: str, start: int) -> list[str]:
    """The top-level arguments of the call whose '(' is just before `start`."""
    depth, args, current, i = 1, [], [], start
    while i < len(text) and depth:
        ch = text[i]
        if ch == '"':
            m = _STRING.match(text, i)
            if m:
                current.append(m.group(0))
                i = m.end()
                continue
        if ch == "'":
            end = text.index("'", i + 1 + (text[i + 1] == "\\"))
            current.append(text[i : end + 1])
            i = end + 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if not depth:
                break
        if ch == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    args.append("".join(current).strip())
    return args


def _literal(arg: str) -> list[str]:
    """The string(s) an argument can be: adjacent literals joined; each branch of a ?: apart."""
    branches = re.split(r"(?<!\\)[?:](?=(?:[^\"]*\"[^\"]*\")*[^\"]*\Z)", arg)
    out = []
    for branch in branches:
        parts = _STRING.findall(branch)
        if parts and not _STRING.sub("", branch).strip(" \t\n()"):
            out.append(bytes("".join(parts), "utf-8").decode("unicode_escape"))
    return out


def reasons_of(source: str) -> list[tuple[str, str]]:
    """(format, side) of every literal close reason in one C file."""
    text = _COMMENT.sub(" ", source)
    found = []
    for m in _CALL.finditer(text):
        name = m.group(1)
        if re.search(r"\b(?:void|bool|const char)\s*\*?\s*$", text[max(0, m.start() - 30) : m.start()]):
            continue  # the definition or declaration, not a call
        args = _args(text, m.end())
        index, side = CALLS[name]
        if len(args) <= max(index, 0):
            continue
        for fmt in _literal(args[index]):
            if fmt.strip() != "%s":
                found.append((fmt, side))
    found += [(fmt, "either") for fmt in _REASON_VAR.findall(text)]
    return found


def extract(git_dir: Path) -> dict[str, object]:
    """Every reason format of every release from 1.9.0 and HEAD, with the releases that print it."""
    refs = [(".".join(map(str, v)), tag) for v, tag in release_tags(git_dir)] + [("HEAD", "HEAD")]
    seen: dict[str, tuple[set[str], list[str], set[str]]] = {}  # format -> sides, refs, files
    for name, ref in refs:
        files = [f for f in _git(git_dir, "ls-tree", "--name-only", ref, "src/").split() if f.endswith(".c")]
        for path in files:
            for fmt, side in reasons_of(_git(git_dir, "show", f"{ref}:{path}")):
                sides, printed, where = seen.setdefault(fmt, (set(), [], set()))
                sides.add(side)
                where.add(Path(path).name)
                if name not in printed:
                    printed.append(name)
    reasons = [
        {
            "format": fmt,
            "side": next(iter(sides)) if len(sides) == 1 else "either",
            "first": printed[0],
            "last": printed[-1],
            "files": sorted(where),
        }
        for fmt, (sides, printed, where) in sorted(seen.items())
    ]
    head = _git(git_dir, "log", "-1", "--format=%H %cs", "HEAD").split()
    return {
        "source": "https://github.com/pgbouncer/pgbouncer src/*.c",
        "generated_by": "tools/pgbouncer_reasons.py",
        "commit": head[0],
        "commit_date": head[1],
        "calls": sorted(CALLS),
        "refs": [n for n, _ in refs],
        "reasons": reasons,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path, help="a clone of github.com/pgbouncer/pgbouncer")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    ns = parser.parse_args(argv)
    if not (ns.git_dir / "HEAD").exists() and not (ns.git_dir / ".git").exists():
        print(f"{ns.git_dir} is not a git directory: pass a clone of pgbouncer/pgbouncer.", file=sys.stderr)
        return 2
    text = json.dumps(extract(ns.git_dir), indent=1, ensure_ascii=False) + "\n"
    if ns.out:
        ns.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
