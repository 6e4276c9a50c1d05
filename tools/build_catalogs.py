#!/usr/bin/env python3
"""Build playbook/vocabulary/catalogs/postgres.json from PostgreSQL's own message catalogs.

PostgreSQL translates its level words and messages with lc_messages; the playbook reads such a
log by rendering each line back into the English msgid it came from. This script takes the
translations of the msgids the vocabulary uses (playbook.vocabulary.server_events.TEMPLATES,
the process names, every msgid that starts with a harmless LOG head, the level words and the
secondary labels) from the compiled catalogs Debian ships with each PostgreSQL major, and the
errno texts a %m expands to from glibc's catalog. Nothing is typed by hand.

    tools/build_catalogs.py [--out FILE] [--keep DIR]

Sources (fetched with apt-get download from Debian's archive, as REFERENCE.md describes):
postgresql-15 (bookworm), postgresql-17 (trixie) and libc-l10n (bookworm). Run it again when
a major or a template is added; tests/test_vocabulary_server.py fails when a template has no
entry in the file.
"""

from __future__ import annotations

import argparse
import gettext
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playbook.vocabulary import levels, server_events  # noqa: E402

ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# (package, suite, what it gives)
PACKAGES = (
    ("postgresql-15", "bookworm", "15"),
    ("postgresql-17", "trixie", "17"),
    ("libc-l10n", "bookworm", "glibc"),
)


def download(package: str, suite: str, work: Path) -> tuple[Path, str]:
    """The unpacked files of one Debian package of `suite`, and its version."""
    state = work / f"apt-{suite}"
    for sub in ("lists/partial", "cache/archives/partial", "etc"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "etc/sources.list").write_text(f"deb [signed-by={KEYRING}] {ARCHIVE} {suite} main\n")
    options = [
        "-o", f"Dir::Etc::sourcelist={state / 'etc/sources.list'}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    if not any((state / "lists").glob("*Packages*")):
        subprocess.run(["apt-get", *options, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *options, "download", "-qq", package], check=True, cwd=work)
    deb = max(work.glob(f"{package}_*.deb"))
    version = deb.name.split("_")[1]
    target = work / f"{package}-files"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target, version


def named_msgids() -> list[str]:
    """The msgids the vocabulary names (the harmless heads add every msgid that starts so)."""
    ids = {m for msgids in server_events.TEMPLATES.values() for m in msgids}
    ids.update(server_events.PROCESS_NAMES)
    ids.update(levels.EVENT_LEVELS + levels.OTHER_LEVELS)
    ids.add(levels.UNKNOWN_NAME)
    ids.update(f"{label}:  " for label in levels.SECONDARY_LABELS)
    return sorted(ids)


def wanted_msgids(catalog: dict[object, str]) -> set[str]:
    ids = {m for msgids in server_events.TEMPLATES.values() for m in msgids}
    ids.update(server_events.PROCESS_NAMES)
    ids.update(levels.EVENT_LEVELS + levels.OTHER_LEVELS)
    ids.add(levels.UNKNOWN_NAME)
    ids.update(f"{label}:  " for label in levels.SECONDARY_LABELS)
    heads = server_events.HARMLESS_LOG_HEADS
    ids.update(m for m in catalog if isinstance(m, str) and m.startswith(heads))
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "playbook/vocabulary/catalogs/postgres.json")
    parser.add_argument("--keep", type=Path, help="download into this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        languages: dict[str, dict[str, object]] = {}
        sources: dict[str, str] = {}
        for package, suite, what in PACKAGES:
            files, version = download(package, suite, work)
            sources[what] = f"Debian {suite} {package} {version}"
            name = "libc.mo" if what == "glibc" else f"postgres-{what}.mo"
            for mo in sorted(files.glob(f"usr/share/locale/*/LC_MESSAGES/{name}")):
                lang = mo.parent.parent.name
                catalog = gettext.GNUTranslations(mo.open("rb"))._catalog  # type: ignore[attr-defined]
                if what == "glibc":
                    if lang not in languages:
                        continue  # a language PostgreSQL does not speak
                    strerror = languages[lang].setdefault("strerror", {})
                    for text in server_events.STRERRORS:
                        if catalog.get(text) and catalog[text] != text:
                            strerror.setdefault(text, catalog[text])  # type: ignore[union-attr]
                    continue
                entry = languages.setdefault(lang, {"majors": [], "messages": {}})
                entry["majors"].append(what)  # type: ignore[union-attr]
                messages: dict[str, list[str]] = entry["messages"]  # type: ignore[assignment]
                for msgid in sorted(wanted_msgids(catalog)):
                    msgstr = catalog.get(msgid)
                    if msgstr and msgstr not in messages.setdefault(msgid, []):
                        messages[msgid].append(msgstr)
                for msgid in [m for m, s in messages.items() if not s]:
                    del messages[msgid]
        out = {
            "about": "PostgreSQL's translations of the msgids the playbook reads; made by "
            "tools/build_catalogs.py, do not edit",
            "sources": sources,
            "msgids": named_msgids(),
            "harmless_heads": list(server_events.HARMLESS_LOG_HEADS),
            "strerrors": list(server_events.STRERRORS),
            "languages": dict(sorted(languages.items())),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=0, sort_keys=True) + "\n")
        total = sum(len(v["messages"]) for v in languages.values())  # type: ignore[arg-type]
        print(
            f"{args.out}: {len(languages)} languages, {total} translations from {', '.join(sources.values())}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
