"""Types of the compiled csvlog and jsonlog splitter (_records.c states its contract)."""

def records(
    buf: bytes,
    json: bool,
    wanted: tuple[int, ...] | tuple[bytes, ...],
    levels: tuple[bytes, ...],
    harmless: tuple[bytes, ...],
    except_: tuple[bytes, ...],
    port_at: int,
    /,
) -> tuple[int, int, tuple[tuple[bytearray, bytearray], ...]]: ...
def csv_cut(buf: bytes, /) -> int: ...
