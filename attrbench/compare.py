"""``attrbench compare BASELINE RUN_DIR``: the regression gate of CI (exit 1 on a regression).

A **baseline** is a JSON file written by :func:`make_baseline` from a reference run; its format
is described in :mod:`attrbench.baseline` (where it is written and read). A run folder (or its
``summary.json`` next to a ``config.json``) is accepted as a baseline too.

The gate fails (exit 1) on, per rule:

a. **failures and undefined values**: a method fails on a different number of images or for
   other reasons, a metric raises on a different number of images, a metric is undefined (NaN)
   on a different number of images, or a value becomes undefined or defined;
b. **image count**: a method was evaluated on a different number of images;
c. **configuration**: a method's class or options, a metric's options or version, or a
   run setting (preset, split, limit, seed, image size, classes, classifier fingerprint)
   differs; the differences are printed as a configuration diff;
d. **values**: a quality metric's value moves beyond its own tolerance
   (:class:`attrbench.interfaces.Tolerance`, declared on the metric class: absolute, relative
   or in flips), in either direction: ``REGRESSION`` when worse, ``CHANGED`` when better (an
   unannounced change of a number is what the gate guards against; refresh the baseline on
   purpose).

A method or metric of the baseline missing from the run fails too (``MISSING``); one new in the
run is listed (``new``) and never fails. Cost metrics (``kind = "cost"``: time, model calls,
memory) depend on the machine and are reported only. ``--tolerance METRIC=VALUE`` replaces a
metric's tolerance value in its own unit (``none``: report only) for one comparison.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baseline import (
    BASELINE_FORMAT,
    _metric_info,
    _run_files,
    load_baseline,
    make_baseline,
    run_config,
)
from .tables.comparison import format_comparison

__all__ = [
    "BASELINE_FORMAT",
    "Comparison",
    "compare",
    "compare_main",
    "config_diff",
    "format_comparison",
    "load_baseline",
    "make_baseline",
    "parse_tolerances",
    "run_config",
]

_MISSING = object()


@dataclass
class Comparison:
    """What :func:`compare` found.

    ``entries``: one per (method, metric) ``{"method", "metric", "baseline", "current",
    "delta", "allowed", "tolerance", "status", "fail", "message"}``; ``checks``: run-level
    findings ``{"rule", "subject", "message", "fail"}`` (rules ``failures``, ``images``,
    ``config``); ``config_diff``: ``[(key, baseline, current)]``.
    """

    entries: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    config_diff: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(e["fail"] for e in self.entries) or any(c["fail"] for c in self.checks)


def parse_tolerances(items: Sequence[str] | None) -> dict[str, float | None]:
    """``["mean_f1=0.05", "auc=none"]`` -> ``{"mean_f1": 0.05, "auc": None}`` (None = report
    only). A value replaces the metric's tolerance value in the metric's own unit (absolute,
    relative fraction or number of flips)."""
    out: dict[str, float | None] = {}
    for item in items or []:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"--tolerance expects METRIC=VALUE (e.g. mean_f1=0.05), got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        if not name:
            raise ValueError(f"--tolerance expects METRIC=VALUE, got {item!r} (empty metric name)")
        if value.lower() in ("none", "null", "inf"):
            out[name] = None
            continue
        try:
            tol = float(value)
        except ValueError:
            raise ValueError(
                f"--tolerance {item!r}: VALUE must be a non-negative number or "
                f"'none', got {value!r}"
            ) from None
        if not math.isfinite(tol) or tol < 0:
            raise ValueError(
                f"--tolerance {item!r}: VALUE must be a non-negative number, got {tol}"
            )
        out[name] = tol
    return out


# ------------------------------------------------------------------------------ comparing
def _num(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_diff(baseline_cfg: Mapping[str, Any], run_cfg: Mapping[str, Any],
                methods: Sequence[str], metrics: Sequence[str]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, baseline value, run value)]`` for the run settings and for the methods and
    metrics both configurations have (a missing or new method is reported elsewhere)."""

    def part(cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "run": cfg.get("run", {}),
            "methods": {m: v for m, v in cfg.get("methods", {}).items() if m in methods},
            "metrics": {k: v for k, v in cfg.get("metrics", {}).items() if k in metrics},
        }

    a, b = _flatten(part(baseline_cfg)), _flatten(part(run_cfg))
    diff = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            diff.append((key, None if va is _MISSING else va, None if vb is _MISSING else vb))
    return diff


def _tolerance_of(info: Mapping[str, Any], override: Any) -> Any:
    from .interfaces import Tolerance

    if info.get("kind") == "cost":
        return None
    tol = info.get("tolerance")
    tol = Tolerance.from_dict(tol) if isinstance(tol, dict) else tol
    if override is not _MISSING:
        if override is None or tol is None:
            return None
        tol = Tolerance(tol.kind, override, tol.floor if tol.kind == "relative" else 0.0)
    return tol


