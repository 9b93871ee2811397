"""Hostile export files for the import's tests: real zips and CSVs, written to a test's folder."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

MB = 1 << 20


def columns_csv(path: Path, columns: int = 1_000_000) -> Path:
    """A CSV whose header has `columns` columns (10.9 MB for a million) and one reader row."""
    path.write_bytes(b",".join(b"col%06d" % i for i in range(columns)) + b"\nada@example.net"
                     + b"," * (columns - 1) + b"\n")
    return path


def newlines_zip(path: Path, size: int = 20 * MB, name: str = "list.csv") -> Path:
    """A zip of one member holding `size` newlines (20 MB deflate to about 20 KB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(name, b"\n" * size)
    return path


def bomb_zip(path: Path, size_mb: int = 400, name: str = "list.csv", *, declared: int | None = None) -> Path:
    """A zip whose one member inflates to `size_mb` MB of newlines from about 1 KB a MB (400 MB in 408 KB).

    Built without compressing 400 MB: one megabyte is deflated once and ended with a full flush, which makes
    it a self-contained run of blocks that can be repeated; a final empty block closes the stream. The
    directory says `declared` bytes (default: the truth), so a lying zip is one argument away."""
    chunk = b"\n" * MB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = block * size_mb + b"\x03\x00"  # the final block: fixed Huffman codes, end-of-block only
    crc = 0
    for _ in range(size_mb):
        crc = zlib.crc32(chunk, crc)
    usize = size_mb * MB if declared is None else declared
    encoded = name.encode()
    flags = 0x800 if not encoded.isascii() else 0  # names in UTF-8
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, 8, 0, 0x21, crc, len(data), usize, len(encoded), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, 8, 0, 0x21, crc, len(data), usize,
                          len(encoded), 0, 0, 0, 0, 0, 0)
    offset = len(local) + len(encoded) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), offset, 0)
    path.write_bytes(local + encoded + data + central + encoded + end)
    return path
