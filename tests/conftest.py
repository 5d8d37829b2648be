"""Shared fixtures: the shipped synthetic classifier and a few synthetic test images."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def synthetic_classifier():
    from attrbench.models import load_classifier
    from attrbench.presets import SYNTHETIC, resolve_weights

    model, meta = load_classifier(resolve_weights(SYNTHETIC.classifier_weights))
    return model


@pytest.fixture(scope="session")
def synthetic_batch():
    """4 test images of the synthetic generator (drawn directly, no dataset on disk needed):
    normalised images (4,3,64,64), multi-hot labels (4,6), class maps (4,64,64)."""
    import numpy as np

    from attrbench.data.sample import IMAGENET_MEAN, IMAGENET_STD
    from attrbench.data.synthetic import SyntheticConfig, draw_image

    cfg = SyntheticConfig()
    imgs, labels, cls = [], [], []
    for i in range(4):
        d = draw_image(cfg, "test", i)
        x = torch.from_numpy(d["image"].astype(np.float32) / 255).permute(2, 0, 1)
        imgs.append((x - torch.tensor(IMAGENET_MEAN)[:, None, None])
                    / torch.tensor(IMAGENET_STD)[:, None, None])
        c = torch.from_numpy(d["cls"].astype(np.int64))
        cls.append(c)
        lab = torch.zeros(6)
        for k in c.unique().tolist():
            if k > 0:
                lab[k - 1] = 1
        labels.append(lab)
    return torch.stack(imgs), torch.stack(labels), torch.stack(cls)
