"""The shipped synthetic Explainer is class-specific: the regression test of the property the
paper's title claims ("what you see is what you classify").

On a fixed handful of synthetic test images (drawn directly by the generator), the mask the
Explainer gives for a present class keeps that class's evidence and drops the other classes',
and its masks for absent classes are close to empty. A class-agnostic "objectness" Explainer
(one map copied into every class channel, as the earlier shipped weights were) fails each test.
"""

from __future__ import annotations

import pytest
import torch

from attrbench.presets import SYNTHETIC

N_IMAGES = 16


@pytest.fixture(scope="module")
def shipped(synthetic_classifier):
    """Images, labels, per-class ground truth and the shipped Explainer's masks."""
    import numpy as np

    import attrbench
    from attrbench.data.sample import IMAGENET_MEAN, IMAGENET_STD
    from attrbench.data.synthetic import SyntheticConfig, draw_image

    cfg = SyntheticConfig()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    imgs, cls = [], []
    for i in range(N_IMAGES):
        d = draw_image(cfg, "test", i)
        x = torch.from_numpy(d["image"].astype(np.float32) / 255).permute(2, 0, 1)
        imgs.append((x - mean) / std)
        cls.append(torch.from_numpy(d["cls"].astype(np.int64)))
    images, cls = torch.stack(imgs), torch.stack(cls)
    k = 6
    gt = torch.stack([cls == c + 1 for c in range(k)], 1)  # (N, K, H, W) visible pixels
    labels = gt.flatten(2).any(-1)
    method = attrbench.create_method("explainer", synthetic_classifier, preset=SYNTHETIC)
    masks = method.attribute_all(images)
    return images, labels, gt, masks


def _class_matrix(classifier, images, labels, masks, threshold=0.5):
    """cell[t, c] = mean over images containing t of softmax(F(x * [m_c > thr]))_t."""
    k = labels.shape[1]
    probs = torch.stack([classifier(images * (masks[:, c:c + 1] > threshold).float()).softmax(1)
                         for c in range(k)], 1)  # (N, mask class c, class t)
    cell = torch.full((k, k), float("nan"))
    for t in range(k):
        if labels[:, t].any():
            cell[t] = probs[labels[:, t], :, t].mean(0)
    return cell


@torch.no_grad()
def test_class_mask_keeps_its_class_and_drops_the_others(shipped, synthetic_classifier):
    images, labels, _, masks = shipped
    cell = _class_matrix(synthetic_classifier, images, labels, masks)
    rows = ~cell[:, 0].isnan()
    assert rows.sum() >= 4, "the fixed images should cover most classes"
    diag = cell.diagonal()[rows]
    off = cell[rows][:, torch.arange(6)].clone()
    off[torch.arange(len(diag)), torch.nonzero(rows).squeeze(1)] = float("nan")
    off_mean = off.nanmean()
    # a clear diagonal: each class keeps its own probability far above what other masks keep
    assert diag.mean() > 3 * off_mean, (cell, diag.mean(), off_mean)
    assert (diag > off.nan_to_num(0).amax(1)).all(), cell


@torch.no_grad()
def test_present_class_mask_keeps_its_logit_better_than_other_present_classes(
        shipped, synthetic_classifier):
    """On an image with several classes, the class-t mask keeps t's logit and lowers the others'
    present classes more (one mask per class, not one mask per image)."""
    images, labels, _, masks = shipped
    full = synthetic_classifier(images)
    kept, dropped = [], []
    for n in range(images.shape[0]):
        present = torch.nonzero(labels[n]).flatten().tolist()
        if len(present) < 2:
            continue
        for t in present:
            out = synthetic_classifier(images[n:n + 1] * (masks[n:n + 1, t:t + 1] > 0.5).float())[0]
            for o in present:
                (kept if o == t else dropped).append(float(out[o] - full[n, o]))
    assert len(kept) >= 4, "the fixed images should include multi-class images"
    mean_kept = sum(kept) / len(kept)
    mean_dropped = sum(dropped) / len(dropped)
    assert mean_kept > mean_dropped + 2.0, (mean_kept, mean_dropped)


@torch.no_grad()
def test_masks_of_absent_classes_are_near_empty(shipped):
    _, labels, gt, masks = shipped
    absent = ~labels
    area = masks.mean((2, 3))  # (N, K)
    absent_area = area[absent].mean()
    present_area = area[labels].mean()
    assert absent_area < 0.03, absent_area
    assert absent_area < present_area / 3, (absent_area, present_area)
    # and the present classes' masks lie on their own objects
    on_own = (masks * gt).sum((2, 3))[labels] / gt.sum((2, 3))[labels].clamp_min(1)
    assert on_own.mean() > 0.5, on_own.mean()
