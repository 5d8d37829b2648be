"""Peak memory for ``attrbench bench``: per method in this process (:class:`MethodPeakMemory`)
and of whole ``attrbench run`` child processes (:func:`memory_growth`).

Peak memory of a block: on CUDA the allocator's peak above the allocation at entry
(:class:`~attrbench.metrics.cost.PeakMemory`). On a Linux CPU the kernel's resident-set
high-water mark is reset before the block (``/proc/self/clear_refs`` = 5) and the peak above the
resident set at entry is reported, so every method gets its own number; elsewhere
:class:`~attrbench.metrics.cost.PeakMemory` (the growth of the process's high-water mark, 0 for
a block that stays below an earlier peak).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attrbench.metrics.cost import PeakMemory

from .stats import relative_growth

__all__ = ["MethodPeakMemory", "memory_growth"]


def _read_proc_status_kb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


_RSS_PEAK_RESETTABLE: bool | None = None


def _can_reset_rss_peak() -> bool:
    """Whether this kernel's RSS high-water mark can be reset *and* then sees a new block.

    Probed once per process: reset (``clear_refs`` = 5), map and touch 32 MiB, unmap it, and
    check that ``VmHWM`` rose by at least 24 MiB. Some kernels and sandboxes accept the reset
    but do not track the peak across an unmap; they would report 0 for every block.
    """
    global _RSS_PEAK_RESETTABLE
    if _RSS_PEAK_RESETTABLE is None:
        _RSS_PEAK_RESETTABLE = sys.platform.startswith("linux") and _probe_rss_peak_reset()
    return _RSS_PEAK_RESETTABLE


def _probe_rss_peak_reset(size: int = 32 * 2**20) -> bool:
    import mmap

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = _read_proc_status_kb("VmRSS")
        block = mmap.mmap(-1, size)
        block.write(b"\x01" * size)  # touch every page
        block.close()
        return _read_proc_status_kb("VmHWM") - start >= 0.75 * size / 1024
    except OSError:
        return False


class MethodPeakMemory:
    """Peak memory of a block in MB (``mb``), comparable between blocks of the same process.

    CUDA, or a CPU without a resettable high-water mark: :class:`~attrbench.metrics.cost.
    PeakMemory`. Linux CPU: resets the kernel's RSS high-water mark on entry (``/proc/self/
    clear_refs`` = 5) and reports ``VmHWM`` at exit minus ``VmRSS`` at entry, so a block that
    stays below an *earlier* peak still gets its own number. ``source`` says which was used.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.mb = math.nan
        self._inner: PeakMemory | None = None
        self._reset = self.device.type == "cpu" and _can_reset_rss_peak()
        self.source = ("linux VmHWM after clear_refs reset" if self._reset
                       else "attrbench.metrics.cost.PeakMemory")
        self._start = math.nan

    def __enter__(self) -> MethodPeakMemory:  # noqa: PYI034
        if self._reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _read_proc_status_kb("VmRSS")
        else:
            self._inner = PeakMemory(self.device).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reset:
            self.mb = max(0.0, _read_proc_status_kb("VmHWM") - self._start) / 1024.0
        else:
            assert self._inner is not None
            self._inner.__exit__(*exc)
            self.mb = self._inner.mb


# Runs ``cmd`` as a grandchild and reports its peak RSS. A direct child is no good: at exec the
# kernel folds the RSS high-water mark of the old address space (a copy of, or with vfork the
# very, parent's) into the child's ``ru_maxrss``, so a child of a 500 MB process reports at
# least 500 MB. A bare Python helper forks the command from its own small address space and
# reads the command's rusage with ``wait4`` (what ``/usr/bin/time`` does).
_RUSAGE_HELPER = r"""
import json, os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
kb = ru.ru_maxrss / 1024.0 if sys.platform == "darwin" else float(ru.ru_maxrss)
with open(out, "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": kb}, f)
"""


def _wait_rusage(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd`` (output to ``log``); return (exit code, its peak RSS in MB, seconds).

    The peak is that of the command's process (and of any children it waited for), measured
    through a small helper process (see ``_RUSAGE_HELPER``); NaN where ``os.fork`` /
    ``os.wait4`` do not exist (Windows).
    """
    t0 = time.perf_counter()
    if not (hasattr(os, "fork") and hasattr(os, "wait4")):  # pragma: no cover - Windows
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        return int(rc), math.nan, time.perf_counter() - t0
    result = Path(str(log) + ".rusage.json")
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-c", _RUSAGE_HELPER, str(result), *cmd],
                             stdout=f, stderr=subprocess.STDOUT)
    secs = time.perf_counter() - t0
    if rc != 0 or not result.exists():
        return (rc or 1), math.nan, secs
    r = json.loads(result.read_text())
    return int(r["rc"]), r["maxrss_kb"] / 1024.0, secs


def memory_growth(sizes: Sequence[int], device: str = "cpu", split: str = "train",
                  workdir: str | Path | None = None) -> dict[str, Any]:
    """Peak RSS of ``attrbench run`` (center, gradcam; mean_f1, cont_iou, gini) per size.

    Each size runs in a fresh child process (``python -m attrbench.cli run --split train
    --limit N ... --no-report --no-progress``); its own peak resident set size comes from
    ``os.wait4``. ``growth`` is peak(largest) / peak(smallest) - 1.

    Returns:
        ``{"sizes", "peak_rss_mb", "seconds", "growth"}`` or ``{"skipped": message}``.
    """
    sizes = sorted(int(s) for s in sizes)
    if len(sizes) < 2 or sizes[0] <= 0:
        raise ValueError(f"memory sizes must be at least two positive ints, got {list(sizes)}")
    peaks, secs = [], []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n in sizes:
            out = Path(tmp) / f"run-{n}"
            cmd = [sys.executable, "-m", "attrbench.cli", "run", "--split", split, "--limit",
                   str(n), "--methods", "center,gradcam", "--metrics", "mean_f1,cont_iou,gini",
                   "--device", device, "--no-report", "--no-progress", "--out", str(out)]
            log = Path(tmp) / f"run-{n}.log"
            rc, peak, sec = _wait_rusage(cmd, log)
            if rc != 0:
                tail = log.read_text(errors="replace")[-800:]
                return {"skipped": f"`{' '.join(cmd[1:])}` exited {rc}: {tail}"}
            peaks.append(peak)
            secs.append(sec)
    return {"sizes": sizes, "peak_rss_mb": peaks, "seconds": secs,
            "growth": relative_growth(peaks[0], peaks[-1])}


