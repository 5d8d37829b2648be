"""Perturbation metrics: deletion / insertion AUC (Petsiuk et al., BMVC 2018) and the saliency
metric of Dabkowski & Gal (NeurIPS 2017) as the Stalder et al. (NeurIPS 2022) code computes it.

All logic lives in pure batched functions that run on the images' device:

* :func:`step_counts` — how many pixels step ``j`` perturbs.
* :func:`saliency_ranks` — the rank of every pixel in decreasing saliency order (one stable
  ``argsort`` per map, ties broken by raster order).
* :func:`perturbation_baseline` — the ``"zero"`` or ``"blur"`` replacement image.
* :func:`deletion_insertion_curves` — the (P, steps + 1) score curves, built in chunks of
  ``batch_size`` perturbed images per classifier forward (no Python loop over pixels or steps).
* :func:`curve_auc` — trapezoid rule over the perturbed fraction in [0, 1].
* :func:`saliency_metric` — log(max(area, 0.05)) − log(Σ_{c∈GT} p_c), the sum over objects
  (VOC) or classes (COCO) by :func:`object_counts`.

The :class:`~attrbench.interfaces.Metric` classes at the bottom call them on an
:class:`~attrbench.interfaces.EvalBatch`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class SumOfChannel0(nn.Module):      # logit = sum of channel 0 (a closed-form oracle)
    ...     def forward(self, x):
    ...         return x[:, 0].flatten(1).sum(1, keepdim=True)
    >>> img = torch.ones(1, 3, 2, 2)
    >>> sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    >>> c = deletion_insertion_curves(SumOfChannel0(), img, sal, torch.tensor([0]), steps=4,
    ...                               mode="deletion", baseline="zero", score="logit")
    >>> c.tolist()
    [[4.0, 3.0, 2.0, 1.0, 0.0]]
    >>> curve_auc(c, 4).tolist()
    [2.0]
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from attrbench.checks import check_choice as _check_choice
from attrbench.checks import check_int as _check_int
from attrbench.interfaces import EvalBatch, Metric, SideOutputs, Tolerance
from attrbench.ops import gaussian_blur, keep_pair_curves, pair_mean

__all__ = [
    "BASELINES",
    "SCORES",
    "DeletionAUC",
    "InsertionAUC",
    "SaliencyMetric",
    "class_scores",
    "curve_auc",
    "deletion_insertion_curves",
    "object_counts",
    "perturbation_baseline",
    "saliency_metric",
    "saliency_ranks",
    "step_counts",
]

#: Ways of turning the classifier's (N, K) logits into the curve's score of the target class.
SCORES: tuple[str, ...] = ("sigmoid", "softmax", "logit")
#: Replacement images for perturbed pixels.
BASELINES: tuple[str, ...] = ("zero", "blur")


# ------------------------------------------------------------------------------------ helpers
def _finite_maps(maps: Tensor) -> Tensor:
    """(N, ...) -> (N,) bool: finite everywhere (every finite map is scored, all-zero ones
    included; only non-finite maps are undefined)."""
    return torch.isfinite(maps.flatten(1)).all(dim=1)


def class_scores(logits: Tensor, score: str) -> Tensor:
    """(N, K) logits -> (N, K) scores: ``sigmoid`` (multi-label classifiers, default),
    ``softmax`` over all K classes, or the raw ``logit`` (for closed-form tests)."""
    _check_choice("score", score, SCORES)
    if logits.ndim != 2:
        raise ValueError(f"classifier must return (N, K) logits, got shape {tuple(logits.shape)}")
    if score == "sigmoid":
        return torch.sigmoid(logits)
    if score == "softmax":
        return torch.softmax(logits, dim=1)
    return logits


def step_counts(num_pixels: int, steps: int, device: torch.device | str | None = None) -> Tensor:
    """(steps + 1,) long: step ``j`` perturbs the first ``n_j = round(j * HW / steps)`` pixels,
    rounded half up (``floor(j * HW / steps + 1/2)``, exact integer arithmetic).

    Example:
        >>> step_counts(10, 4).tolist()
        [0, 3, 5, 8, 10]
    """
    _check_int("steps", steps)
    _check_int("num_pixels", num_pixels)
    j = torch.arange(steps + 1, device=device, dtype=torch.long)
    return (2 * j * num_pixels + steps) // (2 * steps)


def saliency_ranks(maps: Tensor, dtype: torch.dtype = torch.long) -> Tensor:
    """(P, H, W) maps -> (P, H*W) rank (``dtype``, default long) of each pixel in decreasing
    saliency order.

    Rank 0 is the most salient pixel. Ties are broken deterministically by raster order (the
    pixel with the smaller flat index ``y * W + x`` comes first): a *stable* descending
    ``argsort`` computed once per map. A constant map (all zero included) is therefore perturbed
    in raster order, top row first. Non-finite values must be removed by the caller.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (P, H, W), got {tuple(maps.shape)}")
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty(order.shape, dtype=dtype, device=order.device)
    ar = torch.arange(flat.shape[1], device=flat.device, dtype=dtype).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


