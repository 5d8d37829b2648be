"""Per-class and per-image views of a run: where a method does well or badly.

* :func:`per_class_frame` — every quality metric's mean per (method, class): a per-class metric
  (pointing game, class specificity) by its own per-class values, an image-level metric (mean
  F1, deletion, ...) over the images that contain the class; written as ``per_class.csv``.
* :func:`plot_per_class` — heat maps (methods x classes) of the headline quality metrics.
* :func:`plot_worst` — each method's worst images (by the run's first cost-quality axis metric,
  ``mean_f1`` by default) with its masks, from ``worst.npz``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plots import FigureInfo, new_figure, save_figure

__all__ = ["PER_CLASS_FILE", "per_class_frame", "plot_per_class", "plot_worst",
           "write_per_class"]

PER_CLASS_FILE = "per_class.csv"
COLUMNS = ["method", "metric", "class_id", "class", "value", "n"]


def per_class_frame(run_dir: str | Path, summary: Mapping[str, Any] | None = None):
    """Tidy :class:`pandas.DataFrame` (``method, metric, class_id, class, value, n``) of the
    quality metrics' mean per class; ``n``: the finite values averaged. Rows written before
    image classes were recorded contribute their per-class metrics only."""
    import pandas as pd

    from .results import read_rows

    run_dir = Path(run_dir)
    if summary is None:
        summary = json.loads((run_dir / "summary.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text()).get("config", {})
    names = list(cfg.get("classes") or [])
    metrics = [k for k, d in summary["metrics"].items()
               if not (d.get("kind") == "cost" or d.get("cost"))]
    sums: dict[tuple[str, str, int], list[float]] = {}
    if (run_dir / "scores.jsonl").exists():
        for r in read_rows(run_dir):
            if r.get("status") != "ok":
                continue
            for k in metrics:
                for c, x in _class_values(r["scores"].get(k), r.get("classes")):
                    acc = sums.setdefault((r["method"], k, c), [0.0, 0])
                    acc[0] += x
                    acc[1] += 1
    recs = [{"method": m, "metric": k, "class_id": c,
             "class": names[c] if 0 <= c < len(names) else str(c), "value": s / n, "n": n}
            for (m, k, c), (s, n) in sums.items()]
    order_m = {m: i for i, m in enumerate(summary["methods"])}
    order_k = {k: i for i, k in enumerate(metrics)}
    recs.sort(key=lambda d: (order_k[d["metric"]], order_m.get(d["method"], 1 << 30),
                             d["class_id"]))
    return pd.DataFrame.from_records(recs, columns=COLUMNS)


def _class_values(v: Any, classes: Sequence[int] | None) -> list[tuple[int, float]]:
    """(class, value) pairs of one stored per-image value: a per-class dict gives its own
    entries, a float one entry per class of the image."""
    if isinstance(v, dict):
        out = []
        for c, x in v.items():
            try:
                c, x = int(c), float(x)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                out.append((c, x))
        return out
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and classes:
        return [(int(c), float(v)) for c in classes]
    return []


def write_per_class(run_dir: str | Path, frame) -> Path:
    from .rundir import atomic_write_text

    path = Path(run_dir) / PER_CLASS_FILE
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def plot_per_class(frame, summary: Mapping[str, Any], out_dir: Path,
                   order: Sequence[str] | None = None) -> FigureInfo | None:
    """Heat maps (methods x classes) of the headline quality metrics present in ``frame``."""
    from .catalog import METRICS

    if frame is None or not len(frame):
        return None
    present = list(dict.fromkeys(frame["metric"]))
    shown = [k for k in present if k in METRICS and METRICS.get(k).headline] or present[:2]
    methods = [m for m in (order or summary["methods"]) if m in set(frame["method"])]
    classes = sorted(set(zip(frame["class_id"], frame["class"])))
    fig = new_figure(max(4.5, 0.55 * len(classes) + 2.5) * len(shown),
                     0.32 * len(methods) + 1.6)
    for i, k in enumerate(shown):
        sub = frame[frame["metric"] == k]
        mat = np.full((len(methods), len(classes)), np.nan)
        for r in sub.itertuples():
            if r.method in methods:
                mat[methods.index(r.method), classes.index((r.class_id, r[4]))] = r.value
        ax = fig.add_subplot(1, len(shown), i + 1)
        hib = bool(summary["metrics"].get(k, {}).get("higher_is_better", True))
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis" if hib else "viridis_r",
                       aspect="auto")
        ax.set_title(f"{k} {'↑' if hib else '↓'}", fontsize=9)
        ax.set_xticks(range(len(classes)), [c for _, c in classes], rotation=45, ha="right",
                      fontsize=7)
        ax.set_yticks(range(len(methods)), methods, fontsize=7)
        if mat.size <= 200:
            lo, hi = np.nanmin(mat), np.nanmax(mat)
            for (a, b), v in np.ndenumerate(mat):
                if math.isfinite(v):
                    dark = (v - lo) / (hi - lo + 1e-12) < 0.5 if hib else (v - lo) / (
                        hi - lo + 1e-12) >= 0.5
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return FigureInfo(
        "per_class", "Per class",
        "Mean per class of the headline quality metrics: per-class metrics by their own "
        "per-class values, image-level metrics over the images that contain the class "
        "(every metric per class: per_class.csv).",
        *save_figure(fig, out_dir, "per_class"))


def plot_worst(data: Mapping[str, Any], out_dir: Path, order: Sequence[str] | None = None
               ) -> FigureInfo | None:
    """Rows: methods; columns: each method's worst images with its mask over the image."""
    names = list(data["methods"])
    if not names:
        return None
    rows = [m for m in (order or names) if m in names] + [m for m in names if m not in (
        order or [])]
    from .plot_maps import draw_mosaic, overlay

    images, masks, values = data["images"], data["masks"], data["values"]
    k = images.shape[1]
    cls = data["class_names"]
    tiles, labels = [], []
    for m in rows:
        j0 = names.index(m)
        tiles.append([overlay(images[j0, j].transpose(1, 2, 0), masks[j0, j]) for j in range(k)])
        labels.append(m)
    fig = new_figure(1.45 * k + 1.6, 1.45 * len(rows) + 0.6)
    draw_mosaic(fig, tiles, [f"#{j + 1}" for j in range(k)], labels)
    ax = fig.axes[0]
    h, w = images.shape[-2:]
    for i, m in enumerate(rows):  # each tile's image id, value and classes under it
        j0 = names.index(m)
        for j in range(k):
            present = [cls[c] for c in np.nonzero(data["labels"][j0, j])[0] if c < len(cls)]
            ax.text(j * (w + 2) + 1, i * (h + 2) + h - 1,
                    f"{data['image_ids'][j0][j]}: {values[j0, j]:.2f}\n{', '.join(present)}",
                    fontsize=5, color="white", va="bottom", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.45, "pad": 0.6, "linewidth": 0})
    metric = data["metric"]
    return FigureInfo(
        "worst", "Where each method fails",
        f"Each method's {k} images with the {'lowest' if data['higher_is_better'] else 'highest'}"
        f" {metric} (title: image id, {metric}, ground-truth classes), its merged mask over the "
        f"image (jet, 50 % opacity).",
        *save_figure(fig, out_dir, "worst"))
