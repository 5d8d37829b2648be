"""Adapters that turn third-party attribution classes into attrbench methods.

* ``captum:<Class>`` -> :func:`captum_method` wraps ``captum.attr.<Class>`` (e.g.
  ``captum:IntegratedGradients``, ``captum:Saliency``, ``captum:Occlusion``,
  ``captum:LayerGradCam``).
* ``gradcam-lib:<Class>`` -> :func:`gradcam_lib_method` wraps ``pytorch_grad_cam.<Class>`` (e.g.
  ``gradcam-lib:GradCAM``, ``gradcam-lib:ScoreCAM``); an optional dependency
  (``pip install attrbench[gradcam]``).

Both factories create (once, then cached) a subclass of :class:`AttributionMethod` whose
``name`` is the registry name, so results record exactly which wrapped class produced them.

Merge order: ``"rescale_then_max"`` (the default): each class map is normalised on its own
(``normalize=True``) and an image's maps are merged by pixel-wise max, as the paper does for
Grad-CAM; no reference code merges these methods otherwise.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrbench.interfaces import AttributionMethod
from attrbench.methods.cam import layer_name, resolve_layer
from attrbench.ops import minmax_rescale

__all__ = ["REDUCTIONS", "captum_method", "gradcam_lib_method", "reduce_channels"]

REDUCTIONS = ("abs_sum", "sum", "max_abs")


def reduce_channels(attr: Tensor, reduction: str) -> Tensor:
    """(B, C, h, w) attributions -> (B, h, w) maps.

    ``abs_sum``: sum over channels of ``|attr|``; ``sum``: signed sum over channels;
    ``max_abs``: max over channels of ``|attr|``.
    """
    if reduction == "abs_sum":
        return attr.abs().sum(dim=1)
    if reduction == "sum":
        return attr.sum(dim=1)
    if reduction == "max_abs":
        return attr.abs().amax(dim=1)
    raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")


def _did_you_mean(kind: str, name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    msg = f"Unknown {kind} '{name}'."
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    return msg + f" Available: {', '.join(candidates)}"


def _params(fn: Any, skip: int) -> tuple[list[str], bool]:
    """Parameter names of ``fn`` after the first ``skip`` ones, and whether it takes **kwargs."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return names, var_kw


