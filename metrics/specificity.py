"""Class specificity ("confusion matrices") of Stalder et al. (NeurIPS 2022).

Question: does the mask a method produces for class ``c`` keep the evidence for class ``c``
and *only* for ``c``? For an image that contains target class ``t`` and each class ``c`` of a
participating set ``C``:

1. get the method's mask for class ``c`` (also for classes absent from the image),
2. binarise it at thresholds 0.1, ..., 0.9 (``m > tau``),
3. feed ``binary_mask * x`` (normalised image: masked-out pixels are the mean colour) to the
   classifier and record the softmax probability of ``t`` (softmax over all K classes),
4. average over thresholds.

The "none" column is the probability of ``t`` on the unmasked image. Row ``t`` of the confusion
matrix averages over the images containing ``t``. An ideal method has a high diagonal (close to
"none") and a low off-diagonal. The summary numbers are the paper's: the unweighted mean of the
matrix's diagonal cells, resp. of its off-diagonal cells (:func:`specificity_summary`), so every
class weighs the same however many images contain it. The paper uses the VOC classes bottle,
car, cat, dog and person; the paper presets set that subset (``classes``), the synthetic preset
uses all six classes.

Pure functions: :func:`specificity_probs` (per image, every participating class's mask: the
thresholded-mask probabilities of every class), :func:`confusion_matrix` (rows -> the
(|C|, |C| + 1) matrix) and :func:`specificity_summary` (matrix -> diagonal and off-diagonal
means). Metrics: :class:`ClassSpecificityDiag` and
:class:`ClassSpecificityOffDiag`; both keep the full per-image rows in ``self.rows`` (see
:class:`ClassSpecificityDiag`) and hand them over as the ``class_specificity`` matrix group
(:meth:`Metric.side_outputs`), from which the report draws the matrix.

Cost: ``|C|`` masks per image, including classes absent from the image. A method with
``all_classes_at_once`` (Explainer, RISE) gives them in one ``attribute_all`` call; any other
method is called once per class in ``C`` (``|C|`` times the cost of a single-class call, e.g.
K = 20 on VOC). Use ``classes`` (the paper: VOC bottle, car, cat, dog, person = 4, 6, 7, 11, 14)
or ``max_classes`` to bound it. Then ``9 |C| + 1`` classifier forwards per image. Images that
contain no class of ``C`` cost nothing (they get NaN). The two metrics share one computation
per batch through the batch's memo (``EvalBatch.memo``, key ``"class_specificity_rows"``), so
running both costs the same as running one. When the runner already has every class's maps of
the images (``EvalBatch.all_maps``: a method with ``all_classes_at_once``, e.g. RISE, the
Explainer), they are used instead of asking the method again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.interfaces import EvalBatch, Metric, SideOutputs, Tolerance, infer_num_classes

__all__ = [
    "THRESHOLDS",
    "ClassSpecificityDiag",
    "ClassSpecificityOffDiag",
    "class_specificity_rows",
    "confusion_matrix",
    "specificity_probs",
    "specificity_summary",
]

#: Binarisation thresholds of the paper's notebook (0.1, ..., 0.9).
THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
_CACHE_KEY = "class_specificity_rows"


def _scores(logits: Tensor, score: str) -> Tensor:
    if logits.ndim != 2:
        raise ValueError(f"classifier must return (N, K) logits, got shape {tuple(logits.shape)}")
    return torch.softmax(logits, 1) if score == "softmax" else torch.sigmoid(logits)


@torch.no_grad()
def specificity_probs(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    score: str = "softmax",
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Classifier probabilities on thresholded-mask images, batched.

    Args:
        model: classifier (N, 3, H, W) -> (N, K) logits (pass it in eval mode).
        images: (B, 3, H, W) normalised images.
        masks: (B, C, H, W) one mask per image and participating class, values in [0, 1].
        thresholds: binarisation thresholds (strict ``m > tau``), default 0.1..0.9.
        score: ``"softmax"`` over all K classes (paper) or ``"sigmoid"``.
        batch_size: masked images per classifier forward.

    Returns:
        ``(probs, none)``: probs (B, C, K) float32, the probability of every class k on the image
        masked with mask c, averaged over thresholds; none (B, K) the probabilities on the
        unmasked image.
    """
    if score not in ("softmax", "sigmoid"):
        raise ValueError(f"score must be one of ['softmax', 'sigmoid'], got {score!r}")
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[0] != images.shape[0] \
            or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"images (B,3,H,W) and masks (B,C,H,W) must match, got "
                         f"{tuple(images.shape)} and {tuple(masks.shape)}")
    if len(thresholds) == 0:
        raise ValueError("thresholds must not be empty")
    b, c = masks.shape[:2]
    dev = images.device
    taus = torch.as_tensor(list(thresholds), dtype=masks.dtype, device=dev)
    t = taus.numel()
    none = _scores(model(images), score).float()
    k = none.shape[1]
    total = b * c * t
    out = torch.empty(total, k, device=dev, dtype=torch.float32)
    masks = masks.to(dev)
    for start in range(0, total, batch_size):  # chunks of masked images; no per-pixel loop
        idx = torch.arange(start, min(start + batch_size, total), device=dev)
        bi, ci, ti = idx // (c * t), (idx // t) % c, idx % t
        binary = (masks[bi, ci] > taus[ti].view(-1, 1, 1)).unsqueeze(1).to(images.dtype)
        out[start : start + idx.numel()] = _scores(model(binary * images[bi]), score).float()
    return out.view(b, c, t, k).mean(2), none


