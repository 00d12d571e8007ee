"""Torch's intra-op thread count for one block of code.

Small sequential networks (Silero VAD's 32 ms steps, a recurrent encoder's time steps) do
a little work per call; with several threads each call waits for the others, and on a
busy machine, where a thread is often not scheduled, that wait costs more than the work.
:func:`torch_threads` sets the count for a block and restores it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after.

    Args:
        n: threads (>= 1); ``None`` leaves the count as it is.

    Raises:
        ValueError: ``n`` below 1.
    """
    if n is None:
        yield
        return
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1 or None; got {n!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
