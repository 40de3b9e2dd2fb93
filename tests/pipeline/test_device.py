"""The device helper's allocator setting: freed large blocks are reused instead of page-faulted in
again (the cost it removes from every training step and forward batch)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import ctypes, resource
    from pipeline.core.device import reuse_freed_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def faults_per_block(size=64 << 20, reps=4):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(reps):  # as torch's CPU allocator does for a 64 MiB activation
            block = ctypes.c_void_p()
            libc.posix_memalign(ctypes.byref(block), 64, size)
            ctypes.memset(block, 1, size)
            libc.free(block)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / reps

    before = faults_per_block()
    applied = reuse_freed_memory()
    faults_per_block()  # the heap grows to the block once
    print(before, applied, reuse_freed_memory(), faults_per_block())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    before, applied, again, after = float(out[0]), out[1], out[2], float(out[3])
    pages = (64 << 20) // 4096
    assert before >= pages / 2  # glibc's default: fresh pages for every 64 MiB block
    assert applied == again == "True" and after < 16  # the same pages, reused