def confusion_matrix(
    rows: Iterable[Mapping[str, Any]], classes: Sequence[int]
) -> Tensor:
    """(|C|, |C| + 1) matrix from per-(image, target) rows, as in the paper.

    Args:
        rows: dicts ``{"target": t, "none": p_none, "masks": {c: p_c, ...}}`` (the format of
            ``ClassSpecificityDiag.rows``; extra keys are ignored). Rows whose target is not in
            ``classes`` are skipped; NaN entries are skipped per cell.
        classes: the participating classes, in display order.

    Returns:
        float64 matrix; row i = target ``classes[i]``; column 0 = "none" (unmasked image),
        column j + 1 = mask of ``classes[j]``; each cell the mean over the images of that row
        (NaN when there are none).

    Example:
        >>> rows = [{"target": 1, "none": 0.9, "masks": {1: 0.8, 2: 0.1}},
        ...         {"target": 1, "none": 0.7, "masks": {1: 0.6, 2: 0.3}}]
        >>> confusion_matrix(rows, [1, 2]).tolist()[0]
        [0.8, 0.7, 0.2]
    """
    classes = [int(c) for c in classes]
    pos = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    s = torch.zeros(n, n + 1, dtype=torch.float64)
    cnt = torch.zeros(n, n + 1, dtype=torch.float64)
    for r in rows:
        t = int(r["target"])
        if t not in pos:
            continue
        i = pos[t]
        cells = [(0, r.get("none"))] + [(pos[int(c)] + 1, v) for c, v in r["masks"].items()
                                       if int(c) in pos]
        for j, v in cells:
            if v is not None and math.isfinite(float(v)):
                s[i, j] += float(v)
                cnt[i, j] += 1
    return torch.where(cnt > 0, s / cnt.clamp_min(1), torch.full_like(s, math.nan))


