"""What this process's malloc does with freed memory: the project's one setting for CPU runs.

With glibc's defaults a freed block above the mmap threshold (dynamic, 128 KiB rising to the
largest block freed so far) is unmapped, and free memory at the top of the heap beyond the trim
threshold goes back to the kernel; the next tensor of that size then page-faults in afresh, as
often as the heap's history decides, so the same code's timings vary from run to run with that
history (the README's Notes give the measurements; `discbench bench model --allocator glibc`
repeats them).

`retain_freed_memory()` keeps freed memory in the process (mallopt: mmap threshold 32 MiB,
glibc's largest; trim threshold 1 GiB); trials and `discbench bench model` call it. Resident
memory then stays at its high-water mark, so a CPU peak-memory window starts with
`release_freed_memory()` (malloc_trim) and measures what is really allocated inside it (see
discbench.measure).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 2 ** 20  # blocks below this come from the heap (glibc's maximum)
TRIM_THRESHOLD_BYTES = 2 ** 30  # free heap memory kept before any is returned
ENV = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD")

_retained = False


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt's parameters above are glibc's), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def retain_freed_memory() -> bool:
    """Keep freed memory in this process from now on (see the module doc); True when applied
    (glibc), False where there is no glibc. Idempotent."""
    global _retained
    libc = _glibc()
    if libc is None:
        return False
    if not _retained:
        # Both, in this order: setting either turns glibc's dynamic threshold off, and the trim
        # threshold alone would leave every block above 128 KiB to mmap, each page-faulting in afresh.
        _retained = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _retained


def release_freed_memory() -> None:
    """Return the free memory malloc holds to the kernel (malloc_trim), so that the resident set
    size counts only memory in use. Nothing where there is no glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def allocator_setting() -> str:
    """What decides this process's malloc behaviour: "glibc defaults", or the variables that change
    it (GLIBC_TUNABLES, MALLOC_*_, an LD_PRELOADed allocator) and `retain_freed_memory`'s setting."""
    parts = [f"{name}={os.environ[name]}" for name in ENV if os.environ.get(name)]
    if _retained:
        parts.append(f"mallopt mmap_threshold={MMAP_THRESHOLD_BYTES} trim_threshold={TRIM_THRESHOLD_BYTES}")
    return " ".join(parts) if parts else "glibc defaults"
