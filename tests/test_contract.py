"""Contract tests, parametrised over the registry: a method is tested the day it is registered."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attrbench.catalog import METHODS
from attrbench.presets import quick_method_options

NAMES = METHODS.names() + ["captum:IntegratedGradients", "captum:Saliency"]


def _make(name, model):
    cls = METHODS.get(name)
    # the shared quick settings keep the suite fast (validated like any other options)
    opts = quick_method_options(name)
    if getattr(cls, "needs_checkpoint", False):
        from attrbench.presets import SYNTHETIC

        opts["preset"] = SYNTHETIC
    return cls(model, **opts)


def _call(method, images, targets, cls_maps):
    gt = None
    if method.needs_ground_truth:
        gt = cls_maps == (targets[:, None, None] + 1)
    seeds = torch.arange(images.shape[0]) + 11
    return method.attribute(images, targets, gt_masks=gt, seeds=seeds)


def _targets(labels):
    return labels.argmax(1)


def _state(model):
    return ([m.training for m in model.modules()],
            [(p.requires_grad, p.grad) for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()},
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules()))


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_range(name, synthetic_classifier, synthetic_batch):
    images, labels, cls_maps = synthetic_batch
    method = _make(name, synthetic_classifier)
    out = _call(method, images, _targets(labels), cls_maps)
    assert out.shape == (4, 64, 64)
    assert out.dtype == torch.float32 and out.device == images.device
    assert torch.isfinite(out).all()
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_and_deterministic(name, synthetic_classifier, synthetic_batch):
    images, labels, cls_maps = synthetic_batch
    method = _make(name, synthetic_classifier)
    t = _targets(labels)
    full = _call(method, images, t, cls_maps)
    again = _call(method, images, t, cls_maps)
    torch.testing.assert_close(full, again, atol=1e-6, rtol=0)
    for i in range(4):
        single = method.attribute(images[i:i + 1], t[i:i + 1],
                                  gt_masks=(cls_maps[i:i + 1] == t[i] + 1) if method.needs_ground_truth else None,
                                  seeds=torch.tensor([11 + i]))
        torch.testing.assert_close(single[0], full[i], atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_model_state_and_input_unchanged(name, synthetic_classifier, synthetic_batch):
    images, labels, cls_maps = synthetic_batch
    model = synthetic_classifier
    before = _state(model)
    img_copy = images.clone()
    method = _make(name, model)
    _call(method, images, _targets(labels), cls_maps)
    after = _state(model)
    assert before[0] == after[0], "train/eval flags changed"
    assert [r for r, _ in before[1]] == [r for r, _ in after[1]], "requires_grad changed"
    assert all(g is None for _, g in after[1]), "parameter .grad left behind"
    for k in before[2]:
        torch.testing.assert_close(before[2][k], after[2][k])
    assert after[3] == before[3] == 0, "hooks left on the model"
    torch.testing.assert_close(images, img_copy)


class _Exploding(nn.Module):
    """Wraps a classifier; its forward raises after ``after`` calls."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes
        self.cam_layer = "inner." + inner.cam_layer
        self.calls = 0
        self.after = after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("name", [n for n in NAMES if not getattr(METHODS.get(n), "needs_checkpoint", False)])
def test_hooks_removed_when_the_call_raises(name, synthetic_classifier, synthetic_batch):
    images, labels, cls_maps = synthetic_batch
    model = _Exploding(synthetic_classifier, after=0).eval()
    method = _make(name, model)
    method._num_classes = 6
    try:
        _call(method, images, _targets(labels), cls_maps)
    except RuntimeError as exc:
        assert "boom" in str(exc)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                for m in model.modules())
    assert hooks == 0
    assert not any(m.training for m in model.modules())
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    assert inplace == [False] * len(inplace)


@pytest.mark.parametrize("name", ["gradcam", "center", "explainer"])
def test_invalid_targets_raise(name, synthetic_classifier, synthetic_batch):
    images, _, _ = synthetic_batch
    method = _make(name, synthetic_classifier)
    with pytest.raises(ValueError, match=r"targets must have shape \(B,\)"):
        method.attribute(images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class ids in \[0, 5\]"):
        method.attribute(images, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        method.attribute(images[:, :2], torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("name", [n for n in METHODS.names()
                                  if getattr(METHODS.get(n), "all_classes_at_once", False)])
def test_attribute_all_matches_attribute(name, synthetic_classifier, synthetic_batch):
    images, _, _ = synthetic_batch
    method = _make(name, synthetic_classifier)
    allm = method.attribute_all(images)
    assert allm.shape == (4, 6, 64, 64)
    for k in (0, 3, 5):
        t = torch.full((4,), k, dtype=torch.long)
        torch.testing.assert_close(method.attribute(images, t), allm[:, k], atol=1e-5, rtol=1e-4)
