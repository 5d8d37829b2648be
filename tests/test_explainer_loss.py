"""The Explainer loss terms (Stalder et al., NeurIPS 2022) against slow references, and
hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attrbench.training.losses import (
    class_area_constraint,
    entropy_term,
    explainer_loss,
    masked_class_max,
    rt_saliency_loss,
    total_variation,
)


def _tv_slow(z, squared=False):
    b, h, w = z.shape
    total = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                jr = j + 1 if j + 1 < w else w - 2  # reflect padding
                ib = i + 1 if i + 1 < h else h - 2
                dx = float(z[n, i, j] - z[n, i, jr])
                dy = float(z[n, i, j] - z[n, ib, j])
                total += dx * dx + dy * dy if squared else abs(dx) + abs(dy)
    return total / (b * h * w)


@pytest.mark.parametrize("squared", [False, True])
def test_total_variation_matches_slow_reference(squared):
    z = torch.rand(2, 5, 7, dtype=torch.float64)
    assert float(total_variation(z, squared)) == pytest.approx(_tv_slow(z, squared), rel=1e-9)


def test_total_variation_of_constant_is_zero():
    assert float(total_variation(torch.full((1, 6, 6), 0.3))) == 0.0


def test_masked_class_max_matches_loop():
    seg = torch.randn(3, 4, 5, 5)
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float)
    tgt = masked_class_max(seg, labels, True)
    non = masked_class_max(seg, labels, False)
    for b in range(3):
        pres = [k for k in range(4) if labels[b, k] > 0.5]
        absent = [k for k in range(4) if labels[b, k] <= 0.5]
        torch.testing.assert_close(tgt[b], seg[b, pres].amax(0))
        if absent:
            torch.testing.assert_close(non[b], seg[b, absent].amax(0))
        else:
            assert torch.isinf(non[b]).all() and torch.sigmoid(non[b]).eq(0).all()


def test_area_constraint_matches_slow_reference():
    masks = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.float64)
    amin, amax = 0.1, 0.4
    n = 36
    total = 0.0
    for b in range(2):
        for k in range(3):
            if labels[b, k] < 0.5:
                continue
            s = sorted(masks[b, k].flatten().tolist(), reverse=True)
            for i, v in enumerate(s):
                smin = 1.0 if i < math.floor(amin * n) else 0.0
                smax = 1.0 if i < math.floor(amax * n) else 0.0
                total += (max(smin - v, 0) + max(v - smax, 0)) / n
    assert float(class_area_constraint(masks, labels, amin, amax)) == pytest.approx(total / 2)


def test_area_constraint_zero_for_mask_of_allowed_area():
    m = torch.zeros(1, 1, 10, 10)
    m[0, 0, :2, :] = 1.0  # 20 % of the image, inside [5 %, 30 %]
    assert float(class_area_constraint(m, torch.ones(1, 1), 0.05, 0.30)) == 0.0


def test_entropy_term_matches_loop_and_is_minimal_for_uniform():
    logits = torch.randn(3, 5, dtype=torch.float64)
    p = logits.softmax(1)
    ref = sum(float(p[b, k] * math.log(p[b, k])) for b in range(3) for k in range(5)) / 15
    assert float(entropy_term(logits)) == pytest.approx(ref)
    assert float(entropy_term(torch.zeros(1, 5))) == pytest.approx(-math.log(5) / 5)
    assert float(entropy_term(torch.zeros(1, 5))) < float(entropy_term(logits))


class RegionClassifier(nn.Module):
    """Class k's logit reads only the pixels of a fixed square region R_k (channel 0)."""

    def __init__(self, size=16):
        super().__init__()
        self.num_classes = 2
        w = torch.zeros(2, size, size)
        a, b = _regions(size)
        w[0, a, a] = 1.0
        w[1, b, b] = 1.0
        self.register_buffer("w", w / w[0].sum())

    def forward(self, x):
        return 8.0 * torch.einsum("bhw,khw->bk", x[:, 0], self.w) - 4.0


def _regions(size):
    u = size // 16
    return slice(2 * u, 7 * u), slice(9 * u, 14 * u)


def _case(size=16):
    x = torch.zeros(2, 3, size, size)
    x[:, 0] = 1.0  # evidence everywhere; the classifier looks only at its region
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    clf = RegionClassifier(size)
    return x, labels, clf


def _seg(labels, kind, size=16):
    seg = torch.full((labels.shape[0], 2, size, size), -12.0)
    if kind == "full":
        seg[:] = 12.0
    elif kind == "perfect":
        for b in range(labels.shape[0]):
            ra, rb = _regions(size)
            if labels[b, 0] > 0.5:
                seg[b, 0, ra, ra] = 12.0
            if labels[b, 1] > 0.5:
                seg[b, 1, rb, rb] = 12.0
    return seg


def test_perfect_mask_beats_empty_and_full_masks():
    x, labels, clf = _case()
    w = {"entropy": 1.0, "tv": 1.0, "area_constraint": 1.0, "target_area": 0.1,
         "nontarget_area": 0.3, "class_min_area": 0.05, "class_max_area": 0.30}
    losses = {k: float(explainer_loss(_seg(labels, k), x, labels, clf, **w)["loss"])
              for k in ("perfect", "empty", "full")}
    assert losses["perfect"] < losses["empty"]
    assert losses["perfect"] < losses["full"]


def test_loss_gradients_reach_the_masks_not_the_classifier():
    x, labels, clf = _case()
    seg = _seg(labels, "empty").requires_grad_(True)
    out = explainer_loss(seg * 0.1, x, labels, clf, entropy=1, tv=1, area_constraint=1,
                         target_area=0.1, nontarget_area=0.3, class_min_area=0.05,
                         class_max_area=0.3)
    out["loss"].backward()
    assert seg.grad is not None and seg.grad.abs().sum() > 0


def test_rt_saliency_loss_prefers_the_perfect_mask():
    # at 16 px the squared-TV term (weight 10) outweighs the area saving: use 64 px
    x, labels, clf = _case(64)
    alt = torch.zeros_like(x)
    loss = {k: float(rt_saliency_loss(_seg(labels, k, 64), x, labels, clf, alt=alt)["loss"])
            for k in ("perfect", "empty", "full")}
    perfect, empty, full = loss["perfect"], loss["empty"], loss["full"]
    assert perfect < empty and perfect < full
