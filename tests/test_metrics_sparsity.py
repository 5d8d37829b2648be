"""Tests of attrbench.metrics.sparsity: Gini / area / entropy vs slow python references (Gini
through the mean-absolute-difference formula, independent of the sorted-weights one used in the
code), analytic values, NaN rules and the Metric classes on an EvalBatch."""

from __future__ import annotations

import math

import pytest
import torch

from attrbench.catalog import METRICS
from attrbench.interfaces import EvalBatch
from attrbench.metrics import sparsity as S


def slow_gini(values):
    """G = sum_i sum_j |x_i - x_j| / (2 n sum x)."""
    n, tot = len(values), sum(values)
    if tot == 0:
        return math.nan
    return sum(abs(a - b) for a in values for b in values) / (2 * n * tot)


def slow_entropy(values):
    tot = sum(values)
    if tot == 0:
        return math.nan
    return -sum((v / tot) * math.log(v / tot) for v in values if v > 0)


def random_maps(seed=0, b=6, h=7, w=6):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, h, w, generator=g)
    m[1] = (m[1] > 0.8).float()  # sparse binary
    m[2] = (m[2] * 4).round() / 4  # ties and zeros
    m[3] = m[3] ** 6  # peaked
    return m


@pytest.mark.parametrize("fn,ref", [(S.gini, slow_gini), (S.entropy, slow_entropy),
                                    (S.area, lambda v: sum(v) / len(v))])
def test_vs_slow_reference(fn, ref):
    maps = random_maps()
    fast = fn(maps)
    for i in range(maps.shape[0]):
        assert fast[i].item() == pytest.approx(ref(maps[i].flatten().double().tolist()),
                                               rel=1e-5, abs=1e-7)


def test_analytic_values():
    n = 5 * 8
    one_hot = torch.zeros(1, 5, 8)
    one_hot[0, 3, 2] = 0.7
    uniform = torch.full((1, 5, 8), 0.3)
    assert S.gini(one_hot).item() == pytest.approx(1 - 1 / n)
    assert S.gini(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert S.entropy(one_hot).item() == 0.0
    assert S.entropy(uniform).item() == pytest.approx(math.log(n))
    assert S.area(uniform).item() == pytest.approx(0.3)
    # two equal spikes: gini = 1 - 2/n, entropy log 2
    two = torch.zeros(1, 5, 8)
    two[0, 0, 0] = two[0, 4, 7] = 1.0
    assert S.gini(two).item() == pytest.approx(1 - 2 / n)
    assert S.entropy(two).item() == pytest.approx(math.log(2))


def test_invalid_maps_are_nan_and_all_zero_maps_are_constant_maps():
    maps = torch.rand(4, 3, 3)
    maps[0] = 0.0
    maps[1, 0, 0] = math.nan
    maps[2, 1, 1] = -0.2
    for fn in (S.gini, S.entropy, S.area):
        v = fn(maps)
        assert [math.isnan(x) for x in v.tolist()] == [False, True, True, False]
    # an all-zero map scores like any constant map: no sparsity, maximal entropy, area 0
    const = torch.full((1, 3, 3), 0.7)
    assert S.gini(maps[:1]).item() == S.gini(const).item() == 0.0
    assert S.entropy(maps[:1]).item() == pytest.approx(S.entropy(const).item())
    assert S.entropy(maps[:1]).item() == pytest.approx(math.log(9))
    assert S.area(maps[:1]).item() == 0.0


def test_bad_input():
    with pytest.raises(TypeError, match="floating"):
        S.gini(torch.ones(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        S.area(torch.ones(3))


def test_metric_classes_use_merged_mask_and_accumulate():
    maps = random_maps(seed=1, b=4)
    pair_image = torch.tensor([0, 1, 1, 2, 3])
    cm = torch.cat([maps[:2], maps[1:2].flip(-1), maps[2:]], 0)
    merged = EvalBatch.merge(cm, pair_image, 4)
    batch = EvalBatch(images=torch.zeros(4, 3, 7, 6), labels=torch.ones(4, 2),
                      pair_image=pair_image, pair_class=torch.tensor([0, 0, 1, 0, 0]),
                      class_masks=cm, merged=merged)
    for name, fn, hib in [("gini", S.gini, True), ("area", S.area, False),
                          ("entropy", S.entropy, False)]:
        metric = METRICS.get(name)()
        assert metric.higher_is_better is hib and metric.version == 2 and metric.definition
        vals = metric.update(batch)
        torch.testing.assert_close(torch.tensor(vals), fn(merged))
        vals2 = metric.update(batch)
        assert vals == vals2
        assert metric.compute() == pytest.approx(sum(vals) / 4)
