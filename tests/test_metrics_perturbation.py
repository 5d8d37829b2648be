"""Tests of attrbench.metrics.perturbation: batched deletion/insertion curves vs a slow
one-pair-one-step python reference, closed-form curves on a sum-of-pixels oracle model, ranking
orderings, chunking and batch accumulation, NaN rules, and the saliency metric vs a hand
computation."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from attrbench.catalog import METRICS
from attrbench.interfaces import EvalBatch
from attrbench.metrics import perturbation as PM
from attrbench.models.classifiers import SmallCNN


class SumOfChannel0(nn.Module):
    """Oracle: logits = (sum of channel 0, -sum of channel 0)."""

    num_classes = 2

    def forward(self, x):
        s = x[:, 0].flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def tiny_cnn(k=4, seed=0):
    torch.manual_seed(seed)
    m = SmallCNN(num_classes=k, widths=(4, 8, 8, 8)).eval()
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def make_batch(model, images, labels, class_masks, pair_image, pair_class, image_ids=()):
    pair_image = torch.as_tensor(pair_image, dtype=torch.long)
    return EvalBatch(
        images=images, labels=labels, pair_image=pair_image,
        pair_class=torch.as_tensor(pair_class, dtype=torch.long), class_masks=class_masks,
        merged=EvalBatch.merge(class_masks, pair_image, images.shape[0]), model=model,
        image_ids=image_ids)


# ------------------------------------------------------------------------- slow reference
def slow_curve(model, image, mask, target, steps, mode, base, score):
    """One pair, one step, one pixel at a time."""
    h, w = mask.shape
    hw = h * w
    vals = mask.flatten().tolist()
    order = sorted(range(hw), key=lambda i: (-vals[i], i))  # decreasing, ties: raster order
    curve = []
    for j in range(steps + 1):
        n = math.floor(j * hw / steps + 0.5)
        x = image.clone() if mode == "deletion" else base.clone()
        src = base if mode == "deletion" else image
        for i in order[:n]:
            y, xx = divmod(i, w)
            x[:, y, xx] = src[:, y, xx]
        with torch.no_grad():
            logits = model(x[None])[0]
        if score == "sigmoid":
            s = torch.sigmoid(logits)[target]
        elif score == "softmax":
            s = torch.softmax(logits, 0)[target]
        else:
            s = logits[target]
        curve.append(float(s))
    return torch.tensor(curve)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("baseline,score", [("zero", "sigmoid"), ("blur", "softmax")])
def test_curves_match_slow_reference(mode, baseline, score):
    model = tiny_cnn()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 12, 10, generator=g)
    masks = (torch.rand(3, 12, 10, generator=g) * 4).round() / 4  # many ties
    pair_image = torch.tensor([0, 1, 1])
    targets = torch.tensor([2, 0, 3])
    steps = 7
    fast = PM.deletion_insertion_curves(model, images, masks, targets, steps, mode, baseline,
                                        sigma=1.3, score=score, batch_size=5,
                                        pair_image=pair_image)
    assert fast.shape == (3, steps + 1)
    for p in range(3):
        img = images[pair_image[p]]
        if baseline == "zero":
            base = torch.zeros_like(img)
        else:  # independent blur: torchvision, kernel radius ceil(3 sigma), reflect padding
            base = TF.gaussian_blur(img[None], kernel_size=[2 * 4 + 1] * 2, sigma=[1.3, 1.3])[0]
        ref = slow_curve(model, img, masks[p], int(targets[p]), steps, mode, base, score)
        torch.testing.assert_close(fast[p], ref, rtol=1e-5, atol=1e-6)


def test_closed_form_sum_model():
    """logit = sum of channel 0: deletion curve = total - sum of the n_j top-ranked pixels."""
    g = torch.Generator().manual_seed(0)
    h, w, steps = 5, 7, 6
    img = torch.rand(1, 3, h, w, generator=g)
    sal = torch.rand(1, h, w, generator=g)
    model = SumOfChannel0()
    dele = PM.deletion_insertion_curves(model, img, sal, torch.tensor([0]), steps, "deletion",
                                        "zero", score="logit")
    ins = PM.deletion_insertion_curves(model, img, sal, torch.tensor([0]), steps, "insertion",
                                       "zero", score="logit")
    x0 = img[0, 0].flatten()
    srt = x0[torch.argsort(sal.flatten(), descending=True)]
    counts = [round(j * h * w / steps) for j in range(steps + 1)]  # no .5 cases for 35/6
    expected_del = torch.stack([x0.sum() - srt[:n].sum() for n in counts])
    expected_ins = torch.stack([srt[:n].sum() for n in counts])
    torch.testing.assert_close(dele[0], expected_del)
    torch.testing.assert_close(ins[0], expected_ins)
    # AUC by the trapezoid rule over the exact perturbed fractions
    xs = torch.tensor(counts, dtype=torch.float64) / (h * w)
    auc = sum((xs[j + 1] - xs[j]) * (expected_del[j + 1] + expected_del[j]) / 2 for j in range(steps))
    torch.testing.assert_close(PM.curve_auc(dele, steps, num_pixels=h * w)[0].double(),
                               auc.double(), rtol=1e-5, atol=1e-6)


def test_closed_form_uniform_image():
    # all-ones channel 0, HW = 16, steps 4: curve 16, 12, 8, 4, 0 -> AUC 8 (nominal x)
    img = torch.ones(1, 3, 4, 4)
    sal = torch.rand(1, 4, 4)
    c = PM.deletion_insertion_curves(SumOfChannel0(), img, sal, torch.tensor([0]), 4,
                                     score="logit")
    assert c[0].tolist() == [16.0, 12.0, 8.0, 4.0, 0.0]
    assert PM.curve_auc(c, 4).item() == pytest.approx(8.0)
    # target 1 = -sum: the curve is the negation
    c1 = PM.deletion_insertion_curves(SumOfChannel0(), img, sal, torch.tensor([1]), 4,
                                      score="logit")
    assert c1[0].tolist() == [-16.0, -12.0, -8.0, -4.0, 0.0]


def test_step_counts_and_ties():
    assert PM.step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # 2.5 -> 3, 7.5 -> 8 (half up)
    assert PM.step_counts(7, 7).tolist() == list(range(8))
    # ties broken by raster order: all equal -> rank = flat index
    r = PM.saliency_ranks(torch.zeros(1, 3, 3))
    assert r[0].tolist() == list(range(9))
    r = PM.saliency_ranks(torch.tensor([[[0.0, 1.0], [1.0, 0.5]]]))
    assert r[0].tolist() == [3, 0, 1, 2]


def test_ideal_vs_random_ranking():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 16, 16, generator=g)
    x0 = img[:, 0]
    ideal, rand, worst = x0, torch.rand(1, 16, 16, generator=g), -x0
    model = SumOfChannel0()
    aucs = {}
    for name, m in {"ideal": ideal, "random": rand, "worst": worst}.items():
        for mode in ("deletion", "insertion"):
            c = PM.deletion_insertion_curves(model, img, m, torch.tensor([0]), 16, mode, "zero",
                                             score="logit")
            aucs[name, mode] = PM.curve_auc(c, 16).item()
    assert aucs["ideal", "deletion"] < aucs["random", "deletion"] < aucs["worst", "deletion"]
    assert aucs["ideal", "insertion"] > aucs["random", "insertion"] > aucs["worst", "insertion"]


def test_chunk_size_does_not_matter():
    model = tiny_cnn()
    g = torch.Generator().manual_seed(4)
    imgs = torch.randn(3, 3, 16, 16, generator=g)
    masks = torch.rand(3, 16, 16, generator=g)
    t = torch.tensor([0, 1, 2])
    a = PM.deletion_insertion_curves(model, imgs, masks, t, 8, batch_size=1)
    b = PM.deletion_insertion_curves(model, imgs, masks, t, 8, batch_size=256)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _random_problem(seed=5, b=4, k=4, size=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    pi = [0, 0, 1, 2, 3, 3, 3]
    pc = [0, 2, 1, 3, 0, 1, 2]
    labels = torch.zeros(b, k)
    labels[pi, pc] = 1
    cm = torch.rand(len(pi), size, size, generator=g)
    return images, labels, cm, pi, pc


@pytest.mark.parametrize("name", ["deletion_auc", "insertion_auc"])
def test_metric_accumulates_over_batches(name):
    model = tiny_cnn()
    images, labels, cm, pi, pc = _random_problem()
    ids = ["a", "b", "c", "d"]
    one = METRICS.get(name)(steps=8)
    v1 = one.update(make_batch(model, images, labels, cm, pi, pc, ids))
    two = METRICS.get(name)(steps=8)
    v2 = two.update(make_batch(model, images[:2], labels[:2], cm[:3], pi[:3], pc[:3], ids[:2]))
    v2 += two.update(make_batch(model, images[2:], labels[2:], cm[3:], [p - 2 for p in pi[3:]],
                                pc[3:], ids[2:]))
    torch.testing.assert_close(torch.tensor(v1), torch.tensor(v2))
    assert one.compute() == pytest.approx(two.compute())
    assert one.curves.keys() == two.curves.keys() == set(ids)
    assert sorted(one.curves["d"]) == [0, 1, 2]
    assert len(one.curves["a"][2]) == 9
    # per-image value = mean over the image's classes of the pair AUCs
    mode = "deletion" if name == "deletion_auc" else "insertion"
    base = PM.perturbation_baseline(images, one.baseline)
    curves = PM.deletion_insertion_curves(model, images, cm, torch.tensor(pc), 8, mode,
                                          one.baseline, pair_image=torch.tensor(pi))
    aucs = PM.curve_auc(curves, 8, num_pixels=256)
    assert v1[3] == pytest.approx(aucs[4:].mean().item(), rel=1e-5)
    assert v1[0] == pytest.approx(aucs[:2].mean().item(), rel=1e-5)
    assert base.shape == images.shape
    one.reset()
    assert one.curves == {} and one.compute() != one.compute()  # NaN after reset


def test_only_non_finite_maps_give_nan_and_constant_maps_go_in_raster_order():
    model = tiny_cnn()
    images, labels, cm, pi, pc = _random_problem()
    cm = cm.clone()
    cm[0] = 0.0  # empty map: scored, raster order
    cm[2, 0, 0] = math.nan  # NaN -> image 1 NaN
    cm[3] = 0.5  # constant: scored, raster order
    for name in ("deletion_auc", "insertion_auc"):
        m = METRICS.get(name)(steps=4)
        vals = m.update(make_batch(model, images, labels, cm, pi, pc))
        assert [math.isnan(v) for v in vals] == [False, True, False, False]
        # a constant map gives the curve of a map that decreases in raster order
        h, w = cm.shape[-2:]
        ramp = (1 - torch.arange(h * w, dtype=torch.float32) / (h * w)).view(h, w)
        for p in (0, 3):
            a = PM.deletion_insertion_curves(model, images[pi[p:p + 1]], cm[p:p + 1],
                                             pc[p:p + 1], 4, m.mode, m.baseline)
            b = PM.deletion_insertion_curves(model, images[pi[p:p + 1]], ramp[None],
                                             pc[p:p + 1], 4, m.mode, m.baseline)
            torch.testing.assert_close(a, b)


def test_bad_input():
    model = SumOfChannel0()
    with pytest.raises(ValueError, match="mode"):
        PM.deletion_insertion_curves(model, torch.zeros(1, 3, 4, 4), torch.rand(1, 4, 4),
                                     torch.tensor([0]), 4, mode="delete")
    with pytest.raises(ValueError, match="targets"):
        PM.deletion_insertion_curves(model, torch.zeros(1, 3, 4, 4), torch.rand(1, 4, 4),
                                     torch.tensor([0, 1]), 4)
    with pytest.raises(TypeError, match="steps"):
        METRICS.get("deletion_auc")(steps=3.0)
    with pytest.raises(ValueError, match="baseline"):
        METRICS.get("insertion_auc")(baseline="black")


# ------------------------------------------------------------------------------ saliency
@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_saliency_vs_hand_computation(score):
    model = tiny_cnn()
    images, labels, cm, pi, pc = _random_problem(seed=7)
    batch = make_batch(model, images, labels, cm, pi, pc)
    vals = METRICS.get("saliency")(score=score).update(batch)
    for b in range(images.shape[0]):
        m = torch.zeros(16, 16)
        for p in range(len(pi)):  # pixel-wise max of the image's class masks
            if pi[p] == b:
                m = torch.maximum(m, cm[p])
        area = float(m.mean())
        with torch.no_grad():
            logits = model((m * images[b])[None])[0]
        probs = torch.softmax(logits, 0) if score == "softmax" else torch.sigmoid(logits)
        p_gt = sum(float(probs[c]) for c in range(4) if labels[b, c] > 0)
        expected = math.log(max(area, 0.05)) - math.log(p_gt)
        assert vals[b] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_saliency_area_floor_and_empty_mask():
    model = SumOfChannel0()
    images = torch.ones(4, 3, 4, 4)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    merged = torch.zeros(4, 4, 4)
    merged[0, 0, 0] = 1.0  # area 1/16 > 0.05
    merged[1, 0, 0] = 0.5  # area 1/32 < 0.05 -> floor; GT sums to 1 under softmax -> log 1 = 0
    merged[2] = 0.0  # empty: scored, as the paper's constant-0 row
    merged[3, 1, 1] = math.nan  # non-finite: undefined
    v = PM.saliency_metric(model, images, merged, labels)
    assert v[1].item() == pytest.approx(math.log(0.05), rel=1e-5)
    p0 = torch.softmax(torch.tensor([1.0, -1.0]), 0)[0].item()
    assert v[0].item() == pytest.approx(math.log(1 / 16) - math.log(p0), rel=1e-5)
    assert v[2].item() == pytest.approx(math.log(0.05) - math.log(0.5), rel=1e-5)
    assert math.isnan(v[3].item())


def test_saliency_sums_over_objects_on_voc_and_over_classes_on_coco():
    from attrbench.data.sample import Original

    model = tiny_cnn()
    images, labels, cm, pi, pc = _random_problem(seed=3)
    b = images.shape[0]
    # image 0: three objects of its first class and one of each other class; difficult counts
    boxes = [[(c, 0.0, 0.0, 1.0, 1.0, False) for c in range(4) if labels[i, c] > 0]
             for i in range(b)]
    c0 = int(torch.nonzero(labels[0]).flatten()[0])
    boxes[0] += [(c0, 2.0, 2.0, 3.0, 3.0, True), (c0, 4.0, 4.0, 5.0, 5.0, False)]
    batch = make_batch(model, images, labels, cm, pi, pc)
    batch.boxes = boxes
    merged = batch.merged
    with torch.no_grad():
        probs = torch.softmax(model(merged[:, None] * images), 1).double()
    area = merged.flatten(1).mean(1).double().clamp_min(0.05)
    counts = labels.double().clone()
    counts[0, c0] = 3
    for kind, weights in (("voc", counts), ("coco", labels.double())):
        batch.originals = [Original(16, 16, [], None, kind) for _ in range(b)]
        got = METRICS.get("saliency")().update(batch)
        want = torch.log(area) - torch.log((probs * weights).sum(1))
        assert got == pytest.approx(want.tolist(), rel=1e-5)
    # explicit choices, whatever the kind
    assert PM.object_counts(batch, "objects")[0, c0] == 3
    assert torch.equal(PM.object_counts(batch, "classes"), (labels > 0.5).double())
    batch.originals = ()
    assert torch.equal(PM.object_counts(batch), (labels > 0.5).double())  # kind unknown


def test_metric_attributes():
    for name, hib in [("deletion_auc", False), ("insertion_auc", True), ("saliency", False)]:
        cls = METRICS.get(name)
        assert cls.name == name and cls.higher_is_better is hib and cls.version == 2
        assert cls.definition and cls.kind == "quality"
