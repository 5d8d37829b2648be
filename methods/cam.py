"""Class activation maps: Grad-CAM and Grad-CAM++, sharing one hook-owning base class.

Both methods read the activation ``A`` (B, C, h, w) of one layer and the gradient of the target
logit with respect to it, combine the C channels with per-channel weights, apply a ReLU and
upsample the (h, w) map to the input resolution. They differ only in the channel weights, so
:class:`_CAMBase` owns everything else (layer resolution, the forward hook, gradients,
upsampling, normalisation) and the subclasses override :meth:`_CAMBase._channel_weights`.

Default layer per architecture (:func:`resolve_layer` with ``layer=None``):

* a model that defines ``cam_layer`` (every attrbench classifier does):
  ``SmallCNN`` -> ``features.block4`` (the last block's ReLU, 8x8 at 64 px),
  ``PaperVGG16`` -> ``backbone.features.30`` (the last max-pool, 7x7x512 at 224 px),
  ``PaperResNet50`` -> ``backbone.layer4`` (the output of its last Bottleneck);
* a torchvision ``ResNet`` (the model itself or its first ResNet submodule) -> ``layer4``;
* a torchvision ``VGG`` -> the last module of ``features`` (the last max-pool);
* anything else -> the last ``nn.Conv2d`` in ``model.modules()`` order.

Paper protocol (Stalder et al. 2022): the paper ran ``pytorch-grad-cam`` 1.3.1 with target layer
``features[-1]`` on VGG-16, i.e. the last **max-pool** (7x7) and not the last conv block, and
the last Bottleneck of ``layer4`` on ResNet-50; that library applies the ReLU, resizes to the
input size and min-max normalises each class map. TorchRay's benchmark uses ``features.29``
(the ReLU after the last conv, 14x14) for VGG-16 instead; pass ``layer="backbone.features.29"``
to get that setting with :class:`~attrbench.models.classifiers.PaperVGG16`.

Merge order: ``"rescale_then_max"`` (the default): ``pytorch-grad-cam`` returns each class map
already min-max normalised and the paper's code takes the pixel-wise maximum of those.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrbench.checks import check_bool as _check_bool
from attrbench.interfaces import AttributionMethod
from attrbench.ops import minmax_rescale

__all__ = ["GradCAM", "GradCAMPlusPlus", "layer_name", "resolve_layer"]

_INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest", "area")


# ------------------------------------------------------------------------------ layer lookup
def layer_name(model: nn.Module, layer: nn.Module) -> str | None:
    """The dotted name of ``layer`` inside ``model`` ("" for the model itself), or None."""
    for name, mod in model.named_modules():
        if mod is layer:
            return name
    return None


def _lookup_dotted(model: nn.Module, name: str) -> nn.Module | None:
    """Walk a dotted path; parts may be child names or (negative) indices of a Sequential /
    ModuleList, so ``"features.-1"`` and ``"features[-1]"`` both name VGG's last module."""
    path = re.sub(r"\[(-?\d+)\]", r".\1", name.strip()).strip(".")
    mod: nn.Module = model
    for part in path.split("."):
        children = mod._modules
        if part in children and children[part] is not None:
            mod = children[part]  # type: ignore[assignment]
        elif re.fullmatch(r"-?\d+", part) and isinstance(mod, (nn.Sequential, nn.ModuleList)):
            idx = int(part)
            if not -len(mod) <= idx < len(mod):
                return None
            mod = mod[idx]
        else:
            return None
    return mod


