"""Writers of the user files ``kfqn-ref train --data`` reads, built here byte by byte."""

import gzip
import struct

import numpy as np

#: IDX element-type byte of each dtype written here (the format's table).
IDX_TYPE_BYTES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: ``00 00 <type> <ndim>``, big-endian uint32 sizes, big-endian elements."""
    header = bytes([0, 0, IDX_TYPE_BYTES[array.dtype], array.ndim])
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    payload = idx_bytes(array)
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    with open(path, "wb") as handle:
        handle.write(payload)


def digit_like_images(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 8, 8)`` uint8 images (random pixels), the shape of the embedded digits."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
