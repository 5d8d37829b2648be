"""The metric interface: :class:`Metric`, the base class of every metric, with what it declares
(:class:`Tolerance` for ``attrbench compare``, :data:`METRIC_KINDS`) and hands over
(:class:`SideOutputs`), and the per-class aggregation :func:`per_class_mean`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .batch import EvalBatch

if TYPE_CHECKING:
    from .method import AttributionMethod

__all__ = [
    "METRIC_KINDS",
    "Metric",
    "SideOutputs",
    "Tolerance",
    "per_class_mean",
]


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
