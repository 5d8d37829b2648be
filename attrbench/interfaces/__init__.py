"""The two interfaces every benchmark component implements: :class:`AttributionMethod` and
:class:`Metric`, plus :class:`EvalBatch`, the one object that carries a batch from the runner to
the metrics.

Data flow: dataset -> runner -> method -> metric -> result store. Methods map
``(images, targets)`` to masks; metrics map an :class:`EvalBatch` to one score per image.

Modules: :mod:`.method` (:class:`AttributionMethod` and the model helpers it runs on),
:mod:`.batch` (:class:`EvalBatch`), :mod:`.metric` (:class:`Metric`, :class:`Tolerance`,
:class:`SideOutputs`, :func:`per_class_mean`). Import the names from here.
"""

from __future__ import annotations

from ..ops import minmax_rescale
from .batch import EvalBatch
from .method import (
    CLASSIFIER_USES,
    MERGE_ORDERS,
    AttributionMethod,
    infer_num_classes,
    model_state_guard,
)
from .metric import METRIC_KINDS, Metric, SideOutputs, Tolerance, per_class_mean

__all__ = [
    "CLASSIFIER_USES",
    "MERGE_ORDERS",
    "METRIC_KINDS",
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