def perturbation_baseline(images: Tensor, baseline: str, sigma: float | None = None) -> Tensor:
    """The image perturbed pixels take: ``"zero"`` (0 in normalised space = the dataset's mean
    colour) or ``"blur"`` (Gaussian blur of the image; ``sigma=None`` -> ``5 * min(H, W) / 224``
    px, i.e. Petsiuk et al.'s sigma 5 at 224 px scaled to the image size)."""
    _check_choice("baseline", baseline, BASELINES)
    if baseline == "zero":
        return torch.zeros_like(images)
    if sigma is None:
        sigma = 5.0 * min(images.shape[-2:]) / 224.0
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    return gaussian_blur(images, float(sigma), radius=max(1, math.ceil(3 * sigma)))


# ------------------------------------------------------------------------- deletion/insertion
@torch.no_grad()
def deletion_insertion_curves(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    targets: Tensor,
    steps: int = 32,
    mode: str = "deletion",
    baseline: str = "zero",
    *,
    sigma: float | None = None,
    score: str = "sigmoid",
    batch_size: int = 256,
    pair_image: Tensor | None = None,
) -> Tensor:
    """Deletion or insertion curves of Petsiuk et al. (BMVC 2018), fully batched.

    For pair ``p`` (an image, a saliency map and a target class) and step ``j = 0..steps``, the
    first ``n_j = round(j * HW / steps)`` pixels in decreasing saliency order (see
    :func:`saliency_ranks`) are *deleted* (set to the baseline; the curve starts at the clean
    image) or *inserted* (copied from the image into the baseline; the curve starts at the
    baseline). All three colour channels of a pixel move together. Entry ``[p, j]`` is the score
    of ``targets[p]`` on the perturbed image.

    Implementation: the ranks are computed once by ``argsort``; the ``P * (steps + 1)`` perturbed
    images are generated chunk by chunk (``batch_size`` images per classifier forward) as
    ``where(rank < n_j, ...)`` on the images' device. Nothing loops over pixels or steps.

    Args:
        model: the classifier, (N, 3, H, W) -> (N, K) logits. Called under ``no_grad``; its mode
            is not changed (pass it in eval mode).
        images: (P, 3, H, W) normalised images, one per pair, or (B, 3, H, W) with
            ``pair_image``.
        masks: (P, H, W) saliency maps (must be finite).
        targets: (P,) class ids.
        steps: number of steps (default 32).
        mode: ``"deletion"`` or ``"insertion"``.
        baseline: ``"zero"`` or ``"blur"`` (see :func:`perturbation_baseline`).
        sigma: blur sigma in pixels (``"blur"`` only).
        score: ``"sigmoid"`` (default), ``"softmax"`` or ``"logit"`` (see :func:`class_scores`).
        batch_size: perturbed images per classifier forward (default 256, for GPUs). A pure
            throughput knob (results do not depend on it); on a CPU smaller chunks (16-64) can be
            faster per image because activations stay in cache.
        pair_image: optional (P,) index of each pair's image in ``images``.

    Returns:
        (P, steps + 1) float32 curves on the images' device.
    """
    _check_choice("mode", mode, ("deletion", "insertion"))
    _check_choice("baseline", baseline, BASELINES)
    _check_choice("score", score, SCORES)
    steps = _check_int("steps", steps)
    batch_size = _check_int("batch_size", batch_size)
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images)}")
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"masks must be a (P, H, W) tensor, got "
                         f"{tuple(masks.shape) if isinstance(masks, Tensor) else type(masks)}")
    p, h, w = masks.shape
    if images.shape[-2:] != (h, w):
        raise ValueError(f"masks {tuple(masks.shape)} and images {tuple(images.shape)} differ in "
                         "spatial size")
    dev = images.device
    if pair_image is None:
        if images.shape[0] != p:
            raise ValueError(f"images must have one row per mask ({p}), got {images.shape[0]} "
                             "(or pass pair_image)")
        pair_image = torch.arange(p, device=dev)
    else:
        pair_image = pair_image.to(device=dev, dtype=torch.long)
        if pair_image.shape != (p,):
            raise ValueError(f"pair_image must have shape ({p},), got {tuple(pair_image.shape)}")
    targets = torch.as_tensor(targets, device=dev).long()
    if targets.shape != (p,):
        raise ValueError(f"targets must have shape ({p},), got {tuple(targets.shape)}")
    if not torch.isfinite(masks).all():
        raise ValueError("masks contain non-finite values; filter such pairs out first")
    if p == 0:
        return torch.empty(0, steps + 1, device=dev)

    hw = h * w
    # int32 ranks: half the memory traffic of the per-chunk gather (H*W < 2**31)
    ranks = saliency_ranks(masks.to(dev), torch.int32).view(p, 1, h, w)  # (P,1,H,W)
    counts = step_counts(hw, steps, device=dev).to(torch.int32)  # (S,)
    zero = baseline == "zero"
    base = None if zero else perturbation_baseline(images, baseline, sigma)  # (B,3,H,W)

    s1 = steps + 1
    total = p * s1
    # item k = (pair k // s1, step k % s1): per-item indices built once, sliced per chunk
    # (expand + reshape rather than repeat_interleave, which synchronises on CUDA)
    item_pair = torch.arange(p, device=dev).view(-1, 1).expand(p, s1).reshape(-1)
    item_img = pair_image[item_pair]
    item_count = counts.repeat(p).view(-1, 1, 1, 1)
    item_target = targets[item_pair].view(-1, 1)
    parts = []
    for start in range(0, total, batch_size):  # loop over chunks of perturbed images only
        sl = slice(start, start + batch_size)
        sel = ranks[item_pair[sl]] < item_count[sl]  # (n,1,H,W) bool: pixel is perturbed
        img = item_img[sl]
        # deletion: a perturbed pixel takes the baseline; insertion: it takes the image
        if zero:
            # images[img] is a fresh gathered tensor: fill it in place (one copy less)
            x = images[img].masked_fill_(sel if mode == "deletion" else ~sel, 0.0)
        elif mode == "deletion":
            x = torch.where(sel, base[img], images[img])
        else:
            x = torch.where(sel, images[img], base[img])
        logits = model(x)
        if score == "softmax":
            parts.append(class_scores(logits, score).gather(1, item_target[sl]))
        else:  # elementwise scores: gather the target logit first
            if logits.ndim != 2:
                class_scores(logits, score)  # raises the shape error
            z = logits.gather(1, item_target[sl])
            parts.append(torch.sigmoid(z) if score == "sigmoid" else z)
    out = torch.cat(parts).float()
    return out.view(p, s1)


