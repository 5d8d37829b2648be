"""Timing and ratio helpers of ``attrbench bench``: interleaved timing, per-repeat ratios and
their median, safe division and linear extrapolation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from attrbench.metrics.cost import time_call

__all__ = ["interleaved_ms", "linear_extrapolation", "median_ms", "ratio_stats",
           "relative_growth", "safe_ratio"]


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is not finite or the denominator is <= 0.

    >>> safe_ratio(3.0, 2.0), math.isnan(safe_ratio(1.0, 0.0))
    (1.5, True)
    """
    try:
        a, b = float(numerator), float(denominator)
    except (TypeError, ValueError):
        raise TypeError(f"safe_ratio expects two numbers, got {numerator!r} and "
                        f"{denominator!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def relative_growth(small: float, large: float) -> float:
    """``large / small - 1`` (0.1 = 10 % growth); NaN when ``small`` is not a positive number.

    >>> relative_growth(100.0, 110.0)
    0.1
    """
    r = safe_ratio(large, small)
    return round(r - 1.0, 12) if math.isfinite(r) else math.nan


def linear_extrapolation(measured: float, measured_units: int, target_units: int) -> float:
    """``measured * target_units / measured_units``: the time of ``target_units`` masks or
    iterations from the time of ``measured_units`` of them, assuming cost proportional to the
    count (a fixed setup cost, if any, is scaled too, which overestimates the target time)."""
    if not isinstance(measured_units, int) or measured_units <= 0:
        raise ValueError(f"measured_units must be a positive int, got {measured_units!r}")
    if not isinstance(target_units, int) or target_units <= 0:
        raise ValueError(f"target_units must be a positive int, got {target_units!r}")
    return float(measured) * target_units / measured_units


def interleaved_ms(fns: Sequence[Callable[[], Any]], device: torch.device | str, repeats: int,
                   warmup: int = 1) -> list[list[float]]:
    """Every timed call (ms) of each function, in repeat order; the calls are interleaved.

    Each function is called ``warmup`` times untimed, then the functions are called in turn
    ``repeats`` times, each call timed with :func:`~attrbench.metrics.cost.time_call` (CUDA is
    synchronised before and after). Repeat ``i`` of every function ran back to back, so machine
    load during that repeat hits them alike: ratios are best formed per repeat
    (:func:`ratio_stats`).

    Returns:
        One list of ``repeats`` times per function.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for fn in fns:
        for _ in range(warmup):
            time_call(fn, device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(time_call(fn, device)[1])
    return times


def median_ms(fns: Sequence[Callable[[], Any]], device: torch.device | str, repeats: int,
              warmup: int = 1) -> tuple[list[float], list[float]]:
    """Medians and minima (ms) of each function's wall time over :func:`interleaved_ms`.

    Returns:
        (medians, minima), one entry per function, in milliseconds.
    """
    times = interleaved_ms(fns, device, repeats, warmup)
    return [statistics.median(t) for t in times], [min(t) for t in times]


def ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """The per-repeat ratios ``numerators[i] / denominators[i]`` and their median, min and max.

    The median of per-repeat ratios (of interleaved runs) is robust to a slow repeat, which hits
    both sides of the same repeat; a ratio of two medians or of two minima (the best run) is
    not. Repeats whose ratio is not finite (a zero time) are left out.

    >>> ratio_stats([2.0, 3.0, 10.0], [1.0, 2.0, 4.0])
    {'ratio': 2.0, 'ratio_min': 1.5, 'ratio_max': 2.5, 'ratios': [2.0, 1.5, 2.5]}
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"ratio_stats needs as many numerators as denominators, got "
                         f"{len(numerators)} and {len(denominators)}")
    ratios = [safe_ratio(a, b) for a, b in zip(numerators, denominators)]
    finite = [r for r in ratios if math.isfinite(r)]
    if not finite:
        return {"ratio": math.nan, "ratio_min": math.nan, "ratio_max": math.nan, "ratios": []}
    return {"ratio": statistics.median(finite), "ratio_min": min(finite),
            "ratio_max": max(finite), "ratios": finite}
