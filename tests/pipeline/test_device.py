"""The device helper's allocator setting: freed large blocks are reused instead of page-faulted in
again (the cost it removes from every training step and forward batch).

Checked on glibc's own bookkeeping (``mallinfo2``) in a fresh child process, not on the kernel's
fault counters, which other processes' load can disturb: a block the heap serves, keeps when freed
and serves again without growing needs no new pages from the kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

BLOCK = 64 << 20  # a 64 MiB activation: over glibc's default mmap threshold (at most 32 MiB)

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, sys
    from pipeline.core.device import reuse_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.posix_memalign.argtypes = [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def taken_from_kernel(size, reps=4):
        # per allocate/touch/free of a block: the bytes the heap grew by or mapped anew for it
        taken, mapped = [], []
        for _ in range(reps):  # as torch's CPU allocator does for a large activation
            start = libc.mallinfo2()
            block = ctypes.c_void_p()
            assert libc.posix_memalign(ctypes.byref(block), 64, size) == 0
            ctypes.memset(block, 1, size)
            live = libc.mallinfo2()
            libc.free(block)
            taken.append((live.arena - start.arena) + (live.hblkhd - start.hblkhd))
            mapped.append(live.hblkhd - start.hblkhd)
        kept = libc.mallinfo2()
        return {"taken": taken, "mapped": mapped, "heap": kept.arena, "free_in_heap": kept.fordblks}

    size = int(sys.argv[1])
    before = taken_from_kernel(size)
    applied = reuse_freed_memory()
    taken_from_kernel(size)  # the heap grows to the block once
    print(json.dumps({"before": before, "applied": applied,
                      "applied_again": reuse_freed_memory(), "after": taken_from_kernel(size)}))
    """
)


def _has_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _has_mallinfo2(),
    reason="glibc's mallopt and mallinfo2 (glibc 2.33+, Linux) only",
)
def test_freed_blocks_are_reused_without_page_faults() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(BLOCK)], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    before, after = result["before"], result["after"]
    # glibc's default: every block is mapped from the kernel anew and unmapped when freed
    assert all(taken >= BLOCK for taken in before["taken"]) and before["heap"] < BLOCK, before
    assert result["applied"] is True and result["applied_again"] is True
    # with the setting: no block is mapped on its own any more, and the heap keeps what is freed
    # (whether glibc then serves the next block from that free space or grows the heap once more
    # depends on its bins and on what the interpreter allocated before: not asserted)
    assert after["mapped"] == [0] * len(after["mapped"]), after
    assert after["heap"] >= BLOCK and after["free_in_heap"] >= BLOCK, after
    assert before["mapped"] and all(m >= BLOCK for m in before["mapped"]), before
