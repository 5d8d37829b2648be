"""Tests of attrbench.metrics.road: the imputation and the curves against pytorch-grad-cam's ROAD
(noise disabled, solver converged), the defining equation of linear imputation, closed-form
curves on a model that reads one region, constant maps, the seeded noise, batch-composition
invariance and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from attrbench.catalog import METRICS
from attrbench.interfaces import EvalBatch
from attrbench.metrics import road as R
from attrbench.models.classifiers import SmallCNN

#: the agreement we require with pytorch-grad-cam's sparse direct solve: our conjugate gradient
#: is run to a relative residual of 1e-6 in float32, theirs is exact in float64
IMPUTE_ATOL = 1e-4
#: on softmax probabilities of the imputed images
CURVE_ATOL = 1e-4


def tiny_cnn(k=4, seed=0):
    torch.manual_seed(seed)
    m = SmallCNN(num_classes=k, widths=(4, 8, 8, 8)).eval()
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


class RegionMean(nn.Module):
    """Oracle: logit 0 = mean of channel 0 over rows/cols [0, 5); logit 1 = its negative."""

    num_classes = 2

    def forward(self, x):
        s = x[:, 0, :5, :5].mean((1, 2))
        return torch.stack([s, -s], 1)


class Recorder(nn.Module):
    """Keeps every input it sees; returns constant logits."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 2)


def make_batch(model, images, class_masks, pair_image, pair_class, seeds=None, ids=()):
    pair_image = torch.as_tensor(pair_image, dtype=torch.long)
    k = getattr(model, "num_classes", 4)
    labels = torch.zeros(images.shape[0], k)
    labels[pair_image, torch.as_tensor(pair_class)] = 1
    return EvalBatch(
        images=images, labels=labels, pair_image=pair_image,
        pair_class=torch.as_tensor(pair_class, dtype=torch.long), class_masks=class_masks,
        merged=EvalBatch.merge(class_masks, pair_image, images.shape[0]), model=model,
        seeds=seeds, image_ids=ids)


