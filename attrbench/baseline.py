"""Baseline files of ``attrbench compare``: written from a reference run, read back for the gate.

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
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .rundir import read_json_object as _read_json

__all__ = [
    "BASELINE_FORMAT",
    "BASELINE_SCHEMA",
    "load_baseline",
    "make_baseline",
    "run_config",
]

BASELINE_FORMAT = "attrbench-baseline"
BASELINE_SCHEMA = 2


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