def specificity_summary(matrix: Any) -> dict[str, float]:
    """The paper's summary of a class-specificity matrix: the unweighted means of its diagonal
    and of its off-diagonal cells (NaN cells left out).

    Args:
        matrix: (|C|, |C| + 1) with the "none" column first (:func:`confusion_matrix`), or a
            square (|C|, |C|) matrix without it.

    Returns:
        ``{"diag", "offdiag", "none"}`` (``none``: mean of the "none" column, NaN without it).

    Example:
        >>> m = [[0.9, 0.8, 0.1], [0.7, 0.3, 0.6]]   # none | mask of class 0 | mask of class 1
        >>> {k: round(v, 6) for k, v in specificity_summary(m).items()}
        {'diag': 0.7, 'offdiag': 0.2, 'none': 0.8}
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.ndim != 2 or m.shape[1] not in (m.shape[0], m.shape[0] + 1) or m.shape[0] == 0:
        raise ValueError(f"matrix must have shape (C, C + 1) or (C, C), got {tuple(m.shape)}")
    c = m.shape[0]
    none = m[:, 0] if m.shape[1] == c + 1 else torch.full((c,), math.nan, dtype=m.dtype)
    cells = m[:, 1:] if m.shape[1] == c + 1 else m
    eye = torch.eye(c, dtype=torch.bool)

    def mean(x: Tensor) -> float:
        x = x[torch.isfinite(x)]
        return float(x.mean()) if x.numel() else math.nan

    return {"diag": mean(cells[eye]), "offdiag": mean(cells[~eye]), "none": mean(none)}


def _participating(k: int, classes: Sequence[int] | None, max_classes: int | None) -> list[int]:
    cs = list(range(k)) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= k for c in cs):
        raise ValueError(f"classes must be class ids in [0, {k - 1}], got {cs}")
    if len(set(cs)) != len(cs) or not cs:
        raise ValueError(f"classes must be distinct and non-empty, got {cs}")
    return cs[:max_classes] if max_classes is not None else cs


def _method_masks(batch: EvalBatch, img_idx: Tensor, cs: list[int]) -> Tensor:
    """(n, |C|, H, W) masks of the selected images for the participating classes."""
    method = batch.method
    images = batch.images[img_idx]
    n, _, h, w = images.shape
    seeds = (batch.seeds.cpu()[img_idx.cpu()] if batch.seeds is not None
             else torch.zeros(n, dtype=torch.long))
    if batch.all_maps is not None:  # the runner's maps of every class (all_classes_at_once)
        return batch.all_maps[img_idx.to(batch.all_maps.device)][:, cs]
    if method.all_classes_at_once and not method.needs_ground_truth:
        return method.attribute_all(images, seeds=seeds)[:, cs]
    c = len(cs)
    rep = images.repeat_interleave(c, 0)
    tg = torch.tensor(cs, device=images.device).repeat(n)
    gt = None
    if method.needs_ground_truth:
        if batch.gt_masks is None:
            raise ValueError(f"method '{batch.method_name or method.name}' needs ground truth")
        gt = batch.gt_masks[img_idx][:, cs].reshape(n * c, h, w)
    out = method.attribute(rep, tg, gt_masks=gt, seeds=seeds.repeat_interleave(c, 0))
    return out.view(n, c, h, w)


def class_specificity_rows(
    batch: EvalBatch,
    classes: Sequence[int] | None = None,
    *,
    max_classes: int | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    score: str = "softmax",
    batch_size: int = 256,
) -> list[list[dict[str, Any]]]:
    """Per image of the batch, the list of rows ``{"target": t, "none": p, "masks": {c: p}}``
    for each target class ``t`` present in the image and in ``C`` (empty list when none).

    A mask that is non-finite or outside [0, 1] (tolerance 1e-4) makes its cells NaN. The result
    is kept in ``batch.memo`` per option set, so the Diag and OffDiag metrics share it.
    """
    if batch.model is None or batch.method is None:
        raise ValueError("class specificity needs batch.model and batch.method")
    k = int(batch.labels.shape[1]) if batch.labels.ndim == 2 else infer_num_classes(batch.model)
    cs = _participating(k, classes, max_classes)
    key = (id(batch.method), tuple(cs), tuple(float(t) for t in thresholds), score, batch_size)
    cache = batch.memo.setdefault(_CACHE_KEY, {})
    if key in cache:
        return cache[key]
    labels = batch.labels.bool().cpu()
    present = labels[:, cs]  # (B, |C|)
    img_idx = present.any(1).nonzero().squeeze(1)
    result: list[list[dict[str, Any]]] = [[] for _ in range(batch.batch_size)]
    if img_idx.numel():
        dev = batch.images.device
        masks = _method_masks(batch, img_idx.to(dev), cs).to(dev)
        flat = masks.flatten(2)
        ok = torch.isfinite(flat).all(2) & (flat >= -1e-4).all(2) & (flat <= 1 + 1e-4).all(2)
        masks = torch.where(ok[..., None, None], masks.clamp(0, 1), torch.zeros_like(masks))
        probs, none = specificity_probs(batch.model, batch.images[img_idx.to(dev)], masks,
                                        thresholds=thresholds, score=score,
                                        batch_size=batch_size)
        probs = torch.where(ok[..., None], probs, torch.full_like(probs, math.nan))
        probs, none, ok = probs.cpu(), none.cpu(), ok.cpu()
        for r, b in enumerate(img_idx.tolist()):
            for ci, t in enumerate(cs):
                if not present[b, ci]:
                    continue
                result[b].append({
                    "target": t,
                    "none": float(none[r, t]),
                    "masks": {c: float(probs[r, cj, t]) for cj, c in enumerate(cs)},
                })
    cache[key] = result
    return result


class _SpecificityMetric(Metric):
    per_class = True
    matrix_group = "class_specificity"
    regression_tolerance = Tolerance("absolute", 0.01)  # in [0, 1]

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        max_classes: int | None = None,
        thresholds: Sequence[float] = THRESHOLDS,
        score: str = "softmax",
        batch_size: int = 256,
        skip_methods: Sequence[str] = (),
    ) -> None:
        if isinstance(skip_methods, str) or not all(isinstance(m, str) for m in skip_methods):
            raise TypeError(f"skip_methods must be a list of method names, got {skip_methods!r}")
        self.skip_methods = tuple(skip_methods)
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not all(
                    isinstance(c, int) and not isinstance(c, bool) for c in classes):
                raise TypeError(f"classes must be a sequence of ints or None, got {classes!r}")
            classes = [int(c) for c in classes]
            if len(set(classes)) != len(classes) or not classes:
                raise ValueError(f"classes must be distinct and non-empty, got {classes!r}")
        if max_classes is not None and (not isinstance(max_classes, int) or max_classes < 1):
            raise ValueError(f"max_classes must be a positive int or None, got {max_classes!r}")
        ths = [float(t) for t in thresholds]
        if not ths or any(not 0 <= t < 1 for t in ths):
            raise ValueError(f"thresholds must be a non-empty list in [0, 1), got {thresholds!r}")
        if score not in ("softmax", "sigmoid"):
            raise ValueError(f"score must be one of ['softmax', 'sigmoid'], got {score!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        super().__init__(classes=classes, max_classes=max_classes, thresholds=ths, score=score,
                         batch_size=batch_size, skip_methods=list(self.skip_methods))
        self.classes, self.max_classes, self.thresholds = classes, max_classes, ths
        self.score_kind, self.batch_size = score, batch_size
        #: per (image, target) row: {"image_id", "target", "none", "masks": {c: p}}
        self.rows: list[dict[str, Any]] = []
        self._seen = 0

    def reset(self) -> None:
        super().reset()
        self.rows = []
        self._seen = 0

    def side_outputs(self) -> SideOutputs:
        return SideOutputs(matrix_rows=list(self.rows))

    @classmethod
    def matrix_record(cls, rows: Sequence[dict[str, Any]], class_names: Sequence[str]
                      ) -> dict[str, Any]:
        """``{"classes", "matrix", "summary"}`` of the rows' participating classes."""
        cs = sorted({int(c) for r in rows for c in r["masks"]})
        mat = confusion_matrix(rows, cs)
        return {"classes": [class_names[c] for c in cs], "matrix": mat.tolist(),
                "summary": specificity_summary(mat)}

    def participating_classes(self, num_classes: int) -> list[int]:
        return _participating(num_classes, self.classes, self.max_classes)

    def matrix(self) -> Tensor:
        """The (|C|, |C| + 1) confusion matrix of everything scored since the last reset."""
        cs = sorted({int(c) for r in self.rows for c in r["masks"]}) if self.classes is None \
            else _participating(max(self.classes) + 1, self.classes, self.max_classes)
        return confusion_matrix(self.rows, cs)

    def _value(self, row: dict[str, Any]) -> float:
        raise NotImplementedError

    def not_applicable(self, method: Any, name: str = "") -> str | None:
        if method is not None and not getattr(method, "class_specificity", True):
            # the method declares itself out of the protocol (the paper leaves out EP and
            # iGOS++, whose per-class optimisation makes a mask for every class prohibitive)
            return ("not part of the class-specificity protocol for this method (the paper "
                    "leaves out EP and iGOS++)")
        if name in self.skip_methods:
            return "left out of class specificity by the option skip_methods"
        return None

    def score(self, batch: EvalBatch) -> list[Any]:
        if self.not_applicable(batch.method, batch.method_name) is not None:
            return [math.nan] * batch.batch_size
        per_image = class_specificity_rows(
            batch, self.classes, max_classes=self.max_classes, thresholds=self.thresholds,
            score=self.score_kind, batch_size=self.batch_size)
        b = batch.batch_size
        ids = list(batch.image_ids) if len(batch.image_ids) == b else \
            [str(self._seen + i) for i in range(b)]
        self._seen += b
        out: list[Any] = []
        for i, rows in enumerate(per_image):
            for r in rows:
                self.rows.append({"image_id": str(ids[i]), **r})
            out.append({r["target"]: self._value(r) for r in rows} if rows else math.nan)
        return out


