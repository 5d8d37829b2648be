"""captum:<Class> and gradcam-lib:<Class> adapters."""

from __future__ import annotations

import sys

import pytest
import torch
from optional import require_module
from torch import nn

import attrbench
from attrbench.methods import adapters
from attrbench.methods.adapters import captum_method, gradcam_lib_method
from attrbench.methods.cam import GradCAM
from attrbench.models.classifiers import SmallCNN

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


def small_cnn(seed: int = 0, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(num_classes=k, widths=(4, 8, 8, 8)).eval()


def slow_reduce(attr: torch.Tensor, reduction: str, normalize: bool) -> torch.Tensor:
    """One image, one pixel row at a time: the documented reduction, then min-max."""
    out = []
    for a in attr:
        c, h, w = a.shape
        m = torch.zeros(h, w)
        for y in range(h):
            vals = a[:, y, :]
            if reduction == "abs_sum":
                m[y] = sum(vals[k].abs() for k in range(c))
            elif reduction == "sum":
                m[y] = sum(vals[k] for k in range(c))
            else:
                m[y] = torch.stack([vals[k].abs() for k in range(c)]).max(0).values
        if normalize:
            lo, hi = float(m.min()), float(m.max())
            m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
        out.append(m)
    return torch.stack(out)


def no_hooks(model):
    return all(
        not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        for m in model.modules()
    )


# ------------------------------------------------------------------------------ captum
def test_integrated_gradients_equals_direct_captum():
    from captum.attr import IntegratedGradients

    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 32, 32)
    x0 = x.clone()
    t = torch.tensor([0, 3, 1])
    m = attrbench.create_method("captum:IntegratedGradients", model, n_steps=16)
    assert m.name == "captum:IntegratedGradients" and type(m).name == m.name
    assert m.options == {"reduction": "abs_sum", "normalize": True, "n_steps": 16}
    ours = m.attribute(x, t)
    direct = (
        IntegratedGradients(model)
        .attribute(x.clone().requires_grad_(True), target=t, n_steps=16)
        .detach()
    )
    torch.testing.assert_close(ours, slow_reduce(direct, "abs_sum", True), rtol=1e-5, atol=1e-6)
    for red in ("sum", "max_abs"):
        o = attrbench.create_method(
            "captum:IntegratedGradients", model, n_steps=16, reduction=red, normalize=False
        ).attribute(x, t)
        torch.testing.assert_close(o, slow_reduce(direct, red, False), rtol=1e-5, atol=1e-6)
    assert torch.equal(x, x0) and not x.requires_grad
    assert no_hooks(model)


def test_captum_layer_gradcam_matches_native_gradcam():
    model = small_cnn(seed=2)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([2, 1])
    m = attrbench.create_method(
        "captum:LayerGradCam", model, relu_attributions=True, reduction="sum", normalize=False
    )
    assert m.options["layer"] == "features.block4"  # default layer via resolve_layer
    ours = GradCAM(model, normalize=False).attribute(x, t)
    torch.testing.assert_close(m.attribute(x, t), ours, rtol=1e-5, atol=1e-6)
    m2 = attrbench.create_method(
        "captum:LayerGradCam", model, layer="features.block3", relu_attributions=True
    )
    assert m2.options["layer"] == "features.block3" and m2.layer is model.features.block3
    assert m2.attribute(x, t).shape == (2, 32, 32)


def test_captum_occlusion_black_box_and_equal_to_direct():
    from captum.attr import Occlusion

    model = small_cnn(seed=3)
    cls = captum_method("Occlusion")
    assert cls.black_box and cls.needs_gradients
    assert not captum_method("IntegratedGradients").black_box
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 0])
    out = cls(model, sliding_window_shapes=(3, 4, 4), strides=4, baselines=0.0).attribute(x, t)
    direct = Occlusion(model).attribute(
        x.clone(), sliding_window_shapes=(3, 4, 4), strides=4, baselines=0.0, target=t
    )
    torch.testing.assert_close(out, slow_reduce(direct, "abs_sum", True), rtol=1e-5, atol=1e-6)


