"""``attrbench compare BASELINE RUN_DIR``: the regression gate of CI (exit 1 on a regression).

A **baseline** is a JSON file written by :func:`make_baseline` from a reference run::

    {
      "format": "attrbench-baseline", "schema": 2,
      "created": "2025-01-01T12:00:00+00:00",
      "source": {"run_dir": "results/runs/baseline", "preset": "synthetic", "limit": null,
                 "seed": 0, "git": {"commit": "...", "clean": true},
                 "environment": {"torch": "...", "device": "cpu", ...}},
      "config": {"run": {"preset": "synthetic", "split": "test", "limit": null, "seed": 0,
                         "image_size": 64, "num_classes": 6, "classes": [...],
                         "classifier": {"name": "...", "fingerprint": "..."}},
                 "methods": {METHOD: {"class": "...", "options": {...}}},
                 "metrics": {METRIC: {"version": 1, "options": {...}}}},
      "metrics": {METRIC: {"version": 1, "higher_is_better": true, "kind": "quality",
                           "tolerance": {"kind": "absolute", "value": 0.01},
                           "definition": "..."}},
      "methods": [METHOD, ...],
      "results": {METHOD: {"n_images": 100, "n_failed": 0, "failures": {},
                           "metric_errors": {},
                           "metrics": {METRIC: {"value": 0.41, "ci_low": 0.38,
                                                "ci_high": 0.44, "n": 100,
                                                "n_undefined": 0}}}}
    }

``source`` says where the numbers come from (the commit and whether the working tree was clean
when the reference run was made); ``config`` holds the resolved options that define the
numbers. A run folder (or its ``summary.json`` next to a ``config.json``) is accepted as a
baseline too.

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

import datetime as _dt
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

BASELINE_FORMAT = "attrbench-baseline"
BASELINE_SCHEMA = 2

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


# ------------------------------------------------------------------------------ reading
def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        # a file with the wrong content: ValueError, like any other bad input of the CLI
        raise ValueError(  # noqa: TRY004
            f"{what} {path} must hold a JSON object, got {type(d).__name__}")
    return d


def _run_files(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(summary, config.json or None)`` of a run folder or of its ``summary.json``."""
    p = Path(path)
    summary_path = p / "summary.json" if p.is_dir() else p
    summary = _read_json(summary_path, what)
    cfg_path = summary_path.parent / "config.json"
    return summary, (_read_json(cfg_path, "run configuration") if cfg_path.exists() else None)


