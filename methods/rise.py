"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018).

The saliency of pixel ``u`` for class ``k`` is the expected class score of the image seen through
a random mask, given that ``u`` is visible::

    S_k(u) = 1 / (N * p) * sum_i score_k(x ⊙ M_i) * M_i(u)

with ``N`` smooth random masks ``M_i``. One pass over the masks gives the maps of every class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrbench.interfaces import AttributionMethod
from attrbench.ops import minmax_rescale

__all__ = ["RISE", "generate_rise_masks"]

_SCORES = ("sigmoid", "softmax")


def generate_rise_masks(
    num_masks: int,
    num_cells: int,
    p: float,
    height: int,
    width: int,
    seed: int,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
) -> Tensor:
    """RISE's random smooth masks, (N, H, W) float32 in [0, 1].

    Each mask is a ``num_cells x num_cells`` binary grid with P(1) = ``p``, bilinearly upsampled
    to ``((num_cells + 1) * ch, (num_cells + 1) * cw)`` with ``ch = ceil(H / num_cells)``
    (``cw`` likewise) and cropped to ``H x W`` at a random offset in ``[0, ch) x [0, cw)``.

    All random numbers are drawn on the CPU from one generator seeded with ``seed``, so the mask
    set is the same on every device (up to the device's interpolation rounding) and does not
    depend on ``chunk``; upsampling and cropping run on ``device`` in chunks of ``chunk`` masks.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(int(seed))
    grids = (torch.rand(num_masks, 1, num_cells, num_cells, generator=g) < p).float()
    ch, cw = math.ceil(height / num_cells), math.ceil(width / num_cells)
    dy = torch.randint(0, ch, (num_masks,), generator=g)
    dx = torch.randint(0, cw, (num_masks,), generator=g)
    up_size = ((num_cells + 1) * ch, (num_cells + 1) * cw)
    rows_base = torch.arange(height, device=device)
    cols_base = torch.arange(width, device=device)
    out = torch.empty(num_masks, height, width, device=device)
    for s in range(0, num_masks, chunk):
        e = min(s + chunk, num_masks)
        up = F.interpolate(grids[s:e].to(device), size=up_size, mode="bilinear",
                           align_corners=False)[:, 0]
        rows = dy[s:e].to(device)[:, None] + rows_base[None]  # (n, H)
        cols = dx[s:e].to(device)[:, None] + cols_base[None]  # (n, W)
        n_idx = torch.arange(e - s, device=device)[:, None, None]
        out[s:e] = up[n_idx, rows[:, :, None], cols[:, None, :]].clamp_(0, 1)
    return out


class RISE(AttributionMethod):
    """RISE (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018).

    Definition:
        ``S_k = 1 / (N * p) * sum_i score_k(x ⊙ M_i) * M_i`` where the ``M_i`` are smooth random
        masks (see :func:`generate_rise_masks`) and ``score_k`` is the sigmoid (multi-label) or
        softmax probability of class ``k``. With ``normalize=True`` each map is then min-max
        rescaled to [0, 1] (a flat map becomes all 0), as in the evaluation pipeline of Stalder
        et al. 2022.

    Merge order: ``"rescale_then_max"`` (the default): the paper's code min-max normalises
    each ground-truth class's map, then takes the pixel-wise maximum.

    Implementation:
        The masks are generated once per (image height, width, device) and cached on the
        instance (``N * H * W * 4`` bytes: 131 MB for 8000 masks at 64 px, 1.6 GB at 224 px).
        For each chunk of ``batch_size`` masks, the whole batch of images is masked and run in
        one forward pass of ``batch_size * B`` images; the scores are accumulated with one
        matrix product per chunk (``scores^T @ masks``). :meth:`attribute` selects the target
        scores before that product; :meth:`attribute_all` keeps all classes. Both use the same
        forward passes, so ``attribute_all(x)[:, k] == attribute(x, k)`` up to float rounding.

        Memory: a chunk's ``batch_size * B`` masked images are fed to the classifier in
        forwards of at most ``forward_rows`` images (whole images of the batch at a time), so
        that the activations of one forward stay small: at ``batch_size * B = 3200`` images of
        64 px the first conv layer of the synthetic classifier alone would produce 840 MB per
        forward, which the C allocator maps and unmaps (and the kernel zeroes) on every chunk.
        The default, 256 images (67 MB there), bounds the memory; smaller forwards fit glibc's
        reuse (on one core, 64 images cut the system time of 128 masks on 50 images from
        8.3 s to 1.1 s at the same user time) but on two threads they cost more user time than
        they save, and with :func:`attrbench._process.tune_allocator` nothing is mapped anew.
        A classifier in eval mode scores every image on its own, so the split changes no value
        (a forward of a single image may take another kernel and round differently; splits
        never leave one alone unless the chunk itself has a single image).

    Defaults (TorchRay's ``rise``, used by Stalder et al.):
        ``num_masks=8000, num_cells=7, p=0.5, batch_size=32, seed=0, score="sigmoid",
        normalize=True``.

    Deviations:
        * Masking multiplies the *normalised* image, so a masked-out pixel becomes 0 = the mean
          colour of the normalisation, not black (the RISE paper masks the [0, 1] image, which
          gives black; TorchRay and Stalder et al. feed normalised tensors as we do).
        * One mask set is shared by every image (as in TorchRay); the per-image ``seeds`` of
          :meth:`attribute` are ignored, which makes a batch give exactly the same maps as
          single-image calls.
        * The random numbers are drawn from torch's CPU generator, so the masks are not
          bit-identical to TorchRay's for the same seed.

    Args:
        model: the classifier, (B, 3, H, W) -> (B, K) logits.
        num_masks: number of random masks ``N`` (default 8000).
        num_cells: grid size ``s`` of the low-resolution binary masks (default 7).
        p: probability of a grid cell being 1 (default 0.5).
        batch_size: masks per forward chunk (each chunk runs ``batch_size * B`` images).
        seed: seed of the mask set (default 0).
        normalize: min-max rescale each map to [0, 1] (default True).
        score: ``"sigmoid"`` (multi-label classifiers, default) or ``"softmax"``.

    Attributes:
        forward_rows: most masked images per classifier forward (class default 256; may be set
            on an instance). A memory and throughput knob that does not change the maps, so it
            is not an option and is not recorded with the results.
    """

    name = "rise"
    black_box = True
    stochastic = True
    all_classes_at_once = True
    forward_rows: int = 256

    def __init__(
        self,
        model: nn.Module,
        num_masks: int = 8000,
        num_cells: int = 7,
        p: float = 0.5,
        batch_size: int = 32,
        seed: int = 0,
        normalize: bool = True,
        score: str = "sigmoid",
    ) -> None:
        self._check_positive("num_masks", num_masks, integer=True)
        self._check_positive("num_cells", num_cells, integer=True)
        self._check_fraction("p", p)
        self._check_positive("batch_size", batch_size, integer=True)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        if score not in _SCORES:
            raise ValueError(f"score must be one of {list(_SCORES)}, got {score!r}")
        super().__init__(model, num_masks=num_masks, num_cells=num_cells, p=p,
                         batch_size=batch_size, seed=seed, normalize=normalize, score=score)
        self.num_masks, self.num_cells, self.p = num_masks, num_cells, float(p)
        self.batch_size, self.seed, self.normalize, self.score = batch_size, seed, normalize, score
        self._mask_cache: dict[tuple[int, int, str], Tensor] = {}

    # ------------------------------------------------------------------ masks
    def masks(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """The (N, H, W) mask set used for images of this size on ``device`` (cached)."""
        device = torch.device(device)
        key = (int(height), int(width), str(device))
        m = self._mask_cache.get(key)
        if m is None:
            m = generate_rise_masks(self.num_masks, self.num_cells, self.p, height, width,
                                    self.seed, device)
            self._mask_cache[key] = m
        return m

    def clear_cache(self) -> None:
        """Drop the cached mask sets (they can be large at 224 px)."""
        self._mask_cache.clear()

    # ------------------------------------------------------------------ core
    def _scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.score == "sigmoid" else torch.softmax(logits, dim=-1)

    def _masked_logits(self, images: Tensor, m: Tensor) -> Tensor:
        """(B, n, K) logits of every image masked by every mask of the (n, H, W) chunk ``m``,
        in forwards of at most ``forward_rows`` images (at least one whole image each)."""
        b, c, h, w = images.shape
        n = m.shape[0]
        # images of the batch per forward; with one mask, at least two images
        per = max(1 if n > 1 else 2, self.forward_rows // n)
        if per >= b:
            return self.model((images[:, None] * m[None, :, None]).reshape(b * n, c, h, w)
                              ).reshape(b, n, -1)
        starts = list(range(0, b, per))
        if n == 1 and b - starts[-1] == 1:
            starts.pop()  # never a forward of one image: it could round differently
        out: Tensor | None = None
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else b
            x = (images[s:e, None] * m[None, :, None]).reshape((e - s) * n, c, h, w)
            logits = self.model(x)
            if out is None:
                out = logits.new_empty(b * n, *logits.shape[1:])
            out[s * n:e * n] = logits
        assert out is not None
        return out.view(b, n, -1)

    def _saliency(self, images: Tensor, targets: Tensor | None) -> Tensor:
        """(B, C, H, W) un-normalised saliency; C = K when ``targets`` is None, else 1."""
        b, _, h, w = images.shape
        masks = self.masks(h, w, images.device).to(images.dtype)
        n_cls = 1 if targets is not None else None
        sal: Tensor | None = None
        for s in range(0, self.num_masks, self.batch_size):
            m = masks[s:s + self.batch_size]  # (n, H, W)
            n = m.shape[0]
            scores = self._scores(self._masked_logits(images, m))  # (B, n, K)
            if targets is not None:
                scores = scores.gather(2, targets.view(b, 1, 1).expand(b, n, 1))
            if sal is None:
                n_cls = scores.shape[2]
                sal = torch.zeros(b * n_cls, h * w, device=images.device, dtype=images.dtype)
            # one matmul per chunk: (B*C, n) @ (n, H*W)
            sal.addmm_(scores.transpose(1, 2).reshape(b * n_cls, n), m.reshape(n, h * w))
        assert sal is not None and n_cls is not None
        sal = sal.view(b, n_cls, h, w) / (self.num_masks * self.p)
        return minmax_rescale(sal) if self.normalize else sal

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        return self._saliency(images, targets)[:, 0]

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        return self._saliency(images, None)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["masking"] = "normalised image x mask (0 = mean colour)"
        return d
