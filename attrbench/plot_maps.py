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

__all__ = ["draw_mosaic", "mosaic", "overlay", "plot_class_specificity", "plot_qualitative"]


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


def overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1]: the mask in the jet colour map at 50 % over the uint8
    image (what ``imshow(rgb); imshow(mask, cmap="jet", alpha=0.5)`` draws)."""
    from matplotlib import colormaps

    jet = colormaps["jet"](np.clip(np.nan_to_num(mask), 0.0, 1.0))[..., :3]
    return 0.5 * rgb.astype(np.float32) / 255.0 + 0.5 * jet


def mosaic(tiles: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """One (rows x cols) image of equally sized (H, W, 3) float tiles, white gaps between."""
    h, w, _ = tiles[0][0].shape
    rows, cols = len(tiles), len(tiles[0])
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), dtype=np.float32)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = t
    return out


def draw_mosaic(fig, tiles: list[list[np.ndarray]], col_titles: Sequence[str],
                row_labels: Sequence[str], gap: int = 2) -> None:
    """The tiles as one image on one axes (fast to lay out and to save, unlike an axes per
    tile), titled per column and labelled per row."""
    h, w, _ = tiles[0][0].shape
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic(tiles, gap), interpolation="nearest")
    ax.set_xticks([j * (w + gap) + w / 2 for j in range(len(col_titles))], list(col_titles),
                  fontsize=7, rotation=30, ha="left")
    ax.xaxis.tick_top()
    ax.set_yticks([i * (h + gap) + h / 2 for i in range(len(row_labels))], list(row_labels),
                  fontsize=6)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)


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
    tiles, row_labels = [], []
    for i in range(n):
        rgb = images[i].transpose(1, 2, 0)
        tiles.append([rgb.astype(np.float32) / 255.0]
                     + [overlay(rgb, masks[names.index(m), i]) for m in cols])
        present = [class_names[k] for k in np.nonzero(labels[i])[0] if k < len(class_names)]
        row_labels.append((ids[i] + "\n" if ids[i] else "") + ", ".join(present))
    cell = 1.2
    fig = new_figure(cell * (len(cols) + 1) + 0.8, cell * n + 0.9)
    draw_mosaic(fig, tiles, ["image", *cols], row_labels)
    return FigureInfo(
        "qualitative",
        "Qualitative examples",
        "Each method's merged mask (jet colour map, 50 % opacity, 0 = blue, "
        "1 = red) over the image; row labels: image id and ground-truth classes.",
        *save_figure(fig, out_dir, "qualitative"),
    )
