"""The image figures of a run: the class-specificity matrices and the masks over their images.

Drawn into ``RUN_DIR/figures/`` (PNG + PDF) by :func:`attrbench.plots.make_figures` from the
run's ``class_specificity.json`` and ``qualitative.npz``, with the same Agg canvas (no pyplot)
as the other figures of :mod:`attrbench.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plots import FigureInfo, _finite, new_figure, save_figure

__all__ = ["plot_class_specificity", "plot_qualitative"]


def plot_class_specificity(
    data: Mapping[str, Mapping[str, Any]], out_dir: Path, order: Sequence[str] | None = None
) -> FigureInfo | None:
    """One heat map per method of the class-specificity ("confusion") matrix."""
    if not data:
        return None
    methods = [m for m in (order or data) if m in data] or list(data)
    methods += [m for m in data if m not in methods]
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    c_max = max(len(d["classes"]) for d in data.values())
    side = max(3.0, 0.45 * c_max + 1.5)
    fig = new_figure(side * ncols + 0.8, side * nrows)
    im = None
    axes = []
    for i, m in enumerate(methods):
        d = data[m]
        mat = np.asarray(d["matrix"], dtype=np.float64)
        ax = fig.add_subplot(nrows, ncols, i + 1)
        axes.append(ax)
        im = ax.imshow(np.ma.masked_invalid(mat), vmin=0.0, vmax=1.0, cmap="viridis")
        summ = d.get("summary") or {}
        title = m
        if _finite(summ.get("diag")) or _finite(summ.get("offdiag")):
            title += f"\ndiag {summ.get('diag', math.nan):.3f}, off {summ.get('offdiag', math.nan):.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(mat.shape[1]), d["columns"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(mat.shape[0]), d["classes"], fontsize=7)
        ax.set_xlabel("mask of class", fontsize=8)
        ax.set_ylabel("target class", fontsize=8)
        if mat.shape[0] <= 10:
            for (r, c), v in np.ndenumerate(mat):
                if math.isfinite(v):
                    ax.text(
                        c,
                        r,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v < 0.5 else "black",
                    )
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="probability of the target")
    return FigureInfo(
        "class_specificity",
        "Class specificity",
        "Probability of the target class (row) on the image masked by the mask of "
        "the column's class; 'none' = unmasked image. A class-specific method has "
        "a high diagonal and a low off-diagonal.",
        *save_figure(fig, out_dir, "class_specificity"),
    )


def plot_qualitative(
    data: Mapping[str, Any], out_dir: Path, max_images: int = 8, order: Sequence[str] | None = None
) -> FigureInfo | None:
    """Grid of images (rows) x methods (columns): each mask overlaid on its image."""
    images = np.asarray(data["images"])
    if images.shape[0] == 0:
        return None
    names = [str(m) for m in data["methods"]]
    cols = [m for m in (order or names) if m in names] or names
    cols += [m for m in names if m not in cols]
    masks = np.asarray(data["masks"], dtype=np.float32)
    class_names = [str(c) for c in data["class_names"]]
    labels = np.asarray(data["labels"])
    ids = [str(i) for i in data.get("image_ids", [""] * images.shape[0])]
    n = min(max_images, images.shape[0])
    cell = 1.2
    fig = new_figure(cell * (len(cols) + 1), cell * n + 0.3)
    for i in range(n):
        rgb = images[i].transpose(1, 2, 0)
        ax = fig.add_subplot(n, len(cols) + 1, i * (len(cols) + 1) + 1)
        ax.imshow(rgb, interpolation="nearest")
        present = [class_names[k] for k in np.nonzero(labels[i])[0] if k < len(class_names)]
        ax.set_ylabel((ids[i] + "\n" if ids[i] else "") + ", ".join(present), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title("image", fontsize=8)
        for j, m in enumerate(cols):
            ax = fig.add_subplot(n, len(cols) + 1, i * (len(cols) + 1) + j + 2)
            ax.imshow(rgb, interpolation="nearest")
            ax.imshow(masks[names.index(m), i], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(m, fontsize=8)
    return FigureInfo(
        "qualitative",
        "Qualitative examples",
        "Each method's merged mask (jet colour map, 50 % opacity, 0 = blue, "
        "1 = red) over the image; row labels: image id and ground-truth classes.",
        *save_figure(fig, out_dir, "qualitative"),
    )