def test_captum_errors_and_cache():
    model = small_cnn()
    with pytest.raises(ValueError, match="Did you mean: IntegratedGradients"):
        attrbench.create_method("captum:IntegratedGradient", model)
    with pytest.raises(ValueError, match="not supported"):
        captum_method("NoiseTunnel")
    with pytest.raises(TypeError, match="unexpected option 'n_step'"):
        captum_method("IntegratedGradients")(model, n_step=3)
    with pytest.raises(ValueError, match="target"):
        captum_method("IntegratedGradients")(model, target=1)
    with pytest.raises(ValueError, match="takes no layer"):
        captum_method("Saliency")(model, layer="features.block4")
    with pytest.raises(ValueError, match="reduction"):
        captum_method("Saliency")(model, reduction="mean")
    with pytest.raises(ValueError, match="Did you mean"):
        captum_method("LayerGradCam")(model, layer="features.blok4")
    assert captum_method("Saliency") is captum_method("Saliency")
    assert captum_method("saliency") is captum_method("Saliency")
    # target count mismatch: public API and the adapter itself
    m = captum_method("Saliency")(model)
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match="targets"):
        m.attribute(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="1 targets for 4 images"):
        m._attribute(x, torch.tensor([0]), gt_masks=None, seeds=torch.zeros(4))


def test_captum_batch_equals_singles_and_state():
    model = small_cnn(seed=5)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([0, 1, 2, 3])
    m = attrbench.create_method("captum:InputXGradient", model)
    model.eval()
    batch = m.attribute(x, t)
    singles = torch.cat([m.attribute(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)
    model.train()
    m.attribute(x, t)
    assert model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()) and no_hooks(model)


# ------------------------------------------------------------------------------ gradcam-lib
def test_gradcam_lib_gradcam_equals_direct_and_close_to_native():
    pgc = require_module("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = small_cnn(seed=6)
    torch.manual_seed(6)
    x = torch.randn(3, 3, 32, 32)
    x0 = x.clone()
    t = torch.tensor([3, 0, 2])
    m = attrbench.create_method("gradcam-lib:GradCAM", model, normalize=False)
    assert m.name == "gradcam-lib:GradCAM" and m.options["layer"] == "features.block4"
    ours = m.attribute(x, t)
    assert ours.dtype == torch.float32 and ours.device == x.device
    lib = pgc.GradCAM(model, [model.features.block4])
    try:
        direct = torch.from_numpy(
            lib(x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(int(c)) for c in t])
        )
    finally:
        lib.activations_and_grads.release()
    torch.testing.assert_close(ours, direct)
    native = GradCAM(model).attribute(x, t)
    for i in range(3):  # cv2 resize of a normalised map vs F.interpolate then normalise
        if direct[i].max() > 0:
            a, b = native[i].flatten() - native[i].mean(), direct[i].flatten() - direct[i].mean()
            assert float((a * b).sum() / (a.norm() * b.norm())) > 0.99
    assert torch.equal(x, x0) and no_hooks(model)
    assert torch.equal(m.attribute_all(x)[torch.arange(3), t], ours)


def test_gradcam_lib_state_and_errors():
    require_module("pytorch_grad_cam")
    model = small_cnn(seed=7)
    model.train()  # the library calls model.eval(); the mode must come back
    x = torch.randn(2, 3, 32, 32)
    m = gradcam_lib_method("GradCAMPlusPlus")(model)
    out = m.attribute(x, torch.tensor([0, 1]))
    assert out.shape == (2, 32, 32) and model.training
    assert all(p.grad is None for p in model.parameters()) and no_hooks(model)
    with pytest.raises(ValueError, match="1 targets for 2 images|\\(1,\\) targets"):
        m._attribute(x, torch.tensor([0]), gt_masks=None, seeds=torch.zeros(2))
    with pytest.raises(ValueError, match="targets"):
        m.attribute(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="Did you mean: GradCAM"):
        attrbench.create_method("gradcam-lib:GradCam", model)
    with pytest.raises(TypeError, match="unexpected option"):
        gradcam_lib_method("GradCAM")(model, foo=1)

    class Raises(nn.Module):  # the model raises after the hooked layer ran
        num_classes = 4

        def __init__(self):
            super().__init__()
            self.inner = small_cnn()

        def forward(self, x):
            self.inner.features(x)
            raise IndexError("boom")  # the library's __exit__ would swallow an IndexError

    bad = Raises()
    mb = gradcam_lib_method("GradCAM")(bad, layer="inner.features.block4")
    with pytest.raises(IndexError, match="boom") as excinfo:
        mb._attribute(x, torch.tensor([0, 1]), gt_masks=None, seeds=torch.zeros(2))
    # excinfo keeps the failed frame (and the library's CAM object) alive, so the hooks must
    # have been released explicitly, not by the library's __del__
    assert excinfo.traceback and no_hooks(bad)


def test_gradcam_lib_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import raises ImportError
    monkeypatch.setattr(adapters, "_GRADCAM_CACHE", {})
    with pytest.raises(ImportError, match=r"pip install attrbench\[gradcam\]"):
        gradcam_lib_method("GradCAM")
