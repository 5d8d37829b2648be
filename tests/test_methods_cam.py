"""Grad-CAM / Grad-CAM++: cross-checks against captum, pytorch-grad-cam and slow loop references,
plus layer resolution and the hook/state contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from optional import require_module
from torch import nn

import attrbench
from attrbench.methods.cam import GradCAM, GradCAMPlusPlus, resolve_layer
from attrbench.models.classifiers import SmallCNN
from attrbench.ops import minmax_rescale as minmax_normalize


# ------------------------------------------------------------------------------ models
def small_cnn(seed: int = 0, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    m = SmallCNN(num_classes=k, widths=(4, 8, 8, 8)).eval()
    for bn in m.modules():  # non-trivial running statistics, so BN is not the identity
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m


class FlatNet(nn.Module):
    """conv-relu-conv-relu (no pooling, so the CAM layer has the input's resolution) -> GAP ->
    linear. ``inplace`` selects in-place ReLUs."""

    def __init__(self, k: int = 3, inplace: bool = False, head_scale: float = 1.0) -> None:
        super().__init__()
        self.num_classes = k
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(5, k)
        with torch.no_grad():
            self.head.weight.mul_(head_scale)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def resnet18(k: int = 5) -> nn.Module:
    from torchvision.models import resnet18 as rn

    torch.manual_seed(0)
    return rn(weights=None, num_classes=k).eval()


def no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


# ------------------------------------------------------------------------------ slow references
def _activation_and_grad(model, layer, image, target):
    """One image: the layer's activation (C,h,w) and d logit[target] / d activation."""
    store = []
    h = layer.register_forward_hook(lambda _m, _i, o: store.append(o))
    try:
        x = image[None].clone().requires_grad_(True)
        logit = model(x)[0, target]
        (g,) = torch.autograd.grad(logit, store[0])
    finally:
        h.remove()
    return store[0][0].detach(), g[0]


def slow_gradcam(model, layer, images, targets, size):
    out = []
    for i in range(images.shape[0]):
        a, g = _activation_and_grad(model, layer, images[i], int(targets[i]))
        cam = torch.zeros(a.shape[1:])
        for k in range(a.shape[0]):
            cam += g[k].mean() * a[k]
        cam = torch.relu(cam)
        out.append(
            F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        )
    return torch.stack(out)


def slow_gradcam_pp(model, layer, images, targets, size):
    out = []
    for i in range(images.shape[0]):
        a, g = _activation_and_grad(model, layer, images[i], int(targets[i]))
        c, h, w = a.shape
        cam = torch.zeros(h, w)
        for k in range(c):
            s = float(a[k].sum())
            wk = 0.0
            for y in range(h):
                for x in range(w):
                    gi = float(g[k, y, x])
                    den = 2 * gi**2 + s * gi**3
                    alpha = gi**2 / den if den != 0 else 0.0
                    wk += alpha * max(gi, 0.0)
            cam += wk * a[k]
        cam = torch.relu(cam)
        out.append(
            F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        )
    return torch.stack(out)


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    """Per map: max |a - b| <= rel * max |b| (plus a tiny floor for all-zero maps)."""
    assert a.shape == b.shape
    for i in range(a.shape[0]):
        scale = float(b[i].abs().max())
        err = float((a[i] - b[i]).abs().max())
        assert err <= rel * scale + 1e-12, (i, err, scale)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


# ------------------------------------------------------------------------------ captum
def _captum_gradcam(model, layer, x, t):
    from captum.attr import LayerAttribution, LayerGradCam

    attr = LayerGradCam(model, layer).attribute(x.clone(), target=t, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up[:, 0].detach()


def test_gradcam_matches_captum_resnet18():
    model = resnet18(5)
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    t = torch.tensor([0, 4, 2])
    ours = GradCAM(model, layer="layer4", normalize=False).attribute(x, t)
    ref = _captum_gradcam(model, model.layer4, x, t)
    assert ref.abs().max() > 0
    assert_close_rel(ours, ref, 1e-5)


def test_gradcam_matches_captum_and_slow_reference_smallcnn():
    model = small_cnn()
    torch.manual_seed(2)
    x = torch.randn(4, 3, 32, 32)
    t = torch.tensor([0, 1, 2, 3])
    ours = GradCAM(model, normalize=False).attribute(x, t)  # default layer: features.block4
    layer = model.features.block4
    ref = _captum_gradcam(model, layer, x, t)
    assert ref.abs().max() > 0
    assert_close_rel(ours, ref, 1e-5)
    assert_close_rel(ours, slow_gradcam(model, layer, x, t, (32, 32)), 1e-5)


def test_gradcam_pp_matches_slow_reference():
    model = small_cnn(seed=3)
    torch.manual_seed(3)
    x = torch.randn(3, 3, 32, 32)
    t = torch.tensor([2, 0, 1])
    ours = GradCAMPlusPlus(model, normalize=False).attribute(x, t)
    ref = slow_gradcam_pp(model, model.features.block4, x, t, (32, 32))
    assert ref.abs().max() > 0
    assert_close_rel(ours, ref, 1e-4)


def test_gradcam_pp_analytic_linear_head():
    """Logit = sum_k v_k mean(A_k): g_k = v_k / (h w) everywhere, so
    alpha = 1 / (2 + S_k g_k) and w_k = h w alpha_k max(g_k, 0)."""

    class Lin(nn.Module):
        num_classes = 1

        def __init__(self):
            super().__init__()
            self.feat = nn.Identity()
            self.v = torch.tensor([0.5, -1.0, 2.0])

        def forward(self, x):
            a = self.feat(x)
            return (a.mean(dim=(2, 3)) * self.v).sum(1, keepdim=True)

    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4)
    m = GradCAMPlusPlus(Lin(), layer="feat", normalize=False)
    out = m.attribute(x, torch.tensor([0]))
    g = torch.tensor([0.5, -1.0, 2.0]) / 16
    s = x[0].sum(dim=(1, 2))
    w = 16 * g.clamp(min=0) / (2 + s * g)
    expected = torch.relu((w[:, None, None] * x[0]).sum(0))
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-7)
    # Grad-CAM on the same model: w_k = g_k
    out_gc = GradCAM(Lin(), layer="feat", normalize=False).attribute(x, torch.tensor([0]))
    torch.testing.assert_close(out_gc[0], torch.relu((g[:, None, None] * x[0]).sum(0)))


