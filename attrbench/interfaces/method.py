"""The method interface: :class:`AttributionMethod`, the base class of every attribution method,
and the helpers it runs on (:func:`model_state_guard`, :func:`infer_num_classes`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..checks import check_fraction, check_positive
from ..ops import minmax_rescale
from ..rundir import clean_json
from .batch import EvalBatch

__all__ = [
    "CLASSIFIER_USES",
    "MERGE_ORDERS",
    "AttributionMethod",
    "infer_num_classes",
    "model_state_guard",
]

#: Merge orders of an image's class maps (:attr:`AttributionMethod.merge`).
MERGE_ORDERS = ("rescale_then_max", "max_then_rescale")
#: How a method uses the classifier (:attr:`AttributionMethod.classifier_use`).
CLASSIFIER_USES = ("inference", "training", "none")


def infer_num_classes(model: nn.Module, image_size: int = 32, device: torch.device | None = None) -> int:
    """Number of logits of ``model``: its ``num_classes`` attribute, else one probe forward."""
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and k > 0:
        return k
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    with torch.no_grad():
        out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    if out.ndim != 2:
        raise ValueError(f"classifier must return (B, K) logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def _all_hook_dicts(module: nn.Module) -> list[dict]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return [getattr(module, n) for n in names if hasattr(module, n)]


@contextlib.contextmanager
def model_state_guard(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval flags, ``requires_grad`` flags, parameter ``.grad`` and
    hooks on exit, even when the body raises.

    This is a safety net: methods remove their own hooks in ``finally`` blocks, and the contract
    tests check that; the guard makes a buggy third-party method unable to leak state into the
    next method's numbers.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    hooks = [(d, set(d.keys())) for m in model.modules() for d in _all_hook_dicts(m)]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req, g in grads:
            p.requires_grad_(req)
            p.grad = g
        for d, keys in hooks:
            for k in list(d.keys()):
                if k not in keys:
                    del d[k]


class AttributionMethod:
    """Base class of every attribution method.

    Subclasses implement :meth:`_attribute` (and optionally :meth:`_attribute_all`). The public
    :meth:`attribute` validates the inputs, runs the subclass under :func:`model_state_guard`
    with gradients enabled only if the method needs them, and checks the output.

    Contract:
        ``attribute(images (B,3,H,W) float, targets (B,) long) -> (B,H,W) float`` on the input's
        device, at input resolution. Hyperparameters go to ``__init__``, are validated there and
        are exposed by :attr:`options` (recorded in the results).

    Class attributes describe what the method needs:
        ``black_box`` (only forward passes of the classifier), ``needs_gradients``,
        ``needs_checkpoint`` (a trained network of its own), ``needs_ground_truth`` (the
        ``ideal`` sanity row), ``stochastic`` (draws random numbers; then seeded); and what the
        rest of the code needs to know about it: ``sanity`` (a reference row, not a method
        under test), ``class_specificity`` (covered by the class-specificity protocol).

    ``merge`` says how the runner turns an image's class maps into the one merged map of the
    image-level metrics, following each method's reference code:

    * ``"rescale_then_max"`` (default): every class map is final as returned (a method that
      rescales does so per class) and the merged map is their pixel-wise maximum;
    * ``"max_then_rescale"``: ``_attribute`` returns the maps *before* the final per-map
      rescale (:meth:`rescale`); the merged map is ``rescale(max over classes of those maps)``
      and each class map is ``rescale(map)``. Set by Extremal Perturbations and Guided
      Backprop, whose reference code takes the maximum first.

    ``classifier_use`` says how the method depends on the classifier: ``"inference"`` (calls it
    to make a map; the default), ``"training"`` (a network trained against the classifier that
    does not call it at inference: the Explainer, RT-Saliency; a model-randomisation test does
    not apply to it) or ``"none"`` (ignores it: the sanity rows).
    """

    name: ClassVar[str] = "base"
    black_box: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    needs_checkpoint: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    #: A method whose ``attribute_all`` costs about one ``attribute`` call (RISE, Explainer).
    all_classes_at_once: ClassVar[bool] = False
    #: Order of the multi-class merge (see the class docstring): one of :data:`MERGE_ORDERS`.
    merge: ClassVar[str] = "rescale_then_max"
    #: How the method depends on the classifier: one of :data:`CLASSIFIER_USES`.
    classifier_use: ClassVar[str] = "inference"
    #: A sanity reference (constant, random, centre, ideal maps), not a method under test:
    #: tables never call it the best method of a column unless only such rows are present.
    sanity: ClassVar[bool] = False
    #: Whether the class-specificity protocol covers the method. False for methods whose
    #: per-class optimisation makes a mask for every class of every image prohibitively
    #: expensive (the paper leaves out Extremal Perturbations and iGOS++).
    class_specificity: ClassVar[bool] = True

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.options: dict[str, Any] = dict(options)
        #: the constructor's options exactly as given (``options`` may gain resolved values)
        self.init_options: dict[str, Any] = dict(options)
        self._num_classes: int | None = None

    def clone(self, model: nn.Module) -> AttributionMethod:
        """A new instance of the same class and constructor options on another ``model`` (the
        model-randomisation test rebuilds methods this way). Values a method resolved at call
        time and recorded in :attr:`options` are not passed back."""
        return type(self)(model, **self.init_options)

    def rescale(self, maps: Tensor) -> Tensor:
        """The final per-map rescale of a ``"max_then_rescale"`` method (default: min-max to
        [0, 1], a constant map becomes all 0). Not used by ``"rescale_then_max"`` methods."""
        return minmax_rescale(maps)

    def merge_pairs(self, maps: Tensor, pair_image: Tensor, batch_size: int
                    ) -> tuple[Tensor, Tensor]:
        """``(class_masks, merged)`` from the (P, H, W) maps ``attribute(..., rescale=False)``
        returned for the (image, class) pairs, in this method's :attr:`merge` order."""
        if self.merge == "max_then_rescale":
            return self.rescale(maps), self.rescale(EvalBatch.merge(maps, pair_image, batch_size))
        return maps, EvalBatch.merge(maps, pair_image, batch_size)

    # -- helpers for subclasses
    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = infer_num_classes(self.model)
        return self._num_classes

    # option checks for subclasses (attrbench.checks)
    _check_positive = staticmethod(check_positive)
    _check_fraction = staticmethod(check_fraction)

    def _validate(self, images: Tensor, targets: Tensor | None) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating tensor, got {images.dtype}")
        if targets is None:
            return
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must have shape (B,) = ({images.shape[0]},) to match the images, "
                f"got {tuple(targets.shape)}"
            )
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ValueError(
                f"targets must be class ids in [0, {self.num_classes - 1}], got "
                f"{targets.tolist()}"
            )

    # -- public API
    def attribute(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        gt_masks: Tensor | None = None,
        seeds: Tensor | None = None,
        rescale: bool = True,
    ) -> Tensor:
        """One saliency map per (image, target class).

        Args:
            images: (B, 3, H, W) normalised images.
            targets: (B,) class ids, one per image.
            gt_masks: (B, H, W) ground-truth masks of the targets; used only by methods with
                ``needs_ground_truth`` (the ``ideal`` sanity row).
            seeds: (B,) per-image integer seeds for stochastic methods, so that the result of an
                image does not depend on the batch it is in. Default: ``0`` for every image.
            rescale: False returns a ``"max_then_rescale"`` method's maps before its final
                per-map :meth:`rescale` (for the merge); other methods ignore it.

        Returns:
            (B, H, W) float maps on the images' device.
        """
        self._validate(images, targets)
        if self.needs_ground_truth and gt_masks is None:
            raise ValueError(f"method '{self.name}' needs gt_masks (B, H, W)")
        targets = targets.to(device=images.device, dtype=torch.long)
        if seeds is None:
            seeds = torch.zeros(images.shape[0], dtype=torch.long)
        with model_state_guard(self.model), torch.set_grad_enabled(self.needs_gradients):
            out = self._attribute(images.detach(), targets, gt_masks=gt_masks, seeds=seeds)
        b, _, h, w = images.shape
        if out.shape != (b, h, w):
            raise RuntimeError(
                f"method '{self.name}' returned shape {tuple(out.shape)}, expected {(b, h, w)}"
            )
        out = out.detach().float()
        if rescale and self.merge == "max_then_rescale":
            out = self.rescale(out)
        return out

    def attribute_all(self, images: Tensor, *, seeds: Tensor | None = None,
                      rescale: bool = True) -> Tensor:
        """Maps for every class: (B, K, H, W). Default: one :meth:`attribute` call per class."""
        self._validate(images, None)
        if seeds is None:
            seeds = torch.zeros(images.shape[0], dtype=torch.long)
        with model_state_guard(self.model), torch.set_grad_enabled(self.needs_gradients):
            out = self._attribute_all(images.detach(), seeds=seeds)
        b, _, h, w = images.shape
        if out.shape != (b, self.num_classes, h, w):
            raise RuntimeError(
                f"method '{self.name}' returned shape {tuple(out.shape)} from attribute_all, "
                f"expected {(b, self.num_classes, h, w)}"
            )
        out = out.detach().float()
        if rescale and self.merge == "max_then_rescale":
            out = self.rescale(out.flatten(0, 1)).view_as(out)
        return out

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        raise NotImplementedError

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        if self.needs_ground_truth:
            raise ValueError(f"method '{self.name}' cannot produce masks without ground truth")
        b = images.shape[0]
        maps = []
        for k in range(self.num_classes):
            t = torch.full((b,), k, dtype=torch.long, device=images.device)
            maps.append(self._attribute(images, t, gt_masks=None, seeds=seeds))
        return torch.stack(maps, dim=1)

    def describe(self) -> dict[str, Any]:
        """Name, class attributes and options, as recorded in the results."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "black_box": self.black_box,
            "needs_gradients": self.needs_gradients,
            "stochastic": self.stochastic,
            "merge": self.merge,
            "classifier_use": self.classifier_use,
            "sanity": self.sanity,
            "options": clean_json(dict(self.options)),
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
