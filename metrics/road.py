"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci. "A Consistent and Efficient
Evaluation Strategy for Attribution Methods". ICML 2022).

ROAD removes a fraction of the pixels of an image in saliency order and fills them by **noisy
linear imputation**: every removed pixel takes the weighted mean of its 8 neighbours (weight
1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours), removed neighbours included, so
the removed pixels solve one sparse linear system per image, and Gaussian noise is added to
them. The imputed values carry little information about *which* pixels were removed, which
debiases the perturbation curve (a model cannot read the removal mask off the filled image the
way it reads the shape of a mean-colour hole). The curve is the target score as a function of
the removed fraction; MoRF removes the most relevant pixels first (a good map makes the score
drop fast: lower is better), LeRF the least relevant first (a good map keeps the score: higher
is better).

Pure batched functions, all on the images' device:

* :func:`removal_counts` — how many pixels each removal fraction removes.
* :func:`removal_masks` — the (P, S, H, W) removed pixels of every pair and fraction.
* :func:`linear_imputation` — the noise-free imputation: a batched Jacobi-preconditioned
  conjugate-gradient solve of the masked system (no per-pixel loop, no numpy).
* :func:`road_curves` — the (P, S) score curves: removal, imputation, seeded noise and
  classifier forwards, in chunks of ``batch_size`` (pair, fraction) items.
* :func:`road_auc` — the mean of a curve over its removal fractions.

The :class:`~attrbench.interfaces.Metric` classes :class:`ROADMoRF` (``road_morf``) and
:class:`ROADLeRF` (``road_lerf``) call them on an :class:`~attrbench.interfaces.EvalBatch`.

Example:
    >>> import torch
    >>> ramp = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)   # a linear ramp
    >>> removed = torch.zeros(1, 4, 4, dtype=torch.bool)
    >>> removed[0, 1:3, 1:3] = True                                      # the 2 x 2 centre
    >>> out = linear_imputation(ramp, removed, tol=1e-7)
    >>> torch.allclose(out, ramp, atol=1e-4)                  # linear functions are reproduced
    True
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrbench.checks import check_nonneg as _check_nonneg
from attrbench.interfaces import EvalBatch, Metric, Tolerance
from attrbench.metrics.perturbation import (
    SCORES,
    _check_choice,
    _check_int,
    _finite_maps,
    saliency_ranks,
)
from attrbench.ops import keep_pair_curves, pair_mean

__all__ = [
    "DEFAULT_FRACTIONS",
    "ORDERS",
    "ROADLeRF",
    "ROADMoRF",
    "linear_imputation",
    "neighbour_sum",
    "removal_counts",
    "removal_masks",
    "road_auc",
    "road_curves",
]

#: Removal fractions: pytorch-grad-cam's percentiles 10, 20, ..., 90 %.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: ``"morf"``: most relevant first; ``"lerf"``: least relevant first.
ORDERS: tuple[str, ...] = ("morf", "lerf")


# ------------------------------------------------------------------------------------ helpers
def _check_fractions(fractions: Any) -> tuple[float, ...]:
    ok = isinstance(fractions, (list, tuple)) and len(fractions) > 0 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in fractions)
    ok = ok and all(a < b for a, b in itertools.pairwise(fractions))
    if not ok:
        raise ValueError("fractions must be a non-empty increasing list of numbers in (0, 1), "
                         f"got {fractions!r}")
    return tuple(float(f) for f in fractions)


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def removal_counts(num_pixels: int, fractions: Sequence[float],
                   device: torch.device | str | None = None) -> Tensor:
    """(S,) long: fraction ``f`` removes ``round(f * HW)`` pixels (half up).

    Example:
        >>> removal_counts(10, (0.1, 0.25, 0.5)).tolist()
        [1, 3, 5]
    """
    _check_int("num_pixels", num_pixels)
    f = torch.tensor(_check_fractions(fractions), dtype=torch.float64, device=device)
    return torch.floor(f * num_pixels + 0.5).long()


