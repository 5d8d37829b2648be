"""Tests of the perturbation methods: RISE, Extremal Perturbations, iGOS++.

The oracle model: class k's logit is a linear read-out of channel 0 inside a fixed square
region R_k (a matched filter with a 4-px checkerboard P, so that blurring the image removes the
evidence). The image carries P in channel 0, so every method must put its maximum in R_k.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attrbench
from attrbench.methods.extremal import ExtremalPerturbations, select_area
from attrbench.methods.igos import IGOSPP
from attrbench.methods.rise import RISE, generate_rise_masks
from attrbench.models.classifiers import SmallCNN
from attrbench.ops import gaussian_blur

torch.set_num_threads(1)
S = 32


def _pattern(size: int = S) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy // 4) + (xx // 4)) % 2 * 2 - 1).float()


REGIONS = [(4, 12, 4, 12), (20, 28, 16, 28)]  # (y0, y1, x0, x1), end exclusive


class RegionModel(nn.Module):
    """logit_k = scale * (mean_{R_k} x_0 * P - offset), optionally capped from above."""

    def __init__(self, regions=REGIONS, scale: float = 40.0, offset: float = 0.5,
                 cap: float | None = None) -> None:
        super().__init__()
        self.num_classes = len(regions)
        p = _pattern()
        w = torch.zeros(len(regions), S, S)
        for k, (y0, y1, x0, x1) in enumerate(regions):
            w[k, y0:y1, x0:x1] = p[y0:y1, x0:x1] / ((y1 - y0) * (x1 - x0))
        self.register_buffer("w", w)
        self.scale, self.offset, self.cap = scale, offset, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * (torch.einsum("bhw,khw->bk", x[:, 0], self.w) - self.offset)
        return z if self.cap is None else z.clamp(max=self.cap)


def _images(b: int = 2) -> torch.Tensor:
    x = torch.zeros(b, 3, S, S)
    x[:, 0] = _pattern()
    g = torch.Generator().manual_seed(1)
    x[:, 1:] = 0.1 * torch.randn(b, 2, S, S, generator=g)  # distractor channels the model ignores
    return x


def _in_region(maps: torch.Tensor, targets: torch.Tensor) -> list[bool]:
    out = []
    for i in range(maps.shape[0]):
        idx = int(maps[i].flatten().argmax())  # first maximum (raster order)
        y, x = divmod(idx, maps.shape[-1])
        y0, y1, x0, x1 = REGIONS[int(targets[i])]
        out.append(y0 <= y < y1 and x0 <= x < x1)
    return out


def _tiny_cnn(k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(num_classes=k, widths=(4, 8, 8, 8)).eval()


# --------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("method", ["rise", "ep", "igos_pp"])
def test_argmax_in_evidence_region(method):
    targets = torch.tensor([0, 1])
    if method == "rise":
        model = RegionModel(scale=8.0)
        m = attrbench.create_method("rise", model, num_masks=1000)
    elif method == "ep":
        model = RegionModel()
        # jitter flips the image; this oracle is not flip-invariant, so it is off here.
        m = attrbench.create_method("ep", model, max_iter=60, lr=0.05, reg_growth=1.03,
                                    jitter=False)
    else:
        model = RegionModel()
        m = attrbench.create_method("igos_pp", model, iterations=3, ig_iter=3)
    maps = m.attribute(_images(), targets)
    assert maps.shape == (2, S, S)
    assert torch.isfinite(maps).all()
    assert all(_in_region(maps, targets)), method


# --------------------------------------------------------------------------- RISE
def _rise_reference(model, images, masks, p, score="sigmoid"):
    """Deliberately slow: one forward per (image, mask), python accumulation."""
    b = images.shape[0]
    k = model(images[:1]).shape[1]
    out = torch.zeros(b, k, *images.shape[-2:], dtype=torch.float64)
    with torch.no_grad():
        for i in range(b):
            for mk in masks:
                logits = model((images[i] * mk)[None])[0]
                s = torch.sigmoid(logits) if score == "sigmoid" else torch.softmax(logits, 0)
                for c in range(k):
                    out[i, c] += float(s[c]) * mk.double()
    out /= masks.shape[0] * p
    for i in range(b):
        for c in range(k):
            lo, hi = out[i, c].min(), out[i, c].max()
            out[i, c] = (out[i, c] - lo) / (hi - lo)
    return out.float()


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
def test_rise_matches_slow_reference(score):
    model = _tiny_cnn()
    x = torch.randn(2, 3, S, S)
    rise = RISE(model, num_masks=60, batch_size=7, p=0.4, score=score)
    fast = rise.attribute_all(x)
    ref = _rise_reference(model, x, rise.masks(S, S), 0.4, score)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    # un-normalised maps: the formula itself
    raw = RISE(model, num_masks=60, batch_size=7, p=0.4, score=score, normalize=False)
    masks = raw.masks(S, S)
    with torch.no_grad():
        s0 = model(x[:1] * masks[:, None])  # (N, K) for image 0
        s0 = torch.sigmoid(s0) if score == "sigmoid" else torch.softmax(s0, 1)
    expect = torch.einsum("nk,nhw->khw", s0, masks) / (60 * 0.4)
    torch.testing.assert_close(raw.attribute_all(x)[0], expect, rtol=1e-4, atol=1e-6)


def test_rise_masks_construction():
    m = generate_rise_masks(50, 4, 0.5, 20, 30, seed=3)
    assert m.shape == (50, 20, 30) and m.min() >= 0 and m.max() <= 1
    torch.testing.assert_close(m, generate_rise_masks(50, 4, 0.5, 20, 30, seed=3, chunk=7))
    assert not torch.equal(m, generate_rise_masks(50, 4, 0.5, 20, 30, seed=4))
    # mean mask value ~ p
    big = generate_rise_masks(2000, 7, 0.3, 16, 16, seed=0)
    assert abs(float(big.mean()) - 0.3) < 0.02
    # cached per size: same tensor object
    rise = RISE(_tiny_cnn(), num_masks=10)
    assert rise.masks(S, S) is rise.masks(S, S)


def test_rise_attribute_equals_attribute_all_and_batching():
    model = _tiny_cnn()
    x = torch.randn(3, 3, S, S)
    rise = RISE(model, num_masks=100, batch_size=16)
    allc = rise.attribute_all(x)
    assert allc.shape == (3, 4, S, S)
    for k in range(4):
        one = rise.attribute(x, torch.full((3,), k))
        torch.testing.assert_close(one, allc[:, k], rtol=1e-5, atol=1e-5)
    t = torch.tensor([2, 0, 3])
    batch = rise.attribute(x, t)
    singles = torch.cat([rise.attribute(x[i:i + 1], t[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5)
    # seeds: same seed -> same, different seed -> different
    again = RISE(model, num_masks=100, batch_size=16).attribute(x, t)
    torch.testing.assert_close(batch, again, rtol=0, atol=0)
    other = RISE(model, num_masks=100, batch_size=16, seed=1).attribute(x, t)
    assert not torch.allclose(batch, other)
    assert batch.min() >= 0 and batch.max() <= 1


class _CountingModel(nn.Module):
    """Wraps a classifier and records the number of images of every forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, []
        self.num_classes = inner.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("num_masks,batch_size,rows", [(33, 8, 20), (33, 8, 1), (9, 4, 6)])
