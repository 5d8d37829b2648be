"""Segmentation-style localisation metrics of Stalder et al. (NeurIPS 2022).

Every metric compares, per image, the merged mask ``m`` (the pixel-wise max of the image's class
masks, values in [0, 1]) with the binary ground-truth foreground ``s`` (the union of all classes'
ground truth). All logic lives in pure batched tensor functions ``f(masks (B,H,W), gt (B,H,W)) ->
(B,)`` that run on the input's device; the :class:`~attrbench.interfaces.Metric` subclasses at the
bottom only call them on ``batch.merged`` / ``batch.gt_union``.

Paper: Stalder, Perraudin, Achanta, Perez-Cruz, Volpi. "What You See is What You Classify: Black
Box Attributions". NeurIPS 2022 (official code ``src/evaluation/eval_utils/assessment_metrics.py``).

Conventions shared by all functions (the paper's code leaves them undefined, e.g. divides by 0):

* ``masks`` is floating, ``gt`` is bool or 0/1-valued; both (B, H, W) with the same shape.
  Anything else raises ``TypeError``/``ValueError``.
* An image whose mask contains a non-finite value gets NaN from every function (a method failure
  is counted, never scored). Images without ground truth are set to NaN by the Metric classes.
* Thresholded masks use a strict ``m > t`` (as in the paper's code).
* Binary F1 and IoU at one threshold: when prediction and ground truth are **both empty** the
  value is 1 (perfect agreement); when exactly one is empty it is 0.
* Soft F1 and Ruzicka "IoU" with ``m = 0`` and ``s = 0`` everywhere: 1 (same convention).
* Object coverage with no foreground (Σs = 0), background coverage with no background
  (Σ(1−s) = 0), and AUC with a one-class ground truth: NaN (undefined).

Sums are accumulated in float64 (float32 on MPS, which has no float64), so the results do not
depend on the image size's effect on float32 rounding.

Example:
    >>> import torch
    >>> m = torch.tensor([[[0.8, 0.2], [0.6, 0.0]]])
    >>> s = torch.tensor([[[True, False], [True, False]]])
    >>> [round(v, 4) for v in cont_iou(m, s).tolist()]  # (0.8 + 0.6) / (1 + 0.2 + 1)
    [0.6364]
    >>> mean_f1(m, s).tolist()
    [0.8888888888888888]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from attrbench.interfaces import EvalBatch, Metric, SideOutputs, Tolerance

__all__ = [
    "F1_CURVE_THRESHOLDS",
    "F1_THRESHOLDS",
    "IOU_THRESHOLDS",
    "Accuracy",
    "Auc",
    "BackgroundCoverage",
    "ContF1",
    "ContIou",
    "IouMean",
    "MeanF1",
    "ObjectCoverage",
    "Overlap",
    "background_coverage",
    "binary_f1",
    "binary_iou",
    "cont_f1",
    "cont_iou",
    "iou_mean",
    "mean_f1",
    "object_coverage",
    "overlap",
    "roc_auc",
    "soft_accuracy",
]

#: Thresholds of the paper's "Mean F1" (``d_f1``).
F1_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
#: Thresholds of the F1 curve that :class:`MeanF1` hands to the report (the paper's "F1 against
#: threshold" figure): 0.1, 0.2, ..., 0.9.
F1_CURVE_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Thresholds of the paper's "Discr. IOU" (``d_IOUs``): 0.1, 0.2, ..., 0.9.
IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ------------------------------------------------------------------------------------ helpers
def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _prepare(masks: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and flatten: returns m (B,N), s (B,N) in the accumulation dtype, valid (B,).

    Non-finite mask values are replaced by 0 in ``m`` (so that no NaN leaks into sorting or
    sums); ``valid`` is False for those images and the callers return NaN there.
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if not isinstance(gt, Tensor):
        raise TypeError(f"gt must be a torch.Tensor, got {type(gt).__name__}")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W), got {tuple(masks.shape)}")
    if gt.shape != masks.shape:
        raise ValueError(
            f"gt must have the masks' shape {tuple(masks.shape)}, got {tuple(gt.shape)}"
        )
    if not masks.is_floating_point():
        raise TypeError(f"masks must be a floating tensor, got {masks.dtype}")
    dtype = _acc_dtype(masks.device)
    m = masks.flatten(1).to(dtype)
    gt = gt.to(masks.device)
    if gt.dtype == torch.bool:
        s = gt.flatten(1).to(dtype)
    else:
        s = gt.flatten(1).to(dtype)
        if s.numel() and not bool(((s == 0) | (s == 1)).all()):
            raise ValueError("gt must be binary (bool or values in {0, 1}); got other values")
    finite = torch.isfinite(m)
    valid = finite.all(dim=1)
    m = torch.where(finite, m, torch.zeros_like(m))
    return m, s, valid


def _nan_where_invalid(values: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid, values, torch.full_like(values, math.nan))


def _ratio(num: Tensor, den: Tensor, if_zero: float) -> Tensor:
    """num / den with ``if_zero`` where den == 0 (no division by zero is evaluated)."""
    zero = den == 0
    safe = torch.where(zero, torch.ones_like(den), den)
    return torch.where(zero, torch.full_like(num, if_zero), num / safe)


def _check_thresholds(thresholds: Sequence[float]) -> Tensor:
    ts = list(thresholds)
    if not ts or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in ts
    ):
        raise ValueError(f"thresholds must be a non-empty sequence of finite numbers, got {ts!r}")
    return torch.tensor(ts, dtype=torch.float64)


def _binary_counts(
    masks: Tensor, gt: Tensor, thresholds: Sequence[float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TP, FP, FN (B, T) of ``masks > t`` against ``gt`` for each threshold, and valid (B,)."""
    m, s, valid = _prepare(masks, gt)
    t = _check_thresholds(thresholds).to(device=m.device, dtype=m.dtype)
    pred = (m.unsqueeze(1) > t.view(1, -1, 1)).to(m.dtype)  # (B, T, N)
    s3 = s.unsqueeze(1)
    tp = (pred * s3).sum(dim=2)
    fp = pred.sum(dim=2) - tp
    fn = s3.sum(dim=2) - tp
    return tp, fp, fn, valid