def _split_options(
    kind: str,
    options: dict[str, Any],
    ctor: tuple[list[str], bool],
    call: tuple[list[str], bool],
    reserved: set[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route options to the wrapped class's constructor or its call by parameter name."""
    ctor_kw: dict[str, Any] = {}
    call_kw: dict[str, Any] = {}
    for key, value in options.items():
        if key in reserved:
            raise ValueError(f"option '{key}' of {kind} is set by attrbench and cannot be passed")
        if key in ctor[0]:
            ctor_kw[key] = value
        elif key in call[0] or call[1]:
            call_kw[key] = value
        else:
            allowed = sorted((set(ctor[0]) | set(call[0])) - reserved)
            raise TypeError(
                f"{kind} got an unexpected option '{key}'; expected one of {allowed} or "
                f"layer/reduction/normalize"
            )
    return ctor_kw, call_kw


def _to_map(attr: Tensor, images: Tensor, reduction: str, normalize: bool) -> Tensor:
    """Reduce, upsample (bilinear, align_corners=False) and normalise an attribution."""
    b, _, h, w = images.shape
    if attr.ndim == 3:
        attr = attr[:, None]
    if attr.ndim != 4 or attr.shape[0] != b:
        raise ValueError(
            f"wrapped method returned shape {tuple(attr.shape)}; expected (B, C, h, w) with B={b}"
        )
    m = reduce_channels(attr.float(), reduction)
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return minmax_rescale(m) if normalize else m


def _check_common(layer: Any, reduction: Any, normalize: Any) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise TypeError(f"layer must be None, a dotted module name or an nn.Module, got {layer!r}")


# ------------------------------------------------------------------------------------ captum
class _CaptumMethod(AttributionMethod):
    """Base of the generated ``captum:<Class>`` methods (see :func:`captum_method`)."""

    needs_gradients = True
    captum_class: ClassVar[type]
    takes_layer: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: nn.Module | str | None = None,
        reduction: str = "abs_sum",
        normalize: bool = True,
        **options: Any,
    ) -> None:
        _check_common(layer, reduction, normalize)
        kind = self.name
        if layer is not None and not self.takes_layer:
            raise ValueError(f"{kind} takes no layer; got layer={layer!r}")
        if options.get("return_convergence_delta"):
            raise ValueError(f"{kind}: return_convergence_delta=True is not supported")
        ctor = _params(self.captum_class.__init__, 2)  # self, forward_func/model
        call = _params(self.captum_class.attribute, 2)  # self, inputs
        self._ctor_kw, self._call_kw = _split_options(
            kind, options, ctor, call, reserved={"layer", "target", "inputs", "forward_func"}
        )
        self.layer = resolve_layer(model, layer) if self.takes_layer else None
        recorded: dict[str, Any] = {}
        if self.layer is not None:
            recorded["layer"] = layer_name(model, self.layer)
        super().__init__(model, **recorded, reduction=reduction, normalize=normalize, **options)
        self.reduction = reduction
        self.normalize = normalize

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        if targets.shape[0] != images.shape[0]:  # the public API checks too; never broadcast
            raise ValueError(
                f"{self.name}: got {targets.shape[0]} targets for {images.shape[0]} images"
            )
        args = (self.model, self.layer) if self.takes_layer else (self.model,)
        explainer = self.captum_class(*args, **self._ctor_kw)
        # a private copy: third-party code toggles requires_grad on its inputs
        x = images.detach().clone()
        if not self.black_box:
            x.requires_grad_(True)
        attr = explainer.attribute(x, target=targets, **self._call_kw)
        if isinstance(attr, tuple):
            attr = attr[0]
        return _to_map(attr.detach(), images, self.reduction, self.normalize)


_CAPTUM_CACHE: dict[str, type[AttributionMethod]] = {}


_UNSUPPORTED_PREFIXES = ("Neuron", "LLM", "RemoteLLM")


def _captum_candidates() -> dict[str, type]:
    import captum.attr as ca

    out = {}
    for n in ca.__all__:
        obj = getattr(ca, n, None)
        if not (isinstance(obj, type) and issubclass(obj, ca.Attribution)):
            continue
        if inspect.isabstract(obj) or n in {
            "Attribution",
            "GradientAttribution",
            "PerturbationAttribution",
            "LayerAttribution",
            "NeuronAttribution",
        }:
            continue
        try:
            call, _ = _params(obj.attribute, 2)
        except (TypeError, ValueError):
            continue
        # excludes NoiseTunnel (wraps a method), LayerActivation (no target); Neuron* explain a
        # neuron, LLM* explain text generation, LimeBase needs user-written mapping functions
        if "target" in call and not n.startswith(_UNSUPPORTED_PREFIXES) and n != "LimeBase":
            out[n] = obj
    return out


def captum_method(class_name: str) -> type[AttributionMethod]:
    """The attrbench method class wrapping ``captum.attr.<class_name>`` (created once, cached).

    The generated class is called as ``cls(model, layer=None, reduction="abs_sum",
    normalize=True, **options)``. Each option goes to the captum constructor if it names one
    of its parameters (e.g. ``multiply_by_inputs``), else to ``attribute()`` (e.g.
    ``n_steps=32``, ``baselines=0.0``, Occlusion's ``sliding_window_shapes=(3, 8, 8)`` and
    ``strides``); unknown options raise TypeError. ``target`` is always the (B,) target tensor,
    one class per image.

    Classes that take a layer (``Layer*``, ``GuidedGradCam``) get ``layer`` resolved with
    :func:`~attrbench.methods.cam.resolve_layer` (``None`` = the model's default CAM layer).

    Reduction to one map per image: the attribution (B, C, h, w) is reduced over channels with
    ``reduction`` (``abs_sum`` = sum of ``|attr|``, the default; ``sum``; ``max_abs``),
    upsampled bilinearly (``align_corners=False``) to the input size when a layer method
    returns a smaller map, then min-max normalised per map when ``normalize=True`` (a constant
    map becomes all 0). Note that ``abs_sum`` turns negative evidence into positive saliency;
    use ``reduction="sum"`` (and e.g. ``relu_attributions=True`` for LayerGradCam) to keep signs.

    Perturbation classes (Occlusion, FeatureAblation, Lime, ...) are marked ``black_box``.
    Classes without a per-image ``target`` (NoiseTunnel, LayerActivation, Neuron*, LLM*) and
    LimeBase (needs user-written mapping functions) are not supported.

    Raises:
        ValueError: unknown or unsupported class, with a did-you-mean suggestion.
    """
    if class_name in _CAPTUM_CACHE:
        return _CAPTUM_CACHE[class_name]
    import captum.attr as ca

    cands = _captum_candidates()
    real = class_name if class_name in cands else None
    if real is None:  # case-insensitive exact match, e.g. "captum:integratedgradients"
        lower = [n for n in cands if n.lower() == class_name.lower()]
        real = lower[0] if len(lower) == 1 else None
    if real is None:
        if class_name in getattr(ca, "__all__", ()):
            raise ValueError(
                f"captum class '{class_name}' is not supported by the adapter (it is no "
                f"per-target attribution method). Supported: {', '.join(sorted(cands))}"
            )
        raise ValueError(_did_you_mean("captum attribution class", class_name, sorted(cands)))
    if real in _CAPTUM_CACHE:
        _CAPTUM_CACHE[class_name] = _CAPTUM_CACHE[real]
        return _CAPTUM_CACHE[real]
    target_cls = cands[real]
    takes_layer = "layer" in _params(target_cls.__init__, 1)[0]
    black_box = issubclass(target_cls, ca.PerturbationAttribution) and not issubclass(
        target_cls, ca.LayerAttribution
    )
    doc = (
        f"``captum.attr.{real}`` as an attrbench method (registry name ``captum:{real}``).\n\n"
        + (captum_method.__doc__ or "")
    )
    cls = type(
        f"Captum{real}",
        (_CaptumMethod,),
        {
            "name": f"captum:{real}",
            "captum_class": target_cls,
            "takes_layer": takes_layer,
            "black_box": black_box,
            "__doc__": doc,
            "__module__": __name__,
        },
    )
    _CAPTUM_CACHE[real] = _CAPTUM_CACHE[class_name] = cls
    return cls


# ------------------------------------------------------------------------------- gradcam-lib
def _import_gradcam_lib() -> Any:
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise ImportError(
            "gradcam-lib:<Class> methods need the optional dependency 'grad-cam': "
            "pip install attrbench[gradcam]"
        ) from exc
    return pytorch_grad_cam


class _GradCamLibMethod(AttributionMethod):
    """Base of the generated ``gradcam-lib:<Class>`` methods (see :func:`gradcam_lib_method`)."""

    needs_gradients = True
    cam_class: ClassVar[type]

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: nn.Module | str | None = None,
        normalize: bool = True,
        **options: Any,
    ) -> None:
        _check_common(layer, "abs_sum", normalize)
        ctor = _params(self.cam_class.__init__, 3)  # self, model, target_layers
        call = _params(self.cam_class.__call__, 2)  # self, input_tensor
        self._ctor_kw, self._call_kw = _split_options(
            self.name, options, ctor, call, reserved={"targets", "target_layers", "model"}
        )
        self.layer = resolve_layer(model, layer)
        super().__init__(model, layer=layer_name(model, self.layer), normalize=normalize, **options)
        self.normalize = normalize

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        b = images.shape[0]
        if targets.ndim != 1 or targets.shape[0] != b:
            # the library zips targets with outputs and silently returns zeros for the rest
            raise ValueError(f"{self.name}: got {tuple(targets.shape)} targets for {b} images")
        tgts = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]
        # The library puts the model into eval mode and accumulates parameter .grad; the
        # caller's model_state_guard restores both. It is not used as a context manager because
        # its __exit__ swallows IndexError; the hooks are released in our finally instead.
        cam = self.cam_class(self.model, [self.layer], **self._ctor_kw)
        try:
            x = images.detach().clone().requires_grad_(True)  # frozen models still get a graph
            out = cam(x, targets=tgts, **self._call_kw)
        finally:
            cam.activations_and_grads.release()
        # the library computes in numpy on the CPU; bring the maps back to the input's device
        maps = torch.as_tensor(out, dtype=torch.float32).to(images.device)
        if maps.shape != (b, *images.shape[-2:]):
            raise ValueError(
                f"{self.name} returned shape {tuple(maps.shape)}, expected "
                f"{(b, *images.shape[-2:])}"
            )
        return minmax_rescale(maps) if self.normalize else maps


