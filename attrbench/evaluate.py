"""The evaluation loop: batches of images -> every method -> every metric -> score rows.

For every batch of images and every method:
    1. the method makes one mask per (image, ground-truth class) pair (the paper's multi-label
       protocol); the masks of an image are merged by pixel-wise max for image-level metrics,
       before or after the final rescale as the method's ``merge`` order says;
    2. the call is timed (CUDA-synchronised), its classifier forward/backward rows counted by
       hooks, and its peak memory measured;
    3. a method error or a non-finite mask fails *that image only* (the batch is retried image by
       image to find which), and the failure is recorded with its reason; it is never turned
       into a score. Every finite map is scored, an all-zero one included;
    4. every metric scores the batch, except metrics whose protocol does not cover the method
       (``Metric.not_applicable``: recorded as "n/a"); per-image rows go to the result store at
       once, with the metrics' curves (:class:`~attrbench.interfaces.SideOutputs`); matrix rows
       are collected per method for the run folder's side files.

An image whose files cannot be read fails for every method with the reason ``"data: ..."``.
Wall time is recorded per method, per metric and for data loading (:class:`Timings`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .config import image_seed
from .data import Batch, Sample, collate_samples
from .interfaces import AttributionMethod, EvalBatch, Metric
from .metrics.cost import CallCounter, PeakMemory
from .ops import image_class_pairs


class _Timer:
    """Wall time of a block (``seconds``), CUDA-synchronised on entry and exit."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = math.nan

    def __enter__(self) -> _Timer:  # noqa: PYI034
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        return False


