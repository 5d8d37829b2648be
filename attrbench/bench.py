"""``attrbench bench``: speed and memory of attrbench's implementations, as ratios.

Everything is measured in one process, on the same machine and the same inputs (the synthetic
preset's test images and its shipped classifier), so that the *ratios* carry over between
machines; absolute times are printed only as context. Results go to ``<out>/bench.json``.

Measurements:

* **Per method** (every registered method with the synthetic preset's cheap options): ms per
  image, classifier rows (forward + backward) per image (:class:`~attrbench.metrics.cost.
  CallCounter`) and peak memory, for all ground-truth classes of each image as the runner does.
* **Explainer vs the paper's settings**: the Explainer's ms per image against RISE with 8000 masks
  and Extremal Perturbations with 800 iterations x 4 areas, on the same images (aim: the
  Explainer >= 100x faster than RISE). With ``--quick`` (or ``--paper-rise-masks`` /
  ``--paper-ep-iters`` below the paper's values) fewer masks / iterations are timed and the time
  is extrapolated linearly; such rows say "extrapolated".
* **Overheads**: RISE and deletion / insertion time divided by the time of the bare batched
  classifier forwards they need (same images, same chunks, pre-built outside the timing; aim
  <= 1.15). RISE: 256 masks (64 with ``--quick``) in the paper's chunks of 32 masks, on all
  images (the ratio does not depend on the mask count, the run time does); deletion and
  insertion: 32 steps, zero baseline, chunks of 256 images (64 with ``--quick``).
* **Against other libraries**: Grad-CAM vs captum's ``LayerGradCam`` + ``interpolate`` and vs
  pytorch-grad-cam's ``GradCAM`` on the same batch (aim <= 1.0: ours no slower); deletion vs
  Quantus ``PixelFlipping`` (aim >= 10x faster). Missing libraries are skipped with a message.
* **Memory growth of** ``attrbench run`` on 1,000 vs 5,000 training images (aim <= 10 %), from
  the peak RSS of child processes (``os.wait4``).

Timing protocol: one warm-up call, then the median of ``--repeats`` timed calls (interleaved
when two functions are compared, so machine load hits both alike), with ``torch.cuda.
synchronize`` before and after each call on CUDA (:func:`~attrbench.metrics.cost.time_call`).

Peak memory: on CUDA the allocator's peak above the allocation at entry
(:class:`~attrbench.metrics.cost.PeakMemory`). On a Linux CPU the kernel's resident-set
high-water mark is reset before each method (``/proc/self/clear_refs`` = 5) and the peak above
the resident set at entry is reported, so every method gets its own number; elsewhere
:class:`~attrbench.metrics.cost.PeakMemory` (the growth of the process's high-water mark, 0 for
a method that stays below an earlier peak).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.metrics.cost import CallCounter, PeakMemory, time_call

__all__ = [
    "Row",
    "bench_main",
    "deletion_overhead",
    "deletion_vs_quantus",
    "explainer_vs_paper",
    "gradcam_vs_libraries",
    "median_ms",
    "memory_growth",
    "method_costs",
    "relative_growth",
    "rise_overhead",
    "safe_ratio",
]

PAPER_RISE_MASKS = 8000
PAPER_RISE_MASK_BATCH = 32
PAPER_EP_ITERS = 800
PAPER_EP_AREAS = (0.05, 0.1, 0.2, 0.3)


# ------------------------------------------------------------------------------------ helpers
def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is not finite or the denominator is <= 0.

    >>> safe_ratio(3.0, 2.0), math.isnan(safe_ratio(1.0, 0.0))
    (1.5, True)
    """
    try:
        a, b = float(numerator), float(denominator)
    except (TypeError, ValueError):
        raise TypeError(f"safe_ratio expects two numbers, got {numerator!r} and "
                        f"{denominator!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def relative_growth(small: float, large: float) -> float:
    """``large / small - 1`` (0.1 = 10 % growth); NaN when ``small`` is not a positive number.

    >>> relative_growth(100.0, 110.0)
    0.1
    """
    r = safe_ratio(large, small)
    return round(r - 1.0, 12) if math.isfinite(r) else math.nan


def linear_extrapolation(measured: float, measured_units: int, target_units: int) -> float:
    """``measured * target_units / measured_units``: the time of ``target_units`` masks or
    iterations from the time of ``measured_units`` of them, assuming cost proportional to the
    count (a fixed setup cost, if any, is scaled too, which overestimates the target time)."""
    if not isinstance(measured_units, int) or measured_units <= 0:
        raise ValueError(f"measured_units must be a positive int, got {measured_units!r}")
    if not isinstance(target_units, int) or target_units <= 0:
        raise ValueError(f"target_units must be a positive int, got {target_units!r}")
    return float(measured) * target_units / measured_units


def median_ms(fns: Sequence[Callable[[], Any]], device: torch.device | str, repeats: int,
              warmup: int = 1) -> tuple[list[float], list[float]]:
    """Medians and minima (ms) of each function's wall time; runs are interleaved.

    Each function is called ``warmup`` times untimed, then the functions are called in turn
    ``repeats`` times, each call timed with :func:`~attrbench.metrics.cost.time_call` (CUDA is
    synchronised before and after).

    Returns:
        (medians, minima), one entry per function, in milliseconds.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for fn in fns:
        for _ in range(warmup):
            time_call(fn, device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(time_call(fn, device)[1])
    return [statistics.median(t) for t in times], [min(t) for t in times]


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


def _images_targets(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs (image index, class) of every ground-truth class, as the runner explains them."""
    nz = torch.nonzero(labels > 0.5)
    return nz[:, 0], nz[:, 1]


def first_targets(labels: Tensor) -> Tensor:
    """(B,) the first ground-truth class of each image (the class with the largest label)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be (B, K) multi-hot, got shape {tuple(labels.shape)}")
    return labels.argmax(1)


# ------------------------------------------------------------------------------ measurements
def rise_overhead(model: nn.Module, images: Tensor, num_masks: int, mask_batch: int,
                  repeats: int, device: torch.device | str | None = None) -> dict[str, float]:
    """RISE's time over the time of the bare batched forwards of its masked images.

    RISE (``attribute_all``, every class) is timed against the same number of classifier
    forwards, in the same chunks of ``mask_batch * B`` images, on masked images pre-built
    outside the timing. The ratio is RISE's overhead over the classifier cost it cannot avoid
    (masking, score accumulation, normalisation); 1.0 is the floor. The warm-up fills RISE's
    mask cache, so mask generation (once per image size and instance) is not timed.

    Returns:
        ``rise_ms``, ``bare_ms`` (medians, whole batch), ``ratio``, ``ratio_best`` (minima),
        ``images``, ``num_masks``, ``mask_batch``.
    """
    from attrbench.methods.rise import RISE

    dev = torch.device(device) if device is not None else images.device
    rise = RISE(model, num_masks=num_masks, batch_size=mask_batch)
    b, c, h, w = images.shape
    masks = rise.masks(h, w, dev)
    n = min(mask_batch, num_masks)
    full = (images[:, None] * masks[:n][None, :, None]).reshape(b * n, c, h, w)
    n_full, rem = divmod(num_masks, n)
    last = None
    if rem:
        last = (images[:, None] * masks[:rem][None, :, None]).reshape(b * rem, c, h, w)

    @torch.no_grad()
    def bare() -> None:
        for _ in range(n_full):
            model(full)
        if last is not None:
            model(last)

    (t_rise, t_bare), (m_rise, m_bare) = median_ms(
        [lambda: rise.attribute_all(images), bare], dev, repeats)
    return {"rise_ms": t_rise, "bare_ms": t_bare, "ratio": safe_ratio(t_rise, t_bare),
            "ratio_best": safe_ratio(m_rise, m_bare), "images": b, "num_masks": num_masks,
            "mask_batch": mask_batch}


def deletion_overhead(model: nn.Module, images: Tensor, masks: Tensor, targets: Tensor,
                      steps: int, batch_size: int, repeats: int, mode: str = "deletion",
                      device: torch.device | str | None = None) -> dict[str, float]:
    """Deletion (or insertion) curves' time over the bare batched forwards they need.

    :func:`~attrbench.metrics.perturbation.deletion_insertion_curves` (zero baseline) is timed
    against ``P * (steps + 1)`` classifier forwards of pre-built images in the same chunks of
    ``batch_size``: the ratio isolates the overhead of ranking the pixels and building the
    perturbed images (1.0 is the floor).

    Returns:
        ``ours_ms``, ``bare_ms`` (medians), ``ratio``, ``ratio_best`` (minima), ``forwards``.
    """
    from attrbench.metrics.perturbation import deletion_insertion_curves

    dev = torch.device(device) if device is not None else images.device

    def ours() -> Tensor:
        return deletion_insertion_curves(model, images, masks, targets, steps, mode, "zero",
                                         batch_size=batch_size)

    total = images.shape[0] * (steps + 1)
    prebuilt = images.repeat_interleave(steps + 1, 0).contiguous()

    @torch.no_grad()
    def bare() -> None:
        for start in range(0, total, batch_size):
            model(prebuilt[start:start + batch_size])

    (t_ours, t_bare), (m_ours, m_bare) = median_ms([ours, bare], dev, repeats)
    return {"ours_ms": t_ours, "bare_ms": t_bare, "ratio": safe_ratio(t_ours, t_bare),
            "ratio_best": safe_ratio(m_ours, m_bare), "forwards": total, "steps": steps,
            "batch_size": batch_size}


def deletion_vs_quantus(model: nn.Module, images: Tensor, masks: Tensor, targets: Tensor,
                        steps: int, batch_size: int, repeats: int,
                        device: torch.device | str | None = None) -> dict[str, Any]:
    """Our deletion curves against Quantus ``PixelFlipping`` (when importable).

    Quantus 0.6 requires ``features_in_step`` to divide ``H * W``, broadcasts the (N, 1, H, W)
    map to the image's (N, 3, H, W) and ranks the ``C * H * W`` entries separately, so
    ``features_in_step = H * W / steps`` gives ``3 * steps`` perturbation steps of ``H * W /
    steps`` channel entries each (32 steps of whole pixels would not divide ``H * W`` and is
    refused). Two comparisons are therefore returned:

    * ``speedup``: Quantus time / ours with ``steps`` steps and ``batch_size`` (what a user
      asking both for ``steps`` steps gets);
    * ``speedup_equal_work``: Quantus time / ours with Quantus's number of steps and its
      forward batch (``batch_size = images``), i.e. the same number of classifier evaluations.

    Quantus's ``perturb_baseline="black"`` is the image minimum (a constant, the same cost as our
    zero baseline); it evaluates no unperturbed step 0, works on numpy arrays copied to the
    model each step, and runs with ``softmax=False``.

    Returns:
        A dict with ``skipped`` (a message) when Quantus is missing or fails, else the times,
        ``quantus_steps``, ``speedup`` and ``speedup_equal_work``.
    """
    from attrbench.metrics.perturbation import deletion_insertion_curves

    dev = torch.device(device) if device is not None else images.device
    try:
        import quantus
    except Exception as e:  # noqa: BLE001 - any import failure means: skip
        return {"skipped": f"Quantus is not importable ({type(e).__name__}: {e}); "
                           "install the bench extra: pip install 'attrbench[bench]'"}
    n, _, h, w = images.shape
    if (h * w) % steps:
        return {"skipped": f"Quantus needs features_in_step to divide H*W={h * w}; "
                           f"H*W/steps with steps={steps} is not an integer"}
    fis = h * w // steps
    x_np = images.detach().cpu().numpy()
    y_np = targets.detach().cpu().numpy()
    a_np = masks.detach().cpu().numpy()[:, None]
    metric = quantus.PixelFlipping(features_in_step=fis, perturb_baseline="black",
                                   disable_warnings=True, display_progressbar=False)

    def theirs() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np,
                          softmax=False, device=str(dev), batch_size=n, channel_first=True)

    def ours() -> Tensor:
        return deletion_insertion_curves(model, images, masks, targets, steps, "deletion",
                                         "zero", batch_size=batch_size)

    try:
        q_steps = len(theirs()[0])

        def ours_same_work() -> Tensor:
            return deletion_insertion_curves(model, images, masks, targets, q_steps,
                                             "deletion", "zero", batch_size=n)

        (t_ours, t_same, t_q), _ = median_ms([ours, ours_same_work, theirs], dev, repeats)
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"Quantus PixelFlipping failed ({type(e).__name__}: {e})"}
    return {"quantus_version": quantus.__version__, "features_in_step": fis,
            "quantus_steps": q_steps, "quantus_ms": t_q, "ours_ms": t_ours,
            "ours_same_work_ms": t_same, "speedup": safe_ratio(t_q, t_ours),
            "speedup_equal_work": safe_ratio(t_q, t_same), "steps": steps}


def gradcam_vs_libraries(model: nn.Module, images: Tensor, targets: Tensor, repeats: int,
                         layer: str | None = None,
                         device: torch.device | str | None = None) -> dict[str, Any]:
    """Grad-CAM time against captum and pytorch-grad-cam on the same batch.

    * captum: ``LayerGradCam(...).attribute(relu_attributions=True)`` + ``LayerAttribution.
      interpolate`` (bilinear) against ours with ``normalize=False`` (the same output).
    * pytorch-grad-cam: ``GradCAM(model, [layer])`` (ReLU, cv2 resize, min-max normalisation)
      against ours with the default ``normalize=True``.

    Returns:
        ``captum``/``pytorch_grad_cam``: each either ``{"ours_ms", "theirs_ms", "ratio"}``
        (ours / theirs) or ``{"skipped": message}``.
    """
    from attrbench.methods.cam import GradCAM, resolve_layer

    dev = torch.device(device) if device is not None else images.device
    mod = resolve_layer(model, layer)
    size = tuple(images.shape[-2:])
    out: dict[str, Any] = {}

    ours_raw = GradCAM(model, layer=mod, normalize=False)
    try:
        from captum.attr import LayerAttribution, LayerGradCam

        lgc = LayerGradCam(model, mod)

        def captum_fn() -> Tensor:
            a = lgc.attribute(images, target=targets, relu_attributions=True)
            return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear")[:, 0]

        (t_o, t_c), _ = median_ms([lambda: ours_raw.attribute(images, targets), captum_fn],
                                  dev, repeats)
        out["captum"] = {"ours_ms": t_o, "theirs_ms": t_c, "ratio": safe_ratio(t_o, t_c)}
    except Exception as e:  # noqa: BLE001
        out["captum"] = {"skipped": f"captum LayerGradCam unavailable or failed "
                                    f"({type(e).__name__}: {e})"}

    ours = GradCAM(model, layer=mod)
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception as e:  # noqa: BLE001
        out["pytorch_grad_cam"] = {"skipped": f"pytorch-grad-cam is not importable "
                                              f"({type(e).__name__}: {e}); pip install grad-cam"}
        return out
    lib = pgc.GradCAM(model, [mod])
    try:
        tlist = [int(t) for t in targets.tolist()]

        def pgc_fn() -> Any:
            return lib(images.clone().requires_grad_(True),
                       targets=[ClassifierOutputTarget(t) for t in tlist])

        (t_o, t_p), _ = median_ms([lambda: ours.attribute(images, targets), pgc_fn], dev,
                                  repeats)
        out["pytorch_grad_cam"] = {"ours_ms": t_o, "theirs_ms": t_p,
                                   "ratio": safe_ratio(t_o, t_p)}
    except Exception as e:  # noqa: BLE001
        out["pytorch_grad_cam"] = {"skipped": f"pytorch-grad-cam GradCAM failed "
                                              f"({type(e).__name__}: {e})"}
    finally:
        lib.activations_and_grads.release()
    return out


def _run_method(method: Any, images: Tensor, labels: Tensor, gt: Tensor | None,
                seeds: Tensor) -> Tensor:
    """The runner's call pattern: every (image, ground-truth class) pair of the batch."""
    pi, pc = _images_targets(images, labels)
    if method.all_classes_at_once:
        return method.attribute_all(images, seeds=seeds)[pi, pc]
    g = gt[pi, pc].float() if (gt is not None and method.needs_ground_truth) else None
    return method.attribute(images[pi], pc, gt_masks=g, seeds=seeds[pi.cpu()])