def test_rise_split_forwards_give_the_same_maps(num_masks, batch_size, rows):
    model = _CountingModel(_tiny_cnn())
    x = torch.randn(5, 3, S, S)
    whole = RISE(model, num_masks=num_masks, batch_size=batch_size)
    whole.forward_rows = 10**6
    ref = whole.attribute_all(x)
    assert max(model.rows) == 5 * batch_size
    split = RISE(model, num_masks=num_masks, batch_size=batch_size)
    split.forward_rows = rows
    model.rows = []
    out = split.attribute_all(x)
    assert torch.equal(out, ref)
    # at most max(rows, one image's masks) per forward, never a lone image, same total
    assert max(model.rows) <= max(rows, batch_size) and min(model.rows) > 1
    assert sum(model.rows) == 5 * num_masks
    t = torch.tensor([0, 3, 1, 2, 2])
    assert torch.equal(split.attribute(x, t), whole.attribute(x, t))


# --------------------------------------------------------------------------- EP
def test_select_area_rule():
    pres = torch.tensor([[1.0, 2.0, 3.0, 4.0],   # 3rd area first reaches 2.5
                         [5.0, 0.0, 9.0, 9.0],   # the first already does
                         [0.0, 0.0, 0.0, 1.0],   # none: the largest
                         [0.0, 2.0, 0.0, 0.0]])  # equality counts
    orig = torch.tensor([2.5, 4.0, 2.0, 2.0])
    assert select_area(pres, orig).tolist() == [2, 0, 3, 1]


