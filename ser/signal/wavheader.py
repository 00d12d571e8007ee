"""The length a WAV file's header promises, against the samples it holds.

libsndfile silently reads a truncated WAV (a copy cut short, a recorder that stopped
without closing the file) as a shorter one; :func:`wav_truncation` tells the two apart
so that the samples present can still be used while the file is reported.
"""

from __future__ import annotations

import os
from pathlib import Path

#: ``data`` chunk sizes that writers use as "unknown" (streamed WAV): never a truncation.
_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)


def wav_truncation(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(promised, found)`` sample frames of a RIFF/WAVE file whose ``data`` chunk
    declares more bytes than the file holds; None for a complete WAV, another format,
    a streamed WAV (placeholder size) or an unreadable file (the reader reports that).

    Args:
        path: audio file.

    Returns:
        Frames promised by the header and frames present (whole frames), or None.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                h = f.read(8)
                if len(h) < 8:
                    return None
                cid, n = h[:4], int.from_bytes(h[4:], "little")
                if cid == b"data":
                    break
                body = f.read(min(n, 1 << 16))
                if cid == b"fmt " and len(body) >= 14:
                    block_align = int.from_bytes(body[12:14], "little")
                f.seek(f.tell() - len(body) + n + (n & 1))
            start = f.tell()
    except OSError:
        return None
    if block_align <= 0 or n in _PLACEHOLDER_SIZES:
        return None
    present = max(0, size - start)
    if n <= present:
        return None
    return n // block_align, present // block_align