def removal_masks(maps: Tensor, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  order: str = "morf") -> Tensor:
    """(P, H, W) saliency maps -> (P, S, H, W) bool, True where fraction ``s`` removes the pixel.

    Pixels are ranked by decreasing saliency with ties broken in raster order
    (:func:`~attrbench.metrics.perturbation.saliency_ranks`, as deletion/insertion); ``"morf"``
    removes the first ``n_s`` pixels of that order, ``"lerf"`` the last ``n_s``
    (:func:`removal_counts`). A constant map thus removes whole rows from the top (MoRF) or the
    bottom (LeRF).
    """
    _check_choice("order", order, ORDERS)
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"maps must be a (P, H, W) tensor, got {_shape(maps)}")
    p, h, w = maps.shape
    counts = removal_counts(h * w, fractions, device=maps.device).view(1, -1, 1, 1)
    ranks = saliency_ranks(maps, torch.long).view(p, 1, h, w)
    if order == "morf":
        return ranks < counts
    return ranks >= h * w - counts


def neighbour_sum(x: Tensor) -> Tensor:
    """``12 x`` times the ROAD neighbour average, unnormalised: for (N, C, H, W) ``x``, the sum
    over the 8 neighbours with weights 2 (direct) and 1 (diagonal), zero outside the image.

    Computed as the separable ``[1, 2, 1] x [1, 2, 1]`` stencil minus 4 times the centre, by
    adds of shifted slices of the zero-padded input (several times faster on a CPU than a
    one-channel ``conv2d``).
    """
    xp = F.pad(x, (1, 1, 1, 1))
    hs = torch.add(xp[..., :-2], xp[..., 2:]).add_(xp[..., 1:-1], alpha=2)
    vs = torch.add(hs[..., :-2, :], hs[..., 2:, :]).add_(hs[..., 1:-1, :], alpha=2)
    return vs.sub_(x, alpha=4.0)


def _separable_sum(buf: Tensor, row: int, length: int, hs: Tensor, out: Tensor) -> Tensor:
    """The ``[1, 2, 1] x [1, 2, 1]`` stencil in the solver's flat layout, into ``out``.

    ``buf`` is (N, length + 2 (row + 1)): per item, the zero-padded (H + 2, W + 2) grids of its
    channels flattened one after the other (``row = W + 2``), with ``row + 1`` zeros on both
    ends. Writes (N, length) into ``out``: the stencil at every position of the padded grids
    (meaningful at the interior pixels, whose 8 neighbours lie in their own padded grid; the
    padding positions get values the caller masks out). Every add is over contiguous memory, into
    preallocated buffers (``hs``: (N, length + 2 row)), so that the solver's loop allocates
    nothing large.
    """
    torch.add(buf[:, :-2], buf[:, 2:], out=hs)  # hs[i]: horizontal stencil at position i + 1
    hs.add_(buf[:, 1:-1], alpha=2)
    torch.add(hs[:, :length], hs[:, 2 * row:2 * row + length], out=out)
    return out.add_(hs[:, row:row + length], alpha=2)


# ---------------------------------------------------------------------------------- imputation
#: items per solver sub-batch (a sub-batch's CG vectors of 64-px images fit a CPU's cache)
_SUB_BATCH = 32