def test_ep_area_selection_with_hand_model():
    # class 0: +evidence in a 10x10 region R (9.8 % of the image) and a distractor region N whose
    # pattern *lowers* the logit: logit = 40 (mean_R xP - 0.5) - 10 mean_N xP = 10 on the image.
    # Blurring N gains 10, so a mask must keep >= 75 % of R (75 px) to reach the original logit:
    # area 0.05 (51 px) cannot, area 0.1 (102 px) can -> the rule selects area index 1.
    model = RegionModel(regions=[(4, 14, 4, 14), (20, 28, 16, 28)])
    p = _pattern()
    model.w[0, 20:28, 4:12] = -0.25 * p[20:28, 4:12] / 64
    x = _images(1)
    ep = ExtremalPerturbations(model, max_iter=150, lr=0.03, reg_growth=1.015, jitter=False,
                               smooth=0.0)
    res = ep.optimise(x, torch.tensor([0]))
    assert res.masks.shape == (1, 4, S, S)
    orig = float(res.original_logits[0])
    assert orig == pytest.approx(10.0, abs=1e-4)
    assert float(res.preserved_logits[0, 0]) < orig - 2
    assert float(res.preserved_logits[0, 1]) >= orig + 2
    assert int(res.selected[0]) == 1
    sel = res.masks[0, 1]
    torch.testing.assert_close(res.saliency[0], (sel - sel.min()) / (sel.max() - sel.min()))
    # without the distractor, no area reaches the original logit -> the largest area
    res2 = ExtremalPerturbations(RegionModel(), max_iter=20, jitter=False).optimise(
        x, torch.tensor([0]))
    assert (res2.preserved_logits < res2.original_logits[:, None]).all()
    assert int(res2.selected[0]) == 3
    # options record the size-scaled settings
    assert ep.options["step"] == 1 and ep.options["resolved_for"] == [S, S]
    assert ep.options["sigma"] == pytest.approx(21 * S / 224)
    assert ep.options["max_blur"] == pytest.approx(20 * S / 224)


@pytest.mark.parametrize("per_group,areas", [(1, (0.1, 0.3)), (2, (0.1, 0.3)), (1, (0.2,))])
def test_ep_groups_of_images_give_the_same_masks(per_group, areas):
    model = _CountingModel(_tiny_cnn())
    x = torch.randn(5, 3, S, S)
    t = torch.tensor([0, 3, 1, 2, 2])
    whole = ExtremalPerturbations(model, areas=areas, max_iter=6, lr=0.05)
    whole.group_elements = 10**12
    ref = whole.optimise(x, t)
    assert set(model.rows) == {5, 5 * len(areas)}  # originals; every step on all pairs
    grouped = ExtremalPerturbations(model, areas=areas, max_iter=6, lr=0.05)
    dd = _SmoothMaskSize(grouped, S)
    grouped.group_elements = per_group * len(areas) * dd * S * S
    model.rows = []
    out = grouped.optimise(x, t)
    for f in ("masks", "preserved_logits", "original_logits", "selected", "saliency", "rewards"):
        assert torch.equal(getattr(out, f), getattr(ref, f)), f
    steps = model.rows[1:-1]  # the original logits, the steps, the final preserved images
    assert max(steps) < 5 * len(areas) and min(steps) > 1  # grouped, never a lone image


def _SmoothMaskSize(ep: ExtremalPerturbations, size: int) -> int:
    """(2r + 1)^2 neighbours of the smooth max at this image size."""
    from attrbench.methods.extremal import _SmoothMask

    step, sigma, _ = ep.resolve(size, size)
    return _SmoothMask(size, size, step, sigma, ep.coldness, torch.device("cpu")).weight.shape[0]


