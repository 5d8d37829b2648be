"""Tests of attrbench.metrics.specificity: a hand-built region classifier and an "ideal"-like
fake method where every probability is known in closed form, the batched probabilities vs a
slow loop, the confusion matrix, the attribute/attribute_all paths and the shared cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attrbench.catalog import METRICS
from attrbench.interfaces import AttributionMethod, EvalBatch
from attrbench.metrics import specificity as SP
from attrbench.models.classifiers import SmallCNN

H = W = 8
E10 = math.exp(10.0)


def regions() -> torch.Tensor:
    r = torch.zeros(3, H, W)
    r[0, :4, :4] = 1
    r[1, :4, 4:] = 1
    r[2, 4:, :] = 1
    return r


class RegionClassifier(nn.Module):
    """logit_k = 10 * mean of channel 0 over region k."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("r", regions())

    def forward(self, x):
        return 10 * (x[:, 0:1] * self.r).flatten(2).sum(2) / self.r.flatten(1).sum(1)


class RegionMask(AttributionMethod):
    """The mask for class c = value * indicator of region c (an 'ideal' method)."""

    name = "region_mask"
    black_box = True

    def __init__(self, model, value: float = 1.0) -> None:
        super().__init__(model, value=value)
        self.value = value
        self.calls = 0
        self.rows = 0

    def _attribute(self, images, targets, *, gt_masks, seeds):
        self.calls += 1
        self.rows += images.shape[0]
        return self.value * regions().to(images.device)[targets]


class RegionMaskAll(RegionMask):
    all_classes_at_once = True

    def _attribute(self, images, targets, *, gt_masks, seeds):
        raise AssertionError("attribute_all path expected")

    def _attribute_all(self, images, *, seeds):
        self.calls += 1
        return self.value * regions().to(images.device).expand(images.shape[0], 3, H, W)


def region_batch(method_cls=RegionMask, value=1.0, present=([0, 1], [2], [0, 2], [])):
    model = RegionClassifier()
    r = regions()
    b = len(present)
    images = torch.zeros(b, 3, H, W)
    labels = torch.zeros(b, 3)
    pi, pc = [], []
    for i, cls in enumerate(present):
        for c in cls:
            images[i, 0] += r[c]
            labels[i, c] = 1
            pi.append(i)
            pc.append(c)
    images[:, 1:] = torch.rand(b, 2, H, W)  # irrelevant channels
    cm = r[pc] if pc else torch.zeros(0, H, W)
    pi_t = torch.tensor(pi, dtype=torch.long)
    return EvalBatch(images=images, labels=labels, pair_image=pi_t,
                     pair_class=torch.tensor(pc, dtype=torch.long), class_masks=cm,
                     merged=EvalBatch.merge(cm, pi_t, b), model=model,
                     method=method_cls(model, value=value), method_name="region_mask",
                     image_ids=[f"im{i}" for i in range(b)])


def expected_prob(t, c, present, value=1.0):
    """p(t | mask c), softmax over 3 classes, averaged over thresholds 0.1..0.9."""
    if c in present:
        keep = E10 / (E10 + 2) if c == t else 1 / (E10 + 2)
    else:
        keep = 1 / 3
    n_keep = sum(1 for tau in SP.THRESHOLDS if value > tau)
    return (n_keep * keep + (9 - n_keep) / 3) / 9


@pytest.mark.parametrize("method_cls", [RegionMask, RegionMaskAll])
@pytest.mark.parametrize("value", [1.0, 0.55])
def test_known_answers(method_cls, value):
    present = ([0, 1], [2], [0, 2], [])
    batch = region_batch(method_cls, value, present)
    diag = METRICS.get("class_specificity_diag")()
    off = METRICS.get("class_specificity_offdiag")()
    dv, ov = diag.update(batch), off.update(batch)
    for i, cls in enumerate(present):
        if not cls:
            assert math.isnan(dv[i]) and math.isnan(ov[i])
            continue
        assert set(dv[i]) == set(cls) == set(ov[i])
        for t in cls:
            assert dv[i][t] == pytest.approx(expected_prob(t, t, cls, value), rel=1e-5)
            exp_off = sum(expected_prob(t, c, cls, value) for c in range(3) if c != t) / 2
            assert ov[i][t] == pytest.approx(exp_off, rel=1e-5)
    # full rows and the confusion matrix
    assert len(diag.rows) == 5 and diag.rows[0]["image_id"] == "im0"
    mat = diag.matrix()
    assert mat.shape == (3, 4)
    # row of class 0: images 0 ({0,1}) and 2 ({0,2}); "none" = e^10 / (2 e^10 + 1)
    assert mat[0, 0].item() == pytest.approx(E10 / (2 * E10 + 1), rel=1e-5)
    exp = (expected_prob(0, 1, [0, 1], value) + expected_prob(0, 1, [0, 2], value)) / 2
    assert mat[0, 2].item() == pytest.approx(exp, rel=1e-5)
    torch.testing.assert_close(mat, SP.confusion_matrix(off.rows, [0, 1, 2]))


