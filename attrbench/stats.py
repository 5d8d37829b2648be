"""Statistics of the summaries: bootstrap confidence intervals and paired comparisons.

* CI: percentile bootstrap over images of the mean of the per-image values
  (:func:`bootstrap_ci`), or of a metric's own summary statistic (:func:`bootstrap_ci_of`);
  seeded, so summaries are reproducible.
* Paired comparison (:func:`paired_comparisons`): every method against a reference method
  (default :func:`default_reference`: ``explainer`` when present, else the first method), on the
  images that *both* methods scored with a finite value. Default test: a paired percentile
  bootstrap of the mean difference (the same resampling as the CIs, no extra dependency,
  deterministic); ``test="wilcoxon"`` uses :func:`scipy.stats.wilcoxon` (two-sided) instead.
  Cost metrics are never tested: their per-image values are batch averages, not independent
  observations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ALPHA",
    "bootstrap_ci",
    "bootstrap_ci_of",
    "default_reference",
    "paired_bootstrap",
    "paired_comparisons",
    "paired_wilcoxon",
]

#: Significance level of the paired comparisons.
ALPHA = 0.05
N_BOOT_PAIRED = 2000


#: resamples drawn at a time: the (chunk, n) index tensor stays small however many images a run
#: has (the draws are the same as one (n_boot, n) call: the generator fills row after row)
_CHUNK_ELEMENTS = 2**20


def _resample_rows(n: int, n_boot: int, g):
    """The (rows, n) index chunks of ``n_boot`` bootstrap resamples of ``n`` items."""
    import torch

    step = max(1, _CHUNK_ELEMENTS // max(1, n))
    for start in range(0, n_boot, step):
        yield torch.randint(0, n, (min(step, n_boot - start), n), generator=g)


def _resampled_means(x, n_boot: int, g):
    """(n_boot,) means of ``x`` over bootstrap resamples, drawn in chunks."""
    import torch

    return torch.cat([x[idx].mean(1) for idx in _resample_rows(len(x), n_boot, g)])


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over images (seeded: summaries are reproducible)."""
    import torch

    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) < 2:
        return (math.nan, math.nan)
    x = torch.tensor(vals, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return _percentiles(_resampled_means(x, n_boot, g), level)


def _percentiles(stats, level: float) -> tuple[float, float]:
    import torch

    stats = stats[torch.isfinite(stats)]
    if stats.numel() < 2:
        return (math.nan, math.nan)
    return (float(torch.quantile(stats, (1 - level) / 2)),
            float(torch.quantile(stats, 1 - (1 - level) / 2)))


def bootstrap_ci_of(aggregate, values: list[Any], n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of a metric's own summary statistic: images are resampled and
    ``aggregate`` (e.g. the pointing game's mean of per-class accuracies, the median time) is
    recomputed on each resample, so the interval is about the value the table shows."""
    import torch

    if sum(1 for v in values if v is not None) < 2:
        return (math.nan, math.nan)
    g = torch.Generator().manual_seed(seed)
    stats = torch.tensor([aggregate([values[i] for i in row])
                          for idx in _resample_rows(len(values), n_boot, g)
                          for row in idx.tolist()], dtype=torch.float64)
    return _percentiles(stats, level)


def default_reference(methods: Sequence[str]) -> str | None:
    """``"explainer"`` when it is in the run, else the first method (None when there is none)."""
    if "explainer" in methods:
        return "explainer"
    return methods[0] if methods else None


def _finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    keep = [
        (x, y)
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    return [x for x, _ in keep], [y for _, y in keep]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    n_boot: int = N_BOOT_PAIRED,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired percentile bootstrap of the mean difference ``mean(a - b)``.

    The same image indices are resampled for both samples (the pairing is kept). The two-sided
    p-value is ``2 * min(P*(mean* <= 0), P*(mean* >= 0))`` with the usual ``+1`` correction, so
    identical samples give ``p = 1`` and it is never exactly 0.

    Args:
        a, b: per-image values of the two methods, aligned (same image at the same index);
            pairs with a NaN/None on either side are dropped.

    Returns:
        ``{"diff", "ci_low", "ci_high", "p", "n"}``; ``p`` is NaN when fewer than 2 pairs.
    """
    import torch

    x, y = _finite_pairs(a, b)
    n = len(x)
    if n == 0:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": 0}
    d = torch.tensor(x, dtype=torch.float64) - torch.tensor(y, dtype=torch.float64)
    diff = float(d.mean())
    if n < 2:
        return {"diff": diff, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": n}
    g = torch.Generator().manual_seed(seed)
    means = _resampled_means(d, n_boot, g)
    # exact ties at 0 (identical methods) count on both sides
    eps = 1e-12 * max(1.0, float(d.abs().max()))
    le = int((means <= eps).sum())
    ge = int((means >= -eps).sum())
    p = min(1.0, 2.0 * min(le + 1, ge + 1) / (n_boot + 1))
    lo = float(torch.quantile(means, (1 - level) / 2))
    hi = float(torch.quantile(means, 1 - (1 - level) / 2))
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "p": p, "n": n}


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (scipy); same keys as
    :func:`paired_bootstrap` (no CI: ``ci_low``/``ci_high`` are NaN). All-zero differences give
    ``p = 1``."""
    try:
        from scipy.stats import wilcoxon
    except ImportError as exc:  # pragma: no cover - scipy is installed with scikit-learn
        raise ValueError("test='wilcoxon' needs scipy; install it or use test='bootstrap'") from exc
    x, y = _finite_pairs(a, b)
    n = len(x)
    diff = sum(u - v for u, v in zip(x, y)) / n if n else math.nan
    out = {"diff": diff, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": n}
    if n < 2:
        return out
    if all(u == v for u, v in zip(x, y)):
        out["p"] = 1.0
        return out
    out["p"] = float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
    return out


_TESTS = {"bootstrap": paired_bootstrap, "wilcoxon": paired_wilcoxon}
_TEST_NAMES = {
    "bootstrap": f"paired bootstrap of the mean difference ({N_BOOT_PAIRED} resamples)",
    "wilcoxon": "Wilcoxon signed-rank test (scipy, two-sided)",
}


def paired_comparisons(
    per_image: Mapping[str, Mapping[str, Mapping[str, float]]],
    methods: Sequence[str],
    metrics: Sequence[str],
    reference: str | None = None,
    test: str = "bootstrap",
    alpha: float = ALPHA,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Compare every method with ``reference`` on the images both scored.

    Args:
        per_image: ``{method: {metric: {image_id: float}}}`` (per-image values already reduced
            to floats, e.g. by ``Metric.image_value``).
        methods, metrics: order of the table.
        reference: the reference method; default :func:`default_reference`.
        test: ``"bootstrap"`` (default) or ``"wilcoxon"``.
        alpha: significance level.
        skip: metrics that are not tested (``summarize`` passes the cost metrics).

    Returns:
        ``{"reference", "test", "alpha", "results": {method: {metric: {"diff", "ci_low",
        "ci_high", "p", "n", "significant"}}}}``; the reference itself and skipped metrics are
        absent from ``results``.
    """
    if test not in _TESTS:
        raise ValueError(f"test must be one of {sorted(_TESTS)}, got {test!r}")
    ref = reference if reference is not None else default_reference(list(methods))
    if ref is not None and ref not in methods:
        raise ValueError(
            f"reference method {ref!r} is not in the run; expected one of {list(methods)}"
        )
    out: dict[str, Any] = {
        "reference": ref,
        "test": _TEST_NAMES[test],
        "alpha": alpha,
        "results": {},
    }
    if ref is None:
        return out
    fn = _TESTS[test]
    for m in methods:
        if m == ref:
            continue
        res = {}
        for k in metrics:
            if k in skip:
                continue
            a_map = per_image.get(m, {}).get(k, {})
            b_map = per_image.get(ref, {}).get(k, {})
            common = sorted(set(a_map) & set(b_map))
            r = fn([a_map[i] for i in common], [b_map[i] for i in common])
            r["significant"] = bool(math.isfinite(r["p"]) and r["p"] < alpha)
            res[k] = r
        out["results"][m] = res
    return out