def test_ep_range_batch_equals_single_and_determinism():
    model = _tiny_cnn()
    x = torch.randn(3, 3, S, S)
    t = torch.tensor([1, 0, 3])
    ep = ExtremalPerturbations(model, max_iter=12, areas=[0.1, 0.3])
    out = ep.attribute(x, t)
    assert out.shape == (3, S, S) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    singles = torch.cat([ep.attribute(x[i:i + 1], t[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(out, singles, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, ep.attribute(x, t), rtol=0, atol=0)


def test_ep_perturbation_pyramid():
    model = _tiny_cnn()
    ep = ExtremalPerturbations(model, num_levels=4)
    x = torch.randn(2, 3, S, S)
    pyr = ep.blur_pyramid(x, 3.0)
    assert pyr.shape == (2, 4, 3, S, S)
    torch.testing.assert_close(pyr[:, -1], x)  # last level = the image
    ones = torch.ones(2, 1, S, S)
    torch.testing.assert_close(ep.perturb(pyr, ones)[:, 0], x)
    torch.testing.assert_close(ep.perturb(pyr, 0 * ones)[:, 0], gaussian_blur(x, 3.0))
    half = ep.perturb(pyr, ones / 2)[:, 0]  # m = 0.5 -> level 1.5
    torch.testing.assert_close(half, 0.5 * (pyr[:, 1] + pyr[:, 2]))


# --------------------------------------------------------------------------- iGOS++
def test_igos_shape_range_batch_equals_single_and_seeds():
    model = RegionModel()
    x = _images(3)
    t = torch.tensor([0, 1, 1])
    ig = IGOSPP(model, iterations=3, ig_iter=3)
    out = ig.attribute(x, t, seeds=torch.tensor([5, 6, 7]))
    assert out.shape == (3, S, S) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    singles = torch.cat([ig.attribute(x[i:i + 1], t[i:i + 1], seeds=torch.tensor([5 + i]))
                         for i in range(3)])
    torch.testing.assert_close(out, singles, rtol=1e-4, atol=1e-4)
    same = ig.attribute(x, t, seeds=torch.tensor([5, 6, 7]))
    torch.testing.assert_close(out, same, rtol=0, atol=0)
    other = ig.attribute(x, t, seeds=torch.tensor([8, 9, 10]))
    assert not torch.equal(out, other)
    assert ig.options["mask_size"] == 4 and ig.options["blur_kernel"] % 2 == 1


def test_igos_on_cnn_finite():
    model = _tiny_cnn()
    out = IGOSPP(model, iterations=2, ig_iter=2).attribute(torch.randn(2, 3, S, S),
                                                            torch.tensor([0, 3]))
    assert out.shape == (2, S, S) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------- contract
def _state(model: nn.Module):
    return (
        [p.detach().clone() for p in model.parameters()],
        [b.detach().clone() for b in model.buffers()],
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in model.modules()),
        [p.grad for p in model.parameters()],
    )


@pytest.mark.parametrize("name,opts", [
    ("rise", {"num_masks": 40}),
    ("extremal_perturbations", {"max_iter": 3}),
    ("igos_pp", {"iterations": 2, "ig_iter": 2}),
])
def test_model_state_unchanged(name, opts):
    model = _tiny_cnn()
    before = _state(model)
    m = attrbench.create_method(name, model, **opts)
    x = torch.randn(2, 3, S, S)
    x_copy = x.clone()
    m.attribute(x, torch.tensor([0, 1]))
    if name == "rise":
        m.attribute_all(x)
    after = _state(model)
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        assert torch.equal(a, b)
    assert before[2:5] == after[2:5]
    assert all(g is None for g in after[5])
    assert torch.equal(x, x_copy)


@pytest.mark.parametrize("cls,kwargs,quoted", [
    (RISE, {"num_masks": 0}, "0"),
    (RISE, {"p": 1.5}, "1.5"),
    (RISE, {"score": "logits"}, "logits"),
    (ExtremalPerturbations, {"areas": [0.2, 0.1]}, "0.2"),
    (ExtremalPerturbations, {"areas": [1.2]}, "1.2"),
    (ExtremalPerturbations, {"num_levels": 1}, "1"),
    (ExtremalPerturbations, {"sigma": -3.0}, "-3.0"),
    (IGOSPP, {"tv_beta": 0.5}, "0.5"),
    (IGOSPP, {"blur_kernel": 4}, "4"),
    (IGOSPP, {"score": "prob"}, "prob"),
    (IGOSPP, {"mask_size": 1}, "1"),
])
def test_invalid_options(cls, kwargs, quoted):
    with pytest.raises(ValueError, match=quoted.replace(".", r"\.")):
        cls(_tiny_cnn(), **kwargs)


def test_registry_names_and_flags():
    model = _tiny_cnn()
    assert isinstance(attrbench.create_method("ep", model), ExtremalPerturbations)
    assert RISE.all_classes_at_once and RISE.black_box
    assert ExtremalPerturbations.needs_gradients and IGOSPP.needs_gradients
    ep = ExtremalPerturbations(model)
    assert ep.resolve(224, 224) == (7, 21.0, 20.0)
    assert ep.resolve(64, 64)[0] == 2 and math.isclose(ep.resolve(64, 64)[1], 6.0)
    assert IGOSPP(model).resolve(224, 224) == (28, 51, 50.0)


def test_igos_bilateral_tv_matches_loop_reference():
    ig = IGOSPP(_tiny_cnn(), tv_beta=2.0, bilateral_sigma=0.5)
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 8, 8, generator=g)
    m = torch.rand(2, 1, 4, 4, generator=g)

    def up(t):
        return torch.nn.functional.interpolate(t, size=(8, 8), mode="bilinear", align_corners=True)

    fast = ig._btv(img, m, up)
    u = up(m)
    for n in range(2):
        tv, bil = [0.0, 0.0], [0.0, 0.0]
        for i in range(4):
            for j in range(4):
                if i < 3:
                    tv[0] += float(m[n, 0, i, j] - m[n, 0, i + 1, j]) ** 2 / 12
                if j < 3:
                    tv[1] += float(m[n, 0, i, j] - m[n, 0, i, j + 1]) ** 2 / 12
        for i in range(8):
            for j in range(8):
                if i < 7:
                    w = math.exp(-float(((img[n, :, i, j] - img[n, :, i + 1, j]) ** 2).mean()) / 0.5)
                    bil[0] += w * float(u[n, 0, i, j] - u[n, 0, i + 1, j]) ** 2 / 56
                if j < 7:
                    w = math.exp(-float(((img[n, :, i, j] - img[n, :, i, j + 1]) ** 2).mean()) / 0.5)
                    bil[1] += w * float(u[n, 0, i, j] - u[n, 0, i, j + 1]) ** 2 / 56
        assert float(fast[n]) == pytest.approx(0.5 * (sum(tv) + sum(bil)), rel=1e-5)


def test_ep_smooth_mask_matches_loop_reference():
    from attrbench.methods.extremal import _SmoothMask

    h, w, step, sigma, cold = 9, 7, 2, 3.0, 20.0
    gen = _SmoothMask(h, w, step, sigma, cold, torch.device("cpu"))
    params = torch.rand(1, 1, gen.gh, gen.gw, generator=torch.Generator().manual_seed(2))
    fast = gen(params)[0]
    r = gen.r
    for y in range(h):
        for x in range(w):
            cy, cx = y // step, x // step
            zs = []
            for jy in range(cy - r, cy + r + 1):
                for jx in range(cx - r, cx + r + 1):
                    v = float(params[0, 0, jy, jx]) if 0 <= jy < gen.gh and 0 <= jx < gen.gw else 0.0
                    d = math.hypot(y - ((jy + 0.5) * step - 0.5), x - ((jx + 0.5) * step - 0.5))
                    zs.append(math.exp(-2 * max(d / sigma - 0.5, 0.0) ** 2) * v)
            z = torch.tensor(zs, dtype=torch.float64)
            expect = float((z * torch.softmax(cold * z, 0)).sum())
            assert float(fast[y, x]) == pytest.approx(expect, abs=1e-5)
