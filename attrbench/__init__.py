"""attrbench: a benchmark suite for attribution (saliency) methods of image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"



def __getattr__(name: str):
    # lazy: ``import attrbench`` (and so ``attrbench --help``) does not import torch
    if name in ("AttributionMethod", "EvalBatch", "Metric"):
        from . import interfaces

        return getattr(interfaces, name)
    if name in ("run", "load_run", "RunResult"):  # the Python API (attrbench.api)
        from . import api

        return getattr(api, name)
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'attrbench' has no attribute '{name}'")


def create_method(name: str, model, **options):
    """Build an attribution method by registry name, ``captum:<Class>`` or import path
    ``package.module:Attr`` (see ``attrbench.plugins``)."""
    from .catalog import METHODS

    return METHODS.get(name)(model, **options)


def create_metric(name: str, **options):
    from .catalog import METRICS

    return METRICS.get(name)(**options)


def list_methods() -> list[str]:
    from .catalog import METHODS

    return METHODS.names()


def list_metrics() -> list[str]:
    from .catalog import METRICS

    return METRICS.names()


def list_presets() -> list[str]:
    from .catalog import PRESETS

    return PRESETS.names()


def list_models() -> list[str]:
    from .catalog import MODELS

    return MODELS.names()


__all__ = [
    "AttributionMethod",
    "EvalBatch",
    "Metric",
    "RunConfig",
    "RunResult",
    "__version__",
    "create_method",
    "create_metric",
    "list_methods",
    "list_metrics",
    "list_models",
    "list_presets",
    "load_run",
    "run",
]