# ------------------------------------------------------------------------- pure tensor metrics
def binary_f1(masks: Tensor, gt: Tensor, thresholds: Sequence[float] = F1_THRESHOLDS) -> Tensor:
    """Foreground F1 = 2TP / (2TP + FP + FN) of ``masks > t`` vs ``gt`` for each threshold.

    Args:
        masks: (B, H, W) float masks.
        gt: (B, H, W) bool ground-truth foreground.
        thresholds: the thresholds t (strict ``>``).

    Returns:
        (B, T): 1 where prediction and ground truth are both empty; NaN rows for non-finite masks.
    """
    tp, fp, fn, valid = _binary_counts(masks, gt, thresholds)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)
    return _nan_where_invalid(f1, valid.unsqueeze(1))


def binary_iou(masks: Tensor, gt: Tensor, thresholds: Sequence[float] = IOU_THRESHOLDS) -> Tensor:
    """IoU = TP / (TP + FP + FN) of ``masks > t`` vs ``gt`` for each threshold: (B, T).

    Both empty gives 1; non-finite masks give NaN rows.
    """
    tp, fp, fn, valid = _binary_counts(masks, gt, thresholds)
    iou = _ratio(tp, tp + fp + fn, 1.0)
    return _nan_where_invalid(iou, valid.unsqueeze(1))


def mean_f1(masks: Tensor, gt: Tensor, thresholds: Sequence[float] = F1_THRESHOLDS) -> Tensor:
    """The paper's "Mean F1" (``d_f1``): mean of :func:`binary_f1` over t in (0.25, 0.5, 0.75).

    Returns:
        (B,) values in [0, 1].
    """
    return binary_f1(masks, gt, thresholds).mean(dim=1)


def iou_mean(masks: Tensor, gt: Tensor, thresholds: Sequence[float] = IOU_THRESHOLDS) -> Tensor:
    """The paper's "Discr. IOU" (``d_IOUs``): mean of :func:`binary_iou` over t = 0.1, ..., 0.9.

    Returns:
        (B,) values in [0, 1].
    """
    return binary_iou(masks, gt, thresholds).mean(dim=1)


