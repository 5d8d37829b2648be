"""The two interfaces every benchmark component implements: :class:`AttributionMethod` and
:class:`Metric`, plus :class:`EvalBatch`, the one object that carries a batch from the runner to
the metrics.

Data flow: dataset -> runner -> method -> metric -> result store. Methods map
``(images, targets)`` to masks; metrics map an :class:`EvalBatch` to one score per image.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .ops import minmax_rescale
from .rundir import clean_json

__all__ = [
    "AttributionMethod",
    "EvalBatch",
    "Metric",
    "SideOutputs",
    "Tolerance",
    "infer_num_classes",
    "minmax_rescale",
    "model_state_guard",
    "per_class_mean",
]

#: Merge orders of an image's class maps (:attr:`AttributionMethod.merge`).
MERGE_ORDERS = ("rescale_then_max", "max_then_rescale")
#: How a method uses the classifier (:attr:`AttributionMethod.classifier_use`).
CLASSIFIER_USES = ("inference", "training", "none")


# ---------------------------------------------------------------------------------- helpers
def infer_num_classes(model: nn.Module, image_size: int = 32, device: torch.device | None = None) -> int:
    """Number of logits of ``model``: its ``num_classes`` attribute, else one probe forward."""
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and k > 0:
        return k
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    with torch.no_grad():
        out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    if out.ndim != 2:
        raise ValueError(f"classifier must return (B, K) logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def _all_hook_dicts(module: nn.Module) -> list[dict]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return [getattr(module, n) for n in names if hasattr(module, n)]


@contextlib.contextmanager
def model_state_guard(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval flags, ``requires_grad`` flags, parameter ``.grad`` and
    hooks on exit, even when the body raises.

    This is a safety net: methods remove their own hooks in ``finally`` blocks, and the contract
    tests check that; the guard makes a buggy third-party method unable to leak state into the
    next method's numbers.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    hooks = [(d, set(d.keys())) for m in model.modules() for d in _all_hook_dicts(m)]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req, g in grads:
            p.requires_grad_(req)
            p.grad = g
        for d, keys in hooks:
            for k in list(d.keys()):
                if k not in keys:
                    del d[k]


# ---------------------------------------------------------------------------------- methods
class AttributionMethod:
    """Base class of every attribution method.

    Subclasses implement :meth:`_attribute` (and optionally :meth:`_attribute_all`). The public
    :meth:`attribute` validates the inputs, runs the subclass under :func:`model_state_guard`
    with gradients enabled only if the method needs them, and checks the output.

    Contract:
        ``attribute(images (B,3,H,W) float, targets (B,) long) -> (B,H,W) float`` on the input's
        device, at input resolution. Hyperparameters go to ``__init__``, are validated there and
        are exposed by :attr:`options` (recorded in the results).

    Class attributes describe what the method needs:
        ``black_box`` (only forward passes of the classifier), ``needs_gradients``,
        ``needs_checkpoint`` (a trained network of its own), ``needs_ground_truth`` (the
        ``ideal`` sanity row), ``stochastic`` (draws random numbers; then seeded); and what the
        rest of the code needs to know about it: ``sanity`` (a reference row, not a method
        under test), ``class_specificity`` (covered by the class-specificity protocol).

    ``merge`` says how the runner turns an image's class maps into the one merged map of the
    image-level metrics, following each method's reference code:

    * ``"rescale_then_max"`` (default): every class map is final as returned (a method that
      rescales does so per class) and the merged map is their pixel-wise maximum;
    * ``"max_then_rescale"``: ``_attribute`` returns the maps *before* the final per-map
      rescale (:meth:`rescale`); the merged map is ``rescale(max over classes of those maps)``
      and each class map is ``rescale(map)``. Set by Extremal Perturbations and Guided
      Backprop, whose reference code takes the maximum first.

    ``classifier_use`` says how the method depends on the classifier: ``"inference"`` (calls it
    to make a map; the default), ``"training"`` (a network trained against the classifier that
    does not call it at inference: the Explainer, RT-Saliency; a model-randomisation test does
    not apply to it) or ``"none"`` (ignores it: the sanity rows).
    """

    name: ClassVar[str] = "base"
    black_box: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    needs_checkpoint: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    #: A method whose ``attribute_all`` costs about one ``attribute`` call (RISE, Explainer).
    all_classes_at_once: ClassVar[bool] = False
    #: Order of the multi-class merge (see the class docstring): one of :data:`MERGE_ORDERS`.
    merge: ClassVar[str] = "rescale_then_max"
    #: How the method depends on the classifier: one of :data:`CLASSIFIER_USES`.
    classifier_use: ClassVar[str] = "inference"
    #: A sanity reference (constant, random, centre, ideal maps), not a method under test:
    #: tables never call it the best method of a column unless only such rows are present.
    sanity: ClassVar[bool] = False
    #: Whether the class-specificity protocol covers the method. False for methods whose
    #: per-class optimisation makes a mask for every class of every image prohibitively
    #: expensive (the paper leaves out Extremal Perturbations and iGOS++).
    class_specificity: ClassVar[bool] = True

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.options: dict[str, Any] = dict(options)
        #: the constructor's options exactly as given (``options`` may gain resolved values)
        self.init_options: dict[str, Any] = dict(options)
        self._num_classes: int | None = None

    def clone(self, model: nn.Module) -> AttributionMethod:
        """A new instance of the same class and constructor options on another ``model`` (the
        model-randomisation test rebuilds methods this way). Values a method resolved at call
        time and recorded in :attr:`options` are not passed back."""
        return type(self)(model, **self.init_options)

    def rescale(self, maps: Tensor) -> Tensor:
        """The final per-map rescale of a ``"max_then_rescale"`` method (default: min-max to
        [0, 1], a constant map becomes all 0). Not used by ``"rescale_then_max"`` methods."""
        return minmax_rescale(maps)

    def merge_pairs(self, maps: Tensor, pair_image: Tensor, batch_size: int
                    ) -> tuple[Tensor, Tensor]:
        """``(class_masks, merged)`` from the (P, H, W) maps ``attribute(..., rescale=False)``
        returned for the (image, class) pairs, in this method's :attr:`merge` order."""
        if self.merge == "max_then_rescale":
            return self.rescale(maps), self.rescale(EvalBatch.merge(maps, pair_image, batch_size))
        return maps, EvalBatch.merge(maps, pair_image, batch_size)

    # -- helpers for subclasses
    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = infer_num_classes(self.model)
        return self._num_classes

    @staticmethod
    def _check_positive(name: str, value: Any, integer: bool = False) -> None:
        if integer and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")

    @staticmethod
    def _check_fraction(name: str, value: Any, closed: bool = False) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (0 <= value <= 1 if closed else 0 < value < 1)
        if not ok:
            rng = "[0, 1]" if closed else "(0, 1)"
            raise ValueError(f"{name} must be in {rng}, got {value!r}")

    def _validate(self, images: Tensor, targets: Tensor | None) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating tensor, got {images.dtype}")
        if targets is None:
            return
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must have shape (B,) = ({images.shape[0]},) to match the images, "
                f"got {tuple(targets.shape)}"
            )
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ValueError(
                f"targets must be class ids in [0, {self.num_classes - 1}], got "
                f"{targets.tolist()}"
            )

    # -- public API
    def attribute(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        gt_masks: Tensor | None = None,
        seeds: Tensor | None = None,
        rescale: bool = True,
    ) -> Tensor:
        """One saliency map per (image, target class).

        Args:
            images: (B, 3, H, W) normalised images.
            targets: (B,) class ids, one per image.
            gt_masks: (B, H, W) ground-truth masks of the targets; used only by methods with
                ``needs_ground_truth`` (the ``ideal`` sanity row).
            seeds: (B,) per-image integer seeds for stochastic methods, so that the result of an
                image does not depend on the batch it is in. Default: ``0`` for every image.
            rescale: False returns a ``"max_then_rescale"`` method's maps before its final
                per-map :meth:`rescale` (for the merge); other methods ignore it.

        Returns:
            (B, H, W) float maps on the images' device.
        """
        self._validate(images, targets)
        if self.needs_ground_truth and gt_masks is None:
            raise ValueError(f"method '{self.name}' needs gt_masks (B, H, W)")
        targets = targets.to(device=images.device, dtype=torch.long)
        if seeds is None:
            seeds = torch.zeros(images.shape[0], dtype=torch.long)
        with model_state_guard(self.model), torch.set_grad_enabled(self.needs_gradients):
            out = self._attribute(images.detach(), targets, gt_masks=gt_masks, seeds=seeds)
        b, _, h, w = images.shape
        if out.shape != (b, h, w):
            raise RuntimeError(
                f"method '{self.name}' returned shape {tuple(out.shape)}, expected {(b, h, w)}"
            )
        out = out.detach().float()
        if rescale and self.merge == "max_then_rescale":
            out = self.rescale(out)
        return out

    def attribute_all(self, images: Tensor, *, seeds: Tensor | None = None,
                      rescale: bool = True) -> Tensor:
        """Maps for every class: (B, K, H, W). Default: one :meth:`attribute` call per class."""
        self._validate(images, None)
        if seeds is None:
            seeds = torch.zeros(images.shape[0], dtype=torch.long)
        with model_state_guard(self.model), torch.set_grad_enabled(self.needs_gradients):
            out = self._attribute_all(images.detach(), seeds=seeds)
        b, _, h, w = images.shape
        if out.shape != (b, self.num_classes, h, w):
            raise RuntimeError(
                f"method '{self.name}' returned shape {tuple(out.shape)} from attribute_all, "
                f"expected {(b, self.num_classes, h, w)}"
            )
        out = out.detach().float()
        if rescale and self.merge == "max_then_rescale":
            out = self.rescale(out.flatten(0, 1)).view_as(out)
        return out

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        raise NotImplementedError

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        if self.needs_ground_truth:
            raise ValueError(f"method '{self.name}' cannot produce masks without ground truth")
        b = images.shape[0]
        maps = []
        for k in range(self.num_classes):
            t = torch.full((b,), k, dtype=torch.long, device=images.device)
            maps.append(self._attribute(images, t, gt_masks=None, seeds=seeds))
        return torch.stack(maps, dim=1)

    def describe(self) -> dict[str, Any]:
        """Name, class attributes and options, as recorded in the results."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "black_box": self.black_box,
            "needs_gradients": self.needs_gradients,
            "stochastic": self.stochastic,
            "merge": self.merge,
            "classifier_use": self.classifier_use,
            "sanity": self.sanity,
            "options": clean_json(dict(self.options)),
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


# ---------------------------------------------------------------------------------- metrics
@dataclass
class EvalBatch:
    """Everything a metric may look at for one batch of images and one method.

    Shapes: B images, P = number of (image, ground-truth class) pairs, K classes.

    Attributes:
        images: (B, 3, H, W) normalised images.
        labels: (B, K) multi-hot ground-truth labels.
        pair_image: (P,) index into the batch of each pair.
        pair_class: (P,) class id of each pair.
        class_masks: (P, H, W) the method's mask for each pair, in [0, 1] after the runner's
            check (values outside are an error recorded as a failure).
        merged: (B, H, W) the image's merged mask: the pixel-wise max of its class masks, taken
            before or after the final rescale as the method's ``merge`` order says.
        gt_masks: (B, K, H, W) bool per-class ground truth, or None when the dataset has none.
        has_gt: (B,) bool, whether image b has segmentation ground truth.
        boxes: per image, a list of (class_id, x0, y0, x1, y1, difficult) in pixel coordinates
            of the (resized) image; empty when the format has none.
        originals: per image, its annotations at the original (file) resolution
            (:class:`attrbench.data.sample.Original`: size, boxes, COCO instance masks) for the
            protocols defined there (the pointing game), or None; empty when unknown.
        model: the frozen classifier (eval mode).
        method: the attribution method (for metrics that need more masks), or None.
        method_name: registry name of the method.
        image_ids: stable sample ids.
        seeds: (B,) per-image seeds.
        time_ms: (B,) milliseconds the method spent per image in this batch (NaN if unknown).
        extras: the runner's per-batch measurements of the method call: ``model_calls`` (B,),
            ``peak_mem_mb``, ``forward_rows``, ``backward_rows``.
        memo: a fresh dict per batch for computations that several metrics share (the two
            class-specificity metrics compute one matrix); keys name the computing function
            and its options.
    """

    images: Tensor
    labels: Tensor
    pair_image: Tensor
    pair_class: Tensor
    class_masks: Tensor
    merged: Tensor
    gt_masks: Tensor | None = None
    has_gt: Tensor | None = None
    boxes: Sequence[Sequence[tuple]] = ()
    originals: Sequence[Any] = ()
    model: nn.Module | None = None
    method: AttributionMethod | None = None
    method_name: str = ""
    image_ids: Sequence[str] = ()
    seeds: Tensor | None = None
    time_ms: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def gt_union(self) -> Tensor | None:
        """(B, H, W) bool: union of all classes' ground truth."""
        if self.gt_masks is None:
            return None
        return self.gt_masks.any(dim=1)

    @property
    def pair_gt(self) -> Tensor | None:
        """(P, H, W) bool ground truth of each pair's class."""
        if self.gt_masks is None:
            return None
        return self.gt_masks[self.pair_image, self.pair_class]

    @staticmethod
    def merge(class_masks: Tensor, pair_image: Tensor, batch_size: int) -> Tensor:
        """Pixel-wise max of the class masks of each image: (P,H,W) -> (B,H,W)."""
        p, h, w = class_masks.shape
        out = torch.full(
            (batch_size, h * w), -math.inf, dtype=class_masks.dtype, device=class_masks.device
        )
        out.scatter_reduce_(
            0,
            pair_image.to(class_masks.device).view(-1, 1).expand(p, h * w),
            class_masks.reshape(p, h * w),
            reduce="amax",
            include_self=True,
        )
        out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
        return out.view(batch_size, h, w)


