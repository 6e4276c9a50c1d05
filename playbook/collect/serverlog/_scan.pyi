"""Types of the compiled loops (_scan.c states each function's contract)."""

from typing import Any

RULES: dict[str, Any]

def scan(buf: bytes, /) -> tuple[int, int, bytearray, bytearray, bytearray, bytearray, bytearray]: ...
def head(
    buf: Any, starts: Any, limits: Any, millis: bool, between: bytes, ok: Any, ms: Any, key: Any, pid: Any, /
) -> None: ...
def stamp(buf: Any, starts: Any, ends: Any, ok: Any, ms: Any, key: Any, /) -> None: ...
