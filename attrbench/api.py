"""The Python API: run a benchmark and read run folders from a script or a notebook.

>>> import attrbench
>>> res = attrbench.run(methods=["gradcam", "center"], metrics=["mean_f1"], limit=4,
...                     progress=False, report=False)                       # doctest: +SKIP
>>> res.summary.query("metric == 'mean_f1'")[["method", "value"]]           # doctest: +SKIP

:func:`run` takes the options of ``attrbench run`` as keyword arguments (the fields of
:class:`~attrbench.config.RunConfig`) and goes through the same validation and the same runner as
the command line; :func:`load_run` reads any run folder (a finished one, or the rows of a run
that was interrupted before its summary was written).
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig

__all__ = ["RunResult", "load_run", "run"]

SUMMARY_COLUMNS = ["method", "metric", "value", "ci_low", "ci_high", "n", "failed",
                   "higher_is_better", "kind"]


def run(preset: str = "synthetic", methods: list[str] | str | None = None,
        metrics: list[str] | str | None = None, limit: int | None = None,
        out: str | Path | None = None, **options: Any) -> RunResult:
    """Run the benchmark and return its :class:`RunResult`.

    Args:
        preset, methods, metrics, limit, out: as ``attrbench run`` (lists or comma-separated
            strings; None: the preset's defaults).
        **options: any other field of :class:`~attrbench.config.RunConfig`, e.g. ``device``,
            ``seed``, ``batch_size``, ``data_root``, ``model``, ``checkpoint``,
            ``method_options={"rise": {"num_masks": 500}}``, ``progress``, ``report``.

    Raises:
        ConfigError (a ``ValueError``): an unknown option or a bad value, before any work;
        the registry's did-you-mean error for an unknown name.
    """
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; attrbench.run takes "
                          f"{', '.join(sorted(fields))}")
    cfg = RunConfig(preset=preset, methods=_names(methods), metrics=_names(metrics), limit=limit,
                    out=str(out) if out is not None else None, **options)
    from .runner import run as run_cli

    return RunResult(run_cli(cfg))


def _names(v: list[str] | str | None) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def load_run(path: str | Path) -> RunResult:
    """The run folder at ``path`` (``FileNotFoundError`` when it is not one)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not an attrbench run folder (no config.json)")
    return RunResult(p)


class RunResult:
    """A run folder, read lazily.

    Attributes:
        path: the run folder.
        summary: tidy :class:`pandas.DataFrame`, one row per (method, metric): ``method``,
            ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n`` (images with a value),
            ``failed`` (images the method failed on), ``higher_is_better``, ``kind``
            (quality or cost).
        scores: per image and method (``image_id``, ``method``, ``status``, ``error`` and one
            column per metric, a per-class value reduced to its mean).
        config: the resolved configuration; ``environment``: versions, device, git state;
        timings: where the wall time went (None for runs written before it was recorded).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunResult({str(self.path)!r})"

    @cached_property
    def _config_file(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    @property
    def config(self) -> dict[str, Any]:
        return self._config_file.get("config", {})

    @property
    def environment(self) -> dict[str, Any]:
        return self._config_file.get("environment", {})

    @cached_property
    def summary_dict(self) -> dict[str, Any]:
        """``summary.json``; computed from the rows when the run stopped before writing it."""
        f = self.path / "summary.json"
        if f.is_file():
            return json.loads(f.read_text())
        from .results import summarize

        return summarize(self.path, list(self.config.get("methods", {})),
                         list(self.config.get("metrics", {})))

    @cached_property
    def summary(self):
        import pandas as pd

        s = self.summary_dict
        recs = []
        for m in s["methods"]:
            res = s["results"][m]
            for k, info in s["metrics"].items():
                c = res["metrics"].get(k, {})
                recs.append({"method": m, "metric": k, "value": _num(c.get("value")),
                             "ci_low": _num(c.get("ci_low")), "ci_high": _num(c.get("ci_high")),
                             "n": int(c.get("n", 0)), "failed": int(res.get("n_failed", 0)),
                             "higher_is_better": bool(info.get("higher_is_better", True)),
                             "kind": info.get("kind") or ("cost" if info.get("cost") else
                                                          "quality")})
        return pd.DataFrame.from_records(recs, columns=SUMMARY_COLUMNS)

    @cached_property
    def scores(self):
        import pandas as pd

        from .catalog import METRICS
        from .results import read_rows

        metrics = list(self.config.get("metrics", {}))
        recs = []
        for r in read_rows(self.path):
            rec = {"image_id": r["image_id"], "method": r["method"], "status": r.get("status"),
                   "error": r.get("error")}
            for k in metrics:
                v = (r.get("scores") or {}).get(k)
                rec[k] = METRICS.get(k).image_value(v) if k in METRICS else _num(v)
            recs.append(rec)
        return pd.DataFrame.from_records(
            recs, columns=["image_id", "method", "status", "error", *metrics])

    @property
    def timings(self) -> dict[str, Any] | None:
        from .artifacts import read_timings

        return read_timings(self.path)

    def table(self, columns: str | None = None) -> str:
        """The terminal table (``columns``: None = the headline metrics, ``"all"``, ``"a,b"``)."""
        from .tables import render_text

        return render_text(self.summary_dict, columns)

    def report(self) -> Path:
        """Write (or rewrite) ``report.html`` and the figures; returns its path."""
        from .report import write_report

        return write_report(self.path)


def _num(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan
