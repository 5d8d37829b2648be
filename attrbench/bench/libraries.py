"""``attrbench bench`` against other libraries on the same inputs: Grad-CAM vs captum and
pytorch-grad-cam, deletion curves vs Quantus ``PixelFlipping``. A library that is missing or
fails gives ``{"skipped": message}`` instead of figures."""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .stats import interleaved_ms, median_ms, ratio_stats, safe_ratio

__all__ = ["deletion_vs_quantus", "gradcam_vs_libraries"]


def deletion_vs_quantus(model: nn.Module, images: Tensor, masks: Tensor, targets: Tensor,
                        steps: int, batch_size: int, repeats: int,
                        device: torch.device | str | None = None) -> dict[str, Any]:
    """Our deletion curves against Quantus ``PixelFlipping`` (when importable).

    Quantus 0.6 requires ``features_in_step`` to divide ``H * W``, broadcasts the (N, 1, H, W)
    map to the image's (N, 3, H, W) and ranks the ``C * H * W`` entries separately, so
    ``features_in_step = H * W / steps`` gives ``3 * steps`` perturbation steps of ``H * W /
    steps`` channel entries each (32 steps of whole pixels would not divide ``H * W`` and is
    refused). Two comparisons are therefore returned:

    * ``speedup``: Quantus time / ours with ``steps`` steps and ``batch_size`` (what a user
      asking both for ``steps`` steps gets);
    * ``speedup_equal_work``: Quantus time / ours with Quantus's number of steps and its
      forward batch (``batch_size = images``), i.e. the same number of classifier evaluations.

    Quantus's ``perturb_baseline="black"`` is the image minimum (a constant, the same cost as our
    zero baseline); it evaluates no unperturbed step 0, works on numpy arrays copied to the
    model each step, and runs with ``softmax=False``.

    Returns:
        A dict with ``skipped`` (a message) when Quantus is missing or fails, else the times,
        ``quantus_steps``, ``speedup`` and ``speedup_equal_work``.
    """
    dev = torch.device(device) if device is not None else images.device
    try:
        import quantus
    except Exception as e:  # noqa: BLE001 - any import failure means: skip
        return {"skipped": f"Quantus is not importable ({type(e).__name__}: {e}); "
                           "install the bench extra: pip install 'attrbench[bench]'"}
    h, w = images.shape[-2:]
    if (h * w) % steps:
        return {"skipped": f"Quantus needs features_in_step to divide H*W={h * w}; "
                           f"H*W/steps with steps={steps} is not an integer"}
    fis = h * w // steps
    metric = quantus.PixelFlipping(features_in_step=fis, perturb_baseline="black",
                                   disable_warnings=True, display_progressbar=False)
    try:
        t_ours, t_same, t_q, q_steps = _time_vs_quantus(metric, model, images, masks, targets,
                                                        steps, batch_size, repeats, dev)
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"Quantus PixelFlipping failed ({type(e).__name__}: {e})"}
    return {"quantus_version": quantus.__version__, "features_in_step": fis,
            "quantus_steps": q_steps, "quantus_ms": t_q, "ours_ms": t_ours,
            "ours_same_work_ms": t_same, "speedup": safe_ratio(t_q, t_ours),
            "speedup_equal_work": safe_ratio(t_q, t_same), "steps": steps}


def _time_vs_quantus(metric: Any, model: nn.Module, images: Tensor, masks: Tensor,
                     targets: Tensor, steps: int, batch_size: int, repeats: int,
                     dev: torch.device) -> tuple[float, float, float, int]:
    """Median ms of ours (``steps``), ours with Quantus's steps and batch, and Quantus's
    ``metric``; and Quantus's number of steps."""
    from attrbench.metrics.perturbation import deletion_insertion_curves

    n = images.shape[0]
    x_np = images.detach().cpu().numpy()
    y_np = targets.detach().cpu().numpy()
    a_np = masks.detach().cpu().numpy()[:, None]

    def theirs() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np,
                          softmax=False, device=str(dev), batch_size=n, channel_first=True)

    def ours() -> Tensor:
        return deletion_insertion_curves(model, images, masks, targets, steps, "deletion",
                                         "zero", batch_size=batch_size)

    q_steps = len(theirs()[0])

    def ours_same_work() -> Tensor:
        return deletion_insertion_curves(model, images, masks, targets, q_steps, "deletion",
                                         "zero", batch_size=n)

    (t_ours, t_same, t_q), _ = median_ms([ours, ours_same_work, theirs], dev, repeats)
    return t_ours, t_same, t_q, q_steps


