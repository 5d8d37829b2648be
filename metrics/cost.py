"""Cost metrics (time, classifier calls, peak memory) and the measuring tools the runner uses.

Metrics only *read* what the runner measured around the method call:

* :class:`TimeMs`: ``batch.time_ms`` (B,) milliseconds per image.
* :class:`ModelCalls`: ``batch.extras["model_calls"]`` (B,) classifier rows (forward + backward)
  per image, from :class:`CallCounter`.
* :class:`PeakMemMb`: ``batch.extras["peak_mem_mb"]``, one float for the whole batch, from
  :class:`PeakMemory`.

Measuring tools:

* :class:`CallCounter` — context manager counting the rows that go through the classifier's
  forward and backward.
* :class:`PeakMemory` — context manager measuring peak memory (CUDA allocator or process RSS).
* :func:`time_call` — wall time of a call in ms, synchronising CUDA before and after.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(4, 2)
    >>> with CallCounter(net) as cc:
    ...     _ = net(torch.zeros(3, 4))
    ...     net(torch.zeros(5, 4, requires_grad=True)).sum().backward()
    >>> cc.forward_rows, cc.backward_rows, cc.per_image(4)
    (8, 5, 3.25)
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.interfaces import EvalBatch, Metric

__all__ = ["CallCounter", "ModelCalls", "PeakMemMb", "PeakMemory", "TimeMs", "time_call"]


# ------------------------------------------------------------------------------ measuring tools
def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _alive(handle: Any) -> bool:
    """Whether a hook handle's tensor (or module) still exists."""
    ref = getattr(handle, "hooks_dict_ref", None)
    return ref is None or ref() is not None