def resolve_layer(model: nn.Module, layer: nn.Module | str | None = None) -> nn.Module:
    """The module of ``model`` whose output a CAM method reads.

    Args:
        model: the classifier.
        layer: an ``nn.Module`` inside ``model``; a dotted name such as ``"layer4"``,
            ``"features.29"``, ``"backbone.layer4"`` (negative indices into ``nn.Sequential``
            work: ``"features.-1"`` or ``"features[-1]"``); or ``None`` for the default per
            architecture: ``model.cam_layer`` if the model defines it, else a torchvision
            ResNet's ``layer4``, else a torchvision VGG's last ``features`` module (the last
            max-pool), else the last ``nn.Conv2d`` of the model.

    Raises:
        ValueError: the name is not a module of ``model`` (the message lists close names), the
            module is not part of ``model``, or no default layer can be found.
        TypeError: ``layer`` is neither None, a str nor an nn.Module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(layer, nn.Module):
        if layer_name(model, layer) is None:
            raise ValueError(
                f"layer {type(layer).__name__} is not a submodule of the model "
                f"({type(model).__name__})"
            )
        return layer
    if isinstance(layer, str):
        mod = _lookup_dotted(model, layer)
        if mod is None:
            names = [n for n, _ in model.named_modules() if n]
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            if not close:  # e.g. "layer4" when the model wraps it as "backbone.layer4"
                close = [n for n in names if n.endswith("." + layer.strip("."))][:5]
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            top = ", ".join(n for n, _ in model.named_children())
            raise ValueError(
                f"Unknown layer '{layer}' in {type(model).__name__}.{hint} "
                f"Top-level modules: {top or '(none)'}"
            )
        return mod
    if layer is not None:
        raise TypeError(f"layer must be None, a dotted module name or an nn.Module, got {layer!r}")

    # -- defaults per architecture
    cam_layer = getattr(model, "cam_layer", None)
    if cam_layer is not None:
        return resolve_layer(model, cam_layer)
    from torchvision.models import VGG, ResNet

    for mod in model.modules():
        if isinstance(mod, ResNet):
            return mod.layer4
        if isinstance(mod, VGG):
            return mod.features[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"Cannot choose a default CAM layer for {type(model).__name__}: it has no "
            f"'cam_layer' attribute, is no torchvision ResNet/VGG and has no nn.Conv2d; pass "
            f"layer='dotted.name'"
        )
    return convs[-1]


# ------------------------------------------------------------------------------ helpers
# ------------------------------------------------------------------------------ base class
class _CAMBase(AttributionMethod):
    """Shared machinery of the gradient-weighted CAM family.

    Map for image b and class c: ``ReLU(sum_k w_k^c A_k)`` at the layer's resolution, upsampled
    with ``F.interpolate(mode=interpolation, align_corners=False)`` to the input size, then
    (optionally) min-max normalised per map. Subclasses implement only
    :meth:`_channel_weights`.

    Gradients come from one ``torch.autograd.grad(selected_logits.sum(), A)``: every image's
    logit depends only on its own activation when the classifier is in eval mode (BatchNorm with
    running statistics), so the sum gives each image its own gradient in one backward pass. The
    input is made ``requires_grad`` so a fully frozen classifier still builds a graph. The forward
    hook returns a clone of the layer's output to the rest of the network, so a later in-place op
    (e.g. ``ReLU(inplace=True)`` after a hooked conv) cannot overwrite the captured activation.

    Args:
        model: the classifier, (B, 3, H, W) -> (B, K) logits.
        layer: module or dotted name; ``None`` = the default per architecture (see
            :func:`resolve_layer`).
        normalize: min-max scale each map to [0, 1] after upsampling (default True). A constant
            map (e.g. all zero after the ReLU, when no channel has positive evidence) becomes
            all 0.
        relu: apply the ReLU to the weighted channel sum (default True, as in the papers).
        interpolation: ``F.interpolate`` mode for the upsampling, one of ``bilinear`` (default),
            ``bicubic``, ``nearest``, ``area``; ``align_corners=False`` where it applies.
    """

    needs_gradients = True

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str | None = None,
        normalize: bool = True,
        relu: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        _check_bool("normalize", normalize)
        _check_bool("relu", relu)
        if interpolation not in _INTERPOLATION_MODES:
            raise ValueError(
                f"interpolation must be one of {list(_INTERPOLATION_MODES)}, got {interpolation!r}"
            )
        resolved = resolve_layer(model, layer)
        super().__init__(
            model,
            layer=layer_name(model, resolved),
            normalize=normalize,
            relu=relu,
            interpolation=interpolation,
        )
        self.layer = resolved
        self.normalize = normalize
        self.relu = relu
        self.interpolation = interpolation

    # -- the one thing subclasses change
    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """(N, C, h, w) activations and gradients -> (N, C) channel weights."""
        raise NotImplementedError

    # -- hook
    @contextlib.contextmanager
    def _capture(self) -> Iterator[list[Tensor]]:
        """Record the layer's output during the body; the hook is removed even on error."""
        store: list[Tensor] = []

        def hook(_module: nn.Module, _inp: Any, out: Any) -> Tensor:
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"CAM layer {type(_module).__name__} must output a tensor, got "
                    f"{type(out).__name__}"
                )
            store.append(out)
            return out.clone()

        handle = self.layer.register_forward_hook(hook)
        try:
            yield store
        finally:
            handle.remove()

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass: (logits (B, K), activation (B, C, h, w))."""
        x = images.detach().requires_grad_(True)
        with self._capture() as store:
            logits = self.model(x)
        if len(store) != 1:
            raise ValueError(
                f"CAM layer '{self.options['layer']}' ran {len(store)} times in one forward pass; "
                f"choose a module that runs exactly once"
            )
        act = store[0]
        if act.ndim != 4 or act.shape[0] != images.shape[0]:
            raise ValueError(
                f"CAM layer '{self.options['layer']}' must output (B, C, h, w) with "
                f"B={images.shape[0]}, got {tuple(act.shape)}"
            )
        if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            raise ValueError(f"classifier must return (B, K) logits, got {tuple(logits.shape)}")
        if not act.requires_grad:
            raise ValueError(
                f"CAM layer '{self.options['layer']}' output does not depend on the input "
                f"differentiably (no gradient can flow to it)"
            )
        return logits, act

    def _maps(self, act: Tensor, grads: Tensor, size: tuple[int, int]) -> Tensor:
        """(N, C, h, w) activations and gradients -> (N, H, W) final maps."""
        w = self._channel_weights(act, grads)
        cam = torch.einsum("nc,nchw->nhw", w, act)
        if self.relu:
            cam = cam.clamp(min=0)
        kw = {"align_corners": False} if self.interpolation in ("bilinear", "bicubic") else {}
        cam = F.interpolate(cam[:, None], size=size, mode=self.interpolation, **kw)[:, 0]
        if self.normalize:
            cam = minmax_rescale(cam)
        return cam

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        logits, act = self._forward(images)
        selected = logits.gather(1, targets.view(-1, 1)).sum()
        (grads,) = torch.autograd.grad(selected, act)
        return self._maps(act.detach(), grads, tuple(images.shape[-2:])).detach()

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        """All classes from one forward pass and K backward passes through the retained graph."""
        logits, act = self._forward(images)
        k = logits.shape[1]
        grads = [
            torch.autograd.grad(logits[:, c].sum(), act, retain_graph=c < k - 1)[0]
            for c in range(k)
        ]
        b, ch, h, w = act.shape
        g = torch.stack(grads, dim=1).reshape(b * k, ch, h, w)
        a = act.detach().unsqueeze(1).expand(b, k, ch, h, w).reshape(b * k, ch, h, w)
        maps = self._maps(a, g, tuple(images.shape[-2:]))
        return maps.view(b, k, *images.shape[-2:]).detach()


# ------------------------------------------------------------------------------ methods
class GradCAM(_CAMBase):
    """Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017).

    Definition: ``w_k = mean_{i,j} dY^c/dA_k[i,j]`` (global-average-pooled gradients of the
    target logit ``Y^c``) and ``L = ReLU(sum_k w_k A_k)``, upsampled to the input size.

    Defaults: the layer per architecture of :func:`resolve_layer` (``features.block4`` for
    SmallCNN, ``backbone.features.30`` = VGG-16's last max-pool as in the paper's evaluation,
    ``backbone.layer4`` for ResNet-50), ReLU on, bilinear upsampling with
    ``align_corners=False``, per-map min-max normalisation to [0, 1] after upsampling.

    Deviations: the paper upsamples for visualisation without fixing the interpolation, and
    does not normalise; we normalise after upsampling (``pytorch-grad-cam``, used by the
    paper's benchmark, normalises at the layer resolution and then resizes with OpenCV, which
    changes the values slightly but not their order within a map). The target score is the raw
    logit (multi-label classifier, sigmoid outputs), not a softmax-normalised score. An
    all-zero map after the ReLU is returned as all 0 (not NaN).

    Example:
        >>> import torch
        >>> from attrbench.models.classifiers import SmallCNN
        >>> model = SmallCNN(num_classes=3, widths=(4, 4, 4, 4)).eval()
        >>> cam = GradCAM(model)
        >>> cam.options["layer"]
        'features.block4'
        >>> cam.attribute(torch.randn(2, 3, 32, 32), torch.tensor([0, 2])).shape
        torch.Size([2, 32, 32])
    """

    name = "gradcam"

    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(_CAMBase):
    """Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: Generalized Gradient-Based Visual
    Explanations for Deep Convolutional Networks", WACV 2018).

    Definition: with ``g = dY^c/dA_k[i,j]`` and the exponential score ``S = exp(Y^c)`` of the
    paper (so that for a piecewise-linear network the second and third derivatives of ``S`` are
    ``S g^2`` and ``S g^3``), the closed-form coefficients are (paper eq. 19)

    ``alpha_k[i,j] = g^2 / (2 g^2 + sum_{a,b} A_k[a,b] g^3)``  (0 where the denominator is 0),

    the channel weights ``w_k = sum_{i,j} alpha_k[i,j] ReLU(g)`` and the map
    ``ReLU(sum_k w_k A_k)``, upsampled to the input size.

    Defaults: as :class:`GradCAM` (layer per architecture, ReLU, bilinear upsampling with
    ``align_corners=False``, min-max normalisation after upsampling).

    Deviations: the weights use ``ReLU(dY/dA)`` instead of ``ReLU(dS/dA) = exp(Y) ReLU(dY/dA)``;
    the factor ``exp(Y^c)`` is the same for all channels and pixels of an image, so the
    normalised map is identical and the un-normalised one cannot overflow. Where the
    denominator of ``alpha`` is exactly 0 (``g = 0``) alpha is 0 (no epsilon is added). The
    derivation assumes a piecewise-linear network above the layer (ReLU/max-pool/linear head);
    for other heads the closed form is an approximation, as in the paper.
    """

    name = "gradcam_pp"

    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        nonzero = denom != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), 0.0)
        return (alpha * gradients.clamp(min=0)).sum(dim=(2, 3))