@dataclass
class Timings:
    """Where a run's wall time went, in seconds: data loading, each method's calls (warm-up
    included, so the sum is the wall time), each metric per method, and everything else; and
    the rows that passed through the classifier's forward and backward over the whole run
    (methods and metrics), the denominator of the run's overhead over its bare classifier
    cost (``benchmarks/run_overhead.py``)."""

    data: float = 0.0
    methods: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> method -> s
    total: float = 0.0
    classifier: dict[str, int] = field(default_factory=dict)

    def add_method(self, name: str, seconds: float) -> None:
        self.methods[name] = self.methods.get(name, 0.0) + seconds

    def add_metric(self, metric: str, method: str, seconds: float) -> None:
        per = self.metrics.setdefault(metric, {})
        per[method] = per.get(method, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        accounted = self.data + sum(self.methods.values()) + sum(
            s for per in self.metrics.values() for s in per.values())
        return {"total_s": self.total, "data_s": self.data,
                "methods_s": dict(self.methods),
                "metrics_s": {k: sum(v.values()) for k, v in self.metrics.items()},
                "metric_by_method_s": {k: dict(v) for k, v in self.metrics.items()},
                "other_s": max(0.0, self.total - accounted),
                "classifier_rows": dict(self.classifier)}

    @classmethod
    def merged(cls, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Sum of several processes' :meth:`to_dict` (wall total: the slowest process)."""
        out = cls()
        for p in parts:
            out.data += p["data_s"]
            for m, s in p["methods_s"].items():
                out.add_method(m, s)
            for k, per in p["metric_by_method_s"].items():
                for m, s in per.items():
                    out.add_metric(k, m, s)
            out.total = max(out.total, p["total_s"])
            for k, n in (p.get("classifier_rows") or {}).items():
                if isinstance(n, dict):  # rows per call -> calls
                    per = out.classifier.setdefault(k, {})
                    for size, c in n.items():
                        per[size] = per.get(size, 0) + c
                else:
                    out.classifier[k] = out.classifier.get(k, 0) + n
        return out.to_dict()


@dataclass
class Collected:
    """What the loop hands to the run folder besides score rows: per matrix group and method,
    the metrics' matrix rows; the first batch's merged masks per method (qualitative grid); and
    per method its ``worst_k`` images by ``worst_metric`` (value, image id, merged mask), for the
    report's view of where each method fails."""

    matrices: dict[str, dict[str, list]] = field(default_factory=dict)
    qualitative: dict[str, tuple[list[str], Tensor]] = field(default_factory=dict)
    worst_metric: str | None = None
    worst_k: int = 4
    worst: dict[str, list[tuple[float, str, Tensor]]] = field(default_factory=dict)

    def offer_worst(self, method: str, metric: Metric, values: list, image_ids, merged: Tensor
                    ) -> None:
        """Keep the ``worst_k`` images of ``method`` with the lowest (for a ↑ metric) or highest
        value; images without a finite value are never kept."""
        kept = self.worst.setdefault(method, [])
        sign = 1.0 if metric.higher_is_better else -1.0
        for j, v in enumerate(values):
            x = metric.image_value(v)
            if math.isfinite(x):
                kept.append((sign * x, str(image_ids[j]), merged[j].detach().cpu()))
        kept.sort(key=lambda t: (t[0], t[1]))
        del kept[self.worst_k:]


def _check_masks(masks: Tensor) -> Tensor:
    """(P,) reason codes: 0 ok, 1 non-finite, 2 outside [0, 1]."""
    flat = masks.flatten(1)  # (P, H*W); P may be 0 (a batch without labelled images)
    bad_finite = ~torch.isfinite(flat).all(1)
    out_of_range = (flat.nan_to_num(0.5) < -1e-4).any(1) | (flat.nan_to_num(0.5) > 1 + 1e-4).any(1)
    code = torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)
    code[out_of_range] = 2
    code[bad_finite] = 1
    return code


def _call_method(method: AttributionMethod, batch: Batch, pi: Tensor, pc: Tensor, seeds: Tensor,
                 gt: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """(the pairs' maps, the maps of every class when one ``attribute_all`` call made them)."""
    if method.all_classes_at_once and len(pi) > 0:
        allm = method.attribute_all(batch.images, seeds=seeds, rescale=False)
        return allm[pi, pc], allm
    if len(pi) > 0:
        return method.attribute(batch.images[pi], pc, gt_masks=gt, seeds=seeds[pi.cpu()],
                                rescale=False), None
    return torch.zeros(0, *batch.images.shape[-2:], device=device), None


def _input_errors(method: AttributionMethod, batch: Batch) -> list[str | None]:
    errors: list[str | None] = [None] * len(batch)
    for i in torch.nonzero((batch.labels > 0.5).sum(1) == 0).flatten().tolist():
        errors[i] = "no labels: image has no ground-truth class"
    if method.needs_ground_truth:
        for i in range(len(batch)):
            if not bool(batch.has_gt[i]) and errors[i] is None:
                errors[i] = "no ground truth: method needs segmentation masks"
    return errors


def run_method_on_batch(method: AttributionMethod, batch: Batch, seeds: Tensor,
                        device: torch.device) -> tuple[Tensor | None, list[str | None], dict]:
    """Maps for every (image, gt class) pair; per-image error strings (None = ok).

    ``stats["all_maps"]``: the (B, K, H, W) maps of every class when the method made them in
    one ``attribute_all`` call (else None). The maps are ``attribute(..., rescale=False)``: for a ``"max_then_rescale"`` method those
    before its final rescale (:meth:`AttributionMethod.merge_pairs` makes the class masks and
    the merged mask from them). Only a method that raises or returns a non-finite value (or,
    breaking its contract, a final map outside [0, 1]) fails an image; every finite map is
    scored, an all-zero one included.
    """
    pi, pc = image_class_pairs(batch.labels)
    b = len(batch)
    errors = _input_errors(method, batch)
    gt = batch.masks[pi, pc].float() if method.needs_ground_truth else None
    with PeakMemory(device) as mem, CallCounter(method.model) as calls, _Timer(device) as timer:
        try:
            (masks, all_maps), err = _call_method(method, batch, pi, pc, seeds, gt, device), None
        except Exception as exc:  # noqa: BLE001 — isolate per image below
            masks, all_maps, err = None, None, f"{type(exc).__name__}: {exc}"
    stats = {"seconds": timer.seconds, "forward_rows": calls.forward_rows,
             "backward_rows": calls.backward_rows, "peak_mem_mb": mem.mb, "all_maps": all_maps}
    if masks is None:
        if b == 1:
            errors[0] = errors[0] or f"method raised {err}"
            return None, errors, stats
        masks = _retry_one_by_one(method, batch, pi, seeds, device, errors, err, stats)
        # (the retries' time goes to the run's timings, not to the time_ms metric)
    finite = torch.isfinite(masks.flatten(1)).all(1)
    masks = masks.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    final = method.rescale(masks) if method.merge == "max_then_rescale" else masks
    codes = _check_masks(final)
    codes[~finite] = 1
    for p in torch.nonzero(codes).flatten().tolist():
        i = int(pi[p])
        if errors[i] is None:
            errors[i] = ("non-finite mask (NaN or inf)" if int(codes[p]) == 1
                         else "mask values outside [0, 1]")
    if method.merge != "max_then_rescale":
        masks = masks.clamp(0, 1)
    return masks, errors, stats


def _retry_one_by_one(method, batch: Batch, pi: Tensor, seeds: Tensor, device: torch.device,
                      errors: list[str | None], err: str | None, stats: dict) -> Tensor:
    """After a failed batch call: every image alone, to find the failing ones (their errors are
    set in ``errors``; the retries' time is ``stats["retry_seconds"]``)."""
    ok_masks = torch.zeros(len(pi), *batch.images.shape[-2:], device=device)
    for i in range(len(batch)):
        sel = pi == i
        if not sel.any():
            continue
        m_i, e_i, s_i = run_method_on_batch(method, batch.select([i]), seeds[i:i + 1], device)
        stats["retry_seconds"] = stats.get("retry_seconds", 0.0) + s_i["seconds"] + s_i.get(
            "retry_seconds", 0.0)
        if m_i is None or e_i[0] is not None:
            errors[i] = errors[i] or (e_i[0] if e_i[0] else f"method raised {err}")
        else:
            ok_masks[sel] = m_i
    return ok_masks


def eval_batch(name: str, method: AttributionMethod, batch: Batch, ok: list[int], masks: Tensor,
                stats: dict, seeds: Tensor, model, device: torch.device) -> EvalBatch:
    """The :class:`EvalBatch` of the images in ``ok`` (those the method did not fail)."""
    b = len(batch)
    pi, pc = image_class_pairs(batch.labels)
    ok_set = set(ok)
    keep = torch.tensor([int(p) in ok_set for p in pi.tolist()], dtype=torch.bool)
    remap = {old: new for new, old in enumerate(ok)}
    sub = _subset(batch, ok)
    pi2 = torch.tensor([remap[int(p)] for p in pi[keep].tolist()], dtype=torch.long,
                       device=device)
    pc2 = pc[keep.to(pc.device)].to(device)
    cm, merged = method.merge_pairs(masks[keep.to(masks.device)], pi2, len(ok))
    all_maps = stats.get("all_maps")
    if all_maps is not None:  # the final maps, as attribute_all(rescale=True) returns them
        all_maps = all_maps[torch.tensor(ok, device=all_maps.device)]
        if method.merge == "max_then_rescale":
            all_maps = method.rescale(all_maps.flatten(0, 1)).view_as(all_maps)
    return EvalBatch(
        images=sub.images, labels=sub.labels, pair_image=pi2, pair_class=pc2, class_masks=cm,
        merged=merged, gt_masks=sub.masks if bool(sub.has_gt.any()) else None,
        has_gt=sub.has_gt, boxes=sub.boxes, originals=sub.originals or (), model=model,
        method=method, method_name=name, image_ids=sub.image_ids,
        seeds=seeds[torch.tensor(ok)],
        time_ms=torch.full((len(ok),), stats["seconds"] * 1000.0 / b),
        extras={"model_calls": torch.full((len(ok),),
                                          (stats["forward_rows"] + stats["backward_rows"]) / b),
                "peak_mem_mb": stats["peak_mem_mb"], "forward_rows": stats["forward_rows"] / b,
                "backward_rows": stats["backward_rows"] / b},
        all_maps=all_maps)


def score_batch(name: str, method: AttributionMethod, batch: Batch, seeds: Tensor, model,
                metrics: dict[str, Metric], device: torch.device,
                collected: Collected | None = None, timings: Timings | None = None,
                keep_qualitative: bool = False) -> list[dict]:
    """Score rows of one method on one batch (failed images get a failed row)."""
    masks, errors, stats = run_method_on_batch(method, batch, seeds, device)
    if timings is not None:
        timings.add_method(name, stats["seconds"] + stats.get("retry_seconds", 0.0))
    ok = [i for i in range(len(batch)) if errors[i] is None]
    rows = [{"image_id": batch.image_ids[i], "method": name, "status": "failed",
             "error": errors[i], "scores": {}} for i in range(len(batch)) if errors[i] is not None]
    if not ok:
        return rows
    eb = eval_batch(name, method, batch, ok, masks, stats, seeds, model, device)
    scores, failed_metric, not_applicable, curves = _run_metrics(
        name, method, eb, metrics, device, collected, timings)
    classes = [torch.nonzero(eb.labels[j] > 0.5).flatten().tolist() for j in range(len(ok))]
    for j, i in enumerate(ok):
        iid = batch.image_ids[i]
        row = {"image_id": iid, "method": name, "status": "ok", "error": None,
               "classes": classes[j], "scores": {m: _to_py(v[j]) for m, v in scores.items()}}
        row["scores"].update(curves.get(str(iid), {}))
        if j in failed_metric:
            row["metric_error"] = failed_metric[j]
        if not_applicable:
            row["not_applicable"] = dict(not_applicable)
        rows.append(row)
    if collected is not None:
        if keep_qualitative:
            collected.qualitative.setdefault(name, (list(eb.image_ids), eb.merged.detach().cpu()))
        k = collected.worst_metric
        if k is not None and k in scores:
            collected.offer_worst(name, metrics[k], scores[k], eb.image_ids, eb.merged)
    return rows


def _run_metrics(name: str, method: AttributionMethod, eb: EvalBatch, metrics: dict[str, Metric],
                 device: torch.device, collected: Collected | None, timings: Timings | None):
    """Every metric on ``eb``: (values per metric, first metric error per image, not-applicable
    reasons, curves per image id). A metric that raises gives NaN for the batch, recorded."""
    n = eb.batch_size
    scores: dict[str, list] = {}
    failed: dict[int, str] = {}
    not_applicable: dict[str, str] = {}
    curves: dict[str, dict[str, Any]] = {}
    groups_done: set[str] = set()
    for mname, metric in metrics.items():
        reason = metric.not_applicable(method, name)
        if reason is not None:  # outside the metric's protocol: recorded as such, not scored
            not_applicable[mname] = reason
            continue
        with _Timer(device) as timer:
            try:
                scores[mname] = metric.update(eb)
            except Exception as exc:  # noqa: BLE001 — a metric bug must not kill a long run
                scores[mname] = [math.nan] * n
                for j in range(n):
                    failed.setdefault(j, f"metric {mname} raised {type(exc).__name__}: {exc}")
        if timings is not None:
            timings.add_metric(mname, name, timer.seconds)
        side = metric.side_outputs()
        if metric.curve_key:
            for iid, curve in side.curves.items():
                curves.setdefault(iid, {})[metric.curve_key] = curve
        group = metric.matrix_group
        if group and side.matrix_rows and collected is not None and group not in groups_done:
            collected.matrices.setdefault(group, {}).setdefault(name, []).extend(side.matrix_rows)
            groups_done.add(group)  # the group's metrics share one set of rows
        metric.reset()  # results stream to disk; nothing accumulates per image in memory
    return scores, failed, not_applicable, curves


def _to_py(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, dict):
        return {str(k): _to_py(x) for k, x in v.items()}
    return v


def _subset(batch: Batch, idx: list[int]) -> Batch:
    sub = batch.select(idx)
    sub.errors = None
    return sub


def evaluate(dataset, model, methods: dict[str, AttributionMethod], metrics: dict[str, Metric],
             store, device: torch.device, *, batch_size: int, seed: int, progress: bool = True
             ) -> tuple[Collected, Timings]:
    """Every method and metric on every image of ``dataset``; rows go to ``store`` as they are
    made. Images ``store`` already has for a method are skipped (a resumed run)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(FlagDataErrors(dataset), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_samples, num_workers=0)
    collected, timings = Collected(worst_metric=_worst_metric(metrics)), Timings()
    bar = _progress_bar(len(dataset) * len(methods)) if progress else None
    warmed: set[str] = set()
    t_start = time.perf_counter()
    counter = CallCounter(model).__enter__()
    try:
        it = iter(loader)
        first = True
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            timings.data += time.perf_counter() - t0
            if batch is None:
                break
            for name, method in methods.items():
                if bar is not None:
                    bar.set_postfix_str(name)
                todo = _record_data_errors(batch, name, store)
                if todo:
                    sub = _subset(batch, todo).to(device)
                    seeds = torch.tensor([image_seed(i, seed) for i in sub.image_ids])
                    if name not in warmed:  # one image first: timings exclude first-call cost
                        warmed.add(name)
                        timings.add_method(name, _warm_up(method, sub, seeds, device))
                    store.append(score_batch(name, method, sub, seeds, model, metrics, device,
                                             collected, timings, keep_qualitative=first))
                if bar is not None:
                    bar.update(len(batch))
            first = False
    finally:
        timings.total = time.perf_counter() - t_start
        counter.__exit__(None, None, None)
        timings.classifier = {"forward_rows": counter.forward_rows,
                              "backward_rows": counter.backward_rows,
                              "forward_calls": counter.forward_calls,
                              "forward_sizes": dict(counter.forward_sizes),
                              "backward_sizes": dict(counter.backward_sizes)}
        if bar is not None:
            bar.close()
    return collected, timings


def _worst_metric(metrics: dict[str, Metric]) -> str | None:
    """The metric that ranks each method's worst images: the run's first quality metric that is
    an axis of the report's cost-quality figure (``figure_axis``: mean_f1, cont_iou), else
    None."""
    return next((k for k, m in metrics.items() if m.figure_axis == "quality"), None)


def _record_data_errors(batch: Batch, name: str, store) -> list[int]:
    """Failed rows for the batch's unreadable images (unless done); the indices still to do."""
    data_errors = batch.errors or [None] * len(batch)
    store.append([{"image_id": iid, "method": name, "status": "failed",
                   "error": f"data: {data_errors[i]}", "scores": {}}
                  for i, iid in enumerate(batch.image_ids)
                  if data_errors[i] is not None and not store.done(iid, name)])
    return [i for i, iid in enumerate(batch.image_ids)
            if data_errors[i] is None and not store.done(iid, name)]


def _warm_up(method: AttributionMethod, batch: Batch, seeds: Tensor, device: torch.device
             ) -> float:
    """One untimed call on the batch's first image (seconds spent, for the run's timings)."""
    one = _subset(batch, [0])
    if not (one.labels > 0.5).any():
        return 0.0
    t0 = time.perf_counter()
    try:
        run_method_on_batch(method, one, seeds[:1], device)
    except Exception:  # noqa: BLE001, S110
        pass  # the failure is recorded by the real call
    return time.perf_counter() - t0


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="attrbench run", unit="img·method", dynamic_ncols=True)


class FlagDataErrors(torch.utils.data.Dataset):
    """Wraps a dataset (or a ``Subset`` of one) so that an image that cannot be read becomes a
    placeholder :class:`Sample` carrying the reason (``Sample.error``) instead of an exception
    that would stop the whole run. Configuration problems (a wrong data root, a missing split
    file) are raised when the dataset is opened, before any work, and are not affected."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        base, idx = dataset, None
        while isinstance(base, torch.utils.data.Subset):
            idx = [base.indices[i] for i in idx] if idx is not None else list(base.indices)
            base = base.dataset
        self._base, self._idx = base, idx

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        j = index if self._idx is None else self._idx[index]
        try:
            s = self.dataset[index]
        except Exception as exc:  # noqa: BLE001 — a bad file fails that image only
            from .data import DataError

            reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            return Sample.failed(str(self._base.ids[j]), self._base.num_classes,
                                 self._base.image_size, reason)
        present = s.labels > 0.5
        if s.masks is not None and bool(present.any()) and not bool(s.masks[present].any()):
            # a segmented image whose labelled classes have no pixel: every localisation
            # metric would score it against an empty mask, so it is not scored at all
            names = [self._base.classes[c] for c in s.class_ids]
            return Sample.failed(s.image_id, self._base.num_classes, self._base.image_size,
                                 f"empty ground-truth mask: image {s.image_id} is labelled "
                                 f"{names} but its segmentation has no pixel of these classes")
        return s
