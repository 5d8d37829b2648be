"""Process-level settings that make a long CPU run cheaper without changing any value.

:func:`tune_allocator` tells glibc's ``malloc`` to keep freed memory for reuse instead of handing
it back to the kernel. By default glibc serves every allocation above its mmap threshold
(dynamic, at most 32 MB on 64-bit systems) with a fresh ``mmap`` and returns it with ``munmap``
when it is freed, and it trims the top of the heap whenever more than twice that threshold is
free there. The benchmark's batched work allocates tensors of tens to hundreds of MB (masked
image batches, activations of the classifier, gradient buffers) and frees them a moment later,
so by default every such tensor costs page faults, kernel zeroing of every page and an
``munmap``: on the synthetic preset's default run (2 CPU cores) that was about as much system
time as useful computation. With the thresholds raised, the same memory is reused from the
heap: the page faults disappear, at the price of a resident set that stays at its high-water
mark instead of shrinking between batches.

The setting changes where memory comes from, not what is computed: results are bit-identical.
It is a no-op off glibc (macOS, Windows, musl) and can be switched off with the environment
variable ``ATTRBENCH_TUNE_ALLOCATOR=0``. Explicit ``MALLOC_*_`` environment variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``) win: a threshold
the user set is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MALLOPT_SETTINGS", "tune_allocator"]

# mallopt parameter numbers of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: (name, mallopt parameter, value, environment variable that overrides it). Allocations up
#: to 1 GB come from the heap (the default maps anything above 32 MB at the latest), up to 2 GB
#: of freed memory at the top of the heap is kept for reuse, and the heap grows in 64 MB steps
#: (fewer brk calls).
MALLOPT_SETTINGS: tuple[tuple[str, int, int, str], ...] = (
    ("mmap_threshold", _M_MMAP_THRESHOLD, 1024 * 1024 * 1024, "MALLOC_MMAP_THRESHOLD_"),
    ("trim_threshold", _M_TRIM_THRESHOLD, 2 * 1024 * 1024 * 1024 - 1, "MALLOC_TRIM_THRESHOLD_"),
    ("top_pad", _M_TOP_PAD, 64 * 1024 * 1024, "MALLOC_TOP_PAD_"),
)

_applied: dict[str, int] | None = None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu = libc.gnu_get_libc_version  # only glibc has it (musl does not)
    except (OSError, AttributeError):
        return None
    gnu.restype = ctypes.c_char_p
    return libc


def tune_allocator() -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Safe to call more than once (the first call decides). Returns the settings applied, by name
    (empty off glibc, when disabled by ``ATTRBENCH_TUNE_ALLOCATOR=0``, or for parameters whose
    ``MALLOC_*_`` variable is set); a setting glibc refuses is left out.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    applied: dict[str, int] = {}
    libc = None if os.environ.get("ATTRBENCH_TUNE_ALLOCATOR", "1") == "0" else _libc()
    if libc is not None:
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        for name, param, value, env in MALLOPT_SETTINGS:
            if env in os.environ:
                continue
            if mallopt(param, value) == 1:
                applied[name] = value
    _applied = applied
    return dict(applied)