def method_costs(methods: dict[str, Any], images: Tensor, labels: Tensor,
                 gt_masks: Tensor | None, repeats: int,
                 device: torch.device | str | None = None,
                 budget_s: float = 20.0) -> dict[str, dict[str, Any]]:
    """ms per image, classifier rows per image and peak memory of each method.

    Each method explains every ground-truth class of each image, as the runner does
    (``attribute_all`` for methods with ``all_classes_at_once``). Warm-up: one call on the first
    image (kernels, allocator, RISE's mask cache). Then up to ``repeats`` timed calls on the
    whole batch (median); a method whose first timed call takes longer than
    ``budget_s / repeats`` gets only that one (its run-to-run spread is small against its time).
    The classifier rows (:class:`~attrbench.metrics.cost.CallCounter`) and the peak memory
    (:class:`MethodPeakMemory`) are recorded around the first timed call.

    Returns:
        ``{name: {"ms_per_image", "calls_per_image", "peak_mem_mb", "pairs", "repeats",
        "peak_mem_source"}}`` or ``{name: {"skipped": message}}`` for a method that raised.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    dev = torch.device(device) if device is not None else images.device
    b = images.shape[0]
    seeds = torch.arange(b)
    gt1 = gt_masks[:1] if gt_masks is not None else None
    out: dict[str, dict[str, Any]] = {}
    for name, m in methods.items():
        try:
            time_call(lambda m=m: _run_method(m, images[:1], labels[:1], gt1, seeds[:1]), dev)

            def fn(m: Any = m) -> Tensor:
                return _run_method(m, images, labels, gt_masks, seeds)

            with MethodPeakMemory(dev) as mem, CallCounter(m.model) as calls:
                _, t_first = time_call(fn, dev)
            times = [t_first]
            if t_first * repeats <= budget_s * 1000.0:
                times += [time_call(fn, dev)[1] for _ in range(repeats - 1)]
            out[name] = {"ms_per_image": statistics.median(times) / b,
                         "calls_per_image": calls.per_image(b), "peak_mem_mb": mem.mb,
                         "pairs": int((labels > 0.5).sum()), "repeats": len(times),
                         "peak_mem_source": mem.source}
        except Exception as e:  # noqa: BLE001 - one failing method must not stop the bench
            out[name] = {"skipped": f"{type(e).__name__}: {e}"}
    return out


def explainer_vs_paper(model: nn.Module, explainer: Any | None, images: Tensor,
                       targets: Tensor, rise_masks: int, ep_iters: int, repeats: int,
                       ep_images: int = 1,
                       device: torch.device | str | None = None) -> dict[str, Any]:
    """The Explainer's time per image against RISE and EP at the paper's settings.

    RISE: 8000 masks in chunks of 32 (TorchRay's settings), one target class, timed on
    ``images`` (1-2 images) once after generating its masks and a small warm-up; with
    ``rise_masks < 8000`` it runs ``rise_masks`` masks and the time is extrapolated linearly.
    EP: areas (0.05, 0.1, 0.2, 0.3) optimised jointly, timed once on the first ``ep_images``
    images with ``ep_iters`` iterations; extrapolated linearly to 800 when ``ep_iters < 800``.
    The Explainer (one forward for every class) is timed on the same images (median of
    ``repeats``), without the batching advantage a larger batch would give it.

    Returns:
        ``*_ms_per_image`` times, ``*_extrapolated`` flags, the counts actually run, and the
        speed-ups ``rise_over_explainer`` / ``ep_over_explainer`` (absent without Explainer).
    """
    from attrbench.methods.extremal import ExtremalPerturbations
    from attrbench.methods.rise import RISE

    dev = torch.device(device) if device is not None else images.device
    b = images.shape[0]
    h, w = images.shape[-2:]
    res: dict[str, Any] = {"images": b}

    rise = RISE(model, num_masks=rise_masks, batch_size=PAPER_RISE_MASK_BATCH)
    rise.masks(h, w, dev)  # generation is cached per instance: not part of the per-image cost
    RISE(model, num_masks=PAPER_RISE_MASK_BATCH, batch_size=PAPER_RISE_MASK_BATCH).attribute(
        images, targets)  # warm-up of the same forward shapes
    _, t = time_call(lambda: rise.attribute(images, targets), dev)
    res["rise_measured_masks"] = rise_masks
    res["rise_measured_ms_per_image"] = t / b
    res["rise_ms_per_image"] = linear_extrapolation(t / b, rise_masks, PAPER_RISE_MASKS)
    res["rise_extrapolated"] = rise_masks < PAPER_RISE_MASKS
    rise.clear_cache()

    xi, ti = images[:ep_images], targets[:ep_images]
    ep = ExtremalPerturbations(model, areas=PAPER_EP_AREAS, max_iter=ep_iters)
    ExtremalPerturbations(model, areas=PAPER_EP_AREAS, max_iter=2).attribute(xi, ti)  # warm-up
    _, t = time_call(lambda: ep.attribute(xi, ti), dev)
    res["ep_images"] = int(xi.shape[0])
    res["ep_measured_iters"] = ep_iters
    res["ep_measured_ms_per_image"] = t / xi.shape[0]
    res["ep_ms_per_image"] = linear_extrapolation(t / xi.shape[0], ep_iters, PAPER_EP_ITERS)
    res["ep_extrapolated"] = ep_iters < PAPER_EP_ITERS

    if explainer is not None:
        (t,), _ = median_ms([lambda: explainer.attribute_all(images)], dev, repeats)
        res["explainer_ms_per_image"] = t / b
        res["rise_over_explainer"] = safe_ratio(res["rise_ms_per_image"], t / b)
        res["ep_over_explainer"] = safe_ratio(res["ep_ms_per_image"], t / b)
    return res


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


# ------------------------------------------------------------------------------------ the table
@dataclass
class Row:
    """One line of the final table: a ratio, its aim and whether it holds."""

    key: str
    label: str
    value: float
    aim: str  # "<= 1.15", ">= 100", or "" for context rows
    context: str = ""

    @property
    def holds(self) -> bool | None:
        if not self.aim or not math.isfinite(self.value):
            return None
        op, bound = self.aim.split()
        limit = float(bound.rstrip("%")) / (100 if bound.endswith("%") else 1)
        return self.value <= limit if op == "<=" else self.value >= limit

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["holds"] = self.holds
        return d


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width table: measurement | value | aim | holds? | context."""
    head = ("measurement", "value", "aim", "holds?", "context (absolute)")
    body = []
    for r in rows:
        if r.aim.endswith("%"):
            v = f"{100 * r.value:.1f} %"
        else:
            v = f"{r.value:.0f}" if abs(r.value) >= 100 else f"{r.value:.3f}"
        h = {True: "yes", False: "no", None: "-"}[r.holds]
        body.append((r.label, v, r.aim or "-", h, r.context))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head[:4], widths)) + "  " + head[4]]
    lines.append("-" * (sum(widths) + 8 + len(head[4])))
    lines += ["  ".join(c.ljust(w) for c, w in zip(x[:4], widths)) + "  " + x[4] for x in body]
    return "\n".join(lines)


