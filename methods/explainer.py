"""The trained Explainer of Stalder et al. (NeurIPS 2022) and the adapted Real-Time Saliency.

Explainer (Stalder et al. 2022): a segmentation network E trained against the frozen classifier F; the
per-class masks are S = sigmoid(E(x)), so **one forward pass gives every class mask**
(``attribute_all``), and ``attribute`` picks the requested classes out of that same pass.
At test time the runner merges the ground-truth classes' masks by pixel-wise max, which is the
paper's target mask m = sigmoid(max_{k in y} E(x)_k) (sigmoid is monotone, so max and sigmoid
commute). Merge order ``"rescale_then_max"`` (the default; there is no rescale at all).

Both depend on the classifier only through training (``classifier_use = "training"``): the
classifier is not called to make a map, so a model-randomisation test, which re-runs a method on
a randomised classifier, does not apply to them (it would need the network retrained).

Real-Time Saliency (Dabkowski & Gal, NeurIPS 2017), as the paper adapted it: the
same architecture trained with Dabkowski & Gal's loss (``attrbench train explainer --loss
rt-saliency``); inference is identical.

Deviations: the synthetic preset uses a small U-Net whose class logits come from its deep
features (``unet_deep``, on an encoder pretrained on the training labels and then frozen)
instead of an ImageNet DeepLabv3-ResNet50, so that it trains on a CPU (docs/explainer.md);
checkpoints record the classifier they were trained for (a fingerprint of its weights) and
refuse to pair with another.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attrbench.interfaces import AttributionMethod
from attrbench.models import CheckpointError, load_explainer


class Explainer(AttributionMethod):
    """Masks from a trained Explainer network: sigmoid of its K logit maps.

    Args:
        model: the classifier (only used to check the pairing and for the metrics).
        checkpoint: an Explainer checkpoint file; default: the preset's shipped weights.
        preset: the preset (gives the default checkpoint).
        classifier_fingerprint: fingerprint of the classifier's weights; a checkpoint trained
            for another classifier is refused.
    """

    name = "explainer"
    needs_checkpoint = True
    all_classes_at_once = True
    classifier_use = "training"
    loss_name = "explainer"
    _weights_field = "explainer_weights"

    def __init__(self, model: nn.Module, checkpoint: str | None = None, preset: Any = None,
                 classifier_fingerprint: str | None = None) -> None:
        from attrbench.presets import resolve_weights

        path = resolve_weights(str(checkpoint)) if checkpoint else (
            resolve_weights(getattr(preset, self._weights_field, None))
            if preset is not None else None)
        if path is None:
            pname = getattr(preset, "name", "?")
            raise ValueError(
                f"no {self.loss_name} checkpoint for preset '{pname}': pass "
                f"--explainer-checkpoint FILE or train one with 'attrbench train explainer "
                f"--preset {pname}{' --loss rt-saliency' if self.loss_name != 'explainer' else ''}'")
        if classifier_fingerprint is None:
            from attrbench.models import fingerprint

            classifier_fingerprint = fingerprint(model)
        try:
            net, meta = load_explainer(path, classifier_fingerprint, loss=self.loss_name)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
        # the preset's shipped weights are recorded as "package:<file>", not as a local path
        super().__init__(model, checkpoint=str(checkpoint) if checkpoint else
                         getattr(preset, self._weights_field, str(path)))
        self.net = net
        self.meta = meta
        self._num_classes = meta["num_classes"]
        self.forward_calls = 0  # Explainer forward passes (tests check: one per batch)

    def _masks(self, images: Tensor) -> Tensor:
        net = self.net
        p = next(net.parameters())
        if p.device != images.device:
            net.to(images.device)
        self.forward_calls += 1
        with torch.no_grad():
            return torch.sigmoid(net(images))

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        return self._masks(images)

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        # Unique images would save work when an image repeats (one pair per class); the runner
        # uses attribute_all for this method, so keep this simple and exact.
        masks = self._masks(images)
        return masks[torch.arange(images.shape[0], device=images.device), targets]


class RTSaliency(Explainer):
    """Real-Time Saliency (Dabkowski & Gal 2017) in the paper's adaptation: the Explainer
    architecture trained with Dabkowski & Gal's loss."""

    name = "rt_saliency"
    loss_name = "rt_saliency"
    _weights_field = "rt_saliency_weights"