def cont_f1(masks: Tensor, gt: Tensor) -> Tensor:
    """Soft F1 (``c_f1``): 2TP / (2TP + FP + FN) with TP = Σm·s, FP = Σm(1−s), FN = Σ(1−m)s.

    Returns:
        (B,): 1 when m and s are both zero everywhere.
    """
    m, s, valid = _prepare(masks, gt)
    tp = (m * s).sum(dim=1)
    fp = (m * (1 - s)).sum(dim=1)
    fn = ((1 - m) * s).sum(dim=1)
    return _nan_where_invalid(_ratio(2 * tp, 2 * tp + fp + fn, 1.0), valid)


def soft_accuracy(masks: Tensor, gt: Tensor) -> Tensor:
    """Soft accuracy (``acc``): (TP + TN) / (TP + TN + FP + FN) with the soft counts of
    :func:`cont_f1` and TN = Σ(1−m)(1−s). For m in [0, 1] the denominator is the pixel count.

    Returns:
        (B,) values (NaN for an image with zero pixels).
    """
    m, s, valid = _prepare(masks, gt)
    tp = (m * s).sum(dim=1)
    tn = ((1 - m) * (1 - s)).sum(dim=1)
    fp = (m * (1 - s)).sum(dim=1)
    fn = ((1 - m) * s).sum(dim=1)
    return _nan_where_invalid(_ratio(tp + tn, tp + tn + fp + fn, math.nan), valid)


def cont_iou(masks: Tensor, gt: Tensor) -> Tensor:
    """Continuous "IoU" (``c_IOU``, the Ruzicka similarity): Σmin(m, s) / Σmax(m, s).

    Returns:
        (B,): 1 when m and s are both zero everywhere.
    """
    m, s, valid = _prepare(masks, gt)
    num = torch.minimum(m, s).sum(dim=1)
    den = torch.maximum(m, s).sum(dim=1)
    return _nan_where_invalid(_ratio(num, den, 1.0), valid)


def roc_auc(masks: Tensor, gt: Tensor) -> Tensor:
    """Pixel ROC-AUC (``aucs``) of the mask values as scores for the ground-truth labels.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals
    ``sklearn.metrics.roc_auc_score(gt.ravel(), mask.ravel())`` (trapezoidal ROC, a tied
    positive/negative pair counts 1/2). Batched: one sort and two ``searchsorted`` per image row.

    Returns:
        (B,): NaN when the ground truth is all 0 or all 1 (sklearn raises there; the paper's code
        stores ``None`` and drops it) and for non-finite masks.
    """
    m, s, valid = _prepare(masks, gt)
    n = m.shape[1]
    sorted_m, order = torch.sort(m, dim=1)
    sorted_s = torch.gather(s, 1, order)
    sorted_m = sorted_m.contiguous()
    left = torch.searchsorted(sorted_m, sorted_m, right=False)
    right = torch.searchsorted(sorted_m, sorted_m, right=True)
    # 0-based positions left .. right-1 share a value; their mean 1-based rank:
    ranks = (left + right + 1).to(m.dtype) / 2
    n_pos = sorted_s.sum(dim=1)
    n_neg = n - n_pos
    rank_sum = (ranks * sorted_s).sum(dim=1)
    num = rank_sum - n_pos * (n_pos + 1) / 2
    den = n_pos * n_neg
    auc = _ratio(num, den, math.nan)
    return _nan_where_invalid(auc, valid)


def object_coverage(masks: Tensor, gt: Tensor) -> Tensor:
    """Object coverage (``mask_c``): 1 − Σmax(s − m, 0) / Σs, the fraction of the object covered.

    Returns:
        (B,): NaN when the ground truth has no foreground.
    """
    m, s, valid = _prepare(masks, gt)
    missed = (s - m).clamp(min=0).sum(dim=1)
    return _nan_where_invalid(1 - _ratio(missed, s.sum(dim=1), math.nan), valid)


def background_coverage(masks: Tensor, gt: Tensor) -> Tensor:
    """Background coverage (``background_c``): Σmax(m − s, 0) / Σ(1 − s). Lower is better.

    Returns:
        (B,): NaN when the ground truth has no background.
    """
    m, s, valid = _prepare(masks, gt)
    spill = (m - s).clamp(min=0).sum(dim=1)
    return _nan_where_invalid(_ratio(spill, (1 - s).sum(dim=1), math.nan), valid)


