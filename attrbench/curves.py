"""Mean curves per method from a run's score rows, for the figures of :mod:`attrbench.plots`.

Metrics that declare a ``curve_key`` store one curve per image in its score row (``mean_f1``'s
F1 at fixed thresholds, the deletion and insertion curves); these readers average them per
method, with a band of +-1.96 standard errors (normal approximation, cheaper than a bootstrap
per point; the tables carry the bootstrap CIs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["curves_from_rows", "f1_curve_from_rows"]


def _mean_band(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, S) with NaNs -> per column: mean, mean -+ 1.96 standard errors, and the count."""
    ok = np.isfinite(arr)
    n = ok.sum(0)
    mean = np.where(n > 0, np.where(ok, arr, 0.0).sum(0) / np.maximum(n, 1), np.nan)
    dev = np.where(ok, arr - mean[None], 0.0)
    var = np.where(n > 1, (dev**2).sum(0) / np.maximum(n - 1, 1), 0.0)
    half = 1.96 * np.sqrt(var) / np.sqrt(np.maximum(n, 1))
    return mean, mean - half, mean + half, n


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    from .results import read_rows

    if not (run_dir / "scores.jsonl").exists():
        return []
    return list(read_rows(run_dir))


def f1_curve_from_rows(rows: Iterable[Mapping[str, Any]], key: str = "f1_curve",
                       thresholds: Sequence[float] | None = None) -> dict[str, dict[str, Any]]:
    """Mean F1-vs-threshold curve per method from per-image rows.

    Expects ``row["scores"][key]``: a list of ``len(thresholds)`` per-image F1 values (default
    ``mean_f1``'s curve at thresholds 0.1..0.9; NaN/None where undefined). Rows without it, or
    failed rows, are ignored; a curve of another length raises ``ValueError``.

    Returns:
        ``{method: {"thresholds", "mean", "low", "high", "n"}}`` (lists; ``low``/``high`` =
        mean -+ 1.96 standard errors); empty when no row has a curve.
    """
    if thresholds is None:
        from .metrics.localization import F1_CURVE_THRESHOLDS as thresholds
    per: dict[str, list[list[float]]] = {}
    for r, c in _row_curves(rows, key):
        if len(c) != len(thresholds):
            raise ValueError(
                f"scores['{key}'] of image {r.get('image_id')!r} ({r.get('method')}) has "
                f"{len(c)} values, expected {len(thresholds)} (thresholds {tuple(thresholds)})"
            )
        per.setdefault(r["method"], []).append([math.nan if v is None else float(v) for v in c])
    out = {}
    for m, curves in per.items():
        mean, lo, hi, n = _mean_band(np.asarray(curves, dtype=np.float64))
        out[m] = {
            "thresholds": list(thresholds),
            "mean": mean.tolist(),
            "low": lo.tolist(),
            "high": hi.tolist(),
            "n": n.tolist(),
        }
    return out


def _row_curves(rows: Iterable[Mapping[str, Any]], key: str):
    """``(row, curve)`` of the ok rows that have ``scores[key]``; a per-class dict of curves is
    averaged over its classes first."""
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        c = (r.get("scores") or {}).get(key)
        if c is None:
            continue
        if isinstance(c, Mapping):
            c = _mean_of_lists(list(c.values()))
        yield r, c


def _mean_of_lists(lists: list[Sequence[Any]]) -> list[float]:
    arr = np.asarray(
        [[math.nan if v is None else float(v) for v in c] for c in lists], dtype=np.float64
    )
    with np.errstate(invalid="ignore"):
        return np.nanmean(arr, 0).tolist() if len(arr) else []


def curves_from_rows(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Mean curve per method of ``row["scores"][key]`` (e.g. ``"deletion_curve"``).

    A per-image value is a list of floats (the score at perturbed fractions 0..1 in equal
    steps) or a dict ``{class_id: list}`` (averaged over classes first). Curves of one method
    must all have the same length. Returns ``{method: {"x", "mean", "low", "high", "n"}}``.
    """
    per: dict[str, list[list[float]]] = {}
    for r, c in _row_curves(rows, key):
        if not isinstance(c, (list, tuple)) or len(c) < 2:
            raise ValueError(
                f"scores[{key!r}] of image {r.get('image_id')!r} must be a list of "
                f">= 2 floats or a dict of such lists, got {c!r:.80}"
            )
        per.setdefault(r["method"], []).append([math.nan if v is None else float(v) for v in c])
    out = {}
    for m, curves in per.items():
        lengths = {len(c) for c in curves}
        if len(lengths) != 1:
            raise ValueError(
                f"scores[{key!r}] of method {m!r} has curves of lengths "
                f"{sorted(lengths)}; expected one length"
            )
        mean, lo, hi, n = _mean_band(np.asarray(curves, dtype=np.float64))
        s = len(curves[0])
        out[m] = {
            "x": np.linspace(0, 1, s).tolist(),
            "mean": mean.tolist(),
            "low": lo.tolist(),
            "high": hi.tolist(),
            "n": n.tolist(),
        }
    return out
