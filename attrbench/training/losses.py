"""The Explainer loss of Stalder et al. 2022 and the adapted Real-Time Saliency loss
(Dabkowski & Gal 2017), as implemented in the paper's code.

All functions are pure tensor functions; :func:`explainer_loss` returns the total and each term
so that training logs them separately.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import gaussian_blur


def masked_class_max(seg: Tensor, labels: Tensor, present: bool) -> Tensor:
    """Pixel-wise max of the logit maps of the present (or absent) classes.

    Args:
        seg: (B, K, H, W) Explainer logits.
        labels: (B, K) multi-hot.
        present: max over classes with label 1 (target) if True, else label 0 (non-target).

    Returns:
        (B, H, W) logits; ``-inf`` where an image has no such class (so sigmoid gives 0).
    """
    sel = labels > 0.5 if present else labels <= 0.5
    fill = torch.finfo(seg.dtype).min
    masked = seg.masked_fill(~sel[:, :, None, None], fill)
    out = masked.amax(dim=1)
    none = ~sel.any(dim=1)
    return torch.where(none[:, None, None], torch.full_like(out, -math.inf), out)


def total_variation(z: Tensor, squared: bool = False) -> Tensor:
    """TV(z) = mean over pixels of |z[i,j]-z[i,j+1]| + |z[i,j]-z[i+1,j]| with reflect padding
    at the right and bottom borders (the paper's code). ``squared`` uses squared differences
    (Dabkowski & Gal's TV). ``z``: (B, H, W)."""
    zp = F.pad(z.unsqueeze(1), (0, 1, 0, 1), mode="reflect").squeeze(1)
    dx = zp[:, :-1, :-1] - zp[:, :-1, 1:]
    dy = zp[:, :-1, :-1] - zp[:, 1:, :-1]
    if squared:
        return (dx**2 + dy**2).mean()
    return (dx.abs() + dy.abs()).mean()


def class_area_constraint(masks: Tensor, labels: Tensor, min_area: float, max_area: float) -> Tensor:
    """Per-class area constraint (the first part of the paper's area loss L_a).

    For each present class k: mean over pixels of ReLU(step_min - sort_desc(s_k)) +
    ReLU(sort_desc(s_k) - step_max), where step_min has ones on the first floor(min_area * HW)
    sorted positions and step_max on the first floor(max_area * HW). Summed over present
    classes, averaged over the batch.

    Args:
        masks: (B, K, H, W) per-class masks in [0, 1].
        labels: (B, K) multi-hot.
    """
    b, k, h, w = masks.shape
    n = h * w
    srt = masks.reshape(b, k, n).sort(dim=-1, descending=True).values
    pos = torch.arange(n, device=masks.device)
    step_min = (pos < math.floor(min_area * n)).to(masks.dtype)
    step_max = (pos < math.floor(max_area * n)).to(masks.dtype)
    per = F.relu(step_min - srt).mean(-1) + F.relu(srt - step_max).mean(-1)  # (B, K)
    return (per * (labels > 0.5).to(per.dtype)).sum(1).mean()


def entropy_term(logits: Tensor) -> Tensor:
    """Mean over batch and classes of p*log p with p = softmax(logits), p clamped >= 1e-16.
    Minimising it maximises the entropy of the classifier on the background image."""
    p = logits.softmax(dim=1).clamp_min(1e-16)
    return (p * p.log()).mean()


def explainer_loss(
    seg: Tensor,
    images: Tensor,
    labels: Tensor,
    classifier: nn.Module,
    *,
    entropy: float,
    tv: float,
    area_constraint: float,
    target_area: float,
    nontarget_area: float,
    class_min_area: float,
    class_max_area: float,
) -> dict[str, Tensor]:
    """L_E = L_c + λ_e L_e + λ_tv (TV(m)+TV(n)) + λ_ac L_a + λ_m mean(m) + λ_n mean(n).

    Masks multiply the normalised image, so a masked pixel is 0, the dataset mean colour.
    """
    masks = torch.sigmoid(seg)
    m = torch.sigmoid(masked_class_max(seg, labels, True))
    n = torch.sigmoid(masked_class_max(seg, labels, False))
    logits_masked = classifier(images * m.unsqueeze(1))
    logits_inv = classifier(images * (1 - m).unsqueeze(1))
    terms = {
        "classification": F.binary_cross_entropy_with_logits(logits_masked, labels.float()),
        "entropy": entropy_term(logits_inv),
        "tv": total_variation(m) + total_variation(n),
        "area_constraint": class_area_constraint(masks, labels, class_min_area, class_max_area),
        "target_area": m.mean(),
        "nontarget_area": n.mean(),
    }
    total = (terms["classification"] + entropy * terms["entropy"] + tv * terms["tv"]
             + area_constraint * terms["area_constraint"] + target_area * terms["target_area"]
             + nontarget_area * terms["nontarget_area"])
    terms["loss"] = total
    return terms


def rt_saliency_loss(
    seg: Tensor,
    images: Tensor,
    labels: Tensor,
    classifier: nn.Module,
    *,
    alt: Tensor,
    tv_weight: float = 10.0,
    area_weight: float = 1.0,
    destroyer_weight: float = 5.0,
    destroyer_power: float = 0.3,
) -> dict[str, Tensor]:
    """Dabkowski & Gal's loss as Stalder et al. adapted it:
    10 TV2(m) + 1.0 mean(m) + preserver + 5 destroyer^0.3, with x_pres = m x + (1-m) alt,
    x_destr = (1-m) x + m alt, preserver = mean over GT classes of -log sigmoid(F(x_pres)_k),
    destroyer = mean over GT classes of sigmoid(F(x_destr)_k). The power is applied to each
    image's destroyer before the batch mean (the paper's code does not say; documented choice).
    """
    m = torch.sigmoid(masked_class_max(seg, labels, True)).unsqueeze(1)
    x_pres = m * images + (1 - m) * alt
    x_destr = (1 - m) * images + m * alt
    lp = classifier(x_pres)
    ld = classifier(x_destr)
    y = (labels > 0.5).float()
    cnt = y.sum(1).clamp_min(1)
    preserver = ((-F.logsigmoid(lp)) * y).sum(1) / cnt
    destroyer = (torch.sigmoid(ld) * y).sum(1) / cnt
    terms = {
        "tv2": total_variation(m.squeeze(1), squared=True),
        "area": m.mean(),
        "preserver": preserver.mean(),
        "destroyer": destroyer.clamp_min(1e-8).pow(destroyer_power).mean(),
    }
    terms["loss"] = (tv_weight * terms["tv2"] + area_weight * terms["area"] + terms["preserver"]
                     + destroyer_weight * terms["destroyer"])
    return terms


def rt_saliency_alternative(images: Tensor, generator: torch.Generator | None = None,
                            blur_sigma: float = 10.0) -> Tensor:
    """The alternative image of Dabkowski & Gal, drawn per batch: a Gaussian blur (sigma 10 at
    224 px, scaled with the image size) or a random colour plus noise (normalised space)."""
    choice = torch.rand((), generator=generator).item()
    if choice < 0.5:
        sigma = blur_sigma * images.shape[-1] / 224
        h, w = images.shape[-2:]
        return gaussian_blur(images, sigma, radius=max(1, min(math.ceil(3 * sigma), min(h, w) - 1)))
    b, c = images.shape[:2]
    colour = torch.randn(b, c, 1, 1, generator=generator).to(images)
    noise = 0.2 * torch.randn(images.shape, generator=generator).to(images)
    return colour + noise