def overlap(masks: Tensor, gt: Tensor) -> Tensor:
    """Overlap (``over``, the paper's second "Accuracy"): 1 − mean|s − m|.

    Returns:
        (B,) values (NaN for an image with zero pixels).
    """
    m, s, valid = _prepare(masks, gt)
    if m.shape[1] == 0:
        return torch.full((m.shape[0],), math.nan, dtype=m.dtype, device=m.device)
    return _nan_where_invalid(1 - (s - m).abs().mean(dim=1), valid)


# ----------------------------------------------------------------------------- Metric classes
def score_image_level(fn: Callable[[Tensor, Tensor], Tensor], batch: EvalBatch) -> list[float]:
    """Apply an image-level function to ``batch.merged`` vs ``batch.gt_union``.

    Images with ``has_gt`` False (or all images when ``gt_masks`` is None) get NaN.
    """
    b = batch.batch_size
    gt = batch.gt_union
    if gt is None:
        return [math.nan] * b
    if batch.merged.shape[0] != b:
        raise ValueError(
            f"batch.merged must have {b} images (one per image), got shape "
            f"{tuple(batch.merged.shape)}"
        )
    values = fn(batch.merged, gt)
    if batch.has_gt is not None:
        has_gt = batch.has_gt.to(device=values.device, dtype=torch.bool).reshape(-1)
        if has_gt.shape[0] != b:
            raise ValueError(f"batch.has_gt must have shape ({b},), got {tuple(has_gt.shape)}")
        values = torch.where(has_gt, values, torch.full_like(values, math.nan))
    return [float(v) for v in values.tolist()]


class _ImageLevelMetric(Metric):
    """Shared body of the image-level localisation metrics: no options, one float per image."""

    version: ClassVar[int] = 1
    #: scores in [0, 1] that use the whole range: absolute (about 1 % of the range)
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("absolute", 0.01)
    _fn: ClassVar[Callable[[Tensor, Tensor], Tensor]]

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(
                f"metric '{self.name}' takes no options, got {sorted(options)}"
            )
        super().__init__()

    def score(self, batch: EvalBatch) -> list[float]:
        return score_image_level(type(self)._fn, batch)


class MeanF1(_ImageLevelMetric):
    """Mean F1 (the paper's ``d_f1``), ↑.

    Definition: mean over t in (0.25, 0.5, 0.75) of the binary F1 = 2TP/(2TP+FP+FN) between
    ``merged > t`` and the ground-truth foreground. Paper: Stalder et al., "What You See is What
    You Classify: Black Box Attributions", NeurIPS 2022. Deviation: an image where the thresholded
    mask and the ground truth are both empty scores 1 at that threshold (the paper's code divides
    0 by 0); images without ground truth or with non-finite masks get NaN.
    """

    name = "mean_f1"
    higher_is_better = True
    definition = "mean over t∈{0.25,0.5,0.75} of F1(merged>t, GT foreground)"
    headline = True
    _fn = staticmethod(mean_f1)
    figure_axis = "quality"
    #: per image, F1 at each of :data:`F1_CURVE_THRESHOLDS` (side output for the F1 figure)
    curve_key = "f1_curve"
    curve_title = "F1 against threshold"
    curve_x: ClassVar[tuple[float, ...]] = F1_CURVE_THRESHOLDS

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._curves: dict[str, list[float]] = {}

    def reset(self) -> None:
        super().reset()
        self._curves = {}

    def score(self, batch: EvalBatch) -> list[float]:
        values = super().score(batch)
        gt = batch.gt_union
        if gt is not None and len(batch.image_ids) == batch.batch_size:
            curves = binary_f1(batch.merged, gt, F1_CURVE_THRESHOLDS).cpu().tolist()
            has_gt = batch.has_gt.tolist() if batch.has_gt is not None else [True] * len(curves)
            for iid, c, ok in zip(batch.image_ids, curves, has_gt):
                if ok:
                    self._curves[str(iid)] = c
        return values

    def side_outputs(self) -> SideOutputs:
        return SideOutputs(curves=dict(self._curves))


