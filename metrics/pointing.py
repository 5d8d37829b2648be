"""Pointing-game metrics: the EBP/TorchRay pointing game and the Score-CAM energy pointing game.

Both are per-pair metrics: for each (image, ground-truth class) pair they read that pair's class
mask ``batch.class_masks[p]`` and the class's ground-truth region. The region is the class's
segmentation ``batch.gt_masks[b, c]`` when the image has segmentation, otherwise the union of the
class's boxes ``batch.boxes[b]`` (option ``use_boxes``, see :func:`class_regions`).

All logic lives in pure batched tensor functions (:func:`pointing_points`,
:func:`pointing_game`, :func:`energy_pointing_game`, :func:`boxes_to_regions`); the Metric classes
only gather the regions and format the per-image values.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 8, 8); maps[0, 0, 0] = 1.0
    >>> region = torch.zeros(1, 8, 8, dtype=torch.bool); region[0, 3, 4] = True
    >>> pointing_game(maps, region, tolerance=5.0).tolist()   # distance 5 -> hit
    [1.0]
    >>> pointing_game(maps, region, tolerance=4.9).tolist()
    [0.0]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from attrbench.interfaces import EvalBatch, Metric, Tolerance

__all__ = [
    "DEFAULT_TOLERANCE",
    "EnergyPointingGame",
    "PointingGame",
    "boxes_to_regions",
    "class_regions",
    "energy_pointing_game",
    "pointing_game",
    "pointing_points",
]

#: The EBP/TorchRay tolerance in pixels, defined for images whose shorter side is 224 px.
DEFAULT_TOLERANCE = 15.0



# ------------------------------------------------------------------------------------ helpers
def _check_maps(maps: Tensor) -> None:
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (P, H, W), got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise TypeError(f"maps must be a floating tensor, got {maps.dtype}")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"maps must have at least one pixel, got shape {tuple(maps.shape)}")


def _check_regions(regions: Tensor, maps: Tensor) -> Tensor:
    if not isinstance(regions, Tensor):
        raise TypeError(f"regions must be a torch.Tensor, got {type(regions).__name__}")
    if regions.shape != maps.shape:
        raise ValueError(
            f"regions must have the maps' shape {tuple(maps.shape)}, got {tuple(regions.shape)}"
        )
    return regions.to(device=maps.device, dtype=torch.bool)


def _check_tolerance(tolerance: Any) -> float:
    if (
        not isinstance(tolerance, (int, float))
        or isinstance(tolerance, bool)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ValueError(f"tolerance must be a finite number >= 0 (pixels), got {tolerance!r}")
    return float(tolerance)


def _check_use_boxes(use_boxes: Any) -> None:
    if not ((isinstance(use_boxes, str) and use_boxes == "auto") or isinstance(use_boxes, bool)):
        raise ValueError(f"use_boxes must be one of 'auto', True, False, got {use_boxes!r}")


def _usable(maps: Tensor) -> Tensor:
    """(P,) True where the map is finite everywhere and not all zero."""
    flat = maps.flatten(1)
    return torch.isfinite(flat).all(dim=1) & (flat != 0).any(dim=1)


# ------------------------------------------------------------------------- pure tensor metrics
def pointing_points(maps: Tensor) -> tuple[Tensor, Tensor]:
    """The point of each map: its argmax, ties broken by the FIRST maximum in raster order.

    A constant (non-zero) map therefore points at pixel (0, 0). The tie rule is implemented
    explicitly (smallest flat index among the maxima), so it does not depend on the backend's
    ``argmax``.

    Args:
        maps: (P, H, W) float maps.

    Returns:
        ``(points, usable)``: points (P, 2) long as (y, x); usable (P,) bool, False for maps
        with a non-finite value or that are zero everywhere (their point is meaningless).
    """
    _check_maps(maps)
    p, h, w = maps.shape
    flat = maps.flatten(1)
    usable = _usable(maps)
    clean = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    mx = clean.amax(dim=1, keepdim=True)
    idx = torch.arange(h * w, device=maps.device).expand(p, -1)
    first = torch.where(clean == mx, idx, torch.full_like(idx, h * w)).amin(dim=1)
    points = torch.stack((first // w, first % w), dim=1)
    return points, usable


def pointing_game(maps: Tensor, regions: Tensor, tolerance: float = DEFAULT_TOLERANCE) -> Tensor:
    """EBP pointing game per pair: 1 if the map's maximum lies within ``tolerance`` px of the
    region, else 0.

    Hit iff some region pixel (y, x) satisfies (y − py)² + (x − px)² ≤ tolerance², where
    (py, px) is :func:`pointing_points` (pixel-centre distances, computed directly on the pixel
    grid; no distance transform).

    Args:
        maps: (P, H, W) float saliency maps.
        regions: (P, H, W) bool ground-truth regions.
        tolerance: radius in pixels (>= 0). 15 px is the protocol at 224 px.

    Returns:
        (P,) float: 1.0 hit, 0.0 miss, NaN where the map is non-finite or all zero (never a hit)
        or the region is empty (nothing to point at).
    """
    _check_maps(maps)
    regions = _check_regions(regions, maps)
    tol = _check_tolerance(tolerance)
    points, usable = pointing_points(maps)
    _, h, w = maps.shape
    ys = torch.arange(h, device=maps.device).view(1, h, 1)
    xs = torch.arange(w, device=maps.device).view(1, 1, w)
    d2 = (ys - points[:, 0].view(-1, 1, 1)) ** 2 + (xs - points[:, 1].view(-1, 1, 1)) ** 2
    hit = (regions & (d2 <= tol * tol)).flatten(1).any(dim=1)
    defined = usable & regions.flatten(1).any(dim=1)
    out = hit.to(torch.float32)
    return torch.where(defined, out, torch.full_like(out, math.nan))


def energy_pointing_game(maps: Tensor, regions: Tensor) -> Tensor:
    """Energy pointing game per pair: Σ(max(map, 0) · region) / Σ max(map, 0).

    Args:
        maps: (P, H, W) float saliency maps (negative values are clipped to 0).
        regions: (P, H, W) bool ground-truth regions.

    Returns:
        (P,) values in [0, 1]; NaN where the map is non-finite, its clipped sum is zero, or the
        region is empty.
    """
    _check_maps(maps)
    regions = _check_regions(regions, maps)
    dtype = torch.float32 if maps.device.type == "mps" else torch.float64
    flat = maps.flatten(1).to(dtype)
    finite = torch.isfinite(flat).all(dim=1)
    pos = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat)).clamp(min=0)
    total = pos.sum(dim=1)
    inside = (pos * regions.flatten(1).to(dtype)).sum(dim=1)
    defined = finite & (total > 0) & regions.flatten(1).any(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(defined, inside / safe, torch.full_like(inside, math.nan))


def boxes_to_regions(
    boxes: Tensor, box_pair: Tensor, num_pairs: int, height: int, width: int
) -> Tensor:
    """Rasterise boxes and OR them per pair: (NB, 4) boxes -> (num_pairs, H, W) bool.

    Box convention (that of ``attrbench.data.voc``): ``(x0, y0, x1, y1)`` in pixel units of the
    resized image, inclusive, so the box spans [x0, x1 + 1) × [y0, y1 + 1) in pixel-edge
    coordinates; a pixel is covered iff its centre lies inside, i.e. columns
    ceil(x0 − 0.5) .. ceil(x1 + 0.5) − 1 (exactly x0 .. x1 for integer boxes). A box is at least
    one pixel wide and high. Boxes outside the image cover nothing.

    Args:
        boxes: (NB, 4) float boxes.
        box_pair: (NB,) long index of the pair each box belongs to.
        num_pairs, height, width: output size.
    """
    device = boxes.device
    out = torch.zeros(num_pairs, height * width, dtype=torch.int32, device=device)
    if boxes.shape[0] == 0:
        return out.view(num_pairs, height, width).bool()
    b = boxes.to(torch.float64)
    x_lo = torch.ceil(b[:, 0] - 0.5)
    y_lo = torch.ceil(b[:, 1] - 0.5)
    x_hi = torch.maximum(torch.ceil(b[:, 2] + 0.5) - 1, x_lo)
    y_hi = torch.maximum(torch.ceil(b[:, 3] + 0.5) - 1, y_lo)
    ys = torch.arange(height, device=device, dtype=torch.float64).view(1, height, 1)
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, 1, width)
    inside = (
        (ys >= y_lo.view(-1, 1, 1)) & (ys <= y_hi.view(-1, 1, 1))
        & (xs >= x_lo.view(-1, 1, 1)) & (xs <= x_hi.view(-1, 1, 1))
    )
    out.index_add_(0, box_pair.to(device), inside.reshape(-1, height * width).to(torch.int32))
    return (out > 0).view(num_pairs, height, width)


def _parse_box(box: Any, b: int) -> tuple[int, float, float, float, float, bool]:
    if not isinstance(box, (tuple, list)) or len(box) not in (5, 6):
        raise ValueError(
            f"batch.boxes[{b}] entries must be (class_id, x0, y0, x1, y1, difficult), got {box!r}"
        )
    cls = int(box[0])
    x0, y0, x1, y1 = (float(v) for v in box[1:5])
    difficult = bool(box[5]) if len(box) == 6 else False
    if all(math.isfinite(v) for v in (x0, y0, x1, y1)) and (x1 < x0 or y1 < y0):
        raise ValueError(f"batch.boxes[{b}] has a box with x1 < x0 or y1 < y0: {box!r}")
    return cls, x0, y0, x1, y1, difficult


def class_regions(
    batch: EvalBatch, use_boxes: Any = "auto", skip_difficult: bool = True
) -> tuple[Tensor, Tensor]:
    """Ground-truth region of every (image, class) pair of ``batch``.

    Source of the region of pair (b, c):

    * ``use_boxes="auto"``: the segmentation ``gt_masks[b, c]`` when image b has segmentation
      (``has_gt[b]``), otherwise the union of the class's boxes in ``batch.boxes[b]``.
    * ``use_boxes=True``: always the boxes (the TorchRay VOC-07 protocol, which uses boxes even
      for images that have segmentation).
    * ``use_boxes=False``: always the segmentation (empty when the image has none).

    For box-based pairs, ``skip_difficult`` drops a class whose boxes are all flagged difficult
    (TorchRay/EBP "all" set). Boxes with non-finite coordinates are ignored. Difficult boxes of a
    class that also has a non-difficult box are kept in the region.

    Returns:
        ``(regions, keep)``: regions (P, H, W) bool on the class masks' device (empty when there
        is no ground truth for the pair), keep (P,) bool (False: skipped by the protocol).
    """
    _check_use_boxes(use_boxes)
    if not isinstance(skip_difficult, bool):
        raise TypeError(f"skip_difficult must be a bool, got {skip_difficult!r}")
    maps = batch.class_masks
    _check_maps(maps)
    p, h, w = maps.shape
    device = maps.device
    pair_image = batch.pair_image.reshape(-1).to(torch.long)
    pair_class = batch.pair_class.reshape(-1).to(torch.long)
    if pair_image.shape[0] != p or pair_class.shape[0] != p:
        raise ValueError(
            f"pair_image and pair_class must have shape ({p},) like class_masks, got "
            f"{tuple(batch.pair_image.shape)} and {tuple(batch.pair_class.shape)}"
        )
    n_img = batch.batch_size
    if p and (int(pair_image.min()) < 0 or int(pair_image.max()) >= n_img):
        raise ValueError(f"pair_image must index the {n_img} images, got {pair_image.tolist()}")

    gt = batch.gt_masks
    if gt is not None:
        if gt.ndim != 4 or gt.shape[0] != n_img or gt.shape[2:] != (h, w):
            raise ValueError(
                f"gt_masks must have shape ({n_img}, K, {h}, {w}), got {tuple(gt.shape)}"
            )
        if p and int(pair_class.max()) >= gt.shape[1]:
            raise ValueError(
                f"pair_class must be < K = {gt.shape[1]}, got {pair_class.tolist()}"
            )
        if batch.has_gt is not None:
            seg_img = batch.has_gt.reshape(-1).to(torch.bool).cpu()
        else:
            seg_img = torch.ones(n_img, dtype=torch.bool)
    else:
        seg_img = torch.zeros(n_img, dtype=torch.bool)
    if use_boxes is True:
        use_seg = torch.zeros(p, dtype=torch.bool)
    elif use_boxes is False:
        use_seg = torch.ones(p, dtype=torch.bool)
    else:
        use_seg = seg_img[pair_image.cpu()]

    boxes_all = batch.boxes
    if len(boxes_all) not in (0, n_img):
        raise ValueError(
            f"batch.boxes must have one list per image ({n_img}), got {len(boxes_all)}"
        )

    keep = torch.ones(p, dtype=torch.bool)
    box_rows: list[tuple[float, float, float, float]] = []
    box_pair: list[int] = []
    pi_list, pc_list = pair_image.tolist(), pair_class.tolist()
    for k in range(p):  # per pair (not per pixel): gather the boxes from the python lists
        if bool(use_seg[k]):
            continue
        b, c = pi_list[k], pc_list[k]
        parsed = [_parse_box(bx, b) for bx in (boxes_all[b] if boxes_all else ())]
        mine = [bx for bx in parsed if bx[0] == c and all(math.isfinite(v) for v in bx[1:5])]
        if skip_difficult and mine and all(bx[5] for bx in mine):
            keep[k] = False
            continue
        for bx in mine:
            box_rows.append(bx[1:5])
            box_pair.append(k)

    regions = boxes_to_regions(
        torch.tensor(box_rows, dtype=torch.float64, device=device).reshape(-1, 4),
        torch.tensor(box_pair, dtype=torch.long, device=device),
        p, h, w,
    )
    if gt is not None and bool(use_seg.any()):
        seg = gt.to(device)[pair_image.to(device), pair_class.to(device)].to(torch.bool)
        seg = seg & seg_img.to(device)[pair_image.to(device)].view(-1, 1, 1)
        regions = torch.where(use_seg.to(device).view(-1, 1, 1), seg, regions)
    return regions, keep.to(device)


def _check_common_options(options: dict[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"metric '{name}' got unknown option(s) {unknown}; expected any of {sorted(allowed)}"
        )
    _check_use_boxes(options.get("use_boxes", "auto"))
    sd = options.get("skip_difficult", True)
    if not isinstance(sd, bool):
        raise TypeError(f"skip_difficult must be a bool, got {sd!r}")


# ----------------------------------------------------------------------------- Metric classes
class PointingGame(Metric):
    """Pointing game of Zhang et al. ("Top-down Neural Attention by Excitation Backprop", IJCV
    2018) with the TorchRay benchmark protocol, ↑. A per-class metric.

    Definition: for each (image, ground-truth class) pair, the point is the argmax of that pair's
    class mask; it is a hit if some pixel of the class's ground-truth region lies within
    Euclidean distance ``tolerance`` of it. The summary is the EBP "mean of per-class accuracy":
    for each class, hits / (hits + misses) over all images, then the mean over classes.

    Options (defaults):
        tolerance (15.0): radius in pixels. 15 px is the protocol at 224 px; the value is NOT
            rescaled here, so a run at another resolution must pass a scaled value (the synthetic
            preset at 64 px: 15 · 64 / 224 ≈ 4.29).
        use_boxes ("auto"): region source, see :func:`class_regions` ("auto": segmentation where
            the image has it, else boxes; True: boxes always, as TorchRay on VOC-07; False:
            segmentation only).
        skip_difficult (True): with box-based regions, a class whose boxes are all difficult is
            skipped (left out of the per-image dict), as in TorchRay's "all" set.

    Per-image value: ``{class_id: 1.0 | 0.0 | NaN}``.

    Deviations / choices (TorchRay leaves them implicit):
        * ties in the argmax go to the FIRST maximum in raster order, so a constant map points
          at pixel (0, 0);
        * a map with a non-finite value, or zero everywhere (an empty map), is never a hit: its
          class gets NaN, which the aggregate leaves out (counted as a failure, not a miss);
        * a pair whose region is empty (no segmentation pixel / no usable box) gets NaN;
        * boxes are rasterised by pixel centres (see :func:`boxes_to_regions`) and the distance
          is measured between pixel centres, not to the continuous box;
        * the "difficult" subset of TorchRay (a separate image list) is not implemented.
    """

    name: ClassVar[str] = "pointing_game"
    higher_is_better: ClassVar[bool] = True
    version: ClassVar[int] = 1
    definition: ClassVar[str] = (
        "EBP pointing game: argmax within `tolerance` px (15 @224) of the class's GT; "
        "mean of per-class accuracy"
    )
    needs: ClassVar[frozenset[str]] = frozenset({"gt", "boxes"})
    per_class: ClassVar[bool] = True
    #: discrete hits: two (image, class) outcomes may flip
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("flips", 2)

    def __init__(self, **options: Any) -> None:
        _check_common_options(options, ("tolerance", "use_boxes", "skip_difficult"), self.name)
        resolved = {
            "tolerance": _check_tolerance(options.get("tolerance", DEFAULT_TOLERANCE)),
            "use_boxes": options.get("use_boxes", "auto"),
            "skip_difficult": options.get("skip_difficult", True),
        }
        super().__init__(**resolved)

    def score(self, batch: EvalBatch) -> list[dict[int, float]]:
        regions, keep = class_regions(
            batch, self.options["use_boxes"], self.options["skip_difficult"]
        )
        vals = pointing_game(batch.class_masks, regions, self.options["tolerance"])
        out: list[dict[int, float]] = [{} for _ in range(batch.batch_size)]
        for b, c, v, k in zip(
            batch.pair_image.tolist(), batch.pair_class.tolist(), vals.tolist(), keep.tolist()
        ):
            if k:
                out[int(b)][int(c)] = float(v)
        return out

    @classmethod
    def aggregate(cls, values: Sequence[Any]) -> float:
        """Mean over classes of hits / (hits + misses), accumulated over all images.

        NaN entries (unusable maps, empty regions) are left out; classes with no finite entry
        do not enter the mean. Dict keys may be ints or their string form (after a JSON round
        trip); both name the same class.
        """
        hits: dict[Any, float] = defaultdict(float)
        counts: dict[Any, int] = defaultdict(int)
        for v in values:
            if not isinstance(v, dict):
                continue
            for key, x in v.items():
                if x is None:
                    continue
                x = float(x)
                if not math.isfinite(x):
                    continue
                try:
                    key = int(key)
                except (TypeError, ValueError):
                    pass
                hits[key] += x
                counts[key] += 1
        accs = [hits[k] / counts[k] for k in counts]
        return sum(accs) / len(accs) if accs else math.nan


class EnergyPointingGame(Metric):
    """Energy-based pointing game of Wang et al. ("Score-CAM: Score-Weighted Visual Explanations
    for Convolutional Neural Networks", CVPR Workshops 2020), ↑.

    Definition: for each (image, ground-truth class) pair, the share of the (clipped, ≥ 0) map's
    energy inside the class's ground-truth region, Σ(map · region) / Σ map; the per-image value
    is the mean over the image's classes, the summary the mean over images.

    Options (defaults): use_boxes ("auto") and skip_difficult (True), as in
    :class:`PointingGame`.

    Deviations: Score-CAM uses bounding boxes only; here the region is the segmentation when
    the image has one (``use_boxes=True`` gives the paper's box version). A zero-sum or
    non-finite map, or an empty region, gives NaN for the pair (left out of the image's mean; an
    image with no finite pair is NaN).
    """

    name: ClassVar[str] = "energy_pointing_game"
    higher_is_better: ClassVar[bool] = True
    version: ClassVar[int] = 1
    definition: ClassVar[str] = "share of the map's energy Σmap·GT/Σmap inside the class's GT"
    needs: ClassVar[frozenset[str]] = frozenset({"gt", "boxes"})
    #: values from 0.06 (uninformative maps) up: relative
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("relative", 0.05, floor=0.002)

    def __init__(self, **options: Any) -> None:
        _check_common_options(options, ("use_boxes", "skip_difficult"), self.name)
        resolved = {
            "use_boxes": options.get("use_boxes", "auto"),
            "skip_difficult": options.get("skip_difficult", True),
        }
        super().__init__(**resolved)

    def score(self, batch: EvalBatch) -> list[float]:
        regions, keep = class_regions(
            batch, self.options["use_boxes"], self.options["skip_difficult"]
        )
        vals = energy_pointing_game(batch.class_masks, regions)
        n = batch.batch_size
        dev = vals.device
        pair_image = batch.pair_image.reshape(-1).to(device=dev, dtype=torch.long)
        ok = keep & torch.isfinite(vals)
        sums = torch.zeros(n, dtype=vals.dtype, device=dev).index_add_(
            0, pair_image, torch.where(ok, vals, torch.zeros_like(vals))
        )
        counts = torch.zeros(n, dtype=vals.dtype, device=dev).index_add_(
            0, pair_image, ok.to(vals.dtype)
        )
        safe = torch.where(counts > 0, counts, torch.ones_like(counts))
        per_image = torch.where(counts > 0, sums / safe, torch.full_like(sums, math.nan))
        return [float(v) for v in per_image.tolist()]