def _solve(images: Tensor, removed: Tensor, tol: float, max_iter: int,
           check_every: int) -> tuple[Tensor, float]:
    """:func:`linear_imputation` of one sub-batch: (images, worst relative residual left)."""
    h, w = images.shape[-2:]
    dt, dev = images.dtype, images.device
    m4 = removed.to(device=dev, dtype=dt).unsqueeze(1)  # (N,1,H,W)
    out = images * (1 - m4)
    full = removed.flatten(1).all(dim=1)
    active = (removed.flatten(1).any(dim=1) & ~full).nonzero().squeeze(1)
    if active.numel() == 0:
        return out, 0.0
    # Flat layout: per item, its channels' zero-padded (H+2, W+2) grids one after the other
    # (length K), and for the search direction ``row + 1`` zeros at both ends, so that the
    # stencil is a few adds of contiguous shifted slices (_separable_sum).
    c = images.shape[1]
    row = w + 2
    k = c * (h + 2) * row
    marg = row + 1

    def flat(t: Tensor) -> Tensor:  # (n, c', H, W) -> (n, c' (H+2)(W+2))
        return F.pad(t, (1, 1, 1, 1)).flatten(1)

    # all weights scaled by 12 (2 direct, 1 diagonal): CG is invariant to the scaling.
    # op(u) = m (D u - N(u)) = m ((D + 4) u - S(u)), S the separable [1,2,1]x[1,2,1] stencil
    diag = neighbour_sum(torch.ones(1, 1, h, w, device=dev, dtype=dt))  # (1,1,H,W)
    m = flat(m4[active]).repeat(1, c)  # (n, K), 0 on the padding
    md4 = m * flat(diag + 4).repeat(1, c)
    inv_diag = flat(1.0 / diag).repeat(1, c)
    src = out[active]
    b = m * flat(neighbour_sum(src))
    # start from each channel's mean over the kept pixels: removes the large constant error
    kept = 1 - m4[active]
    mean = src.sum((2, 3), keepdim=True) / kept.sum((2, 3), keepdim=True)
    pbuf = torch.zeros(len(active), k + 2 * marg, device=dev, dtype=dt)
    p = pbuf[:, marg:marg + k]
    x = m * flat(mean.expand_as(src))

    nact = len(active)
    hs_buf = torch.empty(nact, k + 2 * row, device=dev, dtype=dt)
    ap_buf = torch.empty(nact, k, device=dev, dtype=dt)
    z_buf = torch.empty(nact, k, device=dev, dtype=dt)
    neg_m = -m

    def op(nb: int) -> Tensor:  # op(p) into ap_buf[:nb], p living in pbuf
        ap = _separable_sum(pbuf, row, k, hs_buf[:nb], ap_buf[:nb])
        return ap.mul_(neg_m).addcmul_(md4, p)

    p.copy_(x)
    r = b - op(nact)
    z = torch.mul(r, inv_diag, out=z_buf)
    p.copy_(z)
    rz = torch.linalg.vecdot(r, z).unsqueeze(1)
    bnorm = b.norm(dim=1)
    idx = active
    worst = 0.0
    for it in range(max_iter + 1):
        if it % check_every == 0 or it == max_iter:
            rel = r.norm(dim=1) / bnorm.clamp_min(1e-30)
            done = (rel <= tol) | (bnorm == 0)
            if it == max_iter:
                worst = float(rel.max()) if rel.numel() else 0.0
                done = torch.ones_like(done)
            if bool(done.any()):
                sol = x[done].view(-1, c, h + 2, row)[..., 1:-1, 1:-1]
                out[idx[done]] += sol
                keep = ~done
                if not bool(keep.any()):
                    break
                idx, neg_m, md4, x, r, pbuf, rz, bnorm = (
                    t[keep] for t in (idx, neg_m, md4, x, r, pbuf, rz, bnorm))
                p = pbuf[:, marg:marg + k]
        nb = len(idx)
        ap = op(nb)
        pap = torch.linalg.vecdot(p, ap).unsqueeze(1)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-30), torch.zeros_like(pap))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        z = torch.mul(r, inv_diag, out=z_buf[:nb])
        rz_new = torch.linalg.vecdot(r, z).unsqueeze(1)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p.mul_(beta).add_(z)
        rz = rz_new
    return out, worst


