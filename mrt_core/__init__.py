"""MRT Studio engine: post-training integer quantization of MXNet models (MRT V2)."""

import ctypes

from .errors import MRTError

__all__ = ["MRTError"]


def _return_freed_memory() -> None:
    """Make glibc give large freed arrays back to the system. Its default raises the mmap threshold each
    time a large block is freed, so later activations come from a heap that never shrinks: an
    EfficientNet evaluation held 4 GB resident instead of 2. A fixed 1 MiB threshold keeps every
    activation-sized array in its own mapping."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_return_freed_memory()