@dataclass(frozen=True)
class Tolerance:
    """How far a metric's summary value may move before ``attrbench compare`` fails.

    Kinds (``value`` is in the kind's unit):
        ``absolute``: ``|current - baseline| <= value``, for scores bounded in a fixed range
            whose values use that range (most localisation scores in [0, 1]).
        ``relative``: ``|current - baseline| <= max(value * |baseline|, floor)``, for metrics
            with small typical values or without a fixed range; ``floor`` keeps a baseline of
            exactly 0 from demanding bit equality.
        ``flips``: ``|current - baseline| <= value / n`` with ``n`` the number of images with a
            defined value in the baseline, for discrete per-image outcomes (a hit or a miss):
            ``value`` is the number of per-image outcomes that may flip.

    Example:
        >>> Tolerance("relative", 0.05, floor=0.002).allowed(0.026)
        0.002
        >>> Tolerance("flips", 2).allowed(0.5, n=100)
        0.02
    """

    kind: str
    value: float
    floor: float = 0.0

    KINDS: ClassVar[tuple[str, ...]] = ("absolute", "relative", "flips")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"tolerance kind must be one of {self.KINDS}, got {self.kind!r}")
        for name in ("value", "floor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or (
                    not math.isfinite(v)):
                raise ValueError(f"tolerance {name} must be a finite number >= 0, got {v!r}")
        if self.floor and self.kind != "relative":
            raise ValueError(f"a floor only applies to relative tolerances, got kind {self.kind!r}")

    def allowed(self, baseline: float, n: int | None = None) -> float:
        """The largest allowed ``|current - baseline|`` (``n``: images with a defined value)."""
        if self.kind == "absolute":
            return float(self.value)
        if self.kind == "relative":
            return max(float(self.value) * abs(baseline), float(self.floor))
        if not n or n < 1:
            raise ValueError(f"a flips tolerance needs the number of scored images, got n={n!r}")
        return float(self.value) / n

    def describe(self) -> str:
        if self.kind == "absolute":
            return f"±{self.value:g}"
        if self.kind == "relative":
            return f"±{100 * self.value:g}%" + (f" (>= {self.floor:g})" if self.floor else "")
        return f"{self.value:g} flip" + ("" if self.value == 1 else "s")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "value": self.value}
        if self.floor:
            d["floor"] = self.floor
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Tolerance:
        if not isinstance(d, dict) or "kind" not in d or "value" not in d:
            raise ValueError(f"a tolerance must be a dict with 'kind' and 'value', got {d!r}")
        return cls(d["kind"], d["value"], d.get("floor", 0.0))


