"""Paper-style tables across runs: ``attrbench table RUN [RUN ...]``.

Several run folders that share one protocol and differ only in the classifier (e.g. VOC with
VGG-16 and with ResNet-50) are joined into one table in the layout of the Explainer paper
(Stalder et al. 2022): one row per metric and classifier (with a single run, one row per
metric), one column per method, the best value of each row in bold.

* **Best**: the maximum for a metric whose registered class says ``higher_is_better``, else the
  minimum (the direction comes from :data:`attrbench.catalog.METRICS`; a metric that is no
  longer registered falls back to the run's own summary). Ties all win; values are compared at
  full precision, not as printed. Cost metrics (time, calls, memory) get no bold. Sanity rows
  (ideal, center, random, constant masks) are not candidates while another method is in the
  row, as in the per-run summary tables.
* **CI** (``--ci``): ``value ± h``, ``h`` the half-width of the run's 95 % bootstrap CI.
* **Protocol check**: before joining, every run's protocol is compared with the first run's:
  dataset, split, image size, classes, seed, ``--limit``, the number of images evaluated, each
  shown metric's version and options and each shown method's class and options. A difference
  is refused with one line naming the option and its two values. Classifier-bound settings may
  differ: the classifier itself (name, checkpoint, weights fingerprint), the preset name and
  training settings (paper presets are named per classifier), input normalisation, and the
  method options in :data:`CLASSIFIER_BOUND_OPTIONS` (an Explainer checkpoint is trained for
  one classifier; a CAM layer is a layer of one architecture). Options that only change how
  the work is batched (:data:`EXECUTION_OPTIONS`) do not change numbers and are not compared.

Formats: Markdown (``md``), CSV (one row per metric and classifier, full precision, CI bounds
as extra columns with ``--ci``, a ``best`` column) and LaTeX (``booktabs``), written by
:mod:`attrbench.tables.paper`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import read_json_object as _read_json
from .tables import NOT_APPLICABLE, sanity_methods
from .tables.paper import FORMATS, render

__all__ = [
    "CLASSIFIER_BOUND_OPTIONS",
    "EXECUTION_OPTIONS",
    "PaperTable",
    "ProtocolMismatchError",
    "RunData",
    "build_table",
    "check_protocols",
    "load_run",
    "protocol",
    "render",
]

#: Method options whose value belongs to the classifier and may differ between joined runs.
CLASSIFIER_BOUND_OPTIONS = frozenset({"checkpoint", "layer"})
#: Method and metric options that change how work is batched or stored, not the numbers.
EXECUTION_OPTIONS = frozenset({"batch_size", "keep_curves"})
_MISSING = object()


class ProtocolMismatchError(ValueError):
    """Runs that do not share one protocol (or cannot be joined for another reason)."""


@dataclass
class RunData:
    """One run folder: its ``summary.json``, the ``config`` of its ``config.json`` and the
    label of its rows (the classifier's name)."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    label: str = ""


@dataclass
class PaperTable:
    """The joined table: ``methods`` (columns) and ``rows``, each
    ``{"metric", "classifier", "higher_is_better", "cost", "cells": {method: cell}}`` with a
    cell ``{"value", "ci_low", "ci_high", "not_applicable", "best"}`` (None where the run lacks
    the method)."""

    methods: list[str]
    rows: list[dict[str, Any]]
    classifiers: list[str]
    ci: bool = False
    digits: int = 3
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- reading
def load_run(path: str | Path) -> RunData:
    """A run folder (or its ``summary.json``): summary and configuration, both required."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"run folder {p} does not exist")
    folder = p if p.is_dir() else p.parent
    summary = _read_json(folder / "summary.json", "run summary")
    for key in ("methods", "metrics", "results"):
        if key not in summary:
            raise ValueError(f"{folder / 'summary.json'} is not a run summary (no '{key}')")
    cfg = _read_json(folder / "config.json", "run configuration")
    config = cfg.get("config", cfg)
    name = (config.get("classifier") or {}).get("name") or "classifier"
    return RunData(folder, summary, config, str(name))


# ------------------------------------------------------------------------------- protocol
def _image_count(summary: Mapping[str, Any]) -> int:
    """Images a run evaluated: the largest ``n_images + n_failed`` over its methods."""
    return max((int(r.get("n_images", 0)) + int(r.get("n_failed", 0))
                for r in summary["results"].values()), default=0)


def _flatten(d: Any, prefix: str) -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: d}


def protocol(run: RunData, methods: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """The settings that define a run's numbers apart from its classifier, as
    ``{dotted key: value}``, restricted to the given methods and metrics."""
    cfg = run.config
    preset = cfg.get("preset")
    dataset = preset.get("dataset") if isinstance(preset, dict) else preset
    out: dict[str, Any] = {"dataset": dataset}
    for k in ("split", "image_size", "num_classes", "classes", "seed", "limit"):
        out[k] = cfg.get(k)
    out["images evaluated"] = _image_count(run.summary)
    for m in methods:
        d = (cfg.get("methods") or {}).get(m)
        if d is None:
            continue
        out[f"methods.{m}.class"] = d.get("class")
        opts = {k: v for k, v in (d.get("options") or {}).items()
                if k not in CLASSIFIER_BOUND_OPTIONS | EXECUTION_OPTIONS}
        out.update(_flatten(opts, f"methods.{m}.options"))
    for k in metrics:
        d = (cfg.get("metrics") or {}).get(k)
        if d is None:
            continue
        out[f"metrics.{k}.version"] = d.get("version")
        opts = {o: v for o, v in (d.get("options") or {}).items() if o not in EXECUTION_OPTIONS}
        out.update(_flatten(opts, f"metrics.{k}.options"))
    return out


def _show(v: Any) -> str:
    return "(not set)" if v is _MISSING else json.dumps(v)


def check_protocols(runs: Sequence[RunData], methods: Sequence[str],
                    metrics: Sequence[str]) -> None:
    """Raise :class:`ProtocolMismatchError` (one line: the first differing option and its two
    values) unless every run shares the first run's protocol on the methods and metrics that
    both runs have among ``methods`` and ``metrics``."""
    first = runs[0]
    for other in runs[1:]:
        shared_m = [m for m in methods
                    if m in (first.config.get("methods") or {})
                    and m in (other.config.get("methods") or {})]
        shared_k = [k for k in metrics
                    if k in (first.config.get("metrics") or {})
                    and k in (other.config.get("metrics") or {})]
        a = protocol(first, shared_m, shared_k)
        b = protocol(other, shared_m, shared_k)
        diff = [k for k in list(a) + [k for k in b if k not in a]
                if a.get(k, _MISSING) != b.get(k, _MISSING)]
        if diff:
            key = diff[0]
            more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
            raise ProtocolMismatchError(
                f"runs differ in {key}: {_show(a.get(key, _MISSING))} in {first.path} vs "
                f"{_show(b.get(key, _MISSING))} in {other.path}{more}; only runs that differ "
                f"in the classifier can be joined")


# ------------------------------------------------------------------------------- table
def _split(arg: str | Sequence[str] | None) -> list[str] | None:
    if arg is None:
        return None
    items = arg.split(",") if isinstance(arg, str) else list(arg)
    items = [s.strip() for s in items if s.strip()]
    return list(dict.fromkeys(items)) or None


def _metric_info(name: str, runs: Sequence[RunData]) -> tuple[bool, bool]:
    """``(higher_is_better, is_cost)`` from the registry, else from a run's summary."""
    from .catalog import METRICS
    from .registry import RegistryError

    try:
        cls = METRICS.get(name)
        return bool(cls.higher_is_better), cls.kind == "cost"
    except RegistryError:
        for r in runs:
            d = r.summary["metrics"].get(name)
            if d is not None:
                cost = bool(d.get("cost")) or d.get("kind") == "cost"
                return bool(d.get("higher_is_better", True)), cost
    raise ValueError(f"metric '{name}' is neither registered nor in any run")  # pragma: no cover


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mark_best(cells: dict[str, dict[str, Any] | None], higher: bool,
               sanity: frozenset[str] = frozenset()) -> None:
    vals = {m: float(c["value"]) for m, c in cells.items()
            if c is not None and not c["not_applicable"] and _finite(c["value"])}
    pool = {m: v for m, v in vals.items() if m not in sanity} or vals
    if not pool:
        return
    best = max(pool.values()) if higher else min(pool.values())
    tol = 1e-9 * max(1.0, abs(best))
    for m in pool:
        if abs(pool[m] - best) <= tol:
            cells[m]["best"] = True  # type: ignore[index]


def build_table(runs: Sequence[RunData], metrics: str | Sequence[str] | None = None,
                methods: str | Sequence[str] | None = None, ci: bool = False,
                digits: int = 3) -> PaperTable:
    """Check the runs' protocols and join them (see the module docstring).

    Args:
        runs: run folders (:func:`load_run`); rows of one metric follow the runs' order.
        metrics: metric subset and order (default: every metric of the runs, first run's order).
        methods: method subset and order (default: every method of the runs).
        ci: show the CI half-width.
        digits: decimals of the printed values (CSV is always at full precision).
    """
    if not runs:
        raise ValueError("attrbench table needs at least one run folder")
    if digits < 0:
        raise ValueError(f"--digits must be >= 0, got {digits}")
    all_metrics = list(dict.fromkeys(k for r in runs for k in r.summary["metrics"]))
    all_methods = list(dict.fromkeys(m for r in runs for m in r.summary["methods"]))
    chosen_k = _split(metrics) or all_metrics
    chosen_m = _split(methods) or all_methods
    for what, chosen, present in (("--metrics", chosen_k, all_metrics),
                                  ("--methods", chosen_m, all_methods)):
        missing = [x for x in chosen if x not in present]
        if missing:
            raise ValueError(f"{what}: {', '.join(repr(x) for x in missing)} not in any of the "
                             f"runs (they have: {', '.join(present)})")
    check_protocols(runs, chosen_m, chosen_k)
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):  # same classifier twice: tell the rows apart
        labels = [f"{r.label} ({r.path.name})" for r in runs]
        if len(set(labels)) < len(labels):
            raise ProtocolMismatchError(
                "two runs have the same classifier and folder name; pass distinct run folders")
    sanity = frozenset().union(*(sanity_methods(r.summary) for r in runs))
    rows = []
    for k in chosen_k:
        higher, cost = _metric_info(k, runs)
        for run, label in zip(runs, labels):
            if k not in run.summary["metrics"]:
                continue
            cells: dict[str, dict[str, Any] | None] = {}
            for m in chosen_m:
                res = run.summary["results"].get(m)
                if m not in run.summary["methods"] or res is None:
                    cells[m] = None
                    continue
                c = res["metrics"].get(k, {})
                cells[m] = {"value": c.get("value"), "ci_low": c.get("ci_low"),
                            "ci_high": c.get("ci_high"),
                            "not_applicable": c.get("not_applicable"), "best": False}
            if not cost:
                _mark_best(cells, higher, sanity)
            rows.append({"metric": k, "classifier": label, "higher_is_better": higher,
                         "cost": cost, "cells": cells})
    notes = []
    n_a = sorted({(r["metric"], c["not_applicable"]) for r in rows for c in r["cells"].values()
                  if c and c["not_applicable"]})
    notes += [f"{NOT_APPLICABLE} in {k}: {why}" for k, why in n_a]
    return PaperTable(chosen_m, rows, labels, ci=ci, digits=digits, notes=notes)


# ------------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders (or their summary.json) that differ only in the classifier")
    p.add_argument("--format", choices=FORMATS, default="md", help="output format (default md)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--ci", action="store_true", help="add ± the 95 %% CI half-width")
    p.add_argument("--metrics", help="comma-separated metrics, in row order (default: all)")
    p.add_argument("--methods", help="comma-separated methods, in column order (default: all)")
    p.add_argument("--digits", type=int, default=3, help="decimals printed (default 3)")


def table_command(args: argparse.Namespace) -> int:
    """``attrbench table``: errors are raised (the CLI turns them into exit status 2)."""
    runs = [load_run(p) for p in args.runs]
    table = build_table(runs, metrics=args.metrics, methods=args.methods, ci=args.ci,
                        digits=args.digits)
    text = render(table, args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"table written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

