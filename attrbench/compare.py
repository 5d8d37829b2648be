"""``attrbench compare BASELINE RUN_DIR``: CI regression on metric values (exit 1 on regression).

A **baseline** is a JSON file written by :func:`make_baseline` from a reference run::

    {
      "format": "attrbench-baseline", "schema": 1,
      "created": "2025-01-01T12:00:00+00:00",
      "source": {"run_dir": "...", "preset": "synthetic", "limit": null, "seed": 0,
                 "classifier": {...}, "environment": {...}},
      "metrics": {METRIC: {"version": 1, "higher_is_better": true,
                           "tolerance": 0.02,          # absolute; null = report only
                           "cost": false}},            # cost metrics never fail
      "methods": [METHOD, ...],
      "results": {METHOD: {"n_images": 100, "n_failed": 0,
                           "metrics": {METRIC: {"value": 0.41, "ci_low": 0.38,
                                                "ci_high": 0.44, "n": 100}}}}
    }

A plain ``summary.json`` (or a run folder) is accepted as a baseline too; its tolerances are then
the defaults (:func:`default_tolerance`).

Rules, per (method, metric) of the baseline:

* ``|current - baseline| <= tolerance`` -> ``ok``; beyond -> ``REGRESSION`` (worse) or
  ``CHANGED`` (better: still a failure, since an unannounced change of a number is what CI
  guards against; refresh the baseline on purpose).
* a metric whose ``version`` differs from the baseline's -> ``DEFINITION CHANGED`` (fail; the
  message says to refresh the baseline).
* a method or metric of the baseline missing from the run -> ``MISSING`` (fail); one in the run
  but not in the baseline -> ``new`` (reported, never fails).
* a value that became undefined (NaN) or defined -> fail.
* cost metrics (``time_ms``, ``model_calls``, ``peak_mem_mb``) and metrics whose tolerance is
  ``null`` are reported (``info``) and never fail.

Tolerances: a ``--tolerance METRIC=VALUE`` override (``*=VALUE`` for every metric; ``VALUE``
may be ``none`` to make a metric report-only) beats the baseline's tolerance, which beats the
default.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE_FORMAT",
    "DEFAULT_TOLERANCE",
    "METRIC_TOLERANCES",
    "compare",
    "compare_main",
    "default_tolerance",
    "format_comparison",
    "load_baseline",
    "make_baseline",
    "parse_tolerances",
]

BASELINE_FORMAT = "attrbench-baseline"
BASELINE_SCHEMA = 1
#: Absolute tolerance of a metric with values in [0, 1] (most of them).
DEFAULT_TOLERANCE = 0.02
#: Metrics on another scale: absolute tolerances chosen for their range.
METRIC_TOLERANCES: dict[str, float] = {
    "saliency": 0.05,  # log-ratio, roughly in [-3, 3]
    "entropy": 0.05,  # nats, grows with log(HW)
    "randomization_spearman": 0.04,  # in [-1, 1]
}

FAILING = {"REGRESSION", "CHANGED", "DEFINITION CHANGED", "MISSING", "UNDEFINED", "NOW DEFINED"}


def default_tolerance(metric: str) -> float | None:
    """Default absolute tolerance: None (report only) for cost metrics, else
    :data:`METRIC_TOLERANCES` or :data:`DEFAULT_TOLERANCE`."""
    from .tables import COST_METRICS

    if metric in COST_METRICS:
        return None
    return METRIC_TOLERANCES.get(metric, DEFAULT_TOLERANCE)


def _summary_path(path: Path) -> Path:
    return path / "summary.json" if path.is_dir() else path


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what} {path} must hold a JSON object, got {type(d).__name__}")
    return d


def make_baseline(
    run_dir: str | Path, out_path: str | Path, tolerances: Mapping[str, float | None] | None = None
) -> Path:
    """Write a baseline JSON (format: module docstring) from a finished run folder.

    Args:
        run_dir: the reference run (its ``summary.json`` and ``config.json`` are read).
        out_path: where to write the baseline (parent folders are created).
        tolerances: per-metric absolute tolerances overriding :func:`default_tolerance`
            (None = report only).

    Returns:
        ``out_path`` as a Path.
    """
    from .results import _clean, atomic_write_text
    from .tables import COST_METRICS

    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json", "run summary")
    cfg_path = run_dir / "config.json"
    cfg_all = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg = cfg_all.get("config", {})
    tolerances = dict(tolerances or {})
    metrics = {}
    for k, d in summary["metrics"].items():
        metrics[k] = {
            "version": d["version"],
            "higher_is_better": d["higher_is_better"],
            "tolerance": tolerances.get(k, default_tolerance(k)),
            "cost": k in COST_METRICS,
            "definition": d.get("definition", ""),
        }
    results = {}
    for m in summary["methods"]:
        r = summary["results"][m]
        results[m] = {
            "n_images": r["n_images"],
            "n_failed": r["n_failed"],
            "metrics": {
                k: {f: v.get(f) for f in ("value", "ci_low", "ci_high", "n")}
                for k, v in r["metrics"].items()
            },
        }
    preset = cfg.get("preset")
    base = {
        "format": BASELINE_FORMAT,
        "schema": BASELINE_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": str(run_dir),
            "preset": preset.get("name") if isinstance(preset, dict) else preset,
            "limit": cfg.get("limit"),
            "seed": cfg.get("seed"),
            "classifier": cfg.get("classifier"),
            "environment": cfg_all.get("environment"),
        },
        "metrics": metrics,
        "methods": list(summary["methods"]),
        "results": results,
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(_clean(base), indent=2, ensure_ascii=False) + "\n")
    return out


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline in the :func:`make_baseline` format; a ``summary.json`` (or a run folder) is
    converted on the fly with default tolerances."""
    from .tables import COST_METRICS

    p = _summary_path(Path(path))
    d = _read_json(p, "baseline")
    if d.get("format") == BASELINE_FORMAT:
        if d.get("schema", 1) > BASELINE_SCHEMA:
            raise ValueError(
                f"baseline {p} has schema {d['schema']}; this attrbench reads "
                f"schema <= {BASELINE_SCHEMA}"
            )
        return d
    if "results" in d and "metrics" in d and "methods" in d:  # a summary.json
        return {
            "format": BASELINE_FORMAT,
            "schema": BASELINE_SCHEMA,
            "source": {"run_dir": str(p)},
            "metrics": {
                k: {
                    "version": v["version"],
                    "higher_is_better": v["higher_is_better"],
                    "tolerance": default_tolerance(k),
                    "cost": k in COST_METRICS,
                }
                for k, v in d["metrics"].items()
            },
            "methods": d["methods"],
            "results": d["results"],
        }
    raise ValueError(
        f"{p} is neither an attrbench baseline (format '{BASELINE_FORMAT}') nor a summary.json"
    )