@torch.no_grad()
def linear_imputation(images: Tensor, removed: Tensor, *, tol: float = 1e-4,
                      max_iter: int | None = None, check_every: int = 8) -> Tensor:
    """ROAD's linear imputation (without noise), batched.

    Every removed pixel ``i`` equals the weighted mean of its in-image neighbours ``j``:
    ``x_i = sum_j w_ij x_j / sum_j w_ij`` with ``w = 1/6`` for the 4 direct and ``1/12`` for the
    4 diagonal neighbours (a neighbour outside the image is left out and the weights of the others
    renormalised, as in the reference code); kept pixels keep their value. All channels use the
    same system. The removed pixels of an item form a symmetric positive-definite system (an
    M-matrix: every connected removed region touches a kept pixel unless all pixels are
    removed), solved for all items and channels at once by the conjugate-gradient method with the
    diagonal (Jacobi) preconditioner, on the full grid with the operator
    ``m * (D x - N(x))`` (``m`` the removed mask, ``N`` :func:`neighbour_sum`, ``D`` the
    in-image weight sum). Items are sorted by their removed count and, on a CPU, solved in
    sub-batches of 32 (whose vectors stay in the cache: about 2x faster than one batch of 144 at
    64 px), each item dropped from its sub-batch as it converges. The vectors live in a flat
    zero-padded layout, so the stencil is a few adds of contiguous shifted slices into
    preallocated buffers.

    Args:
        images: (N, C, H, W) float images.
        removed: (N, H, W) bool, True for pixels to impute.
        tol: stop an item when ``||residual|| <= tol * ||right-hand side||`` (2-norms over its
            channels and pixels). 1e-4 leaves an error of about 1e-4 to 1e-3 of the image's
            range on 64-px images, well under ROAD's noise (0.01); tests use 1e-6.
        max_iter: iteration cap (default ``8 * (H + W)``); an item still above ``tol`` then
            triggers a ``RuntimeWarning`` naming its residual.
        check_every: iterations between convergence checks (each check synchronises a GPU).

    Returns:
        (N, C, H, W) images, removed pixels replaced by the solution.

    An all-removed image has no kept pixel to interpolate from; its system is singular and its
    pixels are set to 0 (in normalised space: the mean colour). ROAD's fractions are < 1.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a floating (N, C, H, W) tensor, got {_shape(images)}")
    n, _, h, w = images.shape
    if not isinstance(removed, Tensor) or tuple(removed.shape) != (n, h, w):
        raise ValueError(f"removed must be a (N, H, W) = {(n, h, w)} bool tensor, got "
                         f"{_shape(removed)}")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    max_iter = 8 * (h + w) if max_iter is None else _check_int("max_iter", max_iter)
    check_every = _check_int("check_every", check_every)
    # items sorted by removed count, solved in sub-batches: the sub-batch's vectors stay in the
    # CPU's cache, and items of similar size converge together (throughput only)
    order = removed.flatten(1).sum(1).argsort()
    out = torch.empty_like(images)
    worst = 0.0
    sub = _SUB_BATCH if images.device.type == "cpu" else max(n, 1)  # a GPU wants one batch
    for start in range(0, n, sub):
        sel = order[start:start + sub].to(images.device)
        res, wst = _solve(images[sel], removed[sel.to(removed.device)], tol, max_iter,
                          check_every)
        out[sel] = res
        worst = max(worst, wst)
    if worst > tol:
        warnings.warn(f"linear_imputation: conjugate gradient stopped after max_iter={max_iter} "
                      f"iterations at relative residual {worst:.2e} > tol={tol:g}",
                      RuntimeWarning, stacklevel=2)
    return out


# --------------------------------------------------------------------------------------- curves
def _image_noise(seeds: Tensor, shape: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype) -> Tensor:
    """(B, *shape) standard normal noise, image ``b`` from a generator seeded with ``seeds[b]``
    on ``device`` (one draw per image: the per-image seed contract)."""
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    for i, s in enumerate(seeds.tolist()):
        g = torch.Generator(device=device).manual_seed(int(s) % (2**63))
        out[i] = torch.randn(shape, generator=g, device=device, dtype=dtype)
    return out


@torch.no_grad()
def road_curves(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "morf",
    *,
    noise: float = 0.01,
    seeds: Tensor | None = None,
    score: str = "sigmoid",
    batch_size: int = 256,
    pair_image: Tensor | None = None,
    tol: float = 1e-4,
    max_iter: int | None = None,
) -> Tensor:
    """ROAD curves (Rong et al., ICML 2022), fully batched.

    For pair ``p`` (an image, a saliency map, a target class) and fraction ``s``, the pixels
    :func:`removal_masks` selects are replaced by :func:`linear_imputation` of the image plus
    ``noise * N(0, 1)`` (per pixel and channel, removed pixels only); entry ``[p, s]`` is the
    ``score`` of ``targets[p]`` on that image. The ``P * S`` items are processed in chunks of
    ``batch_size``: one batched imputation and one classifier forward per chunk.

    Args:
        model: classifier (N, 3, H, W) -> (N, K) logits, called under ``no_grad`` (pass it in
            eval mode).
        images: (P, C, H, W) normalised images, one per pair, or (B, C, H, W) with
            ``pair_image``.
        maps: (P, H, W) finite saliency maps.
        targets: (P,) class ids.
        fractions: increasing removal fractions in (0, 1) (default 0.1, ..., 0.9).
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        noise: standard deviation of the added noise, in the images' (normalised) units
            (default 0.01 as the reference code; 0 disables it).
        seeds: (B,) integer seed per image of ``images``: image ``b``'s noise for all its pairs
            and fractions comes from one generator seeded with ``seeds[b]`` on the images' device,
            so curves do not depend on the batch an image is in (default: 0 for every image).
            The draws differ between CPU and CUDA generators.
        score: ``"sigmoid"`` (default, like deletion/insertion), ``"softmax"`` or ``"logit"``.
        batch_size: (pair, fraction) items per imputation and forward (throughput only).
        pair_image: optional (P,) index of each pair's image in ``images``.
        tol, max_iter: the solver's stopping rule (:func:`linear_imputation`).

    Returns:
        (P, S) float32 curves on the images' device.
    """
    fractions = _check_fractions(fractions)
    _check_choice("order", order, ORDERS)
    _check_choice("score", score, SCORES)
    noise = _check_nonneg("noise", noise)
    batch_size = _check_int("batch_size", batch_size)
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a floating (N, C, H, W) tensor, got {_shape(images)}")
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"maps must be a (P, H, W) tensor, got {_shape(maps)}")
    p, h, w = maps.shape
    if images.shape[-2:] != (h, w):
        raise ValueError(f"maps {tuple(maps.shape)} and images {tuple(images.shape)} differ in "
                         "spatial size")
    dev = images.device
    if pair_image is None:
        if images.shape[0] != p:
            raise ValueError(f"images must have one row per map ({p}), got {images.shape[0]} "
                             "(or pass pair_image)")
        pair_image = torch.arange(p, device=dev)
    else:
        pair_image = torch.as_tensor(pair_image).to(device=dev, dtype=torch.long)
        if pair_image.shape != (p,):
            raise ValueError(f"pair_image must have shape ({p},), got {tuple(pair_image.shape)}")
    targets = torch.as_tensor(targets).to(device=dev, dtype=torch.long)
    if targets.shape != (p,):
        raise ValueError(f"targets must have shape ({p},), got {tuple(targets.shape)}")
    nb = images.shape[0]
    if seeds is None:
        seeds = torch.zeros(nb, dtype=torch.long)
    seeds = torch.as_tensor(seeds)
    if seeds.shape != (nb,) or seeds.is_floating_point():
        raise ValueError(f"seeds must be ({nb},) integers, one per image, got "
                         f"{tuple(seeds.shape)} {seeds.dtype}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain non-finite values; filter such pairs out first")
    s = len(fractions)
    if p == 0:
        return torch.empty(0, s, device=dev)

    removed = removal_masks(maps.to(dev), fractions, order).view(p * s, h, w)
    noise_img = None
    if noise > 0:
        used = torch.unique(pair_image)
        noise_img = torch.zeros((nb, s, *images.shape[1:]), device=dev, dtype=images.dtype)
        noise_img[used] = _image_noise(seeds[used.cpu()], (s, *images.shape[1:]), dev,
                                       images.dtype)
    item_pair = torch.arange(p, device=dev).view(-1, 1).expand(p, s).reshape(-1)
    item_img = pair_image[item_pair]
    item_frac = torch.arange(s, device=dev).repeat(p)
    item_target = targets[item_pair].view(-1, 1)
    parts = []
    for start in range(0, p * s, batch_size):  # chunks of (pair, fraction) items
        sl = slice(start, start + batch_size)
        rm = removed[sl]
        x = linear_imputation(images[item_img[sl]], rm, tol=tol, max_iter=max_iter)
        if noise_img is not None:
            x.add_(noise_img[item_img[sl], item_frac[sl]] * rm.unsqueeze(1), alpha=noise)
        logits = model(x)
        if logits.ndim != 2:
            raise ValueError(f"classifier must return (N, K) logits, got shape "
                             f"{tuple(logits.shape)}")
        if score == "softmax":
            parts.append(torch.softmax(logits, dim=1).gather(1, item_target[sl]))
        else:
            z = logits.gather(1, item_target[sl])
            parts.append(torch.sigmoid(z) if score == "sigmoid" else z)
    return torch.cat(parts).float().view(p, s)


def road_auc(curves: Tensor) -> Tensor:
    """(P, S) curves -> (P,) their mean over the S removal fractions (NaN rows stay NaN).

    pytorch-grad-cam's ``ROAD*Average`` metrics average over the fractions the same way; for
    equally spaced fractions this is the area under the curve (midpoint rule) divided by the
    covered range.
    """
    if not isinstance(curves, Tensor) or curves.ndim != 2 or curves.shape[1] < 1:
        raise ValueError(f"curves must have shape (P, S) with S >= 1, got {_shape(curves)}")
    return curves.double().mean(dim=1).to(curves.dtype)


# -------------------------------------------------------------------------------------- metrics
class _ROADMetric(Metric):
    """Shared code of :class:`ROADMoRF` and :class:`ROADLeRF`."""

    order: ClassVar[str] = "morf"
    needs = frozenset({"model"})
    #: means of probability curves, in [0, 1]
    regression_tolerance: ClassVar[Tolerance | None] = Tolerance("absolute", 0.01)

    def __init__(
        self,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        noise: float = 0.01,
        score: str = "sigmoid",
        batch_size: int = 256,
        seed: int = 0,
        tol: float = 1e-4,
        keep_curves: bool = True,
    ) -> None:
        fractions = _check_fractions(fractions)
        noise = _check_nonneg("noise", noise)
        _check_choice("score", score, SCORES)
        _check_int("batch_size", batch_size)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        super().__init__(fractions=list(fractions), noise=noise, score=score,
                         batch_size=batch_size, seed=seed, tol=tol, keep_curves=keep_curves)
        self.fractions, self.noise, self.score_kind = fractions, noise, score
        self.batch_size, self.seed, self.tol, self.keep_curves = batch_size, seed, tol, keep_curves
        #: image id -> {class id: curve (one float per fraction)}; filled by :meth:`score` for
        #: programmatic use. Not handed to the run folder (no ``curve_key``): the report's curve
        #: figure assumes fractions 0..1 in equal steps, ROAD's are 0.1..0.9.
        self.road_curves: dict[str, dict[int, list[float]]] = {}
        self._seen = 0

    def reset(self) -> None:
        super().reset()
        self.road_curves = {}
        self._seen = 0

    def pair_curves(self, batch: EvalBatch) -> tuple[Tensor, Tensor]:
        """(P, S) curves and (P,) validity of the batch's pairs (non-finite maps: NaN rows)."""
        if batch.model is None:
            raise ValueError(f"metric '{self.name}' needs batch.model")
        masks = batch.class_masks
        valid = _finite_maps(masks)
        dev = batch.images.device
        curves = torch.full((masks.shape[0], len(self.fractions)), math.nan, device=dev)
        seeds = batch.seeds if batch.seeds is not None else \
            torch.zeros(batch.batch_size, dtype=torch.long)
        seeds = self.seed * 1_000_003 + seeds.long().cpu()
        if valid.any():
            vi = valid.nonzero().squeeze(1)
            curves[vi.to(dev)] = road_curves(
                batch.model, batch.images, masks[vi].to(dev), batch.pair_class[vi],
                self.fractions, self.order, noise=self.noise, seeds=seeds,
                score=self.score_kind, batch_size=self.batch_size,
                pair_image=batch.pair_image[vi], tol=self.tol)
        return curves, valid

    def score(self, batch: EvalBatch) -> list[float]:
        curves, _ = self.pair_curves(batch)
        auc = road_auc(curves) if curves.shape[0] else curves[:, 0]
        b = batch.batch_size
        vals = pair_mean(auc, batch.pair_image, b)
        if self.keep_curves:
            keep_pair_curves(self.road_curves, curves, batch.pair_image, batch.pair_class,
                             batch.image_ids if len(batch.image_ids) == b else (), self._seen)
        self._seen += b
        return vals.tolist()


