"""Benchmark your own method: a gradient-times-input saliency map, as a plain function.

    PYTHONPATH=examples attrbench run --methods gradcam,my_method:grad_x_input --limit 4 \
        --method-option my_method:grad_x_input.smooth=3

attrbench wraps the function into an AttributionMethod: gradients are enabled while it runs and
each returned map is min-max rescaled to [0, 1] (see ``attrbench.plugins``).
"""

import torch.nn.functional as F


def grad_x_input(model, images, targets, smooth: int = 1):
    """|gradient x input| of the target logit, summed over colour channels, box-blurred."""
    images = images.clone().requires_grad_(True)
    logits = model(images)
    logits.gather(1, targets[:, None]).sum().backward()
    maps = (images.grad * images).sum(1, keepdim=True).abs()  # (B, 1, H, W)
    if smooth > 1:
        maps = F.avg_pool2d(maps, smooth, stride=1, padding=smooth // 2, count_include_pad=False)
    return maps[..., : images.shape[2], : images.shape[3]]
