"""Pointing-game metrics: the EBP/TorchRay pointing game (all and "difficult" subsets) and the
Score-CAM energy pointing game.

The pointing game follows TorchRay's benchmark protocol (Zhang et al., IJCV 2018, as benchmarked
in TorchRay, the only published table ours can be set beside):

* each (image, ground-truth class) pair's map is upsampled (bilinear, ``align_corners=False``) to
  the image's **original** size and its point is its first maximum in raster order;
* the pair is a hit iff some ground-truth pixel lies at Euclidean distance **strictly less**
  than ``tolerance`` (15 px, in original pixels) from the point;
* the ground truth is, on VOC-layout data, the union of the class's bounding boxes (every
  object, difficult ones included; a class whose objects are all difficult is skipped) and on
  COCO the union of the class's instance masks;
* the summary is the mean over classes of the per-class accuracy hits / (hits + misses).

The original size and annotations come with each image (``batch.originals``, see
:class:`attrbench.data.sample.Original`). A batch without them (built by hand, or from a reader
that does not record them) is scored at its own resolution with the regions of
:func:`class_regions` (segmentation where the image has it, else boxes).

All logic lives in pure batched tensor functions (:func:`pointing_points`,
:func:`pointing_game`, :func:`upsample_maps`, :func:`box_hits`, :func:`original_pointing`,
:func:`energy_pointing_game`, :func:`boxes_to_regions`); the Metric classes only gather the
annotations and format the per-image values.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 8, 8); maps[0, 0, 0] = 1.0
    >>> region = torch.zeros(1, 8, 8, dtype=torch.bool); region[0, 3, 4] = True
    >>> pointing_game(maps, region, tolerance=5.1).tolist()   # distance 5 < 5.1 -> hit
    [1.0]
    >>> pointing_game(maps, region, tolerance=5.0).tolist()   # strict: 5 is not < 5
    [0.0]
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from attrbench.interfaces import EvalBatch, Metric, Tolerance

__all__ = [
    "DEFAULT_TOLERANCE",
    "EnergyPointingGame",
    "PointingGame",
    "PointingGameDifficult",
    "box_hits",
    "boxes_to_regions",
    "class_regions",
    "energy_pointing_game",
    "load_difficult_flags",
    "original_pointing",
    "pointing_game",
    "pointing_points",
    "upsample_maps",
]

#: TorchRay's tolerance in pixels of the original image.
DEFAULT_TOLERANCE = 15.0
#: The difficult-subset flag files inside the installed ``torchray`` package, by annotation kind.
TORCHRAY_FLAG_FILES = {"voc": "pointing_game_ebp_voc07_difficult.txt",
                       "coco": "pointing_game_ebp_coco_difficult.txt"}


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


def _within(points: Tensor, regions: Tensor, tolerance: float) -> Tensor:
    """(P,) bool: some pixel of ``regions[p]`` (P, H, W) is at distance < tolerance of
    ``points[p]`` (y, x); pixel-centre distances on the pixel grid (no distance transform)."""
    _, h, w = regions.shape
    ys = torch.arange(h, device=regions.device).view(1, h, 1)
    xs = torch.arange(w, device=regions.device).view(1, 1, w)
    py = points[:, 0].to(regions.device).view(-1, 1, 1)
    px = points[:, 1].to(regions.device).view(-1, 1, 1)
    d2 = (ys - py) ** 2 + (xs - px) ** 2
    return (regions & (d2.double() < tolerance * tolerance)).flatten(1).any(dim=1)


# ------------------------------------------------------------------------- pure tensor metrics
def pointing_points(maps: Tensor) -> tuple[Tensor, Tensor]:
    """The point of each map: its FIRST maximum in raster order (TorchRay's ``argmax`` of the
    flattened map).

    A constant map, the all-zero map included, therefore points at pixel (0, 0), as in TorchRay.
    The tie rule is implemented explicitly (smallest flat index among the maxima), so it does
    not depend on the backend's ``argmax``.

    Args:
        maps: (P, H, W) float maps.

    Returns:
        ``(points, finite)``: points (P, 2) long as (y, x); finite (P,) bool, False for maps
        with a non-finite value (their point is meaningless).
    """
    _check_maps(maps)
    p, h, w = maps.shape
    flat = maps.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    clean = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    mx = clean.amax(dim=1, keepdim=True)
    idx = torch.arange(h * w, device=maps.device).expand(p, -1)
    first = torch.where(clean == mx, idx, torch.full_like(idx, h * w)).amin(dim=1)
    points = torch.stack((first // w, first % w), dim=1)
    return points, finite


def pointing_game(maps: Tensor, regions: Tensor, tolerance: float = DEFAULT_TOLERANCE) -> Tensor:
    """Pointing game per pair at the maps' own resolution: 1 if the map's first maximum lies at
    distance < ``tolerance`` px from the region, else 0.

    Hit iff some region pixel (y, x) satisfies (y − py)² + (x − px)² < tolerance² (strict, as
    TorchRay), where (py, px) is :func:`pointing_points`.

    Args:
        maps: (P, H, W) float saliency maps.
        regions: (P, H, W) bool ground-truth regions.
        tolerance: radius in pixels (>= 0).

    Returns:
        (P,) float: 1.0 hit, 0.0 miss, NaN where the map is non-finite or the region is empty
        (nothing to point at). An all-zero map points at (0, 0) like any constant map.
    """
    _check_maps(maps)
    regions = _check_regions(regions, maps)
    tol = _check_tolerance(tolerance)
    points, finite = pointing_points(maps)
    hit = _within(points, regions, tol)
    defined = finite & regions.flatten(1).any(dim=1)
    out = hit.to(torch.float32)
    return torch.where(defined, out, torch.full_like(out, math.nan))


def upsample_maps(maps: Tensor, height: int, width: int) -> Tensor:
    """(P, h, w) maps -> (P, height, width) by bilinear interpolation with
    ``align_corners=False`` (TorchRay's resize of a saliency map to the original image)."""
    _check_maps(maps)
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    return F.interpolate(maps[:, None].float(), size=(int(height), int(width)),
                         mode="bilinear", align_corners=False)[:, 0]


def box_hits(points: Tensor, boxes: Tensor, box_pair: Tensor, num_pairs: int, height: int,
             width: int, tolerance: float) -> Tensor:
    """(num_pairs,) bool: some pixel of one of the pair's boxes is at distance < ``tolerance``
    of the pair's point.

    Boxes are ``(x0, y0, x1, y1)`` integer pixels, inclusive, clipped to the ``height`` x
    ``width`` image (TorchRay fills ``mask[y0:y1 + 1, x0:x1 + 1]``); a box with no pixel inside
    the image covers nothing. The nearest box pixel to an integer point is the point clamped to
    the box, so the test is exact without rasterising the box.

    Args:
        points: (P, 2) long (y, x).
        boxes: (NB, 4) boxes; box_pair: (NB,) the pair of each box.
    """
    dev = points.device
    hit = torch.zeros(num_pairs, dtype=torch.bool, device=dev)
    if boxes.shape[0] == 0:
        return hit
    b = boxes.to(device=dev, dtype=torch.long)
    x0, y0 = b[:, 0].clamp(min=0), b[:, 1].clamp(min=0)
    x1, y1 = b[:, 2].clamp(max=width - 1), b[:, 3].clamp(max=height - 1)
    nonempty = (x0 <= x1) & (y0 <= y1)
    pair = box_pair.to(device=dev, dtype=torch.long)
    py, px = points[pair, 0], points[pair, 1]
    dy = torch.maximum(y0 - py, torch.zeros_like(py)) + torch.maximum(py - y1, torch.zeros_like(py))
    dx = torch.maximum(x0 - px, torch.zeros_like(px)) + torch.maximum(px - x1, torch.zeros_like(px))
    close = nonempty & ((dy * dy + dx * dx).double() < tolerance * tolerance)
    n_close = torch.zeros(num_pairs, dtype=torch.long, device=dev).index_add_(0, pair, close.long())
    return hit | (n_close > 0)


def original_pointing(maps: Tensor, classes: Sequence[int], original: Any,
                      tolerance: float = DEFAULT_TOLERANCE) -> tuple[Tensor, Tensor]:
    """TorchRay's pointing game for the pairs of ONE image, at its original size.

    Args:
        maps: (P, h, w) the image's class maps (any resolution).
        classes: the P class ids.
        original: the image's :class:`attrbench.data.sample.Original`.
        tolerance: radius in original pixels.

    Returns:
        ``(values, keep)``: values (P,) 1.0 / 0.0, NaN for a non-finite map or a class with no
        ground-truth annotation (a VOC class without a box, a COCO class without a mask entry;
        an annotated region with no pixel, e.g. a box outside the image, is a miss, as in
        TorchRay); keep (P,) bool, False for a VOC class whose objects are all
        difficult (skipped by the protocol).
    """
    tol = _check_tolerance(tolerance)
    p = maps.shape[0]
    dev = maps.device
    keep = torch.ones(p, dtype=torch.bool, device=dev)
    if p == 0:
        return torch.empty(0, device=dev), keep
    h, w = int(original.height), int(original.width)
    points, finite = pointing_points(upsample_maps(maps, h, w))
    classes = [int(c) for c in classes]
    has_region = torch.zeros(p, dtype=torch.bool, device=dev)
    if original.kind == "coco":
        masks = original.masks or {}
        hit = torch.zeros(p, dtype=torch.bool, device=dev)
        sel = [k for k, c in enumerate(classes) if c in masks]
        if sel:
            regions = torch.stack([masks[classes[k]] for k in sel]).to(device=dev,
                                                                      dtype=torch.bool)
            if regions.shape[-2:] != (h, w):
                raise ValueError(f"original masks must be {h}x{w}, got {tuple(regions.shape)}")
            idx = torch.tensor(sel, device=dev)
            hit[idx] = _within(points[idx], regions, tol)
            has_region[idx] = True  # an annotated class whose mask is empty is a miss
    elif original.kind == "voc":
        rows, pair = [], []
        for k, c in enumerate(classes):
            mine = [bx for bx in original.boxes
                    if int(bx[0]) == c and all(math.isfinite(float(v)) for v in bx[1:5])]
            if mine and all(bool(bx[5]) for bx in mine):
                keep[k] = False  # every object of the class is difficult: not evaluated
                continue
            for bx in mine:
                rows.append([int(v) for v in bx[1:5]])
                pair.append(k)
            has_region[k] = bool(mine)
        hit = box_hits(points, torch.tensor(rows, dtype=torch.long).reshape(-1, 4),
                       torch.tensor(pair, dtype=torch.long), p, h, w, tol)
    else:
        raise ValueError(f"original.kind must be 'voc' or 'coco', got {original.kind!r}")
    out = hit.to(torch.float32)
    return torch.where(finite & has_region, out, torch.full_like(out, math.nan)), keep


def energy_pointing_game(maps: Tensor, regions: Tensor) -> Tensor:
    """Energy pointing game per pair: Σ(max(map, 0) · region) / Σ max(map, 0).

    Args:
        maps: (P, H, W) float saliency maps (negative values are clipped to 0).
        regions: (P, H, W) bool ground-truth regions.

    Returns:
        (P,) values in [0, 1]; 0 for a map without positive energy (an all-zero map has none
        inside the region); NaN where the map is non-finite or the region is empty.
    """
    _check_maps(maps)
    regions = _check_regions(regions, maps)
    dtype = torch.float32 if maps.device.type == "mps" else torch.float64
    flat = maps.flatten(1).to(dtype)
    finite = torch.isfinite(flat).all(dim=1)
    pos = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat)).clamp(min=0)
    total = pos.sum(dim=1)
    inside = (pos * regions.flatten(1).to(dtype)).sum(dim=1)
    defined = finite & regions.flatten(1).any(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    share = torch.where(total > 0, inside / safe, torch.zeros_like(inside))
    return torch.where(defined, share, torch.full_like(inside, math.nan))


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


def _originals(batch: EvalBatch) -> list[Any]:
    n = batch.batch_size
    originals = list(batch.originals) if batch.originals else [None] * n
    if len(originals) != n:
        raise ValueError(f"batch.originals must have one entry per image ({n}), got "
                         f"{len(originals)}")
    return originals


# ----------------------------------------------------------------------------- Metric classes
class PointingGame(Metric):
    """Pointing game of Zhang et al. ("Top-down Neural Attention by Excitation Backprop", IJCV
    2018) with TorchRay's benchmark protocol, ↑. A per-class metric.

    Definition: for each (image, ground-truth class) pair, that pair's class map is upsampled
    (bilinear) to the image's original size; its point is the first maximum in raster order; it
    is a hit iff some ground-truth pixel lies at distance < ``tolerance`` original pixels. The
    ground truth is the union of the class's boxes on VOC-layout data (a class whose objects
    are all difficult is skipped) and the union of its instance masks on COCO (see the module
    docstring). The summary is the mean over classes of hits / (hits + misses) over all images.

    Options (defaults):
        tolerance (15.0): radius in original pixels, as TorchRay. Presets whose images are
            generated at another size state a scaled value (the synthetic preset, 64-px images:
            15 · 64 / 224 ≈ 4.29).

    Per-image value: ``{class_id: 1.0 | 0.0 | NaN}`` (a skipped class is absent).

    Choices and deviations (measured effects in ``docs/protocol.md``):
        * a constant map, all-zero included, points at pixel (0, 0) (TorchRay's ``argmax``);
        * a map with a non-finite value gets NaN (the runner fails such images before);
        * a class with no ground-truth region gets NaN (left out of the class's accuracy);
        * classes never evaluated do not enter the mean (TorchRay averages all K classes,
          counting an absent class as 0; equal whenever every class occurs, as on VOC-2007
          test and COCO val2014);
        * boxes are integer pixels (TorchRay's ``int()`` of the XML values; we floor);
        * a batch without original annotations is scored at its own resolution with
          :func:`class_regions` (segmentation where present, else boxes).
    """

    name: ClassVar[str] = "pointing_game"
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[bool] = True
    version: ClassVar[int] = 2
    definition: ClassVar[str] = (
        "TorchRay pointing game: first max of the map at original size within < 15 px of the "
        "class's GT (VOC boxes, COCO masks); mean of per-class accuracy"
    )
    per_class: ClassVar[bool] = True
    _allowed: ClassVar[tuple[str, ...]] = ("tolerance",)
    #: discrete hits: two (image, class) outcomes may flip
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("flips", 2)

    def __init__(self, **options: Any) -> None:
        _check_common_options(options, self._allowed, self.name)
        resolved = {"tolerance": _check_tolerance(options.get("tolerance", DEFAULT_TOLERANCE))}
        resolved.update({k: v for k, v in options.items() if k != "tolerance"})
        super().__init__(**resolved)

    def pair_values(self, batch: EvalBatch) -> list[dict[int, float]]:
        """Per image ``{class_id: 1.0 | 0.0 | NaN}`` (skipped classes absent)."""
        tol = self.options["tolerance"]
        maps = batch.class_masks
        _check_maps(maps)
        out: list[dict[int, float]] = [{} for _ in range(batch.batch_size)]
        pi = batch.pair_image.reshape(-1).tolist()
        pc = batch.pair_class.reshape(-1).tolist()
        originals = _originals(batch)
        fallback = [k for k, b in enumerate(pi) if originals[b] is None]
        if fallback:  # no original annotations: this batch's resolution and regions
            regions, keep = class_regions(batch, "auto", True)
            vals = pointing_game(maps, regions, tol).tolist()
            for k in fallback:
                if bool(keep[k]):
                    out[pi[k]][pc[k]] = float(vals[k])
        for b, orig in enumerate(originals):  # per image: its maps share its original size
            if orig is None:
                continue
            sel = [k for k, i in enumerate(pi) if i == b]
            if not sel:
                continue
            idx = torch.tensor(sel, device=maps.device)
            vals, keep = original_pointing(maps[idx], [pc[k] for k in sel], orig, tol)
            for k, v, kp in zip(sel, vals.tolist(), keep.tolist()):
                if kp:
                    out[b][pc[k]] = float(v)
        return out

    def score(self, batch: EvalBatch) -> list[dict[int, float]]:
        return self.pair_values(batch)


def _flag_key(name: str) -> str:
    """A flag file's image name as attrbench's image id: VOC ids as they are, COCO file stems
    (``COCO_val2014_000000262148``) as the integer id (``262148``)."""
    m = re.fullmatch(r"COCO_[A-Za-z]+[0-9]*_0*([0-9]+)", name)
    return m.group(1) if m else name


def load_difficult_flags(path: str | Path) -> dict[str, list[bool]]:
    """Read a difficult-subset flag file: one line per image, ``<image name>`` then one 0/1
    flag per class (tab- or space-separated; TorchRay's format). Returns ``{image id: flags}``
    with COCO file stems mapped to integer ids (see :func:`_flag_key`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the difficult-flag file {path}: {exc}") from None
    flags: dict[str, list[bool]] = {}
    width = None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if any(x not in ("0", "1") for x in parts[1:]) or len(parts) < 2:
            raise ValueError(f"{path}:{n}: expected an image name and 0/1 flags, got {line!r}")
        if width is not None and len(parts) - 1 != width:
            raise ValueError(f"{path}:{n}: {len(parts) - 1} flags, earlier lines have {width}")
        width = len(parts) - 1
        flags[_flag_key(parts[0])] = [x == "1" for x in parts[1:]]
    if not flags:
        raise ValueError(f"the difficult-flag file {path} is empty")
    return flags


def _torchray_flag_file(kind: str) -> Path | None:
    spec = importlib.util.find_spec("torchray")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "benchmark" / TORCHRAY_FLAG_FILES[kind]
    return path if path.is_file() else None


class PointingGameDifficult(PointingGame):
    """The pointing game on TorchRay's "difficult" subset (Zhang et al.'s EBP split of VOC-2007
    test and COCO val2014 into all / difficult), ↑. Off by default.

    The (image, class) pairs of the subset are flagged in lists TorchRay publishes: one line per
    image, one 0/1 flag per class. A pair is evaluated iff its image is listed and its class's
    flag is 1; everything else is as :class:`PointingGame` (same options, same per-class
    accuracy). The lists are TorchRay's (CC-BY-NC) and are not part of attrbench: they are read
    at run time from an installed ``torchray`` package (``flags="torchray"``, default; the VOC
    or COCO list by the data's annotation kind) or from a file the user gives (``flags=FILE``,
    same format, image names as in the data: VOC ids, COCO file stems or integer ids).

    Deviation: TorchRay also evaluates images missing from the list; here they are not part of
    the subset. Every annotated image of VOC-2007 test and COCO val2014 is listed, so the
    numbers on those sets are unchanged; on other data the metric is undefined instead of
    silently equal to the full pointing game.
    """

    name: ClassVar[str] = "pointing_game_difficult"
    headline: ClassVar[bool] = False  # the full pointing game is the headline one
    version: ClassVar[int] = 1
    definition: ClassVar[str] = (
        "TorchRay pointing game on its 'difficult' (image, class) subset (flags read from "
        "torchray or a file)"
    )
    _allowed: ClassVar[tuple[str, ...]] = ("tolerance", "flags")

    def __init__(self, **options: Any) -> None:
        flags = options.get("flags", "torchray")
        if not isinstance(flags, str) or not flags:
            raise ValueError(f"flags must be 'torchray' or a file path, got {flags!r}")
        if flags == "torchray":
            if importlib.util.find_spec("torchray") is None:
                raise ValueError(
                    "pointing_game_difficult reads TorchRay's difficult-subset flags from an "
                    "installed torchray package (pip install torchray; CC-BY-NC) or from a file "
                    "(--metric-option pointing_game_difficult.flags=FILE)")
        elif not Path(flags).expanduser().is_file():
            raise ValueError(f"flags file {flags} does not exist")
        super().__init__(**{**options, "flags": flags})
        self._flags: dict[str, dict[str, list[bool]]] = {}

    def flags_for(self, kind: str) -> dict[str, list[bool]]:
        """``{image id: per-class flags}`` for annotation kind ``"voc"`` or ``"coco"``."""
        src = self.options["flags"]
        key = kind if src == "torchray" else "file"
        if key not in self._flags:
            if src == "torchray":
                path = _torchray_flag_file(kind)
                if path is None:
                    raise ValueError(f"the installed torchray package has no "
                                     f"{TORCHRAY_FLAG_FILES[kind]}")
            else:
                path = Path(src).expanduser()
            self._flags[key] = load_difficult_flags(path)
        return self._flags[key]

    def score(self, batch: EvalBatch) -> list[dict[int, float]]:
        values = self.pair_values(batch)
        k = int(batch.labels.shape[1])
        ids = list(batch.image_ids)
        out: list[Any] = []
        for b, orig in enumerate(_originals(batch)):
            if orig is None or b >= len(ids):
                out.append(math.nan)  # the subset is defined by image names: unknown here
                continue
            row = self.flags_for(orig.kind).get(str(ids[b]))
            if row is None:
                out.append({})  # not listed: not part of the difficult subset
                continue
            if len(row) != k:
                raise ValueError(f"the difficult flags have {len(row)} classes per image, the "
                                 f"dataset has {k}")
            out.append({c: v for c, v in values[b].items() if row[c]})
        return out


class EnergyPointingGame(Metric):
    """Energy-based pointing game of Wang et al. ("Score-CAM: Score-Weighted Visual Explanations
    for Convolutional Neural Networks", CVPR Workshops 2020), ↑.

    Definition: for each (image, ground-truth class) pair, the share of the (clipped, ≥ 0) map's
    energy inside the class's ground-truth region, Σ(map · region) / Σ map; the per-image value
    is the mean over the image's classes, the summary the mean over images.

    Computed at the maps' (input) resolution with the regions of :func:`class_regions`.

    Options (defaults): ``use_boxes`` ("auto": segmentation where the image has it, else the
    class's boxes; True: boxes; False: segmentation) and ``skip_difficult`` (True: with boxes, a
    class whose boxes are all difficult is skipped).

    Deviations: Score-CAM uses bounding boxes only; here the region is the segmentation when
    the image has one (``use_boxes=True`` gives the paper's box version). A map without positive
    energy (all zero) scores 0: it puts no energy inside the region. A non-finite map or an
    empty region gives NaN for the pair (left out of the image's mean; an image with no finite
    pair is NaN).
    """

    name: ClassVar[str] = "energy_pointing_game"
    higher_is_better: ClassVar[bool] = True
    version: ClassVar[int] = 2
    definition: ClassVar[str] = "share of the map's energy Σmap·GT/Σmap inside the class's GT"
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
