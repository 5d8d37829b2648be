"""The run folder's side files, written after the evaluation: the metrics' matrices (the
class-specificity matrices), the qualitative grid's images and masks, and ``timings.json``.

On a resumed run only what this process computed is available: the qualitative grid is written
only when every method contributed to it; matrices hold the images this process evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .evaluate import Collected
from .interfaces import AttributionMethod, Metric
from .presets import Preset
from .rundir import TIMINGS_FILE


def write_side_files(out: Path, dataset, preset: Preset, methods: dict[str, AttributionMethod],
                     metrics: dict[str, Metric], collected: Collected) -> None:
    """Matrices of every matrix group the metrics declare, the qualitative grid and each
    method's worst images."""
    from . import sidefiles

    for group, per_method in collected.matrices.items():
        owner = next(type(m) for m in metrics.values() if m.matrix_group == group)
        records = {m: owner.matrix_record(rows, list(dataset.classes))
                   for m, rows in per_method.items()}
        sidefiles.save_class_specificity(out, records, name=group)
    _write_worst(out, dataset, preset, metrics, collected)
    qualitative = collected.qualitative
    if not qualitative or set(qualitative) != set(methods):
        return
    ids = next(iter(qualitative.values()))[0]
    if not all(v[0] == ids for v in qualitative.values()):
        return
    n = min(8, len(ids))
    samples = [dataset[dataset.ids.index(i)] for i in ids[:n]]
    images = torch.stack([s.image for s in samples])
    labels = torch.stack([s.labels for s in samples])
    masks = {m: v[1][:n] for m, v in qualitative.items()}
    sidefiles.save_qualitative(out, sidefiles.images_to_uint8(images, preset.mean, preset.std), masks,
                           list(dataset.classes), labels, image_ids=ids[:n])


def _write_worst(out: Path, dataset, preset: Preset, metrics: dict[str, Metric],
                 collected: Collected) -> None:
    from . import sidefiles

    kept = {m: v for m, v in collected.worst.items() if v}
    if not kept or collected.worst_metric is None:
        return
    k = min(len(v) for v in kept.values())
    metric = metrics[collected.worst_metric]
    sign = 1.0 if metric.higher_is_better else -1.0
    per_method = {}
    for m, items in kept.items():
        samples = [dataset[dataset.ids.index(iid)] for _, iid, _ in items[:k]]
        images = torch.stack([s.image for s in samples])
        per_method[m] = {
            "images": sidefiles.images_to_uint8(images, preset.mean, preset.std),
            "masks": torch.stack([mask for _, _, mask in items[:k]]),
            "labels": torch.stack([s.labels for s in samples]),
            "image_ids": [iid for _, iid, _ in items[:k]],
            "values": [sign * bad for bad, _, _ in items[:k]]}
    sidefiles.save_worst(out, collected.worst_metric, metric.higher_is_better, per_method,
                         list(dataset.classes))


def write_timings(out: Path, timings: dict[str, Any]) -> Path:
    """``timings.json``: where the run's wall time went (see :class:`attrbench.evaluate.
    Timings`); a resumed run records the time of its last part only."""
    from .rundir import atomic_write_text

    path = Path(out) / TIMINGS_FILE
    atomic_write_text(path, json.dumps(timings, indent=1, sort_keys=True) + "\n")
    return path


def read_timings(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / TIMINGS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def format_timings(timings: dict[str, Any], width: int = 100) -> str:
    """A few lines of at most ``width`` characters: total, data loading, then each method's and
    each metric's seconds (largest first, those under 0.05 s left out) with their share."""
    total = timings.get("total_s") or 0.0

    def part(label: str, items: dict[str, float]) -> list[str]:
        ranked = [(k, v) for k, v in sorted(items.items(), key=lambda kv: -kv[1]) if v >= 0.05]
        words = [f"{k} {v:.1f} s" + (f" ({100 * v / total:.0f}%)" if total > 0 else "")
                 for k, v in ranked] or ["-"]
        out, line = [], f"  {label}:"
        for i, w in enumerate(words):
            w += "," if i < len(words) - 1 else ""
            if len(line) + 1 + len(w) > width:
                out.append(line)
                line = "   "
            line += " " + w
        return [*out, line]

    lines = [(f"wall time {total:.1f} s: data loading {timings.get('data_s', 0.0):.1f} s, "
             f"other {timings.get('other_s', 0.0):.1f} s")]
    for label, key in (("methods", "methods_s"), ("metrics", "metrics_s")):
        if timings.get(key):
            lines += part(label, timings[key])
    return "\n".join(lines)