def curve_auc(curves: Tensor, steps: int | None = None, num_pixels: int | None = None) -> Tensor:
    """(P, S) curves -> (P,) area under the curve by the trapezoid rule over x in [0, 1].

    x is the perturbed fraction ``n_j / HW`` when ``num_pixels`` is given (exact, uses the
    rounded counts), else the nominal ``j / steps``. A curve with a NaN gives NaN.
    """
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must have shape (P, S) with S >= 2, got {tuple(curves.shape)}")
    s = curves.shape[1] - 1
    if steps is not None and steps != s:
        raise ValueError(f"curves have {s + 1} points, expected steps + 1 = {steps + 1}")
    if num_pixels is None:
        x = torch.linspace(0, 1, s + 1, device=curves.device, dtype=torch.float64)
    else:
        x = step_counts(num_pixels, s, device=curves.device).double() / num_pixels
    return torch.trapezoid(curves.double(), x, dim=1).to(curves.dtype)


# ----------------------------------------------------------------------------------- saliency
@torch.no_grad()
def saliency_metric(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    *,
    score: str = "softmax",
    min_area: float = 0.05,
) -> Tensor:
    """Dabkowski & Gal's saliency metric as the Stalder et al. code computes it, batched.

    ``s = log(max(mean(m), min_area)) - log(sum_k w_k p_k)`` with ``p`` the ``score`` of the
    classifier on ``m * x`` (the mask multiplies the normalised image: masked-out pixels become
    the mean colour) and ``w = labels``: multi-hot (each ground-truth class once) or counts
    (each class as many times as the image has objects of it, as the paper's code does on VOC).
    ``score="softmax"`` (the paper's code: softmax over all K classes) or ``"sigmoid"``
    (per-class probabilities of a multi-label classifier; the sum can exceed 1, making ``s``
    smaller than with softmax). Every finite mask is scored, the all-zero one included (its
    area is floored at ``min_area``), as the paper's code scores its constant-0 row.

    Args:
        model: classifier (N, 3, H, W) -> (N, K) logits.
        images: (B, 3, H, W) normalised images.
        masks: (B, H, W) merged masks in [0, 1].
        labels: (B, K) ground-truth weights (multi-hot, or object counts per class).
        score: ``"softmax"`` (default) or ``"sigmoid"``.
        min_area: area floor (paper: 0.05).

    Returns:
        (B,) values; NaN for non-finite masks and images without GT classes.
    """
    _check_choice("score", score, ("softmax", "sigmoid"))
    if masks.ndim != 3 or images.ndim != 4 or masks.shape[0] != images.shape[0] \
            or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks (B,H,W) and images (B,3,H,W) must match, got "
                         f"{tuple(masks.shape)} and {tuple(images.shape)}")
    b = masks.shape[0]
    finite = torch.isfinite(masks.flatten(1)).all(dim=1)
    m = torch.where(finite.view(-1, 1, 1), masks, torch.zeros_like(masks)).to(images.dtype)
    probs = class_scores(model(m.unsqueeze(1) * images), score).double()
    if labels.shape != (b, probs.shape[1]):
        raise ValueError(f"labels must have shape {(b, probs.shape[1])}, got {tuple(labels.shape)}")
    weights = labels.to(device=probs.device, dtype=probs.dtype).clamp_min(0)
    p_gt = (probs * weights).sum(dim=1)
    area = m.double().flatten(1).mean(dim=1)
    val = torch.log(area.clamp_min(min_area)) - torch.log(p_gt)
    ok = finite & (weights > 0).any(dim=1)
    return torch.where(ok, val, torch.full_like(val, math.nan)).float()


