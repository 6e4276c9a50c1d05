"""Opening a log file, plain or compressed, the one way every log reader uses.

Compression is told by the file's magic bytes, not its name (rotated logs are often renamed), and
every refusal is one sentence naming the file: missing, a directory, unreadable, or not valid
data for the compression it claims.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from playbook.errors import PlaybookError

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


class LogFile:
    """One log file opened for streaming bytes; `what` names it in errors ("server log", "app log")."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.label = f"{what} {path}"
        if not path.exists():
            raise PlaybookError(f"{self.label} does not exist")
        if path.is_dir():
            raise PlaybookError(f"{self.label} is a directory; pass the log files in it")
        try:
            self.raw: IO[bytes] = path.open("rb")
            self.size = path.stat().st_size
            magic = self.raw.read(6)
            self.raw.seek(0)
        except PermissionError:
            raise PlaybookError(f"{self.label} is not readable (permission denied)") from None
        except OSError as exc:
            raise PlaybookError(f"{self.label} is not readable: {exc.strerror or exc}") from None
        self.compression = next((name for head, name in _MAGIC if magic.startswith(head)), "")
        self.stream: io.BufferedIOBase | IO[bytes]
        if self.compression == "gzip":
            self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb")
        elif self.compression == "bzip2":
            self.stream = bz2.BZ2File(self.raw, mode="rb")
        elif self.compression == "xz":
            self.stream = lzma.LZMAFile(self.raw, mode="rb")  # noqa: SIM115 (closed by close())
        else:
            self.stream = self.raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        return self._counted(self.stream.read, size)

    def readline(self, limit: int = -1) -> bytes:
        return self._counted(self.stream.readline, limit)

    def _counted(self, reader: Callable[[int], bytes], size: int) -> bytes:
        """`reader(size)`, counted; a damaged file is one sentence naming it."""
        try:
            data = reader(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            what = f"a valid {self.compression} file" if self.compression else "readable"
            raise PlaybookError(f"{self.label} is not {what}: {exc}") from exc
        self.bytes_read += len(data)
        return data

    def position(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for compressed files)."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.stream.close()
        self.raw.close()

    def __enter__(self) -> LogFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
