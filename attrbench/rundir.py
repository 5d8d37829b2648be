"""The run folder: its files, the typed shape of what they hold, and the one JSON cleaner and
atomic writer every writer uses.

A run folder (``results/runs/<preset>-<time>/`` by default) holds:

================================  ============================================================
``config.json``                   :class:`ConfigFile`: the resolved configuration
                                  (:class:`RunRecord`) and the environment
``scores.jsonl``                  one :class:`ScoreRow` per (image, method), appended as made
``summary.json``                  :class:`Summary`; also rendered as ``summary.md/.csv/.tex``
``timings.json``                  where the wall time went (:class:`Timings`)
``class_specificity.json``        the class-specificity matrices (``attrbench.plots``)
``qualitative.npz``               images and merged masks of the report's grid
``worst.npz``                     each method's worst images and their masks
``per_class.csv``                 every metric per class and method (written with the report)
``figures/``, ``report.html``     the report (``attrbench.report``)
================================  ============================================================

A baseline (``attrbench compare --make-baseline``) is :class:`Baseline`. The definitions are
``TypedDict``s: documentation a type checker can use, not a runtime check.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TypedDict

__all__ = [
    "CONFIG_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "TIMINGS_FILE",
    "Baseline",
    "ConfigFile",
    "MethodSummary",
    "MetricCell",
    "MetricInfo",
    "RunRecord",
    "ScoreRow",
    "Summary",
    "Timings",
    "atomic_write_text",
    "clean_json",
    "read_json_object",
]

CONFIG_FILE = "config.json"
SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "summary.json"
TIMINGS_FILE = "timings.json"


class ScoreRow(TypedDict, total=False):
    """One (image, method) line of ``scores.jsonl``."""

    image_id: str
    method: str
    status: str  # "ok" | "failed"
    error: str | None  # the failure's reason ("data: ...", "method raised ...", ...)
    classes: list[int]  # the image's ground-truth class ids (ok rows)
    #: metric -> value (float, None for undefined, or {class id: float} for per-class metrics),
    #: plus the metrics' curves under their ``curve_key``
    scores: dict[str, Any]
    metric_error: str  # the first metric that raised on this image
    not_applicable: dict[str, str]  # metric -> why its protocol does not cover the method


class RunRecord(TypedDict, total=False):
    """The resolved configuration (``config.json["config"]``)."""

    preset: dict[str, Any]
    data_root: str | None
    split: str
    limit: int | None
    seed: int
    image_size: int
    num_classes: int
    classes: list[str]
    classifier: dict[str, Any]  # checkpoint, name, fingerprint
    methods: dict[str, dict[str, Any]]  # AttributionMethod.describe()
    metrics: dict[str, dict[str, Any]]  # Metric.describe() + options


class ConfigFile(TypedDict):
    schema: int
    config: RunRecord
    environment: dict[str, Any]  # versions, platform, device, git commit and cleanliness


class MetricInfo(TypedDict, total=False):
    """``summary.json["metrics"][name]``: the metric's declaration."""

    name: str
    higher_is_better: bool
    version: int
    definition: str
    kind: str  # "quality" | "cost"
    tolerance: dict[str, Any] | None  # attrbench.interfaces.Tolerance.to_dict()
    cost: bool


class MetricCell(TypedDict, total=False):
    """``summary.json["results"][method]["metrics"][name]``."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int  # images with a finite value
    n_undefined: int
    not_applicable: str  # the reason, when the protocol does not cover the method


class MethodSummary(TypedDict):
    n_images: int
    n_failed: int
    failures: dict[str, int]  # reason -> rows
    metric_errors: dict[str, int]
    metrics: dict[str, MetricCell]


class Summary(TypedDict):
    methods: list[str]
    metrics: dict[str, MetricInfo]
    results: dict[str, MethodSummary]
    paired: dict[str, Any]  # attrbench.stats.paired_comparisons
    sanity_methods: list[str]


class Timings(TypedDict, total=False):
    total_s: float
    data_s: float
    methods_s: dict[str, float]
    metrics_s: dict[str, float]
    metric_by_method_s: dict[str, dict[str, float]]
    other_s: float


class Baseline(TypedDict, total=False):
    """A committed reference run (``attrbench compare``)."""

    schema: int
    source: dict[str, Any]  # git commit and cleanliness, environment
    config: dict[str, Any]  # attrbench.compare.run_config
    metrics: dict[str, MetricInfo]
    results: dict[str, dict[str, Any]]


def clean_json(v: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None, tensors and arrays -> lists, dict keys -> str, paths ->
    str, modules -> their class name, other objects -> their ``repr``."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): clean_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_json(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "tolist"):
        return clean_json(v.tolist())
    if hasattr(v, "named_parameters"):  # a torch module
        return type(v).__name__
    return repr(v)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename: a crash leaves the
    old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``FileNotFoundError`` when it is missing, ``ValueError``
    (one line naming ``what`` and the path) when it is not valid JSON or not an object."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(  # noqa: TRY004 - bad file content, reported like any bad input
            f"{what} {path} must hold a JSON object, got {type(d).__name__}")
    return d