_DOC_COMMON = """
    Per (image, GT class) pair, with that pair's map (``batch.class_masks``): for each removal
    fraction ``f`` (default 0.1, 0.2, ..., 0.9) the ``round(f * HW)`` {which} pixels are
    removed and filled by noisy linear imputation (each removed pixel = the weighted mean of its
    8 neighbours, weights 1/6 direct and 1/12 diagonal, solved jointly; plus ``noise * N(0, 1)``
    in normalised units, default 0.01); the curve is the target class's score on the imputed
    images and the pair's value is its mean over the fractions (:func:`road_auc`). Per-image
    value: the mean over the image's GT classes (NaN if one of them is NaN).

    Score: ``score="sigmoid"`` (default, as ``deletion_auc``: the classifiers are multi-label);
    ``"softmax"`` (the paper and pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``) and
    ``"logit"`` are options. Noise: image ``b`` draws from a generator seeded with
    ``seed * 1000003 + batch.seeds[b]`` on the images' device, so values do not depend on the
    batch composition.

    Deviations: exactly ``round(f * HW)`` pixels are removed, ties broken in raster order (as
    deletion); pytorch-grad-cam thresholds at ``np.percentile`` and removes every pixel at or
    above the threshold, so a constant map removes *all* pixels there. pytorch-grad-cam
    reports the score *change* from the clean image; this metric reports the score itself
    (add the clean score to theirs to compare). The system is solved by preconditioned
    conjugate gradient to a relative residual ``tol=1e-4`` instead of a sparse direct solve.
    Options: ``fractions``, ``noise``, ``score``, ``batch_size``, ``seed``, ``tol``,
    ``keep_curves`` (curves kept in ``self.road_curves[image_id][class_id]``).
"""


class ROADMoRF(_ROADMetric):
    __doc__ = ("""ROAD, most relevant first (Rong, Leemann, Borisov, Kasneci, Kasneci. "A
    Consistent and Efficient Evaluation Strategy for Attribution Methods". ICML 2022). Lower is
    better.
""" + _DOC_COMMON.format(which="most relevant"))

    name = "road_morf"
    higher_is_better = False
    version = 1
    definition = ("mean target score over removal fractions 0.1..0.9, most relevant pixels "
                  "removed first, filled by noisy linear imputation")
    order = "morf"


class ROADLeRF(_ROADMetric):
    __doc__ = ("""ROAD, least relevant first (Rong et al., ICML 2022). Higher is better.
""" + _DOC_COMMON.format(which="least relevant"))

    name = "road_lerf"
    higher_is_better = True
    version = 1
    definition = ("mean target score over removal fractions 0.1..0.9, least relevant pixels "
                  "removed first, filled by noisy linear imputation")
    order = "lerf"