def distinct_maps(n, h, w, seed=0):
    """Maps without ties (a permutation of k / HW): percentile thresholds and ranks agree."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(h * w, generator=g).float().view(h, w) / (h * w)
                        for _ in range(n)])


# ------------------------------------------------------------------ against pytorch-grad-cam
def test_imputation_matches_pytorch_grad_cam():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    imputer = road.NoisyLinearImputer(noise=0.0)
    torch.manual_seed(1)
    img = torch.randn(2, 3, 16, 16)
    maps = torch.rand(2, 16, 16)
    for order in R.ORDERS:
        removed = R.removal_masks(maps, (0.1, 0.9), order)  # (2, 2, 16, 16)
        ours = R.linear_imputation(img.repeat_interleave(2, 0), removed.flatten(0, 1), tol=1e-6)
        theirs = torch.stack([imputer(img[i], (~removed[i, s]).float())
                              for i in range(2) for s in range(2)])
        assert (ours - theirs).abs().max() < IMPUTE_ATOL
        kept = ~removed.flatten(0, 1).unsqueeze(1).expand_as(ours)
        assert torch.equal(ours[kept], img.repeat_interleave(2, 0)[kept])  # kept pixels untouched


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_curves_and_auc_match_pytorch_grad_cam(order):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    pc = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = tiny_cnn(4)
    torch.manual_seed(2)
    b, h = 2, 16
    img = torch.randn(b, 3, h, h)
    maps = distinct_maps(b, h, h)
    classes = [0, 3]
    percentiles = [80, 50, 10]  # theirs: remove the pixels at/above the p-th percentile
    remover = pc.RemoveMostRelevantFirst if order == "morf" else pc.RemoveLeastRelevantFirst

    def metric(p):
        return pc.PerturbationConfidenceMetric(remover(p, road.NoisyLinearImputer(noise=0.0)))

    targets = [targets_mod.ClassifierOutputSoftmaxTarget(c) for c in classes]
    with torch.no_grad():
        clean = torch.softmax(model(img), 1)[torch.arange(b), classes]
    # theirs returns the score change from the clean image: add the clean score back
    theirs = torch.stack([torch.from_numpy(metric(p)(img, maps.numpy(), targets, model)) + clean
                          for p in percentiles], 1)
    # the number of pixels their threshold removes, as our fractions (exact after rounding)
    removed = [int((maps[0].numpy() >= np.percentile(maps[0].numpy(), p)).sum())
               for p in percentiles]
    fractions = [n / (h * h) for n in removed]
    assert R.removal_counts(h * h, fractions).tolist() == removed
    ours = R.road_curves(model, img, maps, torch.tensor(classes), fractions, order, noise=0.0,
                         score="softmax", tol=1e-6)
    assert (ours - theirs).abs().max() < CURVE_ATOL

    avg = pc.AveragerAcrossThresholds(metric, percentiles)(img, maps.numpy(), targets, model)
    cls = R.ROADMoRF if order == "morf" else R.ROADLeRF
    m = cls(fractions=fractions, noise=0.0, score="softmax", tol=1e-6)
    vals = m.update(make_batch(model, img, maps, range(b), classes))
    assert np.allclose(vals, torch.from_numpy(avg) + clean, atol=CURVE_ATOL)


# ------------------------------------------------------------------------------- analytic
def test_imputed_pixels_solve_the_weighted_neighbour_mean():
    torch.manual_seed(3)
    img = torch.randn(1, 2, 7, 9)
    removed = torch.rand(1, 7, 9) < 0.6
    out = R.linear_imputation(img, removed, tol=1e-7)[0]
    worst = 0.0
    for y, x in removed[0].nonzero().tolist():  # test-side reference: one pixel at a time
        num, den = torch.zeros(2), 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0) or not (0 <= y + dy < 7 and 0 <= x + dx < 9):
                    continue
                wgt = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                num += wgt * out[:, y + dy, x + dx]
                den += wgt
        worst = max(worst, float((out[:, y, x] - num / den).abs().max()))
    assert worst < 1e-4


def test_sub_batches_keep_item_order_and_match_single_solves():
    # more items than one solver sub-batch, removed counts in shuffled order: the sorting and
    # sub-batching must put every solution back in its own row
    n = R._SUB_BATCH + 9
    torch.manual_seed(5)
    img = torch.randn(n, 3, 12, 10)
    frac = torch.rand(n) * 0.9 + 0.05
    removed = torch.rand(n, 12, 10) < frac.view(-1, 1, 1)
    removed[0] = True  # an all-removed item (filled with 0) among them
    out = R.linear_imputation(img, removed, tol=1e-7)
    for i in range(n):
        solo = R.linear_imputation(img[i:i + 1], removed[i:i + 1], tol=1e-7)[0]
        assert (out[i] - solo).abs().max() < 1e-5, i
    assert torch.equal(out[0], torch.zeros(3, 12, 10))
    assert torch.equal(out[~removed.unsqueeze(1).expand_as(out)],
                       img[~removed.unsqueeze(1).expand_as(img)])


def test_neighbour_sum_is_the_weighted_3x3_stencil():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    k = torch.tensor([[1.0, 2, 1], [2, 0, 2], [1, 2, 1]], dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x.view(6, 1, 5, 7), k.view(1, 1, 3, 3), padding=1)
    assert torch.allclose(R.neighbour_sum(x), ref.view(2, 3, 5, 7))


def test_linear_ramp_is_reproduced():
    h, w = 12, 10
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ramp = torch.stack([0.3 * yy - 0.2 * xx + 1, -0.1 * yy, 0.05 * xx - 2]).unsqueeze(0)
    removed = torch.zeros(1, h, w, dtype=torch.bool)
    removed[0, 1:-1, 1:-1] = torch.rand(h - 2, w - 2) < 0.8  # interior only: no border effect
    removed[0, 2:9, 2:8] = True  # and one large hole
    out = R.linear_imputation(ramp, removed, tol=1e-7)
    assert (out - ramp).abs().max() < 1e-4


def test_region_model_morf_drops_at_once_lerf_keeps():
    h = 16
    img = torch.zeros(1, 3, h, h)
    img[0, 0, :5, :5] = 5.0  # the model reads this region only (25 px < 10 % of 256)
    ideal = torch.zeros(1, h, h)
    ideal[0, :5, :5] = 1.0
    model = RegionMean()
    t = torch.tensor([0])
    morf = R.road_curves(model, img, ideal, t, order="morf", noise=0.0, score="logit", tol=1e-7)
    lerf = R.road_curves(model, img, ideal, t, order="lerf", noise=0.0, score="logit", tol=1e-7)
    assert morf.abs().max() < 1e-5  # the region is filled from its zero surroundings at 10 %
    assert torch.allclose(lerf, torch.full_like(lerf, 5.0))  # never touched up to 90 %
    anti = R.road_curves(model, img, 1 - ideal, t, order="morf", noise=0.0, score="logit")
    assert torch.allclose(anti, torch.full_like(anti, 5.0))
    # the metric's value is the curve's mean; the ideal map is the best MoRF and LeRF
    assert float(R.road_auc(morf)) < float(R.road_auc(anti))


def test_constant_map_removes_rows_in_raster_order():
    h, w = 4, 5
    const = torch.full((1, h, w), 0.5)
    morf = R.removal_masks(const, (0.25, 0.5), "morf")[0].flatten(1)
    lerf = R.removal_masks(const, (0.25, 0.5), "lerf")[0].flatten(1)
    for s, n in enumerate((5, 10)):
        assert morf[s].nonzero().squeeze(1).tolist() == list(range(n))
        assert lerf[s].nonzero().squeeze(1).tolist() == list(range(h * w - n, h * w))
    model = tiny_cnn(4)
    m = R.ROADMoRF(fractions=(0.3, 0.6))
    vals = m.update(make_batch(model, torch.randn(1, 3, 16, 16), torch.zeros(1, 16, 16), [0], [2]))
    assert math.isfinite(vals[0])  # a constant (all-zero) map is scored, as by deletion


def test_removal_counts_and_all_removed():
    assert R.removal_counts(10, (0.1, 0.25, 0.5, 0.95)).tolist() == [1, 3, 5, 10]
    img = torch.randn(2, 3, 6, 6)
    removed = torch.zeros(2, 6, 6, dtype=torch.bool)
    removed[0] = True  # nothing to interpolate from: the mean colour (0)
    out = R.linear_imputation(img, removed)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(out[1], img[1])


def test_max_iter_warns_when_not_converged():
    torch.manual_seed(4)
    removed = torch.rand(1, 32, 32) < 0.9
    with pytest.warns(RuntimeWarning, match="max_iter=2"):
        R.linear_imputation(torch.randn(1, 3, 32, 32), removed, tol=1e-8, max_iter=2)


# ----------------------------------------------------------------------------- noise, seeds
def test_noise_only_on_removed_pixels_with_the_given_scale():
    rec = Recorder()
    torch.manual_seed(5)
    img = torch.randn(1, 3, 32, 32)
    maps = torch.rand(1, 32, 32)
    R.road_curves(rec, img, maps, torch.tensor([0]), (0.5,), noise=0.05, seeds=torch.tensor([7]),
                  tol=1e-7)
    removed = R.removal_masks(maps, (0.5,))[0]
    clean = R.linear_imputation(img, removed, tol=1e-7)
    diff = (rec.seen[0] - clean)[0]
    assert diff[:, ~removed[0]].abs().max() == 0
    assert abs(float(diff[:, removed[0]].std()) - 0.05) < 0.005
    rec2 = Recorder()
    R.road_curves(rec2, img, maps, torch.tensor([0]), (0.5,), noise=0.05, seeds=torch.tensor([8]),
                  tol=1e-7)
    assert not torch.allclose(rec.seen[0], rec2.seen[0])  # the seed matters


def test_batch_composition_invariance():
    model = tiny_cnn(4)
    torch.manual_seed(6)
    imgs = torch.randn(3, 3, 16, 16)
    maps = torch.rand(4, 16, 16)
    pi, pc = [0, 0, 1, 2], [1, 2, 0, 3]
    seeds = torch.tensor([11, 22, 33])
    for cls in (R.ROADMoRF, R.ROADLeRF):
        whole = cls().update(make_batch(model, imgs, maps, pi, pc, seeds))
        small_chunks = cls(batch_size=5).update(make_batch(model, imgs, maps, pi, pc, seeds))
        alone = []
        for b in range(3):
            sel = [k for k in range(4) if pi[k] == b]
            alone += cls().update(make_batch(model, imgs[b:b + 1], maps[sel], [0] * len(sel),
                                             [pc[k] for k in sel], seeds[b:b + 1]))
        assert np.allclose(whole, alone, atol=1e-5, rtol=0)
        assert np.allclose(whole, small_chunks, atol=1e-5, rtol=0)
    m = R.ROADMoRF()
    v1 = m.update(make_batch(model, imgs, maps, pi, pc, seeds, ids=["a", "b", "c"]))
    v2 = R.ROADMoRF().update(make_batch(model, imgs, maps, pi, pc, seeds + 1))
    assert not np.allclose(v1, v2, atol=1e-7, rtol=0)  # the noise does enter the values
    assert sorted(m.road_curves["a"]) == [1, 2] and len(m.road_curves["a"][1]) == 9


def test_nan_map_gives_nan_image():
    model = tiny_cnn(4)
    maps = torch.rand(2, 16, 16)
    maps[1, 3, 3] = math.nan
    vals = R.ROADLeRF().update(make_batch(model, torch.randn(2, 3, 16, 16), maps, [0, 1], [0, 1]))
    assert math.isfinite(vals[0]) and math.isnan(vals[1])


# ------------------------------------------------------------------------ validation, catalog
@pytest.mark.parametrize("kwargs, quoted", [
    ({"fractions": [0.5, 0.2]}, "[0.5, 0.2]"),
    ({"fractions": [0.0, 0.5]}, "[0.0, 0.5]"),
    ({"fractions": []}, "[]"),
    ({"fractions": 0.5}, "0.5"),
    ({"noise": -0.1}, "-0.1"),
    ({"score": "prob"}, "'prob'"),
    ({"tol": 0}, "0"),
])
def test_bad_options_raise_one_line(kwargs, quoted):
    with pytest.raises(ValueError) as e:
        R.ROADMoRF(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(quoted)


def test_bad_inputs_raise_one_line():
    model = tiny_cnn(4)
    img, maps, t = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    cases = [
        (lambda: R.road_curves(model, img, maps, t, order="up"), "'up'"),
        (lambda: R.road_curves(model, img, maps[:, :4], t), "(2, 4, 8)"),
        (lambda: R.road_curves(model, img, maps, t, seeds=torch.zeros(3, dtype=torch.long)),
         "(3,) torch.int64"),
        (lambda: R.road_curves(model, img, maps, t[:1]), "(1,)"),
        (lambda: R.linear_imputation(img, maps > 0.5, tol=-1), "-1"),
        (lambda: R.linear_imputation(img, maps[:1] > 0.5), "(1, 8, 8)"),
        (lambda: R.removal_masks(maps[0]), "(8, 8)"),
    ]
    for fn, quoted in cases:
        with pytest.raises(ValueError) as e:
            fn()
        assert "\n" not in str(e.value) and quoted in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="needs batch.model"):
        R.ROADMoRF().update(make_batch(None, img, maps, [0, 1], [0, 1]))


def test_registered_opt_in():
    for name, cls, better in (("road_morf", R.ROADMoRF, False), ("road_lerf", R.ROADLeRF, True)):
        assert METRICS.get(name) is cls
        assert METRICS.meta(name).get("default") is False
        assert cls.higher_is_better is better and cls.name == name
        assert cls.regression()["kind"] == "quality"