def run_config(config_json: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's ``config.json`` that defines its numbers: run settings, each
    method's class and options, each metric's version and options (no paths of the machine, no
    environment)."""
    cfg = config_json.get("config", config_json)
    preset = cfg.get("preset")
    classifier = cfg.get("classifier") or {}
    return {
        "run": {
            "preset": preset.get("name") if isinstance(preset, dict) else preset,
            "split": cfg.get("split"),
            "limit": cfg.get("limit"),
            "seed": cfg.get("seed"),
            "image_size": cfg.get("image_size"),
            "num_classes": cfg.get("num_classes"),
            "classes": cfg.get("classes"),
            "classifier": {k: classifier.get(k) for k in ("name", "fingerprint")},
        },
        "methods": {
            m: {"class": d.get("class"), "options": d.get("options", {})}
            for m, d in (cfg.get("methods") or {}).items()
        },
        "metrics": {
            k: {"version": d.get("version"), "options": d.get("options", {})}
            for k, d in (cfg.get("metrics") or {}).items()
        },
    }


def _metric_info(name: str, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """Version, direction, kind and tolerance of a metric: the registered class's own (the
    current code) when the metric is registered, else what ``entry`` (a summary or baseline
    entry) recorded."""
    from .catalog import METRICS

    entry = dict(entry or {})
    if name in METRICS:
        cls = METRICS.get(name)
        return {**entry, **cls.describe(), **cls.regression()}
    entry.setdefault("kind", "cost" if entry.get("cost") else "quality")
    entry.setdefault("tolerance", None)
    return entry


def make_baseline(run_dir: str | Path, out_path: str | Path) -> Path:
    """Write a baseline JSON (format: module docstring) from a finished run folder.

    Args:
        run_dir: the reference run (its ``summary.json`` and ``config.json`` are read).
        out_path: where to write the baseline (parent folders are created).

    Returns:
        ``out_path`` as a Path.
    """
    from .rundir import atomic_write_text, clean_json

    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json", "run summary")
    cfg_all = _read_json(run_dir / "config.json", "run configuration")
    cfg = cfg_all.get("config", {})
    env = cfg_all.get("environment") or {}
    metrics = {}
    for k, d in summary["metrics"].items():
        info = _metric_info(k, d)
        metrics[k] = {f: info.get(f) for f in ("version", "higher_is_better", "kind", "tolerance",
                                               "definition")}
    results = {}
    for m in summary["methods"]:
        r = summary["results"][m]
        results[m] = {
            "n_images": r["n_images"],
            "n_failed": r["n_failed"],
            "failures": r.get("failures", {}),
            "metric_errors": r.get("metric_errors", {}),
            "metrics": {
                k: {f: v.get(f) for f in ("value", "ci_low", "ci_high", "n", "n_undefined")}
                for k, v in r["metrics"].items()
            },
        }
    try:  # a path relative to the working folder; never an absolute path of this machine
        shown = str(run_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = run_dir.name
    rc = run_config(cfg_all)
    base = {
        "format": BASELINE_FORMAT,
        "schema": BASELINE_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": shown,
            "preset": rc["run"]["preset"],
            "limit": cfg.get("limit"),
            "seed": cfg.get("seed"),
            "git": {"commit": env.get("git"), "clean": env.get("git_clean")},
            "environment": {k: v for k, v in env.items() if k not in ("git", "git_clean")},
        },
        "config": rc,
        "metrics": metrics,
        "methods": list(summary["methods"]),
        "results": results,
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(clean_json(base), indent=2, ensure_ascii=False) + "\n")
    return out


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline in the :func:`make_baseline` format; a run folder (or its ``summary.json``
    next to its ``config.json``) is converted on the fly."""
    p = Path(path)
    d = _read_json(p / "summary.json" if p.is_dir() else p, "baseline")
    if d.get("format") == BASELINE_FORMAT:
        if d.get("schema") != BASELINE_SCHEMA:
            raise ValueError(
                f"baseline {p} has schema {d.get('schema')}; this attrbench reads schema "
                f"{BASELINE_SCHEMA} (refresh it: see results/README.md)"
            )
        return d
    if "results" in d and "metrics" in d and "methods" in d:  # a summary.json
        summary, cfg = _run_files(p, "baseline")
        return {
            "format": BASELINE_FORMAT,
            "schema": BASELINE_SCHEMA,
            "source": {"run_dir": str(p)},
            "config": run_config(cfg) if cfg is not None else None,
            "metrics": {k: _metric_info(k, v) for k, v in summary["metrics"].items()},
            "methods": summary["methods"],
            "results": summary["results"],
        }
    raise ValueError(
        f"{p} is neither an attrbench baseline (format '{BASELINE_FORMAT}') nor a summary.json"
    )


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

    # (c) configuration
    b_cfg = baseline.get("config")
    if b_cfg is None or run_cfg is None:
        which = "the baseline" if b_cfg is None else "the run (no config.json next to its summary)"
        out.checks.append({"rule": "config", "subject": "configuration", "fail": True,
                           "message": f"{which} has no recorded configuration, so method and "
                                      "metric options cannot be checked"})
    else:
        out.config_diff = config_diff(b_cfg, run_cfg, common_methods, common_metrics)
        for key, va, vb in out.config_diff:
            out.checks.append({"rule": "config", "subject": key, "fail": True,
                               "message": f"{json.dumps(va)} -> {json.dumps(vb)}"})
    changed_def = {k for k in common_metrics
                   if c_metrics[k].get("version") != b_metrics[k].get("version")}

    # (a) failures and (b) image counts, per method
    for m in common_methods:
        b, c = b_res[m], c_res[m]
        bn, cn = int(b.get("n_images") or 0), int(c.get("n_images") or 0)
        bf, cf = int(b.get("n_failed") or 0), int(c.get("n_failed") or 0)
        if bn + bf != cn + cf:
            out.checks.append({"rule": "images", "subject": m, "fail": True,
                               "message": f"the run evaluated {cn + cf} images, the baseline "
                                          f"{bn + bf} (another --limit, split or dataset?)"})
        fb, fc = _counts(b.get("failures")), _counts(c.get("failures"))
        if bf != cf or fb != fc:
            detail = _count_diff(fb, fc)
            out.checks.append({"rule": "failures", "subject": m, "fail": True,
                               "message": f"{cf} failed images (baseline: {bf})"
                                          + (f"; by reason: {detail}" if detail else "")})
        eb, ec = _counts(b.get("metric_errors")), _counts(c.get("metric_errors"))
        if eb != ec:
            out.checks.append({"rule": "failures", "subject": m, "fail": True,
                               "message": "a metric raised on other images than in the "
                                          f"baseline: {_count_diff(eb, ec)}"})

    # per (method, metric): (a) undefined values, (d) tolerances
    for m in b_methods:
        for k in b_metrics:
            bcell = b_res.get(m, {}).get("metrics", {}).get(k, {})
            bv = _num(bcell.get("value"))
            info = _metric_info(k, c_metrics.get(k, b_metrics[k]))
            tol = _tolerance_of(info, overrides.get(k, _MISSING))
            e = {"method": m, "metric": k, "baseline": bv, "current": math.nan,
                 "delta": math.nan, "allowed": math.nan, "tolerance": tol, "fail": False,
                 "message": ""}
            out.entries.append(e)
            if m not in c_res:
                e.update(status="MISSING", fail=True, message=f"method '{m}' is not in the run")
                continue
            if k not in c_metrics:
                e.update(status="MISSING", fail=True, message=f"metric '{k}' is not in the run")
                continue
            ccell = c_res[m].get("metrics", {}).get(k, {})
            cv = _num(ccell.get("value"))
            e.update(current=cv, delta=cv - bv)
            if k in changed_def:
                e.update(status="DEFINITION CHANGED", fail=True,
                         message=f"v{b_metrics[k].get('version')} -> "
                                 f"v{c_metrics[k].get('version')}: refresh the baseline")
                continue
            if info.get("kind") == "cost":
                e["status"] = "info"
                continue
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
                n = bcell.get("n") or ccell.get("n")
                allowed = tol.allowed(bv, n)
                e["allowed"] = allowed
                if abs(cv - bv) <= allowed + 1e-12:
                    e["status"] = "ok"
                else:
                    worse = (cv < bv) if info.get("higher_is_better", True) else (cv > bv)
                    e.update(status="REGRESSION" if worse else "CHANGED", fail=True,
                             message=f"|delta| {abs(cv - bv):.4g} > {allowed:.4g} ("
                             + ("worse" if worse else "better; refresh the baseline if intended")
                             + ")")
    for m in summary.get("methods", []):
        for k in c_metrics:
            if m in b_methods and k in b_metrics:
                continue
            cv = _num(c_res.get(m, {}).get("metrics", {}).get(k, {}).get("value"))
            what = "method" if m not in b_methods else "metric"
            out.entries.append({"method": m, "metric": k, "baseline": math.nan, "current": cv,
                                "delta": math.nan, "allowed": math.nan, "tolerance": None,
                                "status": "new", "fail": False,
                                "message": f"{what} not in the baseline"})
    return out


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