def format_methods(costs: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'method':24s} {'ms/image':>10s} {'calls/image':>12s} {'peak MB':>9s}"]
    for name, c in costs.items():
        if "skipped" in c:
            lines.append(f"{name:24s} skipped: {c['skipped']}")
        else:
            lines.append(f"{name:24s} {c['ms_per_image']:10.2f} {c['calls_per_image']:12.1f} "
                         f"{c['peak_mem_mb']:9.1f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="attrbench bench",
        description="Speed and memory of attrbench's methods and metrics as ratios against "
                    "bare forwards and other libraries, on the synthetic preset.")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--images", type=int, default=16, help="synthetic test images (default 16)")
    ap.add_argument("--repeats", type=int, help="timed repeats after a warm-up (default 3; "
                    "1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="small settings (for tests): 4 images, few masks/iterations, "
                         "extrapolated paper settings")
    ap.add_argument("--out", help="output folder (default results/runs/bench-<time>)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument("--paper-rise-masks", type=int,
                    help=f"RISE masks actually run for the paper-setting row (default "
                         f"{PAPER_RISE_MASKS}; fewer are extrapolated linearly)")
    ap.add_argument("--paper-ep-iters", type=int,
                    help=f"EP iterations actually run for the paper-setting row (default "
                         f"{PAPER_EP_ITERS}; fewer are extrapolated linearly)")
    ap.add_argument("--paper-images", type=int, default=2,
                    help="images for the RISE paper-setting timing (default 2; EP uses 1)")
    ap.add_argument("--memory-sizes", default="1000,5000",
                    help="training-image counts for the memory-growth runs (default 1000,5000)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory-growth runs")
    ap.add_argument("--methods", help="comma-separated methods for the per-method table "
                                      "(default: every registered method)")
    args = ap.parse_args(argv)
    for name in ("images", "repeats", "threads", "paper_rise_masks", "paper_ep_iters",
                 "paper_images"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    try:
        args.memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--memory-sizes expects comma-separated ints, got '{args.memory_sizes}'")
    if not args.skip_memory and (len(args.memory_sizes) < 2 or min(args.memory_sizes) < 1):
        ap.error(f"--memory-sizes needs at least two positive sizes, got {args.memory_sizes}")
    return args


def _finite_only(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_only(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _build_methods(names: list[str], model: nn.Module, preset: Any, meta: dict,
                   quick: bool) -> tuple[dict[str, Any], dict[str, str], dict[str, dict]]:
    from attrbench.catalog import METHODS

    methods, skipped, used = {}, {}, {}
    for name in names:
        opts = dict(preset.method_options.get(name, {}))
        if quick:  # keep the test run short; recorded in bench.json
            if name == "rise":
                opts.update(num_masks=64, batch_size=32)
            elif name == "extremal_perturbations":
                opts.update(max_iter=5)
            elif name == "igos_pp":
                opts.update(iterations=2, ig_iter=2)
        try:
            cls = METHODS.get(name)
            if getattr(cls, "needs_checkpoint", False):
                opts.update(preset=preset, classifier_fingerprint=meta.get("fingerprint"))
            methods[name] = cls(model, **opts)
            used[name] = {k: v for k, v in opts.items() if k not in ("preset",
                                                                     "classifier_fingerprint")}
        except Exception as e:  # noqa: BLE001 - e.g. a checkpoint not trained yet
            skipped[name] = f"cannot build: {type(e).__name__}: {e}"
    return methods, skipped, used


def bench_main(argv: list[str] | None = None) -> int:
    """Entry point of ``attrbench bench``; returns the exit code (0; 2 on a setup error)."""
    args = _parse(argv)
    from attrbench.data import collate_samples, open_dataset
    from attrbench.models import load_classifier
    from attrbench.presets import SYNTHETIC, resolve_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(args.device)
        except RuntimeError:
            print(f"error: invalid --device '{args.device}'; expected cpu, cuda, cuda:N or auto",
                  file=sys.stderr)
            return 2
        if dev.type == "cuda" and not torch.cuda.is_available():
            print(f"error: --device {args.device} was requested but CUDA is not available",
                  file=sys.stderr)
            return 2
    quick = args.quick
    n_img = 4 if quick and args.images == 16 else args.images
    reps = args.repeats or (1 if quick else 3)
    method_reps = args.repeats or (1 if quick else 3)
    rise_paper = args.paper_rise_masks or (256 if quick else PAPER_RISE_MASKS)
    ep_paper = args.paper_ep_iters or (8 if quick else PAPER_EP_ITERS)
    out = Path(args.out or Path("results") / "runs" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch.manual_seed(0)

    weights = resolve_weights(SYNTHETIC.classifier_weights)
    try:
        model, meta = load_classifier(weights)
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot load the synthetic classifier {weights}: {e}", file=sys.stderr)
        return 2
    model = model.to(dev).eval()
    ds = open_dataset(SYNTHETIC, "test", limit=n_img)
    batch = collate_samples([ds[i] for i in range(len(ds))]).to(dev)
    images, labels = batch.images, batch.labels
    gt = batch.masks if bool(batch.has_gt.all()) else None
    targets = first_targets(labels)
    n_img = images.shape[0]
    h, w = images.shape[-2:]
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    res: dict[str, Any] = {}
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() \
        or "cpu"
    print(f"attrbench bench: device={dev} ({dev_name}) threads={torch.get_num_threads()} "
          f"images={n_img} ({h}x{w}) quick={quick} repeats={reps}", flush=True)

    def stage(name: str) -> float:
        print(f"  [{time.perf_counter() - t_start:6.1f} s] {name} ...", flush=True)
        return time.perf_counter()

    # -- per method
    from attrbench.catalog import METHODS

    names = args.methods.split(",") if args.methods else list(METHODS.names())
    t0 = stage("per-method costs")
    methods, build_skips, used_opts = _build_methods(names, model, SYNTHETIC, meta, quick)
    for k, v in build_skips.items():
        skipped[f"method:{k}"] = v
    costs = method_costs(methods, images, labels, gt, method_reps, dev)
    for k, v in costs.items():
        if "skipped" in v:
            skipped[f"method:{k}"] = v["skipped"]
        else:
            v["options"] = used_opts.get(k, {})
    res["methods"] = {k: v for k, v in costs.items() if "skipped" not in v}
    timings["methods_s"] = time.perf_counter() - t0

    # -- Explainer vs paper settings
    t0 = stage("Explainer vs RISE/EP at the paper's settings")
    explainer = methods.get("explainer")
    if explainer is None:
        skipped["explainer_vs_paper"] = ("no Explainer: " + build_skips.get(
            "explainer", costs.get("explainer", {}).get("skipped", "not in --methods")))
    k_paper = min(args.paper_images, n_img)
    res["paper_settings"] = explainer_vs_paper(model, explainer, images[:k_paper],
                                               targets[:k_paper], rise_paper, ep_paper, reps,
                                               device=dev)
    timings["paper_settings_s"] = time.perf_counter() - t0

    # -- overheads
    t0 = stage("RISE overhead")
    res["rise_overhead"] = rise_overhead(model, images, 64 if quick else 256,
                                         PAPER_RISE_MASK_BATCH, reps, dev)
    t0b = stage("deletion / insertion overhead")
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(n_img, h, w, generator=g).to(dev)
    steps = 32
    del_bs = 64 if quick else 256
    res["deletion_overhead"] = deletion_overhead(model, images, sal, targets, steps, del_bs,
                                                 reps, "deletion", dev)
    res["insertion_overhead"] = deletion_overhead(model, images, sal, targets, steps, del_bs,
                                                  reps, "insertion", dev)
    timings["overheads_s"] = time.perf_counter() - t0
    t0 = stage("Grad-CAM vs captum / pytorch-grad-cam")
    # a few ms per call: more repeats, the median is otherwise at the mercy of machine load
    res["gradcam_vs_libraries"] = gradcam_vs_libraries(model, images, targets, 5 * reps,
                                                       device=dev)
    for lib, v in res["gradcam_vs_libraries"].items():
        if "skipped" in v:
            skipped[f"gradcam_vs_{lib}"] = v["skipped"]
    t0b = stage("deletion vs Quantus PixelFlipping")
    q = deletion_vs_quantus(model, images, sal, targets, steps, del_bs, reps, dev)
    if "skipped" in q:
        skipped["deletion_vs_quantus"] = q["skipped"]
    else:
        res["deletion_vs_quantus"] = q
    timings["libraries_s"] = time.perf_counter() - t0
    del t0b

    # -- memory growth
    if args.skip_memory:
        skipped["memory_growth"] = "--skip-memory"
    else:
        t0 = stage(f"memory of `attrbench run` on {args.memory_sizes} training images")
        mg = memory_growth(args.memory_sizes, device=str(dev))
        if "skipped" in mg:
            skipped["memory_growth"] = mg["skipped"]
        else:
            res["memory_growth"] = mg
        timings["memory_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    rows = _rows(res)
    report = {
        "config": {"device": str(dev), "device_name": dev_name,
                   "threads": torch.get_num_threads(), "images": n_img, "image_size": [h, w],
                   "quick": quick, "repeats": reps, "method_repeats": method_reps,
                   "torch": torch.__version__, "python": platform.python_version(),
                   "classifier_fingerprint": meta.get("fingerprint"),
                   "memory_sizes": None if args.skip_memory else args.memory_sizes},
        "ratios": {r.key: r.to_dict() for r in rows},
        **res,
        "skipped": skipped,
        "timings_s": timings,
    }
    (out / "bench.json").write_text(json.dumps(_finite_only(report), indent=2))
    print("\nper method (all ground-truth classes of each image; synthetic preset options):")
    print(format_methods(costs))
    print("\n" + format_table(rows))
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    print(f"\n{timings['total_s']:.1f} s; written {out / 'bench.json'}")
    return 0


def _rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    p = res.get("paper_settings", {})
    ex = "extrapolated from {} {}".format
    if "rise_over_explainer" in p:
        note = (ex(p["rise_measured_masks"], "masks") if p["rise_extrapolated"]
                else "measured")
        rows.append(Row("explainer_speedup_vs_rise8000",
                        f"Explainer speed-up vs RISE 8000 masks ({note})",
                        p["rise_over_explainer"], ">= 100",
                        f"RISE {p['rise_ms_per_image']:.0f} ms/img, Explainer "
                        f"{p['explainer_ms_per_image']:.2f} ms/img"))
        note = (ex(p["ep_measured_iters"], "iterations") if p["ep_extrapolated"]
                else "measured")
        rows.append(Row("explainer_speedup_vs_ep800",
                        f"Explainer speed-up vs EP 800 it x 4 areas ({note})",
                        p["ep_over_explainer"], "",
                        f"EP {p['ep_ms_per_image']:.0f} ms/img"))
    r = res["rise_overhead"]
    rows.append(Row("rise_over_bare_forwards", "RISE / bare batched forwards", r["ratio"],
                    "<= 1.15", f"{r['rise_ms']:.1f} vs {r['bare_ms']:.1f} ms "
                    f"({r['images']} img x {r['num_masks']} masks, chunks of "
                    f"{r['mask_batch']}; best-of {r['ratio_best']:.3f})"))
    for mode in ("deletion", "insertion"):
        d = res[f"{mode}_overhead"]
        rows.append(Row(f"{mode}_over_bare_forwards", f"{mode.capitalize()} / bare forwards",
                        d["ratio"], "<= 1.15",
                        f"{d['ours_ms']:.1f} vs {d['bare_ms']:.1f} ms ({d['forwards']} "
                        f"forwards in chunks of {d['batch_size']}; best-of "
                        f"{d['ratio_best']:.3f})"))
    libs = res.get("gradcam_vs_libraries", {})
    for lib, label in (("captum", "captum LayerGradCam+interpolate"),
                       ("pytorch_grad_cam", "pytorch-grad-cam GradCAM")):
        v = libs.get(lib, {})
        if "ratio" in v:
            rows.append(Row(f"gradcam_over_{lib}", f"Grad-CAM ours / {label}", v["ratio"],
                            "<= 1.0", f"{v['ours_ms']:.1f} vs {v['theirs_ms']:.1f} ms"))
    q = res.get("deletion_vs_quantus")
    if q:
        rows.append(Row("deletion_speedup_vs_quantus",
                        f"Deletion speed-up vs Quantus PixelFlipping (ours {q['steps']} steps)",
                        q["speedup"], ">= 10",
                        f"Quantus {q['quantus_ms']:.0f} ms ({q['quantus_steps']} steps of "
                        f"{q['features_in_step']} entries), ours {q['ours_ms']:.1f} ms"))
        rows.append(Row("deletion_speedup_vs_quantus_equal_work",
                        f"  same, equal work (ours {q['quantus_steps']} steps, same batch)",
                        q["speedup_equal_work"], ">= 10",
                        f"ours {q['ours_same_work_ms']:.1f} ms"))
    m = res.get("memory_growth")
    if m:
        rows.append(Row("memory_growth", f"`attrbench run` peak RSS growth "
                        f"{m['sizes'][0]} -> {m['sizes'][-1]} images", m["growth"], "<= 10%",
                        " vs ".join(f"{x:.0f} MB" for x in m["peak_rss_mb"]) + " ("
                        + " / ".join(f"{s:.0f} s" for s in m["seconds"]) + ")"))
    return rows