# ------------------------------------------------------------------------------ pytorch-grad-cam
@pytest.mark.parametrize(
    "ours_cls, lib_name", [(GradCAM, "GradCAM"), (GradCAMPlusPlus, "GradCAMPlusPlus")]
)
def test_against_pytorch_grad_cam(ours_cls, lib_name):
    pgc = require_module("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # (a) exact at the layer's resolution: FlatNet has no pooling, so the library's cv2.resize
    # is the identity and only its normalisation epsilon (1e-7; 1e-6 inside Grad-CAM++'s alpha,
    # made negligible by a large head scale -> gradients of order 1) separates the two.
    torch.manual_seed(5)
    model = FlatNet(k=3, head_scale=200.0).eval()
    x = torch.randn(3, 3, 12, 12)
    t = torch.tensor([0, 1, 2])
    ours = ours_cls(model, layer="relu2").attribute(x, t)
    lib = getattr(pgc, lib_name)(model, [model.relu2])
    try:
        ref = torch.from_numpy(
            lib(x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(int(c)) for c in t])
        )
    finally:
        lib.activations_and_grads.release()
    assert ref.amax(dim=(1, 2)).min() > 0.99  # no degenerate all-zero map
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)

    # (b) loosely after upsampling: the library normalises at the layer resolution and resizes
    # with cv2 (half-pixel bilinear); we upsample with F.interpolate and normalise afterwards.
    # The maps differ by the interpolation's edge handling and an affine rescaling, so compare
    # by correlation.
    model = small_cnn(seed=7)
    torch.manual_seed(7)
    x = torch.randn(4, 3, 32, 32)
    t = torch.tensor([3, 2, 1, 0])
    ours = ours_cls(model).attribute(x, t)
    lib = getattr(pgc, lib_name)(model, [model.features.block4])
    try:
        ref = torch.from_numpy(
            lib(x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(int(c)) for c in t])
        )
    finally:
        lib.activations_and_grads.release()
    model.eval()
    for i in range(4):
        if ref[i].max() == 0:
            assert ours[i].max() == 0
        else:
            assert corr(ours[i], ref[i]) > 0.99