METRIC_KINDS = ("quality", "cost")


@dataclass
class SideOutputs:
    """What a metric hands to the run folder besides its per-image values (:meth:`Metric.
    side_outputs`, read by the runner after every :meth:`Metric.update`).

    Attributes:
        curves: ``{image_id: curve}`` stored in the image's score row under the metric's
            :attr:`Metric.curve_key`; a curve is a list of floats, or ``{class_id: list}`` for
            per-class curves. Drawn by the report (mean curve per method).
        matrix_rows: rows of the matrix of the metric's :attr:`Metric.matrix_group`
            (``{"image_id", ...}``); the runner keeps one copy per method and group and the
            report turns them into the group's matrix with :meth:`Metric.matrix_record`.
    """

    curves: dict[str, Any] = field(default_factory=dict)
    matrix_rows: list[dict[str, Any]] = field(default_factory=list)


class Metric:
    """Base class of every metric: a thin accumulator around pure tensor functions.

    Subclasses set the class attributes and implement :meth:`score`, which returns one value per
    image of the batch: a float (NaN = not defined for that image, e.g. no ground truth; such
    images are counted, never scored) or, for per-class metrics, a dict ``{class_id: float}``.
    :meth:`aggregate` turns the stored per-image values into the summary number; the default is
    the mean over images with a finite value, and for ``per_class`` metrics the unweighted mean
    over classes of each class's mean over images (:func:`per_class_mean`).
    :meth:`not_applicable` names methods the metric's protocol does not cover; the runner does
    not score them and the tables show "n/a".

    Class attributes:
        name: the name used in tables and files.
        higher_is_better: direction, shown as ↑/↓ in tables.
        version: bumped on any change of definition (CI regression baselines check it).
        definition: one line shown in tables and the report.
        curve_key / curve_title: the score-row key of the per-image curves the metric hands
            over (:class:`SideOutputs`) and the title of their figure; None when it has none.
        matrix_group: the name of the matrix the metric's rows belong to (metrics of one
            group share the rows), or None.
        figure_axis: ``"quality"`` or ``"cost"`` when the metric is an axis of the report's
            cost-quality figure, else None.
        kind: ``"quality"`` (a property of the masks; checked by ``attrbench compare``) or
            ``"cost"`` (time, calls, memory: depends on the machine; reported, never checked).
        regression_tolerance: the :class:`Tolerance` of ``attrbench compare`` for a quality
            metric (None for cost metrics). The default suits a score bounded in [0, 1]; a
            metric on another scale, with small typical values or with discrete outcomes
            declares its own. (Not ``tolerance``: some metrics have an option of that name.)
        headline: shown in the terminal table that ``attrbench run`` prints by default (a
            few metrics, one per family, so that the table fits 100 columns); the files of a
            run always hold every metric.
    """

    name: ClassVar[str] = "base"
    higher_is_better: ClassVar[bool] = True
    version: ClassVar[int] = 1
    definition: ClassVar[str] = ""
    kind: ClassVar[str] = "quality"
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("absolute", 0.01)
    #: a per-image value is a dict class -> value (aggregated per class first)
    per_class: ClassVar[bool] = False
    curve_key: ClassVar[str | None] = None
    curve_title: ClassVar[str] = ""
    matrix_group: ClassVar[str | None] = None
    figure_axis: ClassVar[str | None] = None
    #: one of the few metrics of the default terminal table
    headline: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = dict(options)
        self._values: list[Any] = []

    def score(self, batch: EvalBatch) -> list[Any]:
        raise NotImplementedError

    def not_applicable(self, method: AttributionMethod, name: str = "") -> str | None:
        """Why this metric does not apply to ``method`` (registered as ``name``), or None."""
        return None

    def update(self, batch: EvalBatch) -> list[Any]:
        values = self.score(batch)
        if len(values) != batch.batch_size:
            raise RuntimeError(
                f"metric '{self.name}' returned {len(values)} values for {batch.batch_size} images"
            )
        self._values.extend(values)
        return values

    def compute(self) -> float:
        return self.aggregate(self._values)

    def reset(self) -> None:
        self._values = []

    def side_outputs(self) -> SideOutputs:
        """Curves and matrix rows of the batches since the last :meth:`reset` (default: none)."""
        return SideOutputs()

    @classmethod
    def matrix_record(cls, rows: Sequence[dict[str, Any]], class_names: Sequence[str]
                      ) -> dict[str, Any]:
        """The matrix of :attr:`matrix_group` from its rows, as written to the run folder."""
        raise NotImplementedError(f"metric '{cls.name}' declares no matrix")

    @classmethod
    def image_value(cls, value: Any) -> float:
        """Reduce one stored per-image value to a float (per-class dicts: their mean)."""
        if isinstance(value, dict):
            vals = [float(v) for v in value.values() if v is not None and math.isfinite(float(v))]
            return sum(vals) / len(vals) if vals else math.nan
        if value is None:
            return math.nan
        return float(value)

    @classmethod
    def aggregate(cls, values: Sequence[Any]) -> float:
        """Summary value from per-image values. Default: mean of the finite per-image values;
        for ``per_class`` metrics :func:`per_class_mean`."""
        if cls.per_class:
            return per_class_mean(values)
        vals = [cls.image_value(v) for v in values]
        vals = [v for v in vals if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else math.nan

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "higher_is_better": cls.higher_is_better,
            "version": cls.version,
            "definition": cls.definition,
        }

    @classmethod
    def regression(cls) -> dict[str, Any]:
        """``{"kind", "tolerance"}`` as written to summaries and baselines (checked: a cost
        metric has no tolerance, a quality metric has one)."""
        if cls.kind not in METRIC_KINDS:
            raise ValueError(f"metric '{cls.name}': kind must be one of {METRIC_KINDS}, "
                             f"got {cls.kind!r}")
        tol = cls.regression_tolerance
        if (cls.kind == "cost") != (tol is None):
            raise ValueError(f"metric '{cls.name}': a cost metric has tolerance None and a "
                             f"quality metric a Tolerance, got kind {cls.kind!r} and "
                             f"regression_tolerance {tol!r}")
        return {"kind": cls.kind,
                "tolerance": None if tol is None else tol.to_dict()}


def per_class_mean(values: Sequence[Any]) -> float:
    """Unweighted mean over classes of each class's mean over images.

    ``values`` are per-image dicts ``{class: value}`` (other entries are ignored); keys may be
    ints or their string form (after a JSON round trip). Non-finite entries are left out; a
    class with no finite entry does not enter the mean. For the pointing game (values 1 hit /
    0 miss) this is the mean of per-class accuracies; for class specificity the mean of the
    matrix's cells.
    """
    sums: dict[Any, float] = {}
    counts: dict[Any, int] = {}
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
            sums[key] = sums.get(key, 0.0) + x
            counts[key] = counts.get(key, 0) + 1
    means = [sums[k] / counts[k] for k in counts]
    return sum(means) / len(means) if means else math.nan

