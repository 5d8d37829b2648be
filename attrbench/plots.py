"""Figures of a run (PNG + PDF into ``RUN_DIR/figures/``), drawn with matplotlib's Agg canvas.

Every figure is optional and drawn only when its inputs are in the run folder:

======================  =======================================================================
figure                  needs
======================  =======================================================================
``summary_bars``        ``summary.json`` (always): one panel per metric, a bar per method with
                        its 95 % CI as error bar (log scale for the cost metrics).
``f1_threshold``        rows with the curve of a metric that declares fixed x values
                        (``Metric.curve_x``: ``mean_f1``'s ``scores["f1_curve"]``, 9 per-image
                        F1 values at thresholds 0.1..0.9; the paper's "F1 vs threshold").
``deletion_insertion``  rows with the curves of the other metrics that declare a ``curve_key``
                        (``scores["deletion_curve"]`` / ``scores["insertion_curve"]``): per
                        image a list of floats (score at fractions 0..1 in equal steps) or a
                        dict ``{class_id: list}`` (averaged over the classes).
``quality_vs_cost``     metrics declaring ``figure_axis = "quality"`` (``mean_f1``,
                        ``cont_iou``) against those declaring ``"cost"`` (``time_ms``,
                        ``model_calls``) in the summary (log x; a cost axis on which every
                        method costs 0 is left out).
``class_specificity``   ``RUN_DIR/class_specificity.json`` (see :func:`save_class_specificity`).
``qualitative``         ``RUN_DIR/qualitative.npz`` (see :func:`save_qualitative`).
======================  =======================================================================

The last two, the matrix and mask images, are drawn by :mod:`attrbench.plot_maps`.

Curves are drawn as the mean over images with a band of +-1.96 standard errors (normal
approximation, cheaper than a bootstrap per point; the tables carry the bootstrap CIs).

No pyplot: figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas, so drawing
never touches the global backend or needs a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .curves import _read_rows, curves_from_rows, f1_curve_from_rows
from .sidefiles import (
    CLASS_SPECIFICITY_FILE,
    QUALITATIVE_FILE,
    load_class_specificity,
    load_qualitative,
)

__all__ = [
    "FigureInfo",
    "curves_from_rows",
    "f1_curve_from_rows",
    "make_figures",
    "plot_deletion_insertion",
    "plot_f1_curves",
    "plot_quality_vs_cost",
    "plot_summary",
]



def _declared(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The registered metric class of each of the summary's metrics (unknown names left out)."""
    from .catalog import METRICS

    return {k: METRICS.get(k) for k in summary["metrics"] if k in METRICS}


def _curve_metrics(summary: Mapping[str, Any], fixed_x: bool) -> list[Any]:
    """Metric classes of the summary that hand over curves, with (or without) fixed x values."""
    return [c for c in _declared(summary).values()
            if c.curve_key and (getattr(c, "curve_x", None) is not None) == fixed_x]


@dataclass
class FigureInfo:
    """One written figure: a key, a title and caption for the report, and its files."""

    key: str
    title: str
    caption: str
    png: Path
    pdf: Path


# ------------------------------------------------------------------------------- figure helpers
def new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_dir: Path, key: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{key}.png", out_dir / f"{key}.pdf"
    fig.savefig(png, dpi=110)
    # the layout is solved once (for the PNG); the PDF keeps it instead of solving it again
    fig.set_layout_engine("none")
    fig.savefig(pdf, metadata={"CreationDate": None})
    return png, pdf