def object_counts(batch: EvalBatch, count: str = "auto") -> Tensor:
    """(B, K) ground-truth weights of the saliency metric.

    ``count="objects"``: per class, the number of the image's annotated objects (its entries in
    ``batch.boxes``, difficult ones included); ``"classes"``: the multi-hot labels; ``"auto"``:
    objects for VOC-layout data and classes for COCO (``batch.originals[b].kind``), as the paper's
    code sums the probabilities over the VOC annotation's object list but over the distinct COCO
    categories; classes where the kind is unknown. An image without boxes falls back to its
    labels.
    """
    _check_choice("count", count, ("auto", "objects", "classes"))
    labels = (batch.labels > 0.5).to(torch.float64)
    if count == "classes":
        return labels
    out = labels.clone()
    originals = list(batch.originals) if batch.originals else [None] * batch.batch_size
    k = labels.shape[1]
    for b in range(batch.batch_size):  # per image: its list of objects
        kind = getattr(originals[b], "kind", None) if b < len(originals) else None
        if count == "auto" and kind != "voc":
            continue
        boxes = batch.boxes[b] if len(batch.boxes) > b else ()
        if not boxes:
            continue
        row = torch.zeros(k, dtype=torch.float64)
        for bx in boxes:
            if 0 <= int(bx[0]) < k:
                row[int(bx[0])] += 1
        out[b] = row.to(out.device)
    return out