class CallCounter:
    """Count the rows (images) that pass through a classifier's forward and backward.

    A forward hook on the top module adds the batch size of every call (``module(x)``; a direct
    ``module.forward(x)`` call bypasses hooks and is not counted). When the output requires
    grad, a hook on the output tensor adds its batch size each time a gradient flows back
    through it (``backward()`` or ``torch.autograd.grad``), so a backward through a (B, K)
    output counts B rows. All hooks are removed on exit, even when the body raises; gradients
    that arrive after exit are not counted.

    Attributes:
        forward_rows: rows through the forward.
        backward_rows: rows through the backward.
        forward_calls: number of forward calls.

    Args:
        model: the classifier (its top module is hooked).
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.forward_rows = 0
        self.backward_rows = 0
        self.forward_calls = 0
        #: rows per call -> number of calls, of the forwards and of the backwards
        self.forward_sizes: dict[int, int] = {}
        self.backward_sizes: dict[int, int] = {}
        self._handles: list[Any] = []
        self._active = False

    def _forward_hook(self, _module: nn.Module, inputs: Any, output: Any) -> None:
        if not self._active:
            return
        x = _first_tensor(inputs)
        rows = int(x.shape[0]) if x is not None and x.ndim > 0 else 1
        self.forward_rows += rows
        self.forward_calls += 1
        self.forward_sizes[rows] = self.forward_sizes.get(rows, 0) + 1
        out = _first_tensor(output)
        if out is not None and out.requires_grad:
            n = int(out.shape[0]) if out.ndim > 0 else 1

            def on_grad(grad: Tensor, n: int = n) -> None:
                if self._active:
                    self.backward_rows += n
                    self.backward_sizes[n] = self.backward_sizes.get(n, 0) + 1

            self._handles.append(out.register_hook(on_grad))
            if len(self._handles) % 256 == 0:  # a long-lived counter (a whole run): drop the
                # handles of outputs already freed, so the list does not grow with the run
                self._handles = [h for h in self._handles if _alive(h)]

    def __enter__(self) -> CallCounter:  # noqa: PYI034
        self.forward_rows = self.backward_rows = self.forward_calls = 0
        self.forward_sizes, self.backward_sizes = {}, {}
        self._active = True
        self._handles = [self.model.register_forward_hook(self._forward_hook)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False
        try:
            for h in self._handles:
                h.remove()
        finally:
            self._handles = []

    @property
    def total_rows(self) -> int:
        return self.forward_rows + self.backward_rows

    def per_image(self, n_images: int) -> float:
        """``(forward_rows + backward_rows) / n_images``."""
        if not isinstance(n_images, int) or n_images <= 0:
            raise ValueError(f"n_images must be a positive int, got {n_images!r}")
        return self.total_rows / n_images


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _cpu_peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            return float(getattr(psutil.Process().memory_info(), "peak_wset", math.nan)) / 2**20
        except ImportError:
            return math.nan
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024.0  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of a block, in MB (2**20 bytes).

    * CUDA: ``torch.cuda.reset_peak_memory_stats`` on entry, ``max_memory_allocated`` on exit
      (tensors allocated by PyTorch on that device; synchronises first). ``peak_mb`` is the
      absolute peak, ``mb`` the peak above the allocation at entry (the block's own extra
      memory: the model's weights and the inputs already resident are excluded).
    * CPU: the growth of the process's peak resident set size (``resource.getrusage``
      ``ru_maxrss``; ``psutil``'s ``peak_wset`` on Windows). The OS high-water mark can only
      grow, so ``mb`` is the growth of the high-water mark: 0 when the block stays below a peak
      reached earlier in the process. Hence CPU numbers are only comparable when measured in a
      fresh process or in increasing order of memory use; ``peak_mb`` is the process peak.
      NaN when no source is available.

    Args:
        device: the device the block computes on (default CPU).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = _device(device)
        self.mb = math.nan
        self.peak_mb = math.nan
        self._start = math.nan

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._start = _cpu_peak_rss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mb = _cpu_peak_rss_mb()
        self.mb = max(0.0, self.peak_mb - self._start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def time_call(
    fn: Callable[..., Any], device: torch.device | str | None = None, *args: Any, **kwargs: Any
) -> tuple[Any, float]:
    """Call ``fn(*args, **kwargs)`` and return ``(result, milliseconds)``.

    The device is synchronised before starting the clock and before stopping it (CUDA, MPS), so
    asynchronous kernels are included. Wall clock: ``time.perf_counter``. Warm-up and repeats
    are the caller's business (the runner discards a warm-up batch).
    """
    dev = _device(device)
    _sync(dev)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(dev)
    return out, (time.perf_counter() - t0) * 1000.0


# ------------------------------------------------------------------------------------ metrics
def _per_image(value: Any, b: int, what: str) -> list[float]:
    if value is None:
        return [math.nan] * b
    if isinstance(value, Tensor):
        value = value.detach().flatten().cpu().double().tolist()
    elif isinstance(value, (int, float)):
        value = [float(value)] * b
    value = [float(v) for v in value]
    if len(value) != b:
        raise ValueError(f"{what} must have one value per image ({b}), got {len(value)}")
    return value


class TimeMs(Metric):
    """Inference time of the method, milliseconds per image. Lower is better.

    Reads ``batch.time_ms`` (B,), measured by the runner (with :func:`time_call`) around the
    method call for the batch and divided by its size; NaN when unknown. Aggregate: the
    **median** over images (robust to stragglers; the runner handles warm-up by discarding a
    first, untimed call). Hardware-dependent: compare only numbers from the same device.
    """

    name = "time_ms"
    figure_axis = "cost"
    higher_is_better = False
    version = 1
    definition = "method wall time per image (ms); median over images"
    headline = True
    kind = "cost"  # depends on the machine: reported, never checked
    regression_tolerance = None

    def score(self, batch: EvalBatch) -> list[float]:
        return _per_image(batch.time_ms, batch.batch_size, "batch.time_ms")

    @classmethod
    def aggregate(cls, values: Sequence[Any]) -> float:
        vals = [cls.image_value(v) for v in values]
        vals = [v for v in vals if math.isfinite(v)]
        return float(statistics.median(vals)) if vals else math.nan


class ModelCalls(Metric):
    """Classifier rows (forward + backward) per image spent by the method. Lower is better.

    Reads ``batch.extras["model_calls"]`` (B,), measured by the runner with
    :class:`CallCounter` (``per_image``); NaN when absent. A forward of a batch of 32 masked
    images counts 32; a backward through it counts 32 more. Aggregate: mean.
    """

    name = "model_calls"
    figure_axis = "cost"
    higher_is_better = False
    version = 1
    definition = "classifier forward + backward rows per image"
    kind = "cost"  # depends on the machine: reported, never checked
    regression_tolerance = None

    def score(self, batch: EvalBatch) -> list[float]:
        return _per_image(batch.extras.get("model_calls"), batch.batch_size,
                          'batch.extras["model_calls"]')


class PeakMemMb(Metric):
    """Peak memory of the method's call, MB, per batch. Lower is better.

    Reads ``batch.extras["peak_mem_mb"]`` (one float for the whole batch, from
    :class:`PeakMemory`; every image of the batch gets that value); NaN when absent. Depends on
    the batch size and the device (see :class:`PeakMemory` for what CPU numbers mean).
    Aggregate: mean.
    """

    name = "peak_mem_mb"
    higher_is_better = False
    version = 1
    definition = "peak memory (MB) of the method call for the batch"
    kind = "cost"  # depends on the machine: reported, never checked
    regression_tolerance = None

    def score(self, batch: EvalBatch) -> list[float]:
        v = batch.extras.get("peak_mem_mb")
        if isinstance(v, Tensor):
            v = float(v.item()) if v.numel() == 1 else v
        return _per_image(v, batch.batch_size, 'batch.extras["peak_mem_mb"]')
