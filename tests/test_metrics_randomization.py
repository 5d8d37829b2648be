"""Tests of attrbench.metrics.randomization: Spearman with average ranks vs scipy, the
cascading layer order, |rho| = 1 for a model-independent method (``center``), < 1 for a
gradient method on a tiny CNN, seeding, and that the original model is left untouched."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn

from attrbench.catalog import METRICS
from attrbench.interfaces import AttributionMethod, EvalBatch
from attrbench.methods.sanity import Center
from attrbench.metrics import randomization as R
from attrbench.models.classifiers import SmallCNN


class VanillaGradient(AttributionMethod):
    """|d logit_t / d x| max over channels, divided by its max (a test double)."""

    name = "vanilla_gradient"
    needs_gradients = True

    def __init__(self, model, eps: float = 1e-12) -> None:
        super().__init__(model, eps=eps)
        self.eps = eps

    def _attribute(self, images, targets, *, gt_masks, seeds):
        x = images.clone().requires_grad_(True)
        out = self.model(x).gather(1, targets.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(out, x)
        s = g.abs().amax(1)
        return s / (s.flatten(1).amax(1).view(-1, 1, 1) + self.eps)


def tiny_cnn():
    torch.manual_seed(0)
    return SmallCNN(num_classes=3, widths=(4, 8, 8, 8)).eval()


def make_batch(model, method, b=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    pi = torch.tensor([0, 1, 1, 2])  # b = 3 images, 4 pairs
    pc = torch.tensor([0, 1, 2, 0][: len(pi)])
    labels = torch.zeros(b, 3)
    labels[pi, pc] = 1
    seeds = torch.arange(b)
    cm = method.attribute(images[pi], pc, seeds=seeds[pi])
    return EvalBatch(images=images, labels=labels, pair_image=pi, pair_class=pc,
                     class_masks=cm, merged=EvalBatch.merge(cm, pi, b), model=model,
                     method=method, method_name=method.name, seeds=seeds,
                     image_ids=[f"i{k}" for k in range(b)])


def test_average_ranks_and_spearman_vs_scipy():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(5, 40, generator=g) * 5).floor()  # many ties
    b = torch.rand(5, 40, generator=g) + 0.3 * a
    r = R.average_ranks(a)
    for i in range(5):
        assert r[i].tolist() == pytest.approx(rankdata(a[i].numpy()).tolist())
    rho = R.spearman(a, b)
    for i in range(5):
        assert rho[i].item() == pytest.approx(spearmanr(a[i], b[i]).statistic, rel=1e-5)
    # a constant row has no ranking: identical rows 1 (nothing changed), otherwise 0
    const = torch.ones(1, 10)
    assert R.spearman(const, torch.rand(1, 10)).item() == 0.0
    assert R.spearman(torch.rand(1, 10), const).item() == 0.0
    assert R.spearman(const, const.clone()).item() == 1.0
    assert R.spearman(const, 2 * const).item() == 0.0
    assert math.isnan(R.spearman(const, torch.full((1, 10), math.nan)).item())
    assert R.spearman(b[:1], b[:1]).item() == pytest.approx(1.0)


def test_layer_order_and_seeded_reinit():
    model = tiny_cnn()
    names = [n for n, _ in R.parameterised_layers(model)]
    assert names[:3] == ["head", "features.block4.0", "features.block3.0"]
    assert not any(isinstance(dict(model.named_modules())[n], nn.BatchNorm2d) for n in names)
    m1, m2 = tiny_cnn(), tiny_cnn()
    state = torch.random.get_rng_state()
    R.randomize_layers(m1, ["head"], seed=3)
    R.randomize_layers(m2, ["head"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(m1.head.weight, m2.head.weight)
    assert not torch.equal(m1.head.weight, model.head.weight)
    assert torch.equal(m1.features.block4[0].weight, model.features.block4[0].weight)


def test_center_gives_one():
    model = tiny_cnn()
    metric = METRICS.get("randomization_spearman")()
    vals = metric.update(make_batch(model, Center(model, sigma=0.3)))
    assert vals == pytest.approx([1.0, 1.0, 1.0])
    assert metric.rhos["i1"][2] == pytest.approx([1.0, 1.0, 1.0])


def test_gradient_method_below_one_and_model_untouched():
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(model, VanillaGradient(model))
    m1 = METRICS.get("randomization_spearman")(num_layers=2, seed=5)
    v1 = m1.update(batch)
    assert all(0 <= v < 0.9 for v in v1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # seeded: same again; per-image value = mean over steps and pairs of |rho|
    m2 = METRICS.get("randomization_spearman")(num_layers=2, seed=5)
    assert m2.update(batch) == pytest.approx(v1)
    rh = m1.rhos["i1"]
    assert v1[1] == pytest.approx((sum(map(abs, rh[1])) + sum(map(abs, rh[2]))) / 4, rel=1e-5)
    # step 1 by hand: re-initialise the head with seed 5, recompute, Spearman
    copy_model = tiny_cnn()
    R.randomize_layers(copy_model, ["head"], seed=5)
    maps = VanillaGradient(copy_model).attribute(batch.images[batch.pair_image], batch.pair_class)
    rho = R.spearman(batch.class_masks, maps)
    assert rh[1][0] == pytest.approx(rho[1].item(), rel=1e-5)


def test_options_and_attributes():
    cls = METRICS.get("randomization_spearman")
    assert cls.higher_is_better is False and cls.version == 2
    with pytest.raises(ValueError, match="num_layers"):
        cls(num_layers=0)
    with pytest.raises(TypeError, match="seed"):
        cls(seed=1.5)
    model = tiny_cnn()
    with pytest.raises(ValueError, match="parameterised layers"):
        cls(num_layers=50).update(make_batch(model, Center(model)))