# ------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_attribute_all_equals_per_class_and_batch_equals_singles(cls):
    model = small_cnn(seed=11)
    torch.manual_seed(11)
    x = torch.randn(4, 3, 32, 32)
    m = cls(model)
    allm = m.attribute_all(x)
    assert allm.shape == (4, 4, 32, 32)
    for c in range(4):
        torch.testing.assert_close(
            allm[:, c], m.attribute(x, torch.full((4,), c)), atol=1e-6, rtol=1e-5
        )
    t = torch.tensor([1, 0, 3, 2])
    batch = m.attribute(x, t)
    singles = torch.cat([m.attribute(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-5)
    assert batch.dtype == torch.float32 and torch.isfinite(batch).all()
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1


def test_hooked_conv_followed_by_inplace_relu():
    """The captured activation must be the conv output, not the ReLU'd tensor that an in-place
    ReLU writes over it."""
    torch.manual_seed(0)
    a = FlatNet(inplace=True).eval()
    b = FlatNet(inplace=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 10, 10)
    t = torch.tensor([0, 2])
    for cls in (GradCAM, GradCAMPlusPlus):
        oa = cls(a, layer="conv2", normalize=False).attribute(x, t)
        ob = cls(b, layer="conv2", normalize=False).attribute(x, t)
        torch.testing.assert_close(oa, ob)
        if cls is GradCAM:
            assert_close_rel(oa, slow_gradcam(b, b.conv2, x, t, (10, 10)))


def test_state_contract_frozen_model_train_flag_and_input():
    model = FlatNet()  # no BN/dropout: fine in train mode
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    x0 = x.clone()
    out = GradCAM(model, layer="relu2").attribute(x, torch.tensor([0, 1]))
    assert out.shape == (2, 8, 8)
    assert model.training and all(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x0) and not x.requires_grad
    assert no_hooks(model)


class RaisesAfterLayer(nn.Module):
    """FlatNet whose head raises on the n-th forward call (after the CAM layer ran)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.net = FlatNet()
        self.num_classes = 3
        self.calls = 0
        self.fail_on = fail_on

    def forward(self, x):
        self.calls += 1
        feats = self.net.relu2(self.net.conv2(self.net.relu1(self.net.conv1(x))))
        if self.calls >= self.fail_on:
            raise RuntimeError("boom")
        return self.net.head(feats.mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_hooks_removed_on_error(cls):
    model = RaisesAfterLayer(fail_on=2).eval()
    m = cls(model, layer="net.relu2")
    x = torch.randn(2, 3, 8, 8)
    m.attribute(x, torch.tensor([0, 1]))  # first call works
    with pytest.raises(RuntimeError, match="boom"):  # bypass the base class's safety guard
        m._attribute(x, torch.tensor([0, 1]), gt_masks=None, seeds=torch.zeros(2))
    assert no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        m.attribute_all(x)
    assert no_hooks(model)
    # invalid targets: rejected before anything runs, nothing left behind
    with pytest.raises(ValueError, match="targets"):
        m.attribute(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="class ids"):
        m.attribute(x, torch.tensor([0, 7]))
    assert no_hooks(model)


def test_layer_running_twice_raises_and_cleans_up():
    class Twice(nn.Module):
        num_classes = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.conv(self.conv(x)).mean(dim=(2, 3)))

    model = Twice()
    with pytest.raises(ValueError, match="ran 2 times"):
        GradCAM(model, layer="conv")._attribute(
            torch.randn(1, 3, 8, 8), torch.tensor([0]), gt_masks=None, seeds=torch.zeros(1)
        )
    assert no_hooks(model)


def test_all_negative_evidence_gives_zero_map():
    class Neg(nn.Module):
        num_classes = 1

        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return -self.act(x).mean(dim=(1, 2, 3))[:, None]

    x = torch.rand(2, 3, 6, 6) + 0.1
    for cls in (GradCAM, GradCAMPlusPlus):
        out = cls(Neg(), layer="act").attribute(x, torch.tensor([0, 0]))
        assert torch.equal(out, torch.zeros(2, 6, 6))


def test_minmax_normalize():
    m = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = minmax_normalize(m)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))


# ------------------------------------------------------------------------------ resolve_layer
def test_resolve_layer_names_and_defaults():
    from torchvision.models import VGG

    sm = small_cnn()
    assert resolve_layer(sm) is sm.features.block4
    assert resolve_layer(sm, "features.block2") is sm.features.block2
    assert resolve_layer(sm, "features.block4.0") is sm.features.block4[0]
    assert resolve_layer(sm, "features.block4[-1]") is sm.features.block4[2]
    assert resolve_layer(sm, "features.-1") is sm.features.block4
    assert resolve_layer(sm, sm.head) is sm.head

    rn = resnet18()
    assert resolve_layer(rn) is rn.layer4
    wrapped = nn.Sequential()
    wrapped.add_module("backbone", rn)
    assert resolve_layer(wrapped) is rn.layer4  # first torchvision ResNet inside
    assert resolve_layer(wrapped, "backbone.layer4") is rn.layer4

    vgg = VGG.__new__(VGG)  # a VGG without its 100M-parameter classifier
    nn.Module.__init__(vgg)
    vgg.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    assert resolve_layer(vgg) is vgg.features[2]

    plain = FlatNet()
    assert resolve_layer(plain) is plain.conv2  # last nn.Conv2d

    # the paper classifiers declare their layers (constructing VGG-16 is too slow for a test)
    from attrbench.models.classifiers import PaperResNet50, PaperVGG16

    assert PaperVGG16.cam_layer == "backbone.features.30"
    assert PaperResNet50.cam_layer == "backbone.layer4"


def test_resolve_layer_errors():
    sm = small_cnn()
    with pytest.raises(ValueError, match="Did you mean: features.block4"):
        resolve_layer(sm, "block4")
    with pytest.raises(ValueError, match="Unknown layer 'layer4'"):
        resolve_layer(sm, "layer4")
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(sm, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError):
        resolve_layer(sm, 3)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        resolve_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="Did you mean"):
        attrbench.create_method("gradcam", sm, layer="features.blok4")
    with pytest.raises(ValueError, match="interpolation"):
        GradCAM(sm, interpolation="linear")
    with pytest.raises(TypeError, match="normalize"):
        GradCAM(sm, normalize="yes")


def test_registry_names_and_options():
    sm = small_cnn()
    m = attrbench.create_method("gradcam", sm)
    assert isinstance(m, GradCAM) and m.options["layer"] == "features.block4"
    assert isinstance(attrbench.create_method("gradcam++", sm), GradCAMPlusPlus)
    assert m.describe()["options"]["interpolation"] == "bilinear"
    # nearest interpolation keeps the layer's blocks
    out = GradCAM(sm, interpolation="nearest", normalize=False).attribute(
        torch.randn(1, 3, 32, 32), torch.tensor([1])
    )
    blocks = out[0].unfold(0, 8, 8).unfold(1, 8, 8)  # 4x4 blocks of 8x8 pixels
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
