"""The measurements of ``attrbench bench`` on attrbench's own code: overheads over bare
classifier forwards, per-method costs, per-metric costs and the paper-setting comparison.

Each function takes a model, inputs and a repeat count and returns a plain dict (written to
``bench.json`` as it is). Ratios of two timed functions are the median of per-repeat ratios of
interleaved runs (:func:`~attrbench.bench.stats.ratio_stats`), with their min and max.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.metrics.cost import CallCounter, time_call
from attrbench.ops import image_class_pairs

from .memory import MethodPeakMemory
from .stats import interleaved_ms, linear_extrapolation, median_ms, ratio_stats, safe_ratio

__all__ = ["PAPER_EP_AREAS", "PAPER_EP_ITERS", "PAPER_RISE_MASKS", "PAPER_RISE_MASK_BATCH",
           "deletion_overhead", "explainer_vs_paper", "first_targets", "method_costs",
           "metric_costs", "rise_overhead"]

PAPER_RISE_MASKS = 8000
PAPER_RISE_MASK_BATCH = 32
PAPER_EP_ITERS = 800
PAPER_EP_AREAS = (0.05, 0.1, 0.2, 0.3)


def first_targets(labels: Tensor) -> Tensor:
    """(B,) the first ground-truth class of each image (the class with the largest label)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be (B, K) multi-hot, got shape {tuple(labels.shape)}")
    return labels.argmax(1)


def _two_way(ours, bare, device: torch.device, repeats: int) -> dict[str, Any]:
    """Interleaved timing of ``ours`` and ``bare``: medians and the per-repeat ratio stats."""
    t_ours, t_bare = interleaved_ms([ours, bare], device, repeats)
    return {"ours_ms": statistics.median(t_ours), "bare_ms": statistics.median(t_bare),
            **ratio_stats(t_ours, t_bare), "repeats": repeats}


def rise_overhead(model: nn.Module, images: Tensor, num_masks: int, mask_batch: int,
                  repeats: int, device: torch.device | str | None = None) -> dict[str, Any]:
    """RISE's time over the time of the bare batched forwards of its masked images.

    RISE (``attribute_all``, every class) is timed against the same number of classifier
    forwards, in the same chunks of ``mask_batch * B`` images, on masked images pre-built
    outside the timing. The ratio is RISE's overhead over the classifier cost it cannot avoid
    (masking, score accumulation, normalisation); 1.0 is the floor. The warm-up fills RISE's
    mask cache, so mask generation (once per image size and instance) is not timed.

    Returns:
        ``rise_ms``, ``bare_ms`` (medians, whole batch), ``ratio`` (median of the per-repeat
        ratios), ``ratio_min``, ``ratio_max``, ``ratios``, ``repeats``, ``images``,
        ``num_masks``, ``mask_batch``.
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

    r = _two_way(lambda: rise.attribute_all(images), bare, dev, repeats)
    r["rise_ms"] = r.pop("ours_ms")
    return {**r, "images": b, "num_masks": num_masks, "mask_batch": mask_batch}


def deletion_overhead(model: nn.Module, images: Tensor, masks: Tensor, targets: Tensor,
                      steps: int, batch_size: int, repeats: int, mode: str = "deletion",
                      device: torch.device | str | None = None) -> dict[str, Any]:
    """Deletion (or insertion) curves' time over the bare batched forwards they need.

    :func:`~attrbench.metrics.perturbation.deletion_insertion_curves` (zero baseline) is timed
    against ``P * (steps + 1)`` classifier forwards of pre-built images in the same chunks of
    ``batch_size``: the ratio isolates the overhead of ranking the pixels and building the
    perturbed images (1.0 is the floor).

    Returns:
        ``ours_ms``, ``bare_ms`` (medians), ``ratio`` (median of the per-repeat ratios),
        ``ratio_min``, ``ratio_max``, ``ratios``, ``repeats``, ``forwards``, ``steps``,
        ``batch_size``.
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

    return {**_two_way(ours, bare, dev, repeats), "forwards": total, "steps": steps,
            "batch_size": batch_size}


def _run_method(method: Any, images: Tensor, labels: Tensor, gt: Tensor | None,
                seeds: Tensor) -> Tensor:
    """The runner's call pattern: every (image, ground-truth class) pair of the batch."""
    pi, pc = image_class_pairs(labels)
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
    (:class:`~attrbench.bench.memory.MethodPeakMemory`) are recorded around the first timed call.

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


def _method_eval_batch(name: str, method: Any, batch: Any, seeds: Tensor, model: nn.Module,
                       device: torch.device) -> Any:
    """The runner's :class:`~attrbench.interfaces.EvalBatch` of ``method`` on ``batch``: its
    masks from :func:`~attrbench.evaluate.run_method_on_batch`, the images it did not fail.
    Raises RuntimeError when it failed every image."""
    from attrbench.evaluate import eval_batch, run_method_on_batch

    masks, errors, stats = run_method_on_batch(method, batch, seeds, device)
    ok = [i for i, e in enumerate(errors) if e is None]
    if masks is None or not ok:
        raise RuntimeError(f"the method failed every image ({next(e for e in errors if e)})")
    return eval_batch(name, method, batch, ok, masks, stats, seeds, model, device)


def _time_metric(metric: Any, eb: Any, repeats: int, warmup: int,
                 device: torch.device) -> float:
    """Median ms of ``metric.update(eb)`` (the accumulator is reset after every call)."""

    def fn() -> None:
        metric.update(eb)
        metric.reset()

    (t,), _ = median_ms([fn], device, repeats, warmup=warmup)
    return t