def _ours_vs_theirs(ours, theirs, device: torch.device, repeats: int) -> dict[str, Any]:
    """Interleaved timing: medians and the per-repeat ratio ours / theirs (median, min, max)."""
    t_o, t_t = interleaved_ms([ours, theirs], device, repeats)
    return {"ours_ms": statistics.median(t_o), "theirs_ms": statistics.median(t_t),
            **ratio_stats(t_o, t_t), "repeats": repeats}


def gradcam_vs_libraries(model: nn.Module, images: Tensor, targets: Tensor, repeats: int,
                         layer: str | None = None,
                         device: torch.device | str | None = None) -> dict[str, Any]:
    """Grad-CAM time against captum and pytorch-grad-cam on the same batch.

    * captum: ``LayerGradCam(...).attribute(relu_attributions=True)`` + ``LayerAttribution.
      interpolate`` (bilinear) against ours with ``normalize=False`` (the same output).
    * pytorch-grad-cam: ``GradCAM(model, [layer])`` (ReLU, cv2 resize, min-max normalisation)
      against ours with the default ``normalize=True``.

    Returns:
        ``captum``/``pytorch_grad_cam``: each either ``{"ours_ms", "theirs_ms", "ratio",
        "ratio_min", "ratio_max", "ratios", "repeats"}`` (ratio: the median of the per-repeat
        ratios ours / theirs) or ``{"skipped": message}``.
    """
    from attrbench.methods.cam import resolve_layer

    dev = torch.device(device) if device is not None else images.device
    mod = resolve_layer(model, layer)
    return {"captum": _vs_captum(model, mod, images, targets, repeats, dev),
            "pytorch_grad_cam": _vs_pytorch_grad_cam(model, mod, images, targets, repeats, dev)}


def _vs_captum(model: nn.Module, mod: nn.Module, images: Tensor, targets: Tensor,
               repeats: int, dev: torch.device) -> dict[str, Any]:
    from attrbench.methods.cam import GradCAM

    size = tuple(images.shape[-2:])
    ours_raw = GradCAM(model, layer=mod, normalize=False)
    try:
        from captum.attr import LayerAttribution, LayerGradCam

        lgc = LayerGradCam(model, mod)

        def captum_fn() -> Tensor:
            a = lgc.attribute(images, target=targets, relu_attributions=True)
            return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear")[:, 0]

        return _ours_vs_theirs(lambda: ours_raw.attribute(images, targets), captum_fn, dev,
                               repeats)
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"captum LayerGradCam unavailable or failed "
                           f"({type(e).__name__}: {e})"}


def _vs_pytorch_grad_cam(model: nn.Module, mod: nn.Module, images: Tensor, targets: Tensor,
                         repeats: int, dev: torch.device) -> dict[str, Any]:
    from attrbench.methods.cam import GradCAM

    ours = GradCAM(model, layer=mod)
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"pytorch-grad-cam is not importable "
                           f"({type(e).__name__}: {e}); pip install grad-cam"}
    lib = pgc.GradCAM(model, [mod])
    try:
        tlist = [int(t) for t in targets.tolist()]

        def pgc_fn() -> Any:
            return lib(images.clone().requires_grad_(True),
                       targets=[ClassifierOutputTarget(t) for t in tlist])

        return _ours_vs_theirs(lambda: ours.attribute(images, targets), pgc_fn, dev, repeats)
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"pytorch-grad-cam GradCAM failed ({type(e).__name__}: {e})"}
    finally:
        lib.activations_and_grads.release()
