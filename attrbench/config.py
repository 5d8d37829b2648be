"""The run configuration: what a user asks for (:class:`RunConfig`) and what it resolves to
(:class:`ResolvedRun`), validated in one place for ``attrbench run``, ``attrbench bench`` and
the Python API.

:func:`resolve` checks every name and option without touching data or models: unknown names get
the registry's did-you-mean error, bad values a :class:`ConfigError`, both before any work. The
result is immutable; building the dataset, the classifier, the methods and the metrics from it is
:mod:`attrbench.assemble`'s job.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .catalog import METHODS, METRICS, MODELS, PRESETS
from .presets import Preset, for_own_data


class ConfigError(ValueError):
    """A configuration problem found before any work is done."""


@dataclass
class RunConfig:
    """All options of ``attrbench run`` as the user gives them (the CLI fills it; so can a
    script). :func:`resolve` turns it into a :class:`ResolvedRun`; it is never modified."""

    preset: str = "synthetic"
    data_root: str | None = None
    format: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    explainer_checkpoint: str | None = None
    methods: list[str] | None = None
    metrics: list[str] | None = None
    limit: int | None = None
    out: str | None = None
    device: str = "auto"
    seed: int = 0
    batch_size: int | None = None
    split: str | None = None
    image_size: int | None = None
    classes: list[str] | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    reference: str | None = "explainer"
    report: bool = True
    devices: int = 1


@dataclass(frozen=True)
class ResolvedRun:
    """A validated run: canonical names, merged options, the device and the run folder.

    ``method_options``/``metric_options`` hold the user's options only (keyed by canonical
    name); the preset's own options are merged in when the components are built, so that the
    recorded configuration says which come from where.
    """

    preset: Preset
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    method_options: Mapping[str, Mapping[str, Any]]
    metric_options: Mapping[str, Mapping[str, Any]]
    device: torch.device
    out: Path
    split: str
    batch_size: int
    seed: int = 0
    limit: int | None = None
    data_root: str | None = None
    format: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    image_size: int | None = None
    classes: tuple[str, ...] | None = None
    reference: str | None = None
    progress: bool = True
    report: bool = True
    devices: int = 1
    #: the Explainer's checkpoint given with --explainer-checkpoint (also in method_options)
    explainer_checkpoint: str | None = None

    def options_of(self, method: str) -> dict[str, Any]:
        return dict(self.method_options.get(method, {}))

    def metric_options_of(self, metric: str) -> dict[str, Any]:
        return dict(self.metric_options.get(metric, {}))


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device that is
    not available is a :class:`ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid --device '{device}'; expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was requested but CUDA is not available")
    return dev


def default_run_folder(name: str) -> Path:
    """``results/runs/<name>-<local time>``: where a run or a benchmark writes by default."""
    return Path("results") / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def image_seed(image_id: str, seed: int) -> int:
    """A stable per-image seed: independent of batch composition and order."""
    return (zlib.crc32(image_id.encode()) + 7919 * seed) % (2**31 - 1)


def check_names(cfg: RunConfig) -> None:
    """The registry's did-you-mean error for an unknown preset, method or metric name."""
    PRESETS.canonical(cfg.preset)
    if cfg.methods:
        METHODS.resolve_list(cfg.methods)
    if cfg.metrics:
        METRICS.resolve_list(cfg.metrics)


def _positive(name: str, value: Any, minimum: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < minimum):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"--{name} must be {what}, got {value}")