def metric_costs(methods: dict[str, Any], metrics: dict[str, Any], batch: Any,
                 model: nn.Module, repeats: int, device: torch.device | str,
                 seed: int = 0) -> dict[str, Any]:
    """ms per image of every metric on every method's masks, as the runner evaluates them.

    For each method, its masks of ``batch`` (every ground-truth class, per-image seeds as in a
    run with ``seed``) become the runner's :class:`~attrbench.interfaces.EvalBatch`
    (:func:`~attrbench.evaluate.eval_batch`); each metric's ``update`` on it is timed (median of
    ``repeats``, the metric's first use is an untimed warm-up) and divided by the images scored.
    A metric whose protocol does not cover the method is recorded as not applicable, one that
    raises as failed; a method that fails every image is skipped.

    Returns:
        ``{"ms_per_image": {method: {metric: ms}}, "not_applicable": {method: {metric:
        reason}}, "failed": {method: {metric: error}}, "skipped": {method: error},
        "images": {method: n scored}, "repeats"}``.
    """
    from attrbench.config import image_seed

    dev = torch.device(device)
    seeds = torch.tensor([image_seed(str(i), seed) for i in batch.image_ids])
    out: dict[str, Any] = {"ms_per_image": {}, "not_applicable": {}, "failed": {},
                           "skipped": {}, "images": {}, "repeats": repeats}
    warmed: set[str] = set()
    for name, method in methods.items():
        try:
            eb = _method_eval_batch(name, method, batch, seeds, model, dev)
        except Exception as e:  # noqa: BLE001 - one failing method must not stop the bench
            out["skipped"][name] = f"{type(e).__name__}: {e}"
            continue
        out["images"][name] = eb.batch_size
        row = out["ms_per_image"].setdefault(name, {})
        for mname, metric in metrics.items():
            reason = metric.not_applicable(method, name)
            if reason is not None:
                out["not_applicable"].setdefault(name, {})[mname] = reason
                continue
            try:
                t = _time_metric(metric, eb, repeats, 0 if mname in warmed else 1, dev)
            except Exception as e:  # noqa: BLE001 - recorded, as the runner does
                metric.reset()
                out["failed"].setdefault(name, {})[mname] = f"{type(e).__name__}: {e}"
                continue
            warmed.add(mname)
            row[mname] = t / eb.batch_size
    return out


def metric_totals(costs: dict[str, Any], method_ms: dict[str, float]) -> dict[str, Any]:
    """Totals of :func:`metric_costs`: per method (its metrics; with the method itself), per
    metric (over the methods) and overall, in ms per image."""
    per = costs["ms_per_image"]
    metrics_of = {m: sum(row.values()) for m, row in per.items()}
    with_method = {m: metrics_of[m] + method_ms.get(m, 0.0) for m in per}
    names = sorted({k for row in per.values() for k in row})
    per_metric = {k: sum(row.get(k, 0.0) for row in per.values()) for k in names}
    return {"metrics_per_method": metrics_of, "method_and_metrics": with_method,
            "per_metric": per_metric, "metrics_all": sum(metrics_of.values()),
            "methods_all": sum(method_ms.get(m, 0.0) for m in per),
            "all": sum(with_method.values())}


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
    dev = torch.device(device) if device is not None else images.device
    b = images.shape[0]
    res: dict[str, Any] = {"images": b, **_paper_rise(model, images, targets, rise_masks, dev)}
    res.update(_paper_ep(model, images[:ep_images], targets[:ep_images], ep_iters, dev))
    if explainer is not None:
        (t,), _ = median_ms([lambda: explainer.attribute_all(images)], dev, repeats)
        res["explainer_ms_per_image"] = t / b
        res["rise_over_explainer"] = safe_ratio(res["rise_ms_per_image"], t / b)
        res["ep_over_explainer"] = safe_ratio(res["ep_ms_per_image"], t / b)
    return res


def _paper_rise(model: nn.Module, images: Tensor, targets: Tensor, rise_masks: int,
                dev: torch.device) -> dict[str, Any]:
    from attrbench.methods.rise import RISE

    b, _, h, w = images.shape
    rise = RISE(model, num_masks=rise_masks, batch_size=PAPER_RISE_MASK_BATCH)
    rise.masks(h, w, dev)  # generation is cached per instance: not part of the per-image cost
    RISE(model, num_masks=PAPER_RISE_MASK_BATCH, batch_size=PAPER_RISE_MASK_BATCH).attribute(
        images, targets)  # warm-up of the same forward shapes
    _, t = time_call(lambda: rise.attribute(images, targets), dev)
    rise.clear_cache()
    return {"rise_measured_masks": rise_masks, "rise_measured_ms_per_image": t / b,
            "rise_ms_per_image": linear_extrapolation(t / b, rise_masks, PAPER_RISE_MASKS),
            "rise_extrapolated": rise_masks < PAPER_RISE_MASKS}


def _paper_ep(model: nn.Module, xi: Tensor, ti: Tensor, ep_iters: int,
              dev: torch.device) -> dict[str, Any]:
    from attrbench.methods.extremal import ExtremalPerturbations

    ep = ExtremalPerturbations(model, areas=PAPER_EP_AREAS, max_iter=ep_iters)
    ExtremalPerturbations(model, areas=PAPER_EP_AREAS, max_iter=2).attribute(xi, ti)  # warm-up
    _, t = time_call(lambda: ep.attribute(xi, ti), dev)
    n = int(xi.shape[0])
    return {"ep_images": n, "ep_measured_iters": ep_iters, "ep_measured_ms_per_image": t / n,
            "ep_ms_per_image": linear_extrapolation(t / n, ep_iters, PAPER_EP_ITERS),
            "ep_extrapolated": ep_iters < PAPER_EP_ITERS}