# ------------------------------------------------------------------------------------ metrics
class _CurveMetric(Metric):
    """Shared code of :class:`DeletionAUC` and :class:`InsertionAUC`."""

    mode: ClassVar[str] = "deletion"
    default_baseline: ClassVar[str] = "zero"
    #: areas under probability curves, in [0, 1]
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("absolute", 0.01)

    def __init__(
        self,
        steps: int = 32,
        baseline: str | None = None,
        sigma: float | None = None,
        score: str = "sigmoid",
        batch_size: int = 256,
        keep_curves: bool = True,
    ) -> None:
        baseline = self.default_baseline if baseline is None else baseline
        _check_int("steps", steps)
        _check_int("batch_size", batch_size)
        _check_choice("baseline", baseline, BASELINES)
        _check_choice("score", score, SCORES)
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")
        super().__init__(steps=steps, baseline=baseline, sigma=sigma, score=score,
                         batch_size=batch_size, keep_curves=keep_curves)
        self.steps, self.baseline, self.sigma = steps, baseline, sigma
        self.score_kind, self.batch_size, self.keep_curves = score, batch_size, keep_curves
        #: image id -> {class id: curve as a list of steps + 1 floats}; filled by :meth:`score`
        self.curves: dict[str, dict[int, list[float]]] = {}
        self._seen = 0

    def reset(self) -> None:
        super().reset()
        self.curves = {}
        self._seen = 0

    def side_outputs(self) -> SideOutputs:
        """The stored curves, ``{image_id: {class id as str: curve}}`` (see :attr:`curves`)."""
        return SideOutputs(curves={iid: {str(c): v for c, v in per_class.items()}
                                   for iid, per_class in self.curves.items()})

    def pair_curves(self, batch: EvalBatch) -> tuple[Tensor, Tensor]:
        """(P, steps + 1) curves and (P,) bool validity of the batch's pairs (only non-finite
        maps are invalid and get NaN rows; a constant or all-zero map is perturbed in raster
        order, see :func:`saliency_ranks`)."""
        if batch.model is None:
            raise ValueError(f"metric '{self.name}' needs batch.model")
        masks = batch.class_masks
        valid = _finite_maps(masks)
        p = masks.shape[0]
        curves = torch.full((p, self.steps + 1), math.nan, device=batch.images.device)
        if valid.any():
            vi = valid.nonzero().squeeze(1)
            curves[vi] = deletion_insertion_curves(
                batch.model, batch.images, masks[vi].to(batch.images.device),
                batch.pair_class[vi], self.steps, self.mode, self.baseline, sigma=self.sigma,
                score=self.score_kind, batch_size=self.batch_size,
                pair_image=batch.pair_image[vi])
        return curves, valid

    def score(self, batch: EvalBatch) -> list[float]:
        curves, _ = self.pair_curves(batch)
        hw = int(batch.class_masks.shape[-1] * batch.class_masks.shape[-2])
        auc = curve_auc(curves, self.steps, num_pixels=hw) if curves.shape[0] else curves[:, 0]
        b = batch.batch_size
        vals = pair_mean(auc, batch.pair_image, b)
        if self.keep_curves:
            keep_pair_curves(self.curves, curves, batch.pair_image, batch.pair_class,
                             batch.image_ids if len(batch.image_ids) == b else (), self._seen)
        self._seen += b
        return vals.tolist()


class DeletionAUC(_CurveMetric):
    """Deletion AUC (Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of
    Black-box Models". BMVC 2018). Lower is better.

    Per (image, GT class) pair, the pixels of the image are set to the baseline in decreasing
    order of the pair's class mask (``batch.class_masks``), in ``steps`` steps (step ``j``
    deletes the first ``round(j * HW / steps)`` pixels, ``j = 0..steps``); the curve is the
    target class's score after each step and the value is its area (trapezoid rule over the
    deleted fraction in [0, 1]). Per-image value: the mean over the image's GT classes (NaN if
    any of them is NaN: a failure on one class is a failure of the image).

    Defaults: ``steps=32``, ``baseline="zero"`` (0 in normalised space = the mean colour, as in
    the paper's deletion), ``score="sigmoid"`` (the classifiers are multi-label), ``batch_size=256``
    perturbed images per forward.

    Deviations from the paper: the paper deletes a fixed number of pixels per step (224 at
    224 px) on a softmax ImageNet classifier; here the number of steps is fixed and the score is
    the sigmoid (option ``score="softmax"``; ``"logit"`` is for closed-form tests). Saliency ties
    are broken by raster order (stable sort), so every finite map is scored: a constant or
    all-zero map (the ``constant_*`` sanity rows, or a method that returns nothing on a hard
    image) deletes the image row by row from the top. Non-finite maps give NaN (the runner fails
    such images before).

    Curves: after :meth:`update`, ``self.curves[image_id][class_id]`` holds the curve (a list of
    ``steps + 1`` floats; the x values are ``step_counts(H*W, steps) / (H*W)``). Keys are the
    batch's ``image_ids`` (or running indices "0", "1", ... when it has none); :meth:`reset`
    clears them; ``keep_curves=False`` disables storing.
    """

    name = "deletion_auc"
    higher_is_better = False
    version = 2
    definition = "area under the target score curve as pixels are removed in saliency order"
    headline = True
    mode = "deletion"
    default_baseline = "zero"
    curve_key = "deletion_curve"
    curve_title = "deletion (↓ area)"


