"""Building, saving and loading classifiers and Explainer networks.

Checkpoints are plain dicts of tensors and primitives, loaded with ``torch.load(...,
weights_only=True)``: a pickle that would run code is refused (:class:`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

CLASSIFIER_FORMAT = "attrbench-classifier"
EXPLAINER_FORMAT = "attrbench-explainer"


class CheckpointError(ValueError):
    """A checkpoint is missing, unsafe, or does not fit the model it is loaded into."""


def fingerprint(model_or_state: nn.Module | dict) -> str:
    """A short hash of a state dict's tensors: identifies *which* classifier weights were used."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    h = hashlib.sha1()
    for k in sorted(sd):
        v = sd[k]
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def safe_load(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with readable errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises UnpicklingError, RuntimeError, ...)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain weights file that loads with "
            f"weights_only=True ({msg})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict (got {type(obj).__name__})")
    return obj


def import_factory(spec: str):
    """Import ``pkg.module:factory`` (the one import-by-name option of attrbench)."""
    if ":" not in spec:
        raise ValueError(f"expected 'package.module:factory', got '{spec}'")
    mod_name, attr = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{mod_name}' for --model {spec}: {exc}") from None
    try:
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"module '{mod_name}' has no attribute '{attr}' (--model {spec})") from None
    if not callable(obj):  # a bad --model value: ValueError, exit 2 in the CLI
        raise ValueError(f"--model {spec} is not callable")  # noqa: TRY004
    return obj


def build_classifier(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A classifier by registry name or ``pkg.module:factory`` (called with ``num_classes``)."""
    from ..catalog import MODELS

    if ":" in name:
        factory = import_factory(name)
        try:
            model = factory(num_classes=num_classes, **kwargs)
        except TypeError:
            model = factory()
    else:
        model = MODELS.get(name)(num_classes=num_classes, **kwargs)
    if not isinstance(model, nn.Module):  # a bad --model factory: ValueError, exit 2 in the CLI
        raise ValueError(  # noqa: TRY004
            f"model '{name}' did not return a torch.nn.Module (got {type(model)})")
    if not hasattr(model, "num_classes"):
        try:
            model.num_classes = num_classes
        except AttributeError:
            pass
    return model


def save_classifier(model: nn.Module, path: str | Path, name: str, class_names: list[str],
                    **meta: Any) -> None:
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({
        "format": CLASSIFIER_FORMAT, "name": name, "num_classes": len(class_names),
        "class_names": list(class_names), "state_dict": sd, "fingerprint": fingerprint(sd),
        "meta": meta,
    }, path)


def load_classifier(path: str | Path, name: str | None = None,
                    num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Load an attrbench classifier checkpoint (or a bare state dict when ``name`` is given).

    Returns the model in eval mode with frozen parameters, and the checkpoint's metadata.
    """
    ck = safe_load(path)
    if ck.get("format") == CLASSIFIER_FORMAT:
        if name is not None and ":" not in name and name != ck["name"]:
            raise CheckpointError(
                f"{path} holds a '{ck['name']}' classifier, but model '{name}' was requested")
        if num_classes is not None and num_classes != ck["num_classes"]:
            raise CheckpointError(
                f"{path} was trained for {ck['num_classes']} classes, but the dataset has "
                f"{num_classes}")
        model = build_classifier(name or ck["name"], ck["num_classes"])
        sd = ck["state_dict"]
        meta = {k: v for k, v in ck.items() if k != "state_dict"}
    else:
        if name is None or num_classes is None:
            raise CheckpointError(
                f"{path} is not an attrbench classifier checkpoint; pass --model and use a "
                f"dataset with known classes to load a bare state dict")
        sd = ck.get("state_dict", ck)
        model = build_classifier(name, num_classes)
        meta = {"name": name, "num_classes": num_classes, "fingerprint": fingerprint(sd)}
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path} does not fit model '{name or ck.get('name')}': {first}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta["fingerprint"] = fingerprint(model)
    return model, meta


def build_explainer_net(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    from ..catalog import EXPLAINER_ARCHS

    return EXPLAINER_ARCHS.get(arch)(num_classes=num_classes, **kwargs)


def save_explainer(net: nn.Module, path: str | Path, arch: str, num_classes: int,
                   classifier_fingerprint: str, loss: str, **meta: Any) -> None:
    torch.save({
        "format": EXPLAINER_FORMAT, "arch": arch, "num_classes": num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "classifier_fingerprint": classifier_fingerprint, "loss": loss, "meta": meta,
    }, path)


def load_explainer(path: str | Path, classifier_fingerprint: str | None = None,
                   num_classes: int | None = None, loss: str | None = None) -> tuple[nn.Module, dict]:
    """Load an Explainer checkpoint; refuse one trained for another classifier."""
    ck = safe_load(path)
    if ck.get("format") != EXPLAINER_FORMAT:
        raise CheckpointError(f"{path} is not an attrbench Explainer checkpoint")
    if num_classes is not None and ck["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path} outputs {ck['num_classes']} classes, but the classifier has {num_classes}")
    if classifier_fingerprint is not None and ck["classifier_fingerprint"] != classifier_fingerprint:
        raise CheckpointError(
            f"{path} was trained for classifier {ck['classifier_fingerprint']}, not for the loaded "
            f"classifier {classifier_fingerprint}; train one with 'attrbench train explainer'")
    if loss is not None and ck.get("loss") != loss:
        raise CheckpointError(f"{path} was trained with the '{ck.get('loss')}' loss, not '{loss}'")
    net = build_explainer_net(ck["arch"], ck["num_classes"])
    try:
        net.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit architecture '{ck['arch']}': "
                              f"{str(exc).splitlines()[0]}") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, {k: v for k, v in ck.items() if k != "state_dict"}