def _counts(d: Mapping[str, Any] | None) -> dict[str, int]:
    return {str(k): int(v) for k, v in (d or {}).items() if v}


def _count_diff(base: Mapping[str, int], cur: Mapping[str, int]) -> str:
    parts = []
    for reason in sorted(set(base) | set(cur)):
        b, c = base.get(reason, 0), cur.get(reason, 0)
        if b != c:
            parts.append(f"{reason}: {b} -> {c}")
    return "; ".join(parts)


def compare(
    baseline: Mapping[str, Any],
    summary: Mapping[str, Any],
    run_cfg: Mapping[str, Any] | None = None,
    tolerance_overrides: Mapping[str, float | None] | None = None,
) -> Comparison:
    """Compare a run (its summary and the :func:`run_config` of its ``config.json``) with a
    baseline, by the rules of the module docstring."""
    overrides = dict(tolerance_overrides or {})
    b_metrics, c_metrics = baseline["metrics"], summary.get("metrics", {})
    known = set(b_metrics) | set(c_metrics)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(
            f"--tolerance names unknown metric(s) {unknown}; expected one of {sorted(known)}"
        )
    out = Comparison()
    b_res, c_res = baseline["results"], summary.get("results", {})
    b_methods = list(baseline["methods"])
    common_methods = [m for m in b_methods if m in c_res]
    common_metrics = [k for k in b_metrics if k in c_metrics]
    _check_config(out, baseline.get("config"), run_cfg, common_methods, common_metrics)
    changed_def = {k for k in common_metrics
                   if c_metrics[k].get("version") != b_metrics[k].get("version")}
    for m in common_methods:
        out.checks += _method_checks(m, b_res[m], c_res[m])
    for m in b_methods:
        for k in b_metrics:
            info = _metric_info(k, c_metrics.get(k, b_metrics[k]))
            tol = _tolerance_of(info, overrides.get(k, _MISSING))
            out.entries.append(_value_entry(m, k, baseline, summary, info, tol, changed_def))
    out.entries += _new_entries(summary, b_methods, b_metrics)
    return out


def _check_config(out: Comparison, b_cfg: Mapping[str, Any] | None,
                  run_cfg: Mapping[str, Any] | None, common_methods: list[str],
                  common_metrics: list[str]) -> None:
    """Rule (c): the configuration diff (or a missing configuration) into ``out``."""
    if b_cfg is None or run_cfg is None:
        which = "the baseline" if b_cfg is None else "the run (no config.json next to its summary)"
        out.checks.append({"rule": "config", "subject": "configuration", "fail": True,
                           "message": f"{which} has no recorded configuration, so method and "
                                      "metric options cannot be checked"})
        return
    out.config_diff = config_diff(b_cfg, run_cfg, common_methods, common_metrics)
    for key, va, vb in out.config_diff:
        out.checks.append({"rule": "config", "subject": key, "fail": True,
                           "message": f"{json.dumps(va)} -> {json.dumps(vb)}"})