def parse_tolerances(items: Sequence[str] | None) -> dict[str, float | None]:
    """``["mean_f1=0.05", "*=0.01", "auc=none"]`` ->
    ``{"mean_f1": 0.05, "*": 0.01, "auc": None}`` (None = report only)."""
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


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def compare(
    baseline: Mapping[str, Any],
    summary: Mapping[str, Any],
    tolerance_overrides: Mapping[str, float | None] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Compare a run's summary with a baseline.

    Returns:
        ``(entries, notes)``: one entry per (method, metric) of the baseline and of the run,
        ``{"method", "metric", "baseline", "current", "delta", "tolerance", "status",
        "fail", "message"}``; notes are run-level remarks (changed image count, ...).
    """
    overrides = dict(tolerance_overrides or {})
    known = set(baseline["metrics"]) | set(summary.get("metrics", {}))
    unknown = sorted(k for k in overrides if k != "*" and k not in known)
    if unknown:
        raise ValueError(
            f"--tolerance names unknown metric(s) {unknown}; expected one of {sorted(known)} or '*'"
        )
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    b_metrics, c_metrics = baseline["metrics"], summary.get("metrics", {})
    b_res, c_res = baseline["results"], summary.get("results", {})

    def tol_of(k: str) -> float | None:
        bm = b_metrics.get(k, {})
        if bm.get("cost"):
            return None
        if k in overrides:
            return overrides[k]
        if "*" in overrides:
            return overrides["*"]
        return bm.get("tolerance", default_tolerance(k)) if k in b_metrics else default_tolerance(k)

    changed_def = {
        k
        for k in b_metrics
        if k in c_metrics and c_metrics[k].get("version") != b_metrics[k].get("version")
    }
    for k in sorted(changed_def):
        notes.append(
            f"metric '{k}' changed definition: baseline v{b_metrics[k].get('version')}, "
            f"run v{c_metrics[k].get('version')}; refresh the baseline (see "
            "results/README.md) if the change is intended"
        )
    for m in baseline["methods"]:
        for k in b_metrics:
            bv = _num(b_res.get(m, {}).get("metrics", {}).get(k, {}).get("value"))
            e = {
                "method": m,
                "metric": k,
                "baseline": bv,
                "current": math.nan,
                "delta": math.nan,
                "tolerance": tol_of(k),
                "fail": False,
                "message": "",
            }
            cost = b_metrics[k].get("cost") or e["tolerance"] is None
            if m not in c_res:
                e.update(status="MISSING", fail=True, message=f"method '{m}' is not in the run")
            elif k not in c_metrics:
                e.update(status="MISSING", fail=True, message=f"metric '{k}' is not in the run")
            else:
                cv = _num(c_res[m]["metrics"].get(k, {}).get("value"))
                e["current"] = cv
                e["delta"] = cv - bv
                if k in changed_def:
                    e.update(
                        status="DEFINITION CHANGED",
                        fail=True,
                        message=f"v{b_metrics[k].get('version')} -> "
                        f"v{c_metrics[k].get('version')}: refresh the baseline",
                    )
                elif cost:
                    e["status"] = "info"
                elif math.isnan(bv) and math.isnan(cv):
                    e["status"] = "ok"
                elif math.isnan(cv):
                    e.update(status="UNDEFINED", fail=True, message="value became undefined (NaN)")
                elif math.isnan(bv):
                    e.update(
                        status="NOW DEFINED",
                        fail=True,
                        message="value was undefined (NaN) in the baseline",
                    )
                elif abs(cv - bv) <= e["tolerance"] + 1e-12:
                    e["status"] = "ok"
                else:
                    hib = b_metrics[k].get("higher_is_better", True)
                    worse = (cv < bv) if hib else (cv > bv)
                    e.update(
                        status="REGRESSION" if worse else "CHANGED",
                        fail=True,
                        message=f"|delta| {abs(cv - bv):.4g} > tolerance {e['tolerance']:g} ("
                        + ("worse" if worse else "better; refresh the baseline if intended")
                        + ")",
                    )
            entries.append(e)
    for m in summary.get("methods", []):
        for k in c_metrics:
            if m in baseline["methods"] and k in b_metrics:
                continue
            cv = _num(c_res.get(m, {}).get("metrics", {}).get(k, {}).get("value"))
            what = "method" if m not in baseline["methods"] else "metric"
            entries.append(
                {
                    "method": m,
                    "metric": k,
                    "baseline": math.nan,
                    "current": cv,
                    "delta": math.nan,
                    "tolerance": None,
                    "status": "new",
                    "fail": False,
                    "message": f"{what} not in the baseline",
                }
            )
    for m in baseline["methods"]:
        if m in c_res:
            bn, cn = b_res[m].get("n_images"), c_res[m].get("n_images")
            bf, cf = b_res[m].get("n_failed", 0), c_res[m].get("n_failed", 0)
            if bn is not None and bn + bf != cn + cf:
                notes.append(
                    f"method '{m}': the run evaluated {cn + cf} images, the baseline "
                    f"{bn + bf} (different --limit or dataset?)"
                )
            if bf != cf:
                notes.append(f"method '{m}': {cf} failed images (baseline: {bf})")
    return entries, notes


def _f(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_comparison(entries: list[dict[str, Any]], notes: list[str]) -> str:
    """The readable diff table plus notes and a one-line verdict."""
    header = ["method", "metric", "baseline", "current", "delta", "tolerance", "status", "detail"]
    rows = [
        [
            e["method"],
            e["metric"],
            _f(e["baseline"]),
            _f(e["current"]),
            _f(e["delta"], signed=True),
            "report only" if e["tolerance"] is None else f"±{e['tolerance']:g}",
            e["status"],
            e["message"] if e["status"] != "ok" else "",
        ]
        for e in entries
    ]
    lines = [_table(header, rows, right={2, 3, 4, 5})] if rows else ["(nothing to compare)"]
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    failed = [e for e in entries if e["fail"]]
    lines.append("")
    if failed:
        lines.append(
            f"FAIL: {len(failed)} of {len(entries)} values out of tolerance or missing: "
            + ", ".join(f"{e['method']}/{e['metric']} ({e['status']})" for e in failed)
        )
        if any(e["status"] == "DEFINITION CHANGED" for e in failed):
            lines.append(
                "A metric's version changed: if the new definition is intended, refresh "
                "the baseline (results/README.md)."
            )
    else:
        n_checked = sum(1 for e in entries if e["status"] == "ok")
        lines.append(
            f"OK: {n_checked} values within tolerance "
            f"({sum(1 for e in entries if e['status'] == 'info')} reported only, "
            f"{sum(1 for e in entries if e['status'] == 'new')} new)"
        )
    return "\n".join(lines)


def compare_main(
    baseline_path: str | Path, run_dir: str | Path, tolerance_overrides: Sequence[str] | None = None
) -> int:
    """Compare ``RUN_DIR/summary.json`` with a baseline and print the diff table.

    Args:
        baseline_path: a baseline JSON (:func:`make_baseline`), a ``summary.json`` or a run folder.
        run_dir: the run folder to check (or its ``summary.json``).
        tolerance_overrides: ``["METRIC=VALUE", ...]`` (None for none).

    Returns:
        1 when any value moved beyond its tolerance, a metric's definition changed, or a
        baseline method/metric is missing from the run; else 0.
    """
    overrides = parse_tolerances(tolerance_overrides)
    baseline = load_baseline(baseline_path)
    summary = _read_json(_summary_path(Path(run_dir)), "run summary")
    entries, notes = compare(baseline, summary, overrides)
    print(format_comparison(entries, notes))
    return 1 if any(e["fail"] for e in entries) else 0


def _main(argv: list[str] | None = None) -> int:
    """``python -m attrbench.compare make-baseline RUN_DIR OUT [--tolerance M=V ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m attrbench.compare")
    sub = p.add_subparsers(dest="cmd", required=True)
    mb = sub.add_parser("make-baseline", help="write a baseline JSON from a run folder")
    mb.add_argument("run_dir")
    mb.add_argument("out")
    mb.add_argument("--tolerance", action="append", metavar="METRIC=VALUE")
    args = p.parse_args(argv)
    try:
        tols = parse_tolerances(args.tolerance)
        if "*" in tols:
            raise ValueError("'*=VALUE' is for compare; give make-baseline per-metric tolerances")
        out = make_baseline(args.run_dir, args.out, tols)
    except (FileNotFoundError, ValueError) as exc:
        print(f"attrbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"baseline written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
