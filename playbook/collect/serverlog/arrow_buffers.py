"""pyarrow arrays built from numpy buffers, and read back as numpy, without pyarrow's own
conversions (to_numpy, pa.array, scalars load pandas on first use, half a second that
`playbook logs` on a stderr log otherwise never spends)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def as_numpy(values: pa.Array) -> np.ndarray:
    """A pyarrow array as numpy. Integers, floats and booleans without nulls are read from the
    array's buffers: pyarrow's own conversions (to_numpy, pa.array, scalars) load pandas on
    first use, which `playbook logs` on a stderr log otherwise never needs (half a second)."""
    kind = values.type
    if values.null_count == 0 and len(values):
        first, n = values.offset, len(values)
        data = values.buffers()[1]
        if pa.types.is_boolean(kind):
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=first + n, bitorder="little")
            return bits[first:].astype(bool)
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            letter = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
            return np.frombuffer(data, dtype=f"<{letter}{kind.bit_width // 8}")[first : first + n]
    return np.asarray(values.to_numpy(zero_copy_only=False))


def bool_array(values: np.ndarray) -> pa.Array:
    """pa.array(values) for a numpy bool array, built from buffers (see as_numpy)."""
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def binary_array(values: list[bytes | None]) -> pa.Array:
    """pa.array(values, pa.binary()), built from buffers (see as_numpy)."""
    valid = np.array([v is not None for v in values], dtype=bool)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(v) if v is not None else 0 for v in values])
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    data = pa.py_buffer(b"".join(v for v in values if v is not None))
    return pa.Array.from_buffers(pa.binary(), len(values), [validity, pa.py_buffer(offsets), data])


def binary_scalar(value: bytes | None) -> pa.Scalar:
    """pa.scalar(value, pa.binary()), taken from an array built from buffers (see as_numpy)."""
    return binary_array([value])[0]


def index_array(values: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    """pa.array(values, mask=nulls) for int64 positions, built from buffers (see as_numpy)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    validity = None
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(data), [validity, pa.py_buffer(data)])