def _method_checks(m: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rules (a) failures and (b) image counts of method ``m`` (baseline ``b``, run ``c``)."""
    checks = []
    bn, cn = int(b.get("n_images") or 0), int(c.get("n_images") or 0)
    bf, cf = int(b.get("n_failed") or 0), int(c.get("n_failed") or 0)
    if bn + bf != cn + cf:
        checks.append({"rule": "images", "subject": m, "fail": True,
                       "message": f"the run evaluated {cn + cf} images, the baseline "
                                  f"{bn + bf} (another --limit, split or dataset?)"})
    fb, fc = _counts(b.get("failures")), _counts(c.get("failures"))
    if bf != cf or fb != fc:
        detail = _count_diff(fb, fc)
        checks.append({"rule": "failures", "subject": m, "fail": True,
                       "message": f"{cf} failed images (baseline: {bf})"
                                  + (f"; by reason: {detail}" if detail else "")})
    eb, ec = _counts(b.get("metric_errors")), _counts(c.get("metric_errors"))
    if eb != ec:
        checks.append({"rule": "failures", "subject": m, "fail": True,
                       "message": "a metric raised on other images than in the "
                                  f"baseline: {_count_diff(eb, ec)}"})
    return checks


def _value_entry(m: str, k: str, baseline: Mapping[str, Any], summary: Mapping[str, Any],
                 info: Mapping[str, Any], tol: Any, changed_def: set[str]) -> dict[str, Any]:
    """The entry of one (method, metric) of the baseline: rules (a) undefined values and (d)
    tolerances."""
    b_metrics, c_metrics = baseline["metrics"], summary.get("metrics", {})
    c_res = summary.get("results", {})
    bcell = baseline["results"].get(m, {}).get("metrics", {}).get(k, {})
    bv = _num(bcell.get("value"))
    e = {"method": m, "metric": k, "baseline": bv, "current": math.nan,
         "delta": math.nan, "allowed": math.nan, "tolerance": tol, "fail": False,
         "message": ""}
    if m not in c_res:
        e.update(status="MISSING", fail=True, message=f"method '{m}' is not in the run")
        return e
    if k not in c_metrics:
        e.update(status="MISSING", fail=True, message=f"metric '{k}' is not in the run")
        return e
    ccell = c_res[m].get("metrics", {}).get(k, {})
    cv = _num(ccell.get("value"))
    e.update(current=cv, delta=cv - bv)
    if k in changed_def:
        e.update(status="DEFINITION CHANGED", fail=True,
                 message=f"v{b_metrics[k].get('version')} -> "
                         f"v{c_metrics[k].get('version')}: refresh the baseline")
        return e
    if info.get("kind") == "cost":
        e["status"] = "info"
        return e
    bu, cu = bcell.get("n_undefined"), ccell.get("n_undefined")
    if math.isnan(bv) != math.isnan(cv):
        e.update(status="UNDEFINED" if math.isnan(cv) else "NOW DEFINED", fail=True,
                 message="value became undefined (NaN)" if math.isnan(cv)
                 else "value was undefined (NaN) in the baseline")
    elif bu is not None and cu is not None and int(bu) != int(cu):
        e.update(status="UNDEFINED" if cu > bu else "NOW DEFINED", fail=True,
                 message=f"undefined on {cu} images (baseline: {bu})")
    elif math.isnan(bv):
        e["status"] = "ok"
    elif tol is None:
        e["status"] = "info"
    else:
        _check_tolerance(e, tol, bcell.get("n") or ccell.get("n"),
                         info.get("higher_is_better", True))
    return e


def _check_tolerance(e: dict[str, Any], tol: Any, n: int | None, higher: bool) -> None:
    """Rule (d) on entry ``e`` (its baseline and current values are set)."""
    bv, cv = e["baseline"], e["current"]
    allowed = tol.allowed(bv, n)
    e["allowed"] = allowed
    if abs(cv - bv) <= allowed + 1e-12:
        e["status"] = "ok"
        return
    worse = (cv < bv) if higher else (cv > bv)
    e.update(status="REGRESSION" if worse else "CHANGED", fail=True,
             message=f"|delta| {abs(cv - bv):.4g} > {allowed:.4g} ("
             + ("worse" if worse else "better; refresh the baseline if intended")
             + ")")


def _new_entries(summary: Mapping[str, Any], b_methods: list[str],
                 b_metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An entry per (method, metric) of the run that the baseline lacks (never a failure)."""
    c_metrics, c_res = summary.get("metrics", {}), summary.get("results", {})
    entries = []
    for m in summary.get("methods", []):
        for k in c_metrics:
            if m in b_methods and k in b_metrics:
                continue
            cv = _num(c_res.get(m, {}).get("metrics", {}).get(k, {}).get("value"))
            what = "method" if m not in b_methods else "metric"
            entries.append({"method": m, "metric": k, "baseline": math.nan, "current": cv,
                            "delta": math.nan, "allowed": math.nan, "tolerance": None,
                            "status": "new", "fail": False,
                            "message": f"{what} not in the baseline"})
    return entries


def compare_main(
    baseline_path: str | Path, run_dir: str | Path, tolerance_overrides: Sequence[str] | None = None
) -> int:
    """Compare a run folder with a baseline and print the result.

    Args:
        baseline_path: a baseline JSON (:func:`make_baseline`) or a run folder.
        run_dir: the run folder to check (or its ``summary.json``; the ``config.json`` next to
            it is read for the configuration check).
        tolerance_overrides: ``["METRIC=VALUE", ...]`` (None for none).

    Returns:
        1 when the gate fails (module docstring), else 0.
    """
    overrides = parse_tolerances(tolerance_overrides)
    baseline = load_baseline(baseline_path)
    summary, cfg = _run_files(run_dir, "run summary")
    result = compare(baseline, summary, run_config(cfg) if cfg is not None else None, overrides)
    print(format_comparison(result))
    return 1 if result.failed else 0


def _main(argv: list[str] | None = None) -> int:
    """``python -m attrbench.compare make-baseline RUN_DIR OUT``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m attrbench.compare")
    sub = p.add_subparsers(dest="cmd", required=True)
    mb = sub.add_parser("make-baseline", help="write a baseline JSON from a run folder")
    mb.add_argument("run_dir")
    mb.add_argument("out")
    args = p.parse_args(argv)
    try:
        out = make_baseline(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"attrbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"baseline written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