class ContF1(_ImageLevelMetric):
    """Continuous F1 (the paper's ``c_f1``), ↑.

    Definition: 2TP/(2TP+FP+FN) with soft counts TP=Σm·s, FP=Σm(1−s), FN=Σ(1−m)s. Paper:
    Stalder et al., NeurIPS 2022. Deviation: m = s = 0 everywhere gives 1 (undefined in the paper).
    """

    name = "cont_f1"
    higher_is_better = True
    definition = "soft F1 2Σms/(Σm+Σs) of the merged mask vs the GT foreground"
    _fn = staticmethod(cont_f1)


class Accuracy(_ImageLevelMetric):
    """Soft pixel accuracy (the paper's ``acc``), ↑.

    Definition: (TP+TN)/(TP+TN+FP+FN) with the soft counts of :class:`ContF1` and
    TN=Σ(1−m)(1−s). Paper: Stalder et al., NeurIPS 2022. No deviation.
    """

    name = "accuracy"
    higher_is_better = True
    definition = "soft pixel accuracy (TP+TN)/(TP+TN+FP+FN) of the merged mask"
    _fn = staticmethod(soft_accuracy)


class IouMean(_ImageLevelMetric):
    """Discrete IoU (the paper's ``d_IOUs``), ↑.

    Definition: mean over t = 0.1, 0.2, ..., 0.9 of IoU(merged > t, GT foreground). Paper:
    Stalder et al., NeurIPS 2022. Deviation: both empty at a threshold gives IoU 1.
    """

    name = "iou_mean"
    higher_is_better = True
    definition = "mean over t∈{0.1,...,0.9} of IoU(merged>t, GT foreground)"
    _fn = staticmethod(iou_mean)


class ContIou(_ImageLevelMetric):
    """Continuous IoU (the paper's ``c_IOU``; the Ruzicka similarity), ↑.

    Definition: Σmin(m, s)/Σmax(m, s). Paper: Stalder et al., NeurIPS 2022. Deviation: m = s = 0
    everywhere gives 1.
    """

    name = "cont_iou"
    higher_is_better = True
    definition = "Σmin(m,s)/Σmax(m,s) of the merged mask vs the GT foreground"
    _fn = staticmethod(cont_iou)
    figure_axis = "quality"


class Auc(_ImageLevelMetric):
    """Pixel ROC-AUC (the paper's ``aucs``), ↑.

    Definition: ROC-AUC of the merged mask values as scores for the ground-truth foreground
    pixels, computed in torch with average ranks for ties (equal to sklearn's
    ``roc_auc_score``). Paper: Stalder et al., NeurIPS 2022 (they call sklearn). Deviation: none;
    the undefined one-class case is NaN (the paper stores None and drops it, same effect).
    """

    name = "auc"
    higher_is_better = True
    definition = "pixel ROC-AUC of the merged mask against the GT foreground"
    _fn = staticmethod(roc_auc)


class ObjectCoverage(_ImageLevelMetric):
    """Object coverage (the paper's ``mask_c``), ↑.

    Definition: 1 − Σmax(s − m, 0)/Σs. Paper: Stalder et al., NeurIPS 2022. Deviation: an
    image with an empty ground-truth foreground gets NaN (the paper divides by 0).
    """

    name = "object_coverage"
    higher_is_better = True
    definition = "1 − Σmax(s−m,0)/Σs: fraction of the object covered by the merged mask"
    _fn = staticmethod(object_coverage)


class BackgroundCoverage(_ImageLevelMetric):
    """Background coverage (the paper's ``background_c``), ↓.

    Definition: Σmax(m − s, 0)/Σ(1 − s). Paper: Stalder et al., NeurIPS 2022. Deviation: an image
    whose foreground fills the whole image gets NaN (the paper divides by 0).
    """

    name = "background_coverage"
    higher_is_better = False
    #: good methods score 0.02 to 0.1: relative, so that ±0.01 is not ±50 % of such a value
    regression_tolerance = Tolerance("relative", 0.05, floor=0.002)
    definition = "Σmax(m−s,0)/Σ(1−s): fraction of the background covered by the merged mask"
    _fn = staticmethod(background_coverage)


class Overlap(_ImageLevelMetric):
    """Overlap (the paper's ``over``, its second "Accuracy" column), ↑.

    Definition: 1 − mean|s − m|. Paper: Stalder et al., NeurIPS 2022. No deviation.
    """

    name = "overlap"
    higher_is_better = True
    definition = "1 − mean|s − m| of the merged mask vs the GT foreground"
    _fn = staticmethod(overlap)
