"""Model-parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity
Checks for Saliency Maps". NeurIPS 2018), cascading variant.

A faithful attribution depends on the model: when the classifier's weights are re-initialised
from the output layer downwards, its maps should change. The score is the absolute Spearman rank
correlation between the original map and the map on the randomised copy (lower = more sensitive
to the model = better). A method that ignores the model (``center``, ``ideal``, the constant
maps) scores 1. A method that depends on the classifier only through training (the Explainer,
RT-Saliency: ``classifier_use = "training"``) is outside the test's protocol: re-running it on a
randomised classifier would need the network retrained, so it is reported as not applicable.

Pure functions: :func:`average_ranks`, :func:`spearman` (batched, average ranks for ties),
:func:`parameterised_layers`, :func:`randomize_layers`.

Example:
    >>> import torch
    >>> spearman(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[10.0, 20.0, 20.0, 5.0]]))
    tensor([-0.3162])
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.interfaces import EvalBatch, Metric, Tolerance

__all__ = [
    "RandomizationSpearman",
    "average_ranks",
    "parameterised_layers",
    "randomize_layers",
    "spearman",
]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def average_ranks(x: Tensor) -> Tensor:
    """(N, D) -> (N, D) float64 ranks (1-based) along dim 1, ties get their average rank.

    One sort per row; tie groups are found by comparing neighbours of the sorted values and
    averaged with ``scatter_reduce`` (no Python loop over values).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    n, d = x.shape
    if d == 0:
        return x.double()
    srt, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(srt, dtype=torch.long)
    new_group[:, 1:] = (srt[:, 1:] != srt[:, :-1]).long()
    gid = new_group.cumsum(1) - 1 + torch.arange(n, device=x.device).view(-1, 1) * d  # (N, D)
    pos = torch.arange(1, d + 1, device=x.device, dtype=torch.float64).expand(n, d)
    mean_pos = torch.zeros(n * d, device=x.device, dtype=torch.float64)
    mean_pos.scatter_reduce_(0, gid.flatten(), pos.flatten(), reduce="mean", include_self=False)
    ranks_sorted = mean_pos[gid]
    ranks = torch.empty_like(ranks_sorted)
    ranks.scatter_(1, order, ranks_sorted)
    return ranks


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each row pair: (N, ...) x (N, ...) -> (N,).

    Pearson correlation of the average ranks (ties averaged, as in ``scipy.stats.spearmanr``).
    NaN when either row contains a non-finite value. A constant row has no ranking: two
    identical rows give 1 (nothing changed, e.g. a constant map on both sides), a constant row
    against a different one gives 0 (no rank association; ``scipy`` returns NaN there).
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must have the same shape (N, ...), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = a.flatten(1), b.flatten(1)
    finite = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    ra = average_ranks(torch.where(finite.view(-1, 1), a, torch.zeros_like(a)))
    rb = average_ranks(torch.where(finite.view(-1, 1), b, torch.zeros_like(b)))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    same = (a == b).all(1)
    rho = torch.where(den > 0, rho, torch.where(same, torch.ones_like(rho), torch.zeros_like(rho)))
    return torch.where(finite, rho, torch.full_like(rho, math.nan)).float()


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in cascading order: from the output down.

    A layer is a module with parameters of its own (``recurse=False``) that is not a
    normalisation layer (BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm); the order is the
    reverse of registration order (``named_modules``), which for sequential networks is the
    reverse of the forward order.
    """
    layers = [(n, m) for n, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _NORM_TYPES)]
    return layers[::-1]


def _reinit(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for p in module.parameters(recurse=False):
            nn.init.normal_(p, std=0.01)


@torch.no_grad()
def randomize_layers(model: nn.Module, names: list[str], seed: int) -> None:
    """Re-initialise the named layers of ``model`` in place, with a seeded generator state
    (``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``: the global RNG is untouched).
    Each layer uses its own ``reset_parameters`` (PyTorch's default initialisation)."""
    mods = dict(model.named_modules())
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for n in names:
            _reinit(mods[n])


class RandomizationSpearman(Metric):
    """Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018). Lower is better.

    The classifier is deep-copied; its parameterised layers (see :func:`parameterised_layers`)
    are re-initialised from the output down, cumulatively, in ``num_layers`` steps (default 3:
    the head; then also the next layer; then also the one below). After each step a new method
    instance of the same class and constructor options (``batch.method.clone(copy)``)
    recomputes every (image, GT class) map with the same seeds, and the Spearman rank
    correlation with the original map (``batch.class_masks``) is taken (:func:`spearman`; a
    constant map against an identical one gives 1). Per-image value: the mean over steps and
    over the image's GT classes of ``|rho|``. After :meth:`update`,
    ``self.rhos[image_id][class_id]`` holds the signed rho per step (for plots); :meth:`reset`
    clears it. Methods with ``classifier_use = "training"`` are not applicable
    (:meth:`not_applicable`); every other registered method is scored.

    Options: ``num_layers=3``; ``seed=0`` (re-initialisation of step s uses ``seed + s``).

    Deviations from the paper: Adebayo et al. randomise Inception-v3 block by block down to the
    input and plot the curve; here a fixed, small number of layers and one summary number.
    Normalisation layers keep their parameters and running statistics (a re-initialised
    BatchNorm in eval mode would change the scale of everything below it). Absolute rho, as in
    the paper's "absolute value of the Spearman rank correlation". The original maps are the
    runner's ``class_masks`` (a monotone normalisation of the method output does not change
    ranks, but clipping to [0, 1] could tie values). Off by default (costs ``num_layers`` extra
    method calls per pair).
    """

    name = "randomization_spearman"
    higher_is_better = False
    version = 2
    definition = "mean |Spearman rho| between maps of the model and of top-down randomised copies"
    regression_tolerance = Tolerance("absolute", 0.04)  # a correlation in [0, 1], from few layers

    def __init__(self, num_layers: int = 3, seed: int = 0) -> None:
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        super().__init__(num_layers=num_layers, seed=seed)
        self.num_layers, self.seed = num_layers, seed
        #: image id -> {class id: [rho after step 1, ..., step num_layers]}
        self.rhos: dict[str, dict[int, list[float]]] = {}
        self._seen = 0

    def reset(self) -> None:
        super().reset()
        self.rhos = {}
        self._seen = 0

    def not_applicable(self, method: Any, name: str = "") -> str | None:
        if getattr(method, "classifier_use", "inference") == "training":
            return ("the method does not call the classifier at inference (trained against it): "
                    "randomising the classifier cannot change its maps without retraining")
        return None

    def pair_rhos(self, batch: EvalBatch) -> Tensor:
        """(P, num_layers) signed Spearman rho of each pair after each randomisation step."""
        if batch.model is None or batch.method is None:
            raise ValueError(f"metric '{self.name}' needs batch.model and batch.method")
        layers = parameterised_layers(batch.model)
        if len(layers) < self.num_layers:
            raise ValueError(f"model has {len(layers)} parameterised layers, num_layers="
                             f"{self.num_layers} asks for more")
        p = batch.class_masks.shape[0]
        dev = batch.images.device
        if p == 0:
            return torch.empty(0, self.num_layers, device=dev)
        pi = batch.pair_image.to(dev).long()
        images = batch.images[pi]
        targets = batch.pair_class.to(dev).long()
        seeds = (batch.seeds.cpu()[pi.cpu()] if batch.seeds is not None
                 else torch.zeros(p, dtype=torch.long))
        gt = batch.pair_gt if batch.method.needs_ground_truth else None
        model_copy = copy.deepcopy(batch.model)
        rhos = []
        for s in range(self.num_layers):
            randomize_layers(model_copy, [layers[s][0]], self.seed + s)
            method = batch.method.clone(model_copy)
            method._num_classes = batch.method._num_classes
            maps = method.attribute(images, targets, gt_masks=gt, seeds=seeds)
            rhos.append(spearman(batch.class_masks.to(dev).float(), maps.float()))
        return torch.stack(rhos, 1)

    def score(self, batch: EvalBatch) -> list[float]:
        if self.not_applicable(batch.method) is not None:
            self._seen += batch.batch_size
            return [math.nan] * batch.batch_size
        rhos = self.pair_rhos(batch)
        b = batch.batch_size
        pi = batch.pair_image.to(rhos.device).long()
        per_pair = rhos.abs().mean(1)
        n = torch.zeros(b, device=rhos.device).index_add_(0, pi, torch.ones_like(per_pair))
        s = torch.zeros(b, device=rhos.device).index_add_(0, pi, per_pair)
        vals = torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan))
        ids = list(batch.image_ids) if len(batch.image_ids) == b else \
            [str(self._seen + i) for i in range(b)]
        self._seen += b
        for k, (i, c) in enumerate(zip(pi.tolist(), batch.pair_class.tolist())):
            self.rhos.setdefault(str(ids[i]), {})[int(c)] = rhos[k].cpu().tolist()
        return vals.tolist()
