"""Tests of :mod:`attrbench._process` (the glibc allocator setting). Each case runs in a fresh
interpreter: the setting is process-wide and only the first call decides."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from attrbench._process import _libc

glibc = pytest.mark.skipif(_libc() is None, reason="the setting only exists on glibc")

# Frees and re-allocates a 48 MB buffer (above the 32 MB cap of glibc's dynamic mmap threshold,
# so by default it is mapped and unmapped every time) and counts the minor page faults of the
# re-allocations.
_CHILD = """
import ctypes, json, resource, sys
from attrbench._process import tune_allocator
applied = tune_allocator() if sys.argv[1] == "1" else {}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 48 * 1024 * 1024
def touch():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    return p
for _ in range(3):  # warm-up: let glibc settle its dynamic thresholds
    libc.free(touch())
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    big = touch()
    small = libc.malloc(4096)  # keeps the freed block below the top from being trimmed away
    libc.free(big)
    libc.free(small)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"applied": applied, "again": tune_allocator(), "faults": faults}))
"""


def _child(tune: bool, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, "1" if tune else "0"], check=True,
                         capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(out.stdout)


@glibc
def test_tune_allocator_applies_the_settings_and_removes_the_page_faults():
    tuned = _child(True)
    assert tuned["applied"] == {"mmap_threshold": 2**30, "trim_threshold": 2**31 - 1,
                                "top_pad": 64 * 2**20}
    assert tuned["again"] == tuned["applied"]  # idempotent
    page = 4096
    per_round = 48 * 2**20 // page
    assert tuned["faults"] < per_round  # 10 rounds of 48 MB reused without faulting
    untuned = _child(False, ATTRBENCH_TUNE_ALLOCATOR="1")
    assert untuned["faults"] > tuned["faults"] + 5 * per_round  # the default maps it anew


@glibc
def test_tune_allocator_can_be_disabled_and_respects_malloc_variables():
    assert _child(True, ATTRBENCH_TUNE_ALLOCATOR="0")["applied"] == {}
    got = _child(True, MALLOC_TOP_PAD_="0")["applied"]
    assert set(got) == {"mmap_threshold", "trim_threshold"}
