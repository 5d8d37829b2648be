"""Guided backprop: captum cross-check, a slow layer-by-layer reference, in-place ReLUs and the
hook/flag contract."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import attrbench
from attrbench.methods.guided_backprop import GuidedBackprop, guided_relus


def seq_net(inplace: bool, seed: int = 0, k: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.ReLU(inplace=inplace),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(inplace=inplace),
        nn.Linear(16, k),
    ).eval()
    net.num_classes = k
    return net


def slow_guided(net: nn.Sequential, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Layer-by-layer backward with the guided rule written out at every ReLU; one image at a
    time; saliency = max over RGB of |grad|."""
    out = []
    for i in range(images.shape[0]):
        acts = [images[i : i + 1].clone()]
        with torch.no_grad():
            for layer in net:
                acts.append(layer(acts[-1].clone()))
        g = torch.zeros_like(acts[-1])
        g[0, int(targets[i])] = 1.0
        for j in range(len(net) - 1, -1, -1):
            layer, inp = net[j], acts[j]
            if isinstance(layer, nn.ReLU):
                g = g * (g > 0) * (inp > 0)
            else:
                x = inp.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(layer(x), x, g)
        out.append(g[0].abs().amax(dim=0))
    return torch.stack(out)


def captum_guided(model, x, t):
    from captum.attr import GuidedBackprop as CGB

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = CGB(model).attribute(x.clone().requires_grad_(True), target=t)
    return a.detach().abs().amax(dim=1)


def no_hooks(model):
    return all(
        not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        for m in model.modules()
    )


def test_matches_captum_and_slow_reference():
    net = seq_net(inplace=False)
    torch.manual_seed(1)
    x = torch.randn(4, 3, 12, 12)
    t = torch.tensor([0, 1, 2, 1])
    ours = GuidedBackprop(net, normalize=False).attribute(x, t)
    ref = slow_guided(net, x, t)
    assert ref.max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours, captum_guided(net, x, t), rtol=1e-5, atol=1e-7)
    # guided differs from the plain gradient on this net (the test can fail)
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(xg).gather(1, t[:, None]).sum(), xg)
    assert not torch.allclose(plain.abs().amax(1), ours)


def test_inplace_relu_model_same_as_out_of_place_and_flags_restored():
    a = seq_net(inplace=True)
    b = seq_net(inplace=False)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(2)
    x = torch.randn(3, 3, 12, 12)
    t = torch.tensor([2, 0, 1])
    oa = GuidedBackprop(a, normalize=False).attribute(x, t)
    torch.testing.assert_close(oa, slow_guided(b, x, t), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(oa, captum_guided(b, x, t), rtol=1e-5, atol=1e-7)
    assert all(m.inplace for m in a.modules() if isinstance(m, nn.ReLU))
    assert no_hooks(a)


def test_torchvision_resnet_reused_inplace_relu_vs_captum():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=4).eval()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([1, 3])
    ours = GuidedBackprop(model, normalize=False).attribute(x, t)
    # against captum on the model itself and on a copy with out-of-place ReLUs
    import copy

    ref_model = copy.deepcopy(model)
    for m in ref_model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for ref in (captum_guided(model, x, t), captum_guided(ref_model, x, t)):
        assert ref.max() > 0
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert no_hooks(model)


def test_attribute_all_batch_and_state_contract():
    net = seq_net(inplace=True, seed=4)
    net.train()  # no BN/dropout: mode does not matter numerically, but must be kept
    for p in net.parameters():
        p.requires_grad_(False)
    torch.manual_seed(4)
    x = torch.randn(4, 3, 12, 12)
    x0 = x.clone()
    m = attrbench.create_method("guided_backprop", net)
    t = torch.tensor([0, 2, 1, 0])
    batch = m.attribute(x, t)
    singles = torch.cat([m.attribute(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)
    allm = m.attribute_all(x)
    for c in range(3):
        torch.testing.assert_close(
            allm[:, c], m.attribute(x, torch.full((4,), c)), rtol=1e-5, atol=1e-6
        )
    assert float(batch.min()) >= 0 and float(batch.max()) == 1.0
    assert torch.equal(x, x0) and not x.requires_grad
    assert net.training and not any(p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())
    assert all(mod.inplace for mod in net.modules() if isinstance(mod, nn.ReLU))
    assert no_hooks(net)


class FailsSecondCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = seq_net(inplace=True)
        self.num_classes = 3
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.net[:4](x)  # the first ReLUs run (and are hooked) before the failure
        if self.calls >= 2:
            raise RuntimeError("boom")
        return self.net[4:](y)


def test_hooks_and_inplace_restored_on_error():
    model = FailsSecondCall()
    m = GuidedBackprop(model)
    x = torch.randn(2, 3, 12, 12)
    m.attribute(x, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="boom"):  # direct call: no safety guard around it
        m._attribute(x, torch.tensor([0, 1]), gt_masks=None, seeds=torch.zeros(2))
    assert no_hooks(model)
    assert all(r.inplace for r in model.modules() if isinstance(r, nn.ReLU))
    with pytest.raises(RuntimeError, match="boom"):
        m.attribute_all(x)
    assert no_hooks(model) and all(r.inplace for r in model.modules() if isinstance(r, nn.ReLU))
    with pytest.raises(ValueError, match="targets"):
        m.attribute(x, torch.tensor([0]))
    # the context manager on its own
    with pytest.raises(KeyError), guided_relus(model) as n:
        assert n == 3 and not any(r.inplace for r in model.modules() if isinstance(r, nn.ReLU))
        raise KeyError("x")
    assert no_hooks(model) and all(r.inplace for r in model.modules() if isinstance(r, nn.ReLU))


def test_functional_relu_model_warns_and_gives_plain_gradient():
    class Functional(nn.Module):
        num_classes = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    model = Functional()
    with pytest.warns(UserWarning, match="no nn.ReLU"):
        m = GuidedBackprop(model, normalize=False)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0, 1])
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
    torch.testing.assert_close(m.attribute(x, t), g.abs().amax(1))
    with pytest.raises(TypeError, match="normalize"):
        GuidedBackprop(model, normalize=1)