_GRADCAM_CACHE: dict[str, type[AttributionMethod]] = {}


def gradcam_lib_method(class_name: str) -> type[AttributionMethod]:
    """The attrbench method class wrapping ``pytorch_grad_cam.<class_name>`` (cached).

    Called as ``cls(model, layer=None, normalize=True, **options)``: ``layer`` is resolved with
    :func:`~attrbench.methods.cam.resolve_layer` and passed as ``target_layers=[layer]``;
    options that name constructor parameters (e.g. ``reshape_transform``) go to the
    constructor, the others to the call (e.g. ``aug_smooth``, ``eigen_smooth``). Targets are
    passed as one ``ClassifierOutputTarget(int(t))`` per image; a count that differs from the
    batch size raises ValueError (the library itself would silently return zero maps).

    The library applies a ReLU, min-max normalises each map at the layer resolution and resizes
    it with OpenCV; it round-trips through numpy on the CPU, so this adapter is slower than the
    native :class:`~attrbench.methods.cam.GradCAM` on a GPU. Its numpy output is converted back
    to a tensor on the input's device and (``normalize=True``) min-max normalised again, which
    only removes the library's 1e-7 epsilon.

    Raises:
        ImportError: grad-cam is not installed ("pip install attrbench[gradcam]").
        ValueError: unknown class, with a did-you-mean suggestion.
    """
    if class_name in _GRADCAM_CACHE:
        return _GRADCAM_CACHE[class_name]
    lib = _import_gradcam_lib()
    from pytorch_grad_cam.base_cam import BaseCAM

    cands = sorted(
        n
        for n in dir(lib)
        if isinstance(getattr(lib, n), type)
        and issubclass(getattr(lib, n), BaseCAM)
        and getattr(lib, n) is not BaseCAM
    )
    if class_name not in cands:
        raise ValueError(_did_you_mean("pytorch_grad_cam CAM class", class_name, cands))
    cls = type(
        f"GradCamLib{class_name}",
        (_GradCamLibMethod,),
        {
            "name": f"gradcam-lib:{class_name}",
            "cam_class": getattr(lib, class_name),
            "__doc__": (
                f"``pytorch_grad_cam.{class_name}`` as an attrbench method (registry name "
                f"``gradcam-lib:{class_name}``).\n\n" + (gradcam_lib_method.__doc__ or "")
            ),
            "__module__": __name__,
        },
    )
    _GRADCAM_CACHE[class_name] = cls
    return cls
