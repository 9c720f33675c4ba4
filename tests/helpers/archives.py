"""Damaged and forged ``.npz`` archives, each as ``write(path)`` and the pattern its refusal names.

Every reader of ``.npz`` files (``backend.read_npz`` and those built on it) must refuse each of
them with a ``ValueError`` saying what is wrong, without allocating what a forged header claims.
"""

import io
import struct
import zipfile

import numpy as np

#: Elements a forged header claims: 8 TB of float64 if it were allocated.
CLAIMED = 10**12


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def good_members() -> dict[str, bytes]:
    X = np.arange(600.0).reshape(100, 6)
    return {
        "X.npy": npy_bytes(X),
        "T.npy": npy_bytes(X.copy()),
        "y.npy": npy_bytes(np.zeros(100, np.int64)),
    }


def huge_header(path) -> None:
    """``X``'s header claims ``CLAIMED`` elements; the member holds 3."""
    forged = npy_bytes(np.zeros(3)).replace(b"(3,)", f"({CLAIMED},)".encode())
    write_zip(path, dict(good_members(), **{"X.npy": forged}))


def _patch_sizes(raw: bytearray, size: int) -> bytearray:
    """Set the uncompressed size of every member, in local and central headers, to ``size``."""
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = raw.find(signature)
        while start >= 0:
            raw[start + offset : start + offset + 4] = struct.pack("<I", size)
            start = raw.find(signature, start + 4)
    return raw


def forged_directory(path) -> None:
    """Header and zip directory agree on 10^8 float64 (800 MB) from ~100 compressed bytes."""
    header = npy_bytes(np.zeros(3)).replace(b"(3,)", b"(100000000,)")
    write_zip(path, {"X.npy": header + bytes(1000), "T.npy": header + bytes(1000)})
    raw = bytearray(open(path, "rb").read())
    open(path, "wb").write(_patch_sizes(raw, len(header) + 8 * 10**8))


def damaged_deflate(path) -> None:
    """Bytes inside ``X``'s deflate stream overwritten: zlib fails."""
    write_zip(path, good_members())
    raw = bytearray(open(path, "rb").read())
    raw[60:90] = b"\xff" * 30
    open(path, "wb").write(raw)


def bad_crc(path) -> None:
    """A stored (uncompressed) member whose data no longer match its CRC-32."""
    write_zip(path, good_members(), zipfile.ZIP_STORED)
    raw = bytearray(open(path, "rb").read())
    raw[200] ^= 0xFF
    open(path, "wb").write(raw)


def truncated(path) -> None:
    write_zip(path, good_members())
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])


def raw_member(path) -> None:
    """A member that is not an ``.npy`` array (``np.load`` hands back its bytes)."""
    write_zip(path, dict(good_members(), T=b"not an array"))


def object_array(path) -> None:
    np.savez(path, X=np.array([{"evil": 1}, None], dtype=object), T=np.zeros(2))


#: name -> (write(path), regex of the refusal).
FORGED = {
    "huge-header": (huge_header, r"header claims shape \(1000000000000,\) .* zip directory gives"),
    "forged-directory": (forged_directory, r"claims 800000\d+ bytes from \d+ compressed bytes"),
    "damaged-deflate": (damaged_deflate, r"not a valid .npz archive \(damaged: zlib.error"),
    "bad-crc": (bad_crc, r"not a valid .npz archive \(damaged: zipfile.BadZipFile: Bad CRC-32"),
    "truncated": (truncated, r"not a valid .npz archive \(damaged: zipfile.BadZipFile"),
    "raw-member": (raw_member, r"archive member 'T' is not an .npy array"),
    "object-array": (object_array, r"Object arrays cannot be loaded when allow_pickle=False"),
}
