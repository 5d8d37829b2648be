"""Build what a :class:`~attrbench.config.ResolvedRun` names: the dataset, the classifier, the
methods and the metrics, and the configuration record written to ``config.json``.

Problems found here (a wrong data root, a checkpoint that does not fit, a bad option value, class
names the dataset does not know) are still configuration errors: they stop the run before any
image is evaluated.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

from torch import nn

from .catalog import METHODS, METRICS
from .config import ConfigError, ResolvedRun
from .data import open_dataset
from .interfaces import AttributionMethod, Metric
from .models import load_classifier
from .presets import Preset, resolve_weights


@dataclass
class RunParts:
    """The built components of a run."""

    dataset: Any
    model: nn.Module
    classifier: dict[str, Any]
    methods: dict[str, AttributionMethod]
    metrics: dict[str, Metric]
    record: dict[str, Any]


def assemble(run: ResolvedRun, *, announce: bool = True) -> RunParts:
    """Open the dataset, load the classifier, build the methods and metrics; ``record`` is the
    resolved configuration as written to the run folder."""
    preset = run.preset
    dataset = open_dataset(preset, run.split, data_root=run.data_root, fmt=run.format,
                           limit=run.limit, image_size=run.image_size,
                           classes=list(run.classes) if run.classes is not None else None)
    model, classifier, checkpoint = load_run_classifier(run, dataset.num_classes)
    methods = build_methods(list(run.methods), model, preset, run.method_options, classifier,
                            dataset.num_classes, run.seed)
    metrics = build_metrics(list(run.metrics), preset, run.metric_options, dataset.classes)
    if announce and (run.data_root or run.model or run.image_size):
        how = "--image-size" if run.image_size else (
            f"preset {preset.name}" if preset.dataset != "synthetic" else
            "the default for --data-root/--model; --image-size N to change")
        print(f"attrbench: images resized to {dataset.image_size} x {dataset.image_size} px "
              f"({how})", file=sys.stderr)
    record = {
        "preset": preset.to_dict(), "data_root": str(run.data_root) if run.data_root else None,
        "split": run.split, "limit": run.limit, "seed": run.seed,
        "image_size": dataset.image_size, "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        # shipped weights are recorded by their package name, not by a path of this machine
        "classifier": {"checkpoint": checkpoint, **{
            k: v for k, v in classifier.items() if k in ("name", "fingerprint", "num_classes")}},
        "methods": {n: m.describe() for n, m in methods.items()},
        "metrics": {n: {**type(m).describe(), "options": m.options} for n, m in metrics.items()},
    }
    return RunParts(dataset, model, classifier, methods, metrics, record)


def load_run_classifier(run: ResolvedRun, num_classes: int
                        ) -> tuple[nn.Module, dict[str, Any], str | None]:
    """(frozen classifier on the run's device in eval mode, its metadata, the checkpoint as
    recorded). ``--model`` without ``--checkpoint``: the user's factory builds (and loads) its
    own model; the preset's shipped weights are only used for the preset's own classifier."""
    preset = run.preset
    ck = run.checkpoint or (None if run.model else resolve_weights(preset.classifier_weights))
    recorded = str(run.checkpoint) if run.checkpoint else (preset.classifier_weights if ck else None)
    if ck is None:
        if not run.model:
            raise ConfigError(f"preset '{preset.name}' needs --checkpoint FILE (a trained "
                              f"classifier; see 'attrbench train classifier')")
        from .models import build_classifier, fingerprint

        model = build_classifier(run.model, num_classes).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        meta = {"name": run.model, "fingerprint": fingerprint(model)}
    else:
        model_name = run.model or (None if run.checkpoint else preset.classifier)
        model, meta = load_classifier(ck, model_name, num_classes)
    return model.to(run.device).eval(), meta, recorded


def build_methods(names: list[str], model: nn.Module, preset: Preset,
                  user_options: Any, classifier: dict, num_classes: int, seed: int = 0
                  ) -> dict[str, AttributionMethod]:
    """Methods by canonical name: the preset's options, then the user's; a method with a
    trained network of its own gets the preset and the classifier's fingerprint; a stochastic
    one the run's seed (unless given)."""
    methods = {}
    for name in names:
        cls = METHODS.get(name)
        opts = dict(preset.method_options.get(name, {}))
        opts.update(user_options.get(name, {}))
        if cls.needs_checkpoint:
            opts.setdefault("preset", preset)
            opts.setdefault("classifier_fingerprint", classifier.get("fingerprint"))
        if cls.stochastic and "seed" not in opts and (
                "seed" in inspect.signature(cls.__init__).parameters):
            opts["seed"] = seed
        try:
            methods[name] = cls(model, **opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"method '{name}': {exc}") from None
        methods[name]._num_classes = num_classes
    return methods


def build_metrics(names: list[str], preset: Preset, user_options: Any,
                  class_names) -> dict[str, Metric]:
    """Metrics by canonical name: the preset's options, its options for this kind of data, then
    the user's; a ``classes`` option given by class names becomes the dataset's class ids."""
    metrics = {}
    for name in names:
        opts = dict(preset.metric_options.get(name, {}))
        opts.update(preset.data_metric_options.get(name, {}))
        opts.update(user_options.get(name, {}))
        opts = _class_names_to_ids(name, opts, class_names)
        try:
            metrics[name] = METRICS.get(name)(**opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metric '{name}': {exc}") from None
    return metrics


def _class_names_to_ids(metric: str, opts: dict[str, Any], names) -> dict[str, Any]:
    """A ``classes`` option given by class names (as the paper presets do) -> class ids of the
    dataset; a name the dataset does not have is a configuration error."""
    cs = opts.get("classes")
    if not isinstance(cs, (list, tuple)) or not any(isinstance(c, str) for c in cs):
        return opts
    index = {n: i for i, n in enumerate(names)}
    unknown = [c for c in cs if isinstance(c, str) and c not in index]
    if unknown:
        raise ConfigError(f"metric '{metric}': classes {unknown} are not classes of the dataset "
                          f"({', '.join(names)})")
    return {**opts, "classes": [index[c] if isinstance(c, str) else c for c in cs]}