def resolve(cfg: RunConfig, *, device: str | None = None) -> ResolvedRun:
    """Validate ``cfg`` and resolve every default; raises before any data or model is touched.

    Args:
        cfg: the user's options.
        device: overrides ``cfg.device`` (a distributed worker's own device).
    """
    PRESETS.canonical(cfg.preset)  # raises the did-you-mean error
    preset = for_own_data(PRESETS.get(cfg.preset), bool(cfg.data_root), bool(cfg.model))
    method_names = METHODS.resolve_list(
        cfg.methods if cfg.methods else
        (list(preset.default_methods) if preset.default_methods else None))
    method_options = _options_for(cfg.method_options, METHODS, method_names, "method")
    if cfg.explainer_checkpoint:
        # --explainer-checkpoint FILE is --method-option explainer.checkpoint=FILE
        method_options.setdefault(METHODS.canonical("explainer"), {})["checkpoint"] = (
            cfg.explainer_checkpoint)
    if cfg.model and not cfg.methods:
        method_names = _without_foreign_checkpoints(method_names, method_options)
    default_metrics = [m for m in METRICS.names() if METRICS.meta(m).get("default", True)]
    metric_names = METRICS.resolve_list(cfg.metrics) if cfg.metrics else (
        list(preset.default_metrics) if preset.default_metrics else default_metrics)
    _positive("limit", cfg.limit)
    _positive("batch-size", cfg.batch_size)
    _positive("image-size", cfg.image_size, minimum=8)
    _positive("devices", cfg.devices)
    metric_options = _options_for(cfg.metric_options, METRICS, metric_names, "metric")
    reference = cfg.reference
    if reference is not None and reference != "explainer":
        ref = METHODS.canonical(reference)  # raises the did-you-mean error
        if ref not in method_names:
            raise ConfigError(f"--reference {reference} is not one of this run's methods "
                              f"({', '.join(method_names)})")
        reference = ref
    model = MODELS.canonical(cfg.model) if cfg.model and ":" not in cfg.model else cfg.model
    return ResolvedRun(
        preset=preset, methods=tuple(method_names), metrics=tuple(metric_names),
        method_options=_frozen(method_options), metric_options=_frozen(metric_options),
        device=resolve_device(device or cfg.device),
        out=Path(cfg.out) if cfg.out else default_run_folder(preset.name),
        split=cfg.split or preset.split, batch_size=cfg.batch_size or preset.batch_size,
        seed=cfg.seed, limit=cfg.limit, data_root=cfg.data_root, format=cfg.format, model=model,
        checkpoint=cfg.checkpoint, image_size=cfg.image_size,
        classes=tuple(str(c).strip() for c in cfg.classes) if cfg.classes is not None else None,
        reference=reference if reference in method_names else None, progress=cfg.progress,
        report=cfg.report, devices=cfg.devices, explainer_checkpoint=cfg.explainer_checkpoint)


def _frozen(options: dict[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in options.items()})


def _options_for(options: Mapping[str, Mapping[str, Any]], registry, names: list[str],
                 what: str) -> dict[str, dict[str, Any]]:
    """``--method-option``/``--metric-option`` keyed by canonical name; an option for an unknown
    name or for one that is not part of the run is refused (it would be silently ignored)."""
    out: dict[str, dict[str, Any]] = {}
    for name, opts in options.items():
        canonical = registry.canonical(name)  # raises the did-you-mean error
        if canonical not in names:
            raise ConfigError(f"--{what}-option {name}.{next(iter(opts), '?')}: {what} "
                              f"'{canonical}' is not one of this run's {what}s "
                              f"({', '.join(names)})")
        out.setdefault(canonical, {}).update(opts)
    return out


def _without_foreign_checkpoints(names: list[str],
                                 method_options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The default method list for a user's ``--model``: methods with a trained network of their
    own (the Explainer, RT-Saliency) are left out unless a checkpoint is given for them, since
    the preset's shipped weights were trained for the preset's classifier (a note says so)."""
    given = {n for n, o in method_options.items() if "checkpoint" in o}
    dropped = [n for n in names if METHODS.get(n).needs_checkpoint and n not in given]
    if dropped:
        from .distributed import is_main_process

        if is_main_process():
            import sys

            print(f"attrbench: {', '.join(dropped)} left out: their shipped weights were trained "
                  f"for the preset's classifier, not for --model (--explainer-checkpoint FILE or "
                  f"--method-option NAME.checkpoint=FILE, and --methods, to run them)",
                  file=sys.stderr)
    return [n for n in names if n not in dropped]