class InsertionAUC(_CurveMetric):
    """Insertion AUC (Petsiuk, Das, Saenko. BMVC 2018). Higher is better.

    Like :class:`DeletionAUC`, but the curve starts from the baseline image and the pixels of
    the image are inserted in decreasing saliency order. Default ``baseline="blur"`` (the paper
    inserts into a blurred copy of the image; here a Gaussian with ``sigma=None`` ->
    ``5 * min(H, W) / 224`` px, i.e. the paper's sigma 5 at 224 px, kernel radius ``3 sigma``
    where the paper uses an 11-px kernel); ``baseline="zero"`` is available. Other defaults,
    deviations, NaN rules and the ``self.curves`` side attribute: see :class:`DeletionAUC`.
    """

    name = "insertion_auc"
    higher_is_better = True
    version = 2
    definition = "area under the target score curve as pixels are inserted in saliency order"
    headline = True
    mode = "insertion"
    default_baseline = "blur"
    curve_key = "insertion_curve"
    curve_title = "insertion (↑ area)"


class SaliencyMetric(Metric):
    """Saliency metric (Dabkowski & Gal. "Real Time Image Saliency for Black Box Classifiers".
    NeurIPS 2017), as computed by Stalder et al. (NeurIPS 2022, ``sal``). Lower is better.

    Per image: ``log(max(mean(m), 0.05)) - log(sum_{c in GT} p_c)`` with ``m`` the merged mask
    (``batch.merged``) and ``p = softmax(F(m * x))`` over all K classes (``x`` normalised, so
    masked pixels are the mean colour). The sum runs as the paper's code runs it on each
    dataset: on VOC-layout data over the annotation's objects (a class with three objects counts
    three times, difficult objects included), on COCO over the distinct categories. See
    :func:`saliency_metric` and :func:`object_counts`.

    Options: ``score="softmax"`` (default, the paper's code, even for multi-label classifiers)
    or ``"sigmoid"`` (per-class probabilities summed over the GT classes); ``min_area=0.05``;
    ``count="auto"`` (objects on VOC-layout data, classes on COCO), ``"objects"`` or
    ``"classes"``.

    Every finite merged mask is scored; an all-zero one has area ``min_area`` and the
    probabilities of the blank (mean-colour) image, as the paper's constant-0 row. Deviations:
    Dabkowski & Gal crop the salient region and resize it; the Stalder et al. code, followed
    here, multiplies the mask with the image instead. Images without GT classes are NaN.
    """

    name = "saliency"
    higher_is_better = False
    version = 2
    definition = ("log(max(area, 0.05)) - log(sum of GT softmax probs on the masked image; VOC: "
                  "one term per object, COCO: per class)")
    #: an unbounded log-ratio (about -3 to 0.2 here): relative, with a floor for values near 0
    regression_tolerance = Tolerance("relative", 0.05, floor=0.02)

    def __init__(self, score: str = "softmax", min_area: float = 0.05,
                 count: str = "auto") -> None:
        _check_choice("score", score, ("softmax", "sigmoid"))
        _check_choice("count", count, ("auto", "objects", "classes"))
        if not (isinstance(min_area, (int, float)) and 0 < min_area <= 1):
            raise ValueError(f"min_area must be in (0, 1], got {min_area!r}")
        super().__init__(score=score, min_area=min_area, count=count)
        self.score_kind, self.min_area, self.count = score, float(min_area), count

    def score(self, batch: EvalBatch) -> list[float]:
        if batch.model is None:
            raise ValueError(f"metric '{self.name}' needs batch.model")
        vals = saliency_metric(batch.model, batch.images, batch.merged.to(batch.images.device),
                               object_counts(batch, self.count), score=self.score_kind,
                               min_area=self.min_area)
        return vals.tolist()
