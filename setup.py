"""The compiled part of the package; everything else is declared in pyproject.toml.

playbook.collect.serverlog._scan (the stderr reader's loops) and ._records (csvlog and jsonlog
records) are plain C against Python's headers (no Cython, no numpy headers), so a C compiler and
Python's headers are all a build needs. They are optional: the server-log reader has a plain
Python reference (playbook/collect/serverlog/engine.py) that gives the same events, about four
times slower. When the extensions cannot be built (no compiler, no headers, a compiler that
fails), the package installs with that reference and this build says so in one line, where the
one who installs sees it:
- from a checkout (`pip install .`, `make install`): as a warning of the build backend, which
  pip shows (it shows a local build's warnings, and hides the rest of a successful build's output);
- from an sdist (a PKG-INFO beside this file: the registry had no wheel for the machine): pip
  logs that build's warnings at debug level only, so the line goes to stderr (`pip install -v`
  shows it) and to the terminal pip was started from (/dev/tty), when there is one.
The package says it again on stderr the first time it reads a large log (engine.say_if_slow).

PLAYBOOK_BUILD_COMPILED=required turns the fallback off (a failed build fails): the release
wheels (cibuildwheel, pyproject.toml) must carry the compiled reader.
"""

import os
import re
import sys
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# The figures of engine.REFERENCE_MB_S and engine.COMPILED_MB_S (setup.py cannot import the package).
FALLBACK = (
    "pg-session-playbook: the compiled log reader could not be built ({reason}); installing the "
    "plain reader, the same results at about 25 MB/s instead of about 100 MB/s: install a C "
    "compiler and Python's headers (Debian/Ubuntu: apt-get install gcc python3-dev; macOS: "
    "xcode-select --install) and reinstall for the compiled one"
)
BUILD_FAILURES = (CCompilerError, ExecError, PlatformError, OSError)


def say(line: str) -> None:
    """`line`, once, where the one who installs sees it (see the docstring at the top)."""
    if not (Path(__file__).parent / "PKG-INFO").exists():
        warnings.warn(line, UserWarning, stacklevel=2)
        return
    print(line, file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(f"\n{line}\n")
    except OSError:  # no terminal (CI, a container): stderr is all there is
        pass


def short_reason(exc: Exception) -> str:
    """Why the build failed, in a few words (a compiler's command line is hundreds of characters:
    its own error is printed above by the compiler itself)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    command = re.match(r"Command '\['([^']+)'.*exit status (-?\d+)", text)
    if command:
        return f"{command[1]} exited with status {command[2]}"
    return text[:200]


class OptionalBuildExt(build_ext):
    """build_ext that installs without the extensions when they cannot be built, saying so once."""

    failed = False

    def run(self) -> None:
        try:
            super().run()  # PlatformError here: no compiler at all (e.g. Windows without MSVC)
        except BUILD_FAILURES as exc:
            self.fall_back(exc)

    def build_extension(self, ext: Extension) -> None:
        if self.failed:  # both or neither: the reader imports the two together
            return
        try:
            super().build_extension(ext)
        except BUILD_FAILURES as exc:
            self.fall_back(exc)

    def fall_back(self, exc: Exception) -> None:
        if os.environ.get("PLAYBOOK_BUILD_COMPILED") == "required":
            raise exc
        if self.failed:
            return
        self.failed = True
        say(FALLBACK.format(reason=short_reason(exc)))


setup(
    cmdclass={"build_ext": OptionalBuildExt},
    ext_modules=[
        Extension(
            "playbook.collect.serverlog._scan",
            ["playbook/collect/serverlog/_scan.c"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "playbook.collect.serverlog._records",
            ["playbook/collect/serverlog/_records.c"],
            extra_compile_args=["-O2"],
        ),
    ],
)