def test_cache_shared_and_classes_option():
    batch = region_batch()
    diag = METRICS.get("class_specificity_diag")(classes=[0, 2])
    off = METRICS.get("class_specificity_offdiag")(classes=[0, 2])
    diag.update(batch)
    off.update(batch)
    # one attribute call with (images having a class of C) x |C| rows, shared by both metrics
    assert batch.method.calls == 1 and batch.method.rows == 3 * 2
    # image 1 has only class 2; off-diag of t=2 is p(2 | mask 0) with class 0 absent -> 1/3.
    # Summary: the unweighted mean over classes of each class's mean over its images, i.e. the
    # mean of the matrix's off-diagonal cells (not the mean over images)
    class0 = (expected_prob(0, 2, [0, 1]) + expected_prob(0, 2, [0, 2])) / 2
    class2 = ((1 / 3) + expected_prob(2, 0, [0, 2])) / 2
    assert off.compute() == pytest.approx((class0 + class2) / 2, rel=1e-5)
    assert off.compute() == pytest.approx(SP.specificity_summary(off.matrix())["offdiag"],
                                          rel=1e-6)
    assert diag.compute() == pytest.approx(SP.specificity_summary(diag.matrix())["diag"],
                                           rel=1e-6)
    assert diag.matrix().shape == (2, 3)
    m = METRICS.get("class_specificity_diag")(max_classes=1)
    v = m.update(region_batch())
    assert set(v[0]) == {0} and math.isnan(v[1])


def test_batched_probs_vs_slow_loop():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, widths=(4, 8, 8, 8)).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 16, 16, generator=g)
    masks = torch.rand(2, 3, 16, 16, generator=g)
    taus = (0.2, 0.5, 0.8)
    for score in ("softmax", "sigmoid"):
        probs, none = SP.specificity_probs(model, images, masks, thresholds=taus, score=score,
                                           batch_size=4)
        f = (lambda z: torch.softmax(z, 0)) if score == "softmax" else torch.sigmoid
        for b in range(2):
            with torch.no_grad():
                torch.testing.assert_close(none[b], f(model(images[b:b + 1])[0]))
            for c in range(3):
                acc = torch.zeros(4)
                for tau in taus:
                    binary = torch.zeros(16, 16)
                    for y in range(16):
                        for x in range(16):
                            binary[y, x] = 1.0 if masks[b, c, y, x] > tau else 0.0
                    with torch.no_grad():
                        acc += f(model((binary * images[b])[None])[0])
                torch.testing.assert_close(probs[b, c], acc / 3, rtol=1e-5, atol=1e-6)


def test_confusion_matrix_function():
    rows = [{"target": 0, "none": 0.9, "masks": {0: 0.8, 1: 0.1}},
            {"target": 0, "none": 0.7, "masks": {0: math.nan, 1: 0.3}},
            {"target": 5, "none": 0.5, "masks": {0: 0.5}}]
    m = SP.confusion_matrix(rows, [0, 1])
    assert m[0].tolist() == pytest.approx([0.8, 0.8, 0.2])
    assert all(math.isnan(v) for v in m[1].tolist())


def test_bad_masks_and_options():
    batch = region_batch(value=1.5)  # outside [0, 1] -> NaN cells
    v = METRICS.get("class_specificity_diag")().update(batch)
    assert math.isnan(v[0][0])
    with pytest.raises(ValueError, match="classes"):
        METRICS.get("class_specificity_diag")(classes=[0, 0])
    with pytest.raises(TypeError, match="classes"):
        METRICS.get("class_specificity_diag")(classes="0,1")
    with pytest.raises(ValueError, match="score"):
        METRICS.get("class_specificity_offdiag")(score="logit")
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        METRICS.get("class_specificity_diag")(classes=[0, 7]).update(region_batch())


def test_the_runners_maps_of_every_class_are_used_and_give_the_same_rows():
    from attrbench.methods.rise import RISE

    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, widths=(4, 8, 8, 8)).eval()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    batch = region_batch(present=([0, 1], [2], [0, 2]))
    batch.model = model
    batch.method = RISE(model, num_masks=30, batch_size=10)
    expected = SP.class_specificity_rows(batch)  # asks RISE for the maps itself
    # what the runner hands over for a method with all_classes_at_once: its maps of every class
    batch.all_maps = batch.method.attribute_all(batch.images.clone())
    batch.memo = {}
    calls.clear()
    assert SP.class_specificity_rows(batch) == expected
    # only the classifier forwards of the metric: 1 unmasked + 3 images x 3 classes x 9 thresholds
    assert sum(calls) == 3 + 3 * 3 * 9