class ClassSpecificityDiag(_SpecificityMetric):
    """Diagonal of the class-specificity matrix (Stalder et al., NeurIPS 2022). Higher is
    better.

    Per image: a dict ``{t: p(t | mask of t)}`` over the target classes ``t`` present in the
    image and in the participating set ``C`` (``per_class = True``). Summary: the mean over
    classes of each class's mean over its images, i.e. the unweighted mean of the matrix's
    diagonal cells (:func:`specificity_summary`; the paper's summary). ``p(t | mask c)`` = probability of
    ``t`` (softmax over all K classes) on the image multiplied by the method's class-``c`` mask
    binarised at ``m > tau``, averaged over ``tau = 0.1..0.9``. Images with no class of ``C``:
    NaN.

    Options: ``classes=None`` (all K classes; class ids, or class names that the runner maps
    to the dataset's ids; the paper presets use bottle, car, cat, dog, person),
    ``max_classes=None`` (keep only the first ``max_classes`` of ``C``, to bound the cost),
    ``thresholds`` (0.1..0.9), ``score="softmax"`` (paper) or ``"sigmoid"``, ``batch_size=256``
    masked images per classifier forward, ``skip_methods=()`` (more methods to leave out by
    registry name). Methods whose ``class_specificity`` flag is False (Extremal Perturbations
    and iGOS++, which the paper's evaluation leaves out) are "n/a", not failures.

    Full matrix: after :meth:`update`, ``self.rows`` holds one dict per (image, target) pair,
    ``{"image_id", "target", "none", "masks": {c: p(t | mask c) for c in C}}``;
    :meth:`matrix` (or :func:`confusion_matrix` on saved rows) gives the (|C|, |C| + 1) table
    with the "none" column first. Cost: see the module docstring.

    Deviations: none in the definition. The masks are the method's ``attribute`` output for
    each class; masks outside [0, 1] (tolerance 1e-4) or non-finite give NaN cells (left out of
    the means). The synthetic preset binarises at one threshold (0.5) to stay within minutes.
    """

    name = "class_specificity_diag"
    higher_is_better = True
    version = 2
    definition = "softmax prob. of class t on the image masked by the method's class-t mask"

    def _value(self, row: dict[str, Any]) -> float:
        return row["masks"][row["target"]]


class ClassSpecificityOffDiag(_SpecificityMetric):
    """Off-diagonal of the class-specificity matrix (Stalder et al., NeurIPS 2022). Lower is
    better.

    Per image: a dict ``{t: mean_{c in C, c != t} p(t | mask of c)}`` over the target classes
    present in the image and in ``C``; NaN when ``|C| = 1`` or the image has no class of ``C``.
    Summary: the mean over classes of each class's mean over its images, which is the
    unweighted mean of the matrix's off-diagonal cells (each row has the same |C| - 1 of them;
    :func:`specificity_summary`), the paper's summary.
    Definitions, options, ``self.rows`` / :meth:`matrix` and deviations: see
    :class:`ClassSpecificityDiag`. When both metrics run on the same batch they share one
    computation (cache in ``batch.extras``).
    """

    name = "class_specificity_offdiag"
    higher_is_better = False
    version = 2
    definition = "mean softmax prob. of class t on the image masked by other classes' masks"
    headline = True

    def _value(self, row: dict[str, Any]) -> float:
        vals = [v for c, v in row["masks"].items() if c != row["target"]]
        if not vals or any(not math.isfinite(v) for v in vals):
            return math.nan
        return sum(vals) / len(vals)