def _colors(methods: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------- plots
def plot_summary(summary: Mapping[str, Any], out_dir: Path) -> FigureInfo | None:
    """Bar chart, one panel per metric, bar per method, 95 % CI error bars."""
    from .tables import cost_metrics

    methods = list(summary["methods"])
    metrics = list(summary["metrics"])
    cost = cost_metrics(summary)
    if not methods or not metrics:
        return None
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = new_figure(3.2 * ncols, 2.6 * nrows + 0.4)
    colors = _colors(methods)
    x = np.arange(len(methods))
    for idx, k in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, idx + 1)
        d = summary["metrics"][k]
        vals, lo_err, hi_err = [], [], []
        for m in methods:
            r = summary["results"][m]["metrics"].get(k, {})
            v = r.get("value")
            v = float(v) if _finite(v) else math.nan
            lo, hi = r.get("ci_low"), r.get("ci_high")
            vals.append(v)
            lo_err.append(max(0.0, v - lo) if _finite(lo) and math.isfinite(v) else 0.0)
            hi_err.append(max(0.0, hi - v) if _finite(hi) and math.isfinite(v) else 0.0)
        vals_arr = np.asarray(vals)
        ax.bar(
            x,
            np.nan_to_num(vals_arr),
            color=[colors[m] for m in methods],
            yerr=np.asarray([lo_err, hi_err]),
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
        for xi, v in zip(x, vals):
            if not math.isfinite(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        positive = vals_arr[np.isfinite(vals_arr)]
        if (
            k in cost
            and positive.size
            and (positive > 0).all()
            and positive.max() / positive.min() > 20
        ):
            ax.set_yscale("log")
        ax.set_title(f"{k} {'↑' if d['higher_is_better'] else '↓'}", fontsize=9)
        # method names under the last panel of each column only (the bars' order is the same in
        # every panel): a fraction of the text to lay out
        last_in_column = idx + ncols >= len(metrics)
        ax.set_xticks(x, methods if last_in_column else [], rotation=45, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    return FigureInfo(
        "summary_bars",
        "Summary values",
        "Summary value per method and metric; error bars: 95 % bootstrap CI of the "
        "per-image mean (↑ higher is better, ↓ lower is better).",
        *save_figure(fig, out_dir, "summary_bars"),
    )


def plot_f1_curves(
    curves: Mapping[str, Mapping[str, Any]], out_dir: Path, order: Sequence[str] | None = None
) -> FigureInfo | None:
    """F1 against the binarisation threshold (0.1..0.9), one line per method."""
    if not curves:
        return None
    methods = [m for m in (order or curves) if m in curves] or list(curves)
    colors = _colors(methods)
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for m in methods:
        c = curves[m]
        ax.plot(c["thresholds"], c["mean"], marker="o", ms=3, label=m, color=colors[m])
        ax.fill_between(c["thresholds"], c["low"], c["high"], alpha=0.15, color=colors[m])
    ax.set_xlabel("threshold")
    ax.set_ylabel("F1 (foreground)")
    ax.set_xlim(0.05, 0.95)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return FigureInfo(
        "f1_threshold",
        "F1 against threshold",
        "Mean per-image F1 of the binarised mask (mask > t) against the ground-truth "
        "foreground, for t = 0.1..0.9; band: ±1.96 standard errors.",
        *save_figure(fig, out_dir, "f1_threshold"),
    )


def plot_deletion_insertion(
    rows: list[Mapping[str, Any]], out_dir: Path, order: Sequence[str] | None = None,
    panels: Sequence[tuple[str, str]] = (("deletion_curve", "deletion (↓ area)"),
                                         ("insertion_curve", "insertion (↑ area)")),
) -> FigureInfo | None:
    """Mean perturbation curves per method, one panel per ``(row key, title)`` of ``panels``
    present in the rows (the report passes the metrics' declared ``curve_key``/``curve_title``)."""
    panels = [(key, title, curves_from_rows(rows, key)) for key, title in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    allm = list(dict.fromkeys(m for _, _, c in panels for m in c))
    methods = [m for m in (order or allm) if m in allm] or allm
    colors = _colors(methods)
    fig = new_figure(5.0 * len(panels), 3.8)
    for i, (_key, title, curves) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for m in methods:
            if m not in curves:
                continue
            c = curves[m]
            ax.plot(c["x"], c["mean"], label=m, color=colors[m])
            ax.fill_between(c["x"], c["low"], c["high"], alpha=0.15, color=colors[m])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of pixels perturbed")
        ax.set_ylabel("class score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return FigureInfo(
        "deletion_insertion",
        "Deletion and insertion curves",
        "Mean classifier score of the target class as the most salient pixels are "
        "deleted (left) or inserted (right); band: ±1.96 standard errors.",
        *save_figure(fig, out_dir, "deletion_insertion"),
    )


def plot_quality_vs_cost(summary: Mapping[str, Any], out_dir: Path) -> FigureInfo | None:
    """Localization quality (mean_f1, cont_iou) against cost (time_ms, model_calls), log x.

    A cost of 0 (or negative) cannot sit on a log axis: such points are drawn hollow at a floor
    (a third of the smallest positive cost) and labelled "(0)"."""
    axes = {k: c.figure_axis for k, c in _declared(summary).items()}
    qs = [k for k, a in axes.items() if a == "quality"]
    res = summary["results"]

    def informative(c: str) -> bool:  # an axis where every method costs 0 says nothing
        return any(
            _finite(v) and v > 0
            for v in (res[m]["metrics"].get(c, {}).get("value") for m in summary["methods"])
        )

    cs = [k for k, a in axes.items() if a == "cost" and informative(k)]
    if not qs or not cs:
        return None
    methods = list(summary["methods"])
    colors = _colors(methods)
    fig = new_figure(4.6 * len(cs), 3.6 * len(qs))
    for i, q in enumerate(qs):
        for j, c in enumerate(cs):
            ax = fig.add_subplot(len(qs), len(cs), i * len(cs) + j + 1)
            _quality_cost_panel(ax, res, methods, colors, q, c)
    return FigureInfo(
        "quality_vs_cost",
        "Localization quality against cost",
        "Summary localization quality (95 % CI bars) against the method's cost per "
        "image; hollow points have zero cost (drawn at a floor on the log axis). "
        "Times depend on the hardware.",
        *save_figure(fig, out_dir, "quality_vs_cost"),
    )


def _quality_cost_panel(ax, res: Mapping[str, Any], methods: list[str],
                        colors: Mapping[str, Any], q: str, c: str) -> None:
    """One panel of :func:`plot_quality_vs_cost`: quality metric ``q`` against cost ``c``."""
    xs = {m: res[m]["metrics"].get(c, {}).get("value") for m in methods}
    pos = [float(v) for v in xs.values() if _finite(v) and v > 0]
    floor = (min(pos) / 3.0) if pos else 1e-3
    for m in methods:
        r = res[m]["metrics"].get(q, {})
        y, xv = r.get("value"), xs[m]
        if not _finite(y) or not _finite(xv):
            continue
        zero = xv <= 0
        xp = floor if zero else float(xv)
        lo, hi = r.get("ci_low"), r.get("ci_high")
        yerr = (
            [[max(0.0, y - lo)], [max(0.0, hi - y)]]
            if _finite(lo) and _finite(hi)
            else None
        )
        ax.errorbar(
            [xp],
            [y],
            yerr=yerr,
            fmt="o",
            color=colors[m],
            capsize=2,
            mfc="none" if zero else colors[m],
            label=m,
        )
        ax.annotate(
            m + (" (0)" if zero else ""),
            (xp, y),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"{c} (log scale, ↓)")
    ax.set_ylabel(f"{q} ↑")
    ax.grid(alpha=0.3, which="both")


def make_figures(
    run_dir: str | Path, summary: Mapping[str, Any] | None = None, errors: list[str] | None = None
) -> list[FigureInfo]:
    """Draw every figure whose inputs are in ``run_dir`` into ``run_dir/figures``.

    Figures whose inputs are absent are skipped silently. A malformed optional input (rows'
    curves, ``class_specificity.json``, ``qualitative.npz``) raises ``ValueError`` naming it, or,
    when ``errors`` is a list, is appended to it as a message and that figure is skipped.
    """
    from .plot_maps import plot_class_specificity, plot_qualitative

    run_dir = Path(run_dir)
    out_dir = run_dir / "figures"
    if summary is None:
        summary = json.loads((run_dir / "summary.json").read_text())
    order = list(summary["methods"])
    rows = _read_rows(run_dir)
    cs, q = run_dir / CLASS_SPECIFICITY_FILE, run_dir / QUALITATIVE_FILE
    fixed = _curve_metrics(summary, fixed_x=True)
    panels = [(c.curve_key, c.curve_title) for c in _curve_metrics(summary, fixed_x=False)]
    jobs = [
        ("summary bar chart", lambda: plot_summary(summary, out_dir)),
        *[(f"F1 curves (scores['{c.curve_key}'])",
           lambda c=c: plot_f1_curves(f1_curve_from_rows(rows, c.curve_key, c.curve_x), out_dir,
                                      order))
          for c in fixed[:1]],
        ("perturbation curves",
         lambda: plot_deletion_insertion(rows, out_dir, order, panels) if panels else None),
        ("quality against cost", lambda: plot_quality_vs_cost(summary, out_dir)),
        (
            str(cs),
            lambda: (
                plot_class_specificity(load_class_specificity(cs), out_dir, order)
                if cs.exists()
                else None
            ),
        ),
        (
            str(q),
            lambda: (
                plot_qualitative(load_qualitative(q), out_dir, order=order) if q.exists() else None
            ),
        ),
    ]
    figs = []
    for what, job in jobs:
        try:
            f = job()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if errors is None:
                raise ValueError(f"cannot draw the figure from {what}: {exc}") from exc
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        if f is not None:
            figs.append(f)
    return figs


def plot_mask_areas(metrics_csv: str | Path, out_dir: Path,
                    key: str = "mask_areas") -> FigureInfo | None:
    """Mean mask area per epoch from an Explainer training log (Lightning ``metrics.csv``).

    Draws, for the validation split (solid) and the training split (dashed), the mean area of
    the present classes' merged mask (``target_area``) and of the absent classes' merged mask
    (``nontarget_area``): a class-specific Explainer keeps the second far below the first.
    Returns None when the log has no such column (e.g. an RT-Saliency log has only ``area``).
    """
    import pandas as pd

    log = pd.read_csv(metrics_csv)
    series = {}
    for split, style in (("val", "-"), ("train", "--")):
        for term, label in (("target_area", "present classes"),
                            ("nontarget_area", "absent classes"), ("area", "mask")):
            col = f"{split}_{term}"
            if col in log:
                per_epoch = log.dropna(subset=[col]).groupby("epoch")[col].mean()
                if len(per_epoch):
                    series[(split, label)] = (per_epoch, style)
    if not series:
        return None
    fig = new_figure(5.2, 3.4)
    ax = fig.add_subplot()
    colors = {"present classes": "tab:blue", "absent classes": "tab:red", "mask": "tab:green"}
    for (split, label), (s, style) in series.items():
        ax.plot(s.index + 1, s.values, style, marker="o", ms=3, color=colors[label],
                label=f"{label} ({split})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean mask area (fraction of image)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png, pdf = save_figure(fig, out_dir, key)
    return FigureInfo(key, "Mask area per epoch",
                      "Mean area of the merged masks of the present and the absent classes",
                      png, pdf)
