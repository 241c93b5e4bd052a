"""The cyclic garbage collector paused through a batch, then run on the young generation.

A batch (a page of the sync, a range of the export) allocates tens of thousands of
short-lived containers that reference counting frees by itself, yet they keep setting off
collections, some over the older generations, that find nothing. The cycles a batch does
leave (SQLAlchemy's execution contexts, which hold a page's bound Ids) are young once the
batch is done: one young collection then frees them, and memory stays flat (pausing the
collector for a whole sync instead let it grow with every record).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def collector_per_batch() -> Iterator[Callable[[], object]]:
    """Pause automatic collection; call what this yields after each batch."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(0)
    finally:
        if enabled:
            gc.enable()


__all__ = ["collector_per_batch"]
