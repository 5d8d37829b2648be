"""The benchmark runner: dataset -> methods -> metrics -> result store.

For every batch of images and every method:
    1. the method makes one mask per (image, ground-truth class) pair (the paper's multi-label
       protocol); the masks of an image are merged by pixel-wise max for image-level metrics,
       before or after the final rescale as the method's ``merge`` order says;
    2. the call is timed (CUDA-synchronised), its classifier forward/backward rows counted by
       hooks, and its peak memory measured;
    3. a method error or a non-finite mask fails *that image only* (the batch is retried image by
       image to find which), and the failure is recorded with its reason; it is never turned
       into a score. Every finite map is scored, an all-zero one included;
    4. every metric scores the batch, except metrics whose protocol does not cover the method
       (``Metric.not_applicable``: recorded as "n/a"); per-image rows go to ``scores.jsonl``
       at once.

An image whose files cannot be read (a corrupt image or mask, an unknown class name, ...) fails
for every method with the reason ``"data: ..."``; configuration problems (unknown names, bad
option values, a wrong data root, a checkpoint that does not fit, class names the dataset does
not know) stop the run before any work. A run in which every image failed for every method
raises :class:`RunFailedError` (after writing its folder), naming the most common reason.

A run folder that already holds rows is resumed: images done for a method are skipped. Results
do not depend on the batch composition (per-image seeds, see :func:`image_seed`), so a resumed
run's rows and summary equal an uninterrupted run's, except the cost metrics (time, memory).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .catalog import METHODS, METRICS, PRESETS
from .data import Batch, Sample, collate_samples, open_dataset
from .interfaces import AttributionMethod, EvalBatch
from .metrics.cost import CallCounter, PeakMemory
from .models import load_classifier
from .presets import Preset, for_own_data, resolve_weights
from .results import (
    ResultStore,
    environment_info,
    summarize,
    write_summary,
)


class ConfigError(ValueError):
    """A configuration problem found before any work is done."""


class RunFailedError(ValueError):
    """Every image failed for every method: the run produced no score."""


@dataclass
class RunConfig:
    """All options of ``attrbench run`` (the CLI fills it; so can a script)."""

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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid --device '{device}'; expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was requested but CUDA is not available")
    return dev


def image_seed(image_id: str, seed: int) -> int:
    """A stable per-image seed: independent of batch composition and order."""
    return (zlib.crc32(image_id.encode()) + 7919 * seed) % (2**31 - 1)


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        return False


def build_methods(names: list[str], model: torch.nn.Module, preset: Preset, cfg: RunConfig,
                  classifier_meta: dict, num_classes: int, device: torch.device
                  ) -> dict[str, AttributionMethod]:
    methods = {}
    for name in names:
        cls = METHODS.get(name)
        opts = dict(preset.method_options.get(name, {}))
        opts.update(cfg.method_options.get(name, {}))
        if getattr(cls, "needs_checkpoint", False):
            opts.setdefault("preset", preset)
            opts.setdefault("classifier_fingerprint", classifier_meta.get("fingerprint"))
            if name == "explainer" and cfg.explainer_checkpoint:
                opts["checkpoint"] = cfg.explainer_checkpoint
        if getattr(cls, "stochastic", False) and "seed" not in opts:
            import inspect

            if "seed" in inspect.signature(cls.__init__).parameters:
                opts["seed"] = cfg.seed
        try:
            methods[name] = cls(model, **opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"method '{name}': {exc}") from None
        methods[name]._num_classes = num_classes
    return methods


def _options_for(options: dict[str, dict[str, Any]], registry, names: list[str],
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


def _pairs(labels: Tensor) -> tuple[Tensor, Tensor]:
    nz = torch.nonzero(labels > 0.5)
    return nz[:, 0], nz[:, 1]


def _check_masks(masks: Tensor) -> Tensor:
    """(P,) reason codes: 0 ok, 1 non-finite, 2 outside [0, 1]."""
    flat = masks.flatten(1)  # (P, H*W); P may be 0 (a batch without labelled images)
    bad_finite = ~torch.isfinite(flat).all(1)
    out_of_range = (flat.nan_to_num(0.5) < -1e-4).any(1) | (flat.nan_to_num(0.5) > 1 + 1e-4).any(1)
    code = torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)
    code[out_of_range] = 2
    code[bad_finite] = 1
    return code


def run_method_on_batch(method: AttributionMethod, batch: Batch, seeds: Tensor,
                        device: torch.device) -> tuple[Tensor | None, list[str | None], dict]:
    """Maps for every (image, gt class) pair; per-image error strings (None = ok).

    The maps are ``attribute(..., rescale=False)``: for a ``"max_then_rescale"`` method those
    before its final rescale (:meth:`AttributionMethod.merge_pairs` makes the class masks and
    the merged mask from them). Only a method that raises or returns a non-finite value (or,
    breaking its contract, a final map outside [0, 1]) fails an image; every finite map is
    scored, an all-zero one included.
    """
    pi, pc = _pairs(batch.labels)
    b = len(batch)
    errors: list[str | None] = [None] * b
    no_label = (batch.labels > 0.5).sum(1) == 0
    for i in torch.nonzero(no_label).flatten().tolist():
        errors[i] = "no labels: image has no ground-truth class"
    gt = None
    if method.needs_ground_truth:
        for i in range(b):
            if not bool(batch.has_gt[i]) and errors[i] is None:
                errors[i] = "no ground truth: method needs segmentation masks"
        gt = batch.masks[pi, pc].float()
    images = batch.images[pi]
    with PeakMemory(device) as mem, CallCounter(method.model) as calls, _Timer(device) as timer:
        try:
            if method.all_classes_at_once and len(pi) > 0:
                allm = method.attribute_all(batch.images, seeds=seeds, rescale=False)
                masks = allm[pi, pc]
            elif len(pi) > 0:
                masks = method.attribute(images, pc, gt_masks=gt, seeds=seeds[pi.cpu()],
                                         rescale=False)
            else:
                masks = torch.zeros(0, *batch.images.shape[-2:], device=device)
            err = None
        except Exception as exc:  # noqa: BLE001 — isolate per image below
            masks, err = None, f"{type(exc).__name__}: {exc}"
    stats = {"seconds": timer.seconds, "forward_rows": calls.forward_rows,
             "backward_rows": calls.backward_rows, "peak_mem_mb": mem.mb}
    if masks is None:
        if b == 1:
            errors[0] = errors[0] or f"method raised {err}"
            return None, errors, stats
        # retry image by image to find the failing ones
        ok_masks = torch.zeros(len(pi), *batch.images.shape[-2:], device=device)
        for i in range(b):
            sel = pi == i
            if not sel.any():
                continue
            m_i, e_i, _ = run_method_on_batch(method, batch.select([i]), seeds[i:i + 1], device)
            if m_i is None or e_i[0] is not None:
                errors[i] = errors[i] or (e_i[0] if e_i[0] else f"method raised {err}")
            else:
                ok_masks[sel] = m_i
        masks = ok_masks
    finite = torch.isfinite(masks.flatten(1)).all(1)
    masks = masks.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    final = method.rescale(masks) if method.merge == "max_then_rescale" else masks
    codes = _check_masks(final)
    codes[~finite] = 1
    for p in torch.nonzero(codes).flatten().tolist():
        i = int(pi[p])
        if errors[i] is None:
            errors[i] = ("non-finite mask (NaN or inf)" if int(codes[p]) == 1
                         else "mask values outside [0, 1]")
    if method.merge != "max_then_rescale":
        masks = masks.clamp(0, 1)
    return masks, errors, stats


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def _gather_dicts(d: dict[str, list], world: int) -> dict[str, list]:
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, d)
    out: dict[str, list] = {}
    for part in parts:
        for k, v in (part or {}).items():
            out.setdefault(k, []).extend(v)
    return out


def _launch_processes(cfg: RunConfig) -> Path:
    """``--devices N``: N processes through Lightning Fabric (``ddp_spawn``; gloo on CPU, NCCL on
    GPUs). Each evaluates a shard of the images (image i goes to rank i mod N); rank 0 merges the
    shards into one run folder whose rows and summary equal a one-process run's."""
    from lightning.fabric import Fabric

    if cfg.out is None:
        preset = PRESETS.get(cfg.preset)
        cfg.out = str(Path("results") / "runs" / f"{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    dev = resolve_device(cfg.device)
    fabric = Fabric(accelerator="cuda" if dev.type == "cuda" else "cpu", devices=cfg.devices,
                    strategy="ddp_spawn")
    fabric.launch(_worker, cfg)
    return Path(cfg.out)


def _worker(fabric, cfg: RunConfig) -> str:
    import dataclasses

    sub = dataclasses.replace(cfg, devices=1,
                              device=str(fabric.device) if fabric.device.type == "cuda" else "cpu")
    try:
        return str(run(sub))
    finally:
        import torch.distributed as dist

        # leave no process group to the interpreter's exit: gloo's threads torn down there can
        # abort the process ("terminate called without an active exception")
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _validate_names(cfg: RunConfig) -> None:
    PRESETS.canonical(cfg.preset)
    if cfg.methods:
        METHODS.resolve_list(cfg.methods)
    if cfg.metrics:
        METRICS.resolve_list(cfg.metrics)


def run(cfg: RunConfig) -> Path:
    """Run the benchmark; returns the run folder.

    With ``cfg.devices > 1`` (or under ``torchrun``) the images are sharded over processes and
    the results merged into one folder (see :func:`_launch_processes`).
    """
    if cfg.devices > 1 and _rank_world()[1] == 1:
        if not isinstance(cfg.devices, int) or cfg.devices < 1:
            raise ConfigError(f"--devices must be a positive integer, got {cfg.devices}")
        _validate_names(cfg)
        return _launch_processes(cfg)
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _rank_world()[1] == 1:
        import torch.distributed as dist

        # launched by torchrun: join its process group (gloo on CPU, NCCL on GPUs)
        backend = "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    # ------------------------------------------------------------- validate before any work
    if cfg.preset not in PRESETS:
        PRESETS.canonical(cfg.preset)  # raises the did-you-mean error
    preset: Preset = for_own_data(PRESETS.get(cfg.preset), bool(cfg.data_root), bool(cfg.model))
    method_names = METHODS.resolve_list(cfg.methods if cfg.methods else
                                        (list(preset.default_methods) if preset.default_methods else None))
    if cfg.model and not cfg.methods:
        method_names = _without_foreign_checkpoints(method_names, cfg)
    default_metrics = [m for m in METRICS.names() if METRICS.meta(m).get("default", True)]
    metric_names = METRICS.resolve_list(cfg.metrics) if cfg.metrics else (
        list(preset.default_metrics) if preset.default_metrics else default_metrics)
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {cfg.limit}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int) or cfg.image_size < 8):
        raise ConfigError(f"--image-size must be an integer >= 8, got {cfg.image_size}")
    cfg.method_options = _options_for(cfg.method_options, METHODS, method_names, "method")
    cfg.metric_options = _options_for(cfg.metric_options, METRICS, metric_names, "metric")
    if cfg.reference is not None and cfg.reference != "explainer":
        ref = METHODS.canonical(cfg.reference)  # raises the did-you-mean error
        if ref not in method_names:
            raise ConfigError(f"--reference {cfg.reference} is not one of this run's methods "
                              f"({', '.join(method_names)})")
        cfg.reference = ref
    if cfg.model and ":" not in cfg.model:
        from .catalog import MODELS

        cfg.model = MODELS.canonical(cfg.model)  # raises the did-you-mean error
    device = resolve_device(cfg.device)
    if cfg.classes is not None:
        cfg.classes = [str(c).strip() for c in cfg.classes]
    dataset = open_dataset(preset, cfg.split or preset.split, data_root=cfg.data_root,
                           fmt=cfg.format, limit=cfg.limit, image_size=cfg.image_size,
                           classes=cfg.classes)
    k = dataset.num_classes
    # --model without --checkpoint: the user's factory builds (and loads) its own model; the
    # preset's shipped weights are only used for the preset's own classifier
    ck = cfg.checkpoint or (None if cfg.model else resolve_weights(preset.classifier_weights))
    model_name = cfg.model or (None if cfg.checkpoint and not cfg.model else preset.classifier)
    if ck is None:
        if not cfg.model:
            raise ConfigError(f"preset '{preset.name}' needs --checkpoint FILE (a trained "
                              f"classifier; see 'attrbench train classifier')")
        from .models import build_classifier, fingerprint

        model = build_classifier(cfg.model, k).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        cmeta = {"name": cfg.model, "fingerprint": fingerprint(model)}
    else:
        model, cmeta = load_classifier(ck, model_name, k)
    model = model.to(device).eval()
    methods = build_methods(method_names, model, preset, cfg, cmeta, k, device)
    metric_objs = {}
    for name in metric_names:
        opts = dict(preset.metric_options.get(name, {}))
        opts.update(preset.data_metric_options.get(name, {}))
        opts.update(cfg.metric_options.get(name, {}))
        opts = _class_names_to_ids(name, opts, dataset.classes)
        try:
            metric_objs[name] = METRICS.get(name)(**opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metric '{name}': {exc}") from None
    if _rank_world()[0] == 0 and (cfg.data_root or cfg.model or cfg.image_size):
        import sys

        how = "--image-size" if cfg.image_size else (
            f"preset {preset.name}" if preset.dataset != "synthetic" else
            "the default for --data-root/--model; --image-size N to change")
        print(f"attrbench: images resized to {dataset.image_size} x {dataset.image_size} px "
              f"({how})", file=sys.stderr)
    # ------------------------------------------------------------- the run folder
    resolved = {
        "preset": preset.to_dict(), "data_root": str(cfg.data_root) if cfg.data_root else None,
        "split": cfg.split or preset.split, "limit": cfg.limit, "seed": cfg.seed,
        "image_size": dataset.image_size, "num_classes": k, "classes": list(dataset.classes),
        # shipped weights are recorded by their package name, not by a path of this machine
        "classifier": {"checkpoint": (str(cfg.checkpoint) if cfg.checkpoint else
                                      (preset.classifier_weights if ck else None)), **{
            kk: v for kk, v in cmeta.items() if kk in ("name", "fingerprint", "num_classes")}},
        "methods": {n: m.describe() for n, m in methods.items()},
        "metrics": {n: {**type(m).describe(), "options": m.options} for n, m in metric_objs.items()},
    }
    out = Path(cfg.out) if cfg.out else Path("results") / "runs" / (
        f"{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    rank, world = _rank_world()
    if world > 1:
        out = Path(_broadcast(str(out)))
    if rank == 0:
        store = ResultStore(out, resolved, environment_info(str(device)),
                            scores_name="scores.jsonl" if world == 1 else "scores.rank0.jsonl")
    _barrier(world)
    if rank > 0:
        store = ResultStore(out, resolved, environment_info(str(device)),
                            scores_name=f"scores.rank{rank}.jsonl")
    collectors: dict[str, list] = {}
    qualitative: dict[str, tuple] = {}
    shard = dataset if world == 1 else torch.utils.data.Subset(
        dataset, list(range(rank, len(dataset), world)))
    try:
        _evaluate(cfg, preset, shard, model, methods, metric_objs, store, device, collectors,
                  qualitative, progress=cfg.progress and rank == 0)
    finally:
        store.close()
    if world > 1:
        collectors = _gather_dicts(collectors, world)
        qualitative = qualitative if rank == 0 else {}
        _barrier(world)
        if rank != 0:
            return out
        from .results import merge_shards

        merge_shards(out, {iid: i for i, iid in enumerate(dataset.ids)}, list(methods),
                     cfg.batch_size or preset.batch_size)
    _write_side_files(out, dataset, preset, methods, metric_objs, collectors, qualitative)
    summary = summarize(out, list(methods), list(metric_objs),
                        reference=cfg.reference if cfg.reference in methods else None)
    write_summary(out, summary)
    if cfg.report:
        from .report import write_report

        write_report(out)
    _raise_if_all_failed(out, summary)
    return out


def _without_foreign_checkpoints(names: list[str], cfg: RunConfig) -> list[str]:
    """The default method list for a user's ``--model``: methods with a trained network of their
    own (the Explainer, RT-Saliency) are left out unless a checkpoint is given for them, since
    the preset's shipped weights were trained for the preset's classifier (a note says so)."""
    given = {n for n, o in cfg.method_options.items() if "checkpoint" in o}
    if cfg.explainer_checkpoint:
        given.add("explainer")
    dropped = [n for n in names if getattr(METHODS.get(n), "needs_checkpoint", False)
               and METHODS.canonical(n) not in given]
    if dropped and _rank_world()[0] == 0:
        import sys

        print(f"attrbench: {', '.join(dropped)} left out: their shipped weights were trained for "
              f"the preset's classifier, not for --model (--explainer-checkpoint FILE or "
              f"--method-option NAME.checkpoint=FILE, and --methods, to run them)",
              file=sys.stderr)
    return [n for n in names if n not in dropped]


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


def _raise_if_all_failed(out: Path, summary: dict[str, Any]) -> None:
    """:class:`RunFailedError` when no method scored any image, naming the most common reason."""
    res = summary.get("results", {})
    if not res or any(r.get("n_images", 0) > 0 for r in res.values()):
        return
    from collections import Counter

    from .results import read_rows

    errors = [str(r.get("error") or "unknown") for r in read_rows(out) if r.get("status") != "ok"]
    if not errors:
        return
    short = Counter(e.split(":")[0] for e in errors)
    top, n = short.most_common(1)[0]
    example = next(e for e in errors if e.split(":")[0] == top)
    raise RunFailedError(f"every image failed for every method ({len(errors)} rows); most "
                         f"common reason ({n} rows): {example} (run folder: {out})")


def _write_side_files(out, dataset, preset, methods, metric_objs, collectors, qualitative) -> None:
    """Class-specificity matrices and the qualitative grid's images and masks (for the report).

    On a resumed run only what this process computed is available (the qualitative grid is
    written only when every method contributed to it; class-specificity matrices hold the images
    this process evaluated).
    """
    from . import plots

    if collectors:  # methods the metric skips (EP, iGOS++ by the paper's protocol) are absent
        from .metrics.specificity import confusion_matrix, specificity_summary

        matrices = {}
        for m, rows in collectors.items():
            cs = sorted({int(c) for r in rows for c in r["masks"]})
            mat = confusion_matrix(rows, cs)
            matrices[m] = {"classes": [dataset.classes[c] for c in cs], "matrix": mat.tolist(),
                           "summary": specificity_summary(mat)}
        plots.save_class_specificity(out, matrices)
    if qualitative and set(qualitative) == set(methods):
        ids = next(iter(qualitative.values()))[0]
        if all(v[0] == ids for v in qualitative.values()):
            n = min(8, len(ids))
            idx = [dataset.ids.index(i) for i in ids[:n]]
            samples = [dataset[i] for i in idx]
            images = torch.stack([s.image for s in samples])
            labels = torch.stack([s.labels for s in samples])
            masks = {m: v[1][:n] for m, v in qualitative.items()}
            plots.save_qualitative(out, plots.images_to_uint8(images, preset.mean, preset.std),
                                   masks, list(dataset.classes), labels, image_ids=ids[:n])


def _evaluate(cfg, preset, dataset, model, methods, metric_objs, store, device,
              collectors: dict, qualitative: dict, progress: bool = True) -> None:
    from torch.utils.data import DataLoader

    bs = cfg.batch_size or preset.batch_size
    loader = DataLoader(_FlagDataErrors(dataset), batch_size=bs, shuffle=False,
                        collate_fn=collate_samples, num_workers=0)
    total = len(dataset) * len(methods)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="attrbench run", unit="img·method", dynamic_ncols=True)
    warmed: set[str] = set()
    first_batch = True
    try:
        for batch in loader:
            data_errors = batch.errors or [None] * len(batch)
            for name, method in methods.items():
                # an image that could not be read fails for every method, with the reason
                store.append([{"image_id": iid, "method": name, "status": "failed",
                               "error": f"data: {data_errors[i]}", "scores": {}}
                              for i, iid in enumerate(batch.image_ids)
                              if data_errors[i] is not None and not store.done(iid, name)])
                todo = [i for i, iid in enumerate(batch.image_ids)
                        if data_errors[i] is None and not store.done(iid, name)]
                if bar is not None:
                    bar.set_postfix_str(name)
                if not todo:
                    if bar is not None:
                        bar.update(len(batch))
                    continue
                sub = _subset(batch, todo).to(device)
                seeds = torch.tensor([image_seed(i, cfg.seed) for i in sub.image_ids])
                if name not in warmed:  # warm-up (one image) so timings exclude first-call cost
                    warmed.add(name)
                    one = _subset(sub, [0])
                    if (one.labels > 0.5).any():
                        try:
                            run_method_on_batch(method, one, seeds[:1], device)
                        except Exception:  # noqa: BLE001, S110
                            pass  # the failure is recorded by the real call below
                rows = _score(name, method, sub, seeds, model, metric_objs, device,
                              collectors, qualitative if first_batch else None)
                store.append(rows)
                if bar is not None:
                    bar.update(len(batch))
            first_batch = False
    finally:
        if bar is not None:
            bar.close()


class _FlagDataErrors(torch.utils.data.Dataset):
    """Wraps a dataset (or a ``Subset`` of one) so that an image that cannot be read becomes a
    placeholder :class:`Sample` carrying the reason (``Sample.error``) instead of an exception
    that would stop the whole run. Configuration problems (a wrong data root, a missing split
    file) are raised when the dataset is opened, before any work, and are not affected."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        base, idx = dataset, None
        while isinstance(base, torch.utils.data.Subset):
            idx = [base.indices[i] for i in idx] if idx is not None else list(base.indices)
            base = base.dataset
        self._base, self._idx = base, idx

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        j = index if self._idx is None else self._idx[index]
        try:
            s = self.dataset[index]
        except Exception as exc:  # noqa: BLE001 — a bad file fails that image only
            from .data import DataError

            reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            return Sample.failed(str(self._base.ids[j]), self._base.num_classes,
                                 self._base.image_size, reason)
        present = s.labels > 0.5
        if s.masks is not None and bool(present.any()) and not bool(s.masks[present].any()):
            # a segmented image whose labelled classes have no pixel: every localisation
            # metric would score it against an empty mask, so it is not scored at all
            names = [self._base.classes[c] for c in s.class_ids]
            return Sample.failed(s.image_id, self._base.num_classes, self._base.image_size,
                                 f"empty ground-truth mask: image {s.image_id} is labelled "
                                 f"{names} but its segmentation has no pixel of these classes")
        return s


def _subset(batch: Batch, idx: list[int]) -> Batch:
    sub = batch.select(idx)
    sub.errors = None
    return sub


def _score(name, method, batch: Batch, seeds, model, metric_objs, device,
           collectors: dict | None = None, qualitative: dict | None = None) -> list[dict]:
    masks, errors, stats = run_method_on_batch(method, batch, seeds, device)
    b = len(batch)
    ok = [i for i in range(b) if errors[i] is None]
    rows = [{"image_id": batch.image_ids[i], "method": name, "status": "failed",
             "error": errors[i], "scores": {}} for i in range(b) if errors[i] is not None]
    if not ok:
        return rows
    pi, pc = _pairs(batch.labels)
    keep_pairs = torch.tensor([int(p) in set(ok) for p in pi.tolist()], dtype=torch.bool)
    remap = {old: new for new, old in enumerate(ok)}
    sub = _subset(batch, ok)
    pi2 = torch.tensor([remap[int(p)] for p in pi[keep_pairs].tolist()], dtype=torch.long,
                       device=device)
    pc2 = pc[keep_pairs.to(pc.device)].to(device)
    cm, merged = method.merge_pairs(masks[keep_pairs.to(masks.device)], pi2, len(ok))
    per_image_ms = torch.full((len(ok),), stats["seconds"] * 1000.0 / b)
    calls = torch.full((len(ok),), (stats["forward_rows"] + stats["backward_rows"]) / b)
    eb = EvalBatch(
        images=sub.images, labels=sub.labels, pair_image=pi2, pair_class=pc2, class_masks=cm,
        merged=merged,
        gt_masks=sub.masks if bool(sub.has_gt.any()) else None, has_gt=sub.has_gt,
        boxes=sub.boxes, originals=sub.originals or (), model=model, method=method,
        method_name=name,
        image_ids=sub.image_ids, seeds=seeds[torch.tensor(ok)], time_ms=per_image_ms,
        extras={"model_calls": calls, "peak_mem_mb": stats["peak_mem_mb"],
                "forward_rows": stats["forward_rows"] / b, "backward_rows": stats["backward_rows"] / b},
    )
    scores: dict[str, list] = {}
    failed_metric: dict[int, str] = {}
    not_applicable: dict[str, str] = {}
    aux: dict[str, dict[str, Any]] = {}  # auxiliary per-image values (curves) for the plots
    for mname, metric in metric_objs.items():
        reason = metric.not_applicable(method, name)
        if reason is not None:  # outside the metric's protocol: recorded as such, not scored
            not_applicable[mname] = reason
            continue
        try:
            scores[mname] = metric.update(eb)
        except Exception as exc:  # noqa: BLE001 — a metric bug must not kill a long run
            scores[mname] = [math.nan] * len(ok)
            for j in range(len(ok)):
                failed_metric.setdefault(j, f"metric {mname} raised {type(exc).__name__}: {exc}")
        curves = getattr(metric, "curves", None)
        if curves:
            key = mname.replace("_auc", "_curve")
            for iid, per_class in curves.items():
                aux.setdefault(iid, {})[key] = {str(c): v for c, v in per_class.items()}
        spec_rows = getattr(metric, "rows", None)
        if spec_rows and collectors is not None and "specificity" not in aux.get("_done", {}):
            collectors.setdefault(name, []).extend(spec_rows)
            aux.setdefault("_done", {})["specificity"] = True
        metric.reset()  # results stream to disk; nothing accumulates per image in memory
    f1 = _f1_curves(eb)
    for j, i in enumerate(ok):
        iid = batch.image_ids[i]
        row = {"image_id": iid, "method": name, "status": "ok", "error": None,
               "scores": {m: _to_py(v[j]) for m, v in scores.items()}}
        if f1 is not None and bool(eb.has_gt[j]):
            row["scores"]["f1_curve"] = f1[j]
        row["scores"].update(aux.get(iid, {}))
        if j in failed_metric:
            row["metric_error"] = failed_metric[j]
        if not_applicable:
            row["not_applicable"] = dict(not_applicable)
        rows.append(row)
    if qualitative is not None:
        qualitative.setdefault(name, (list(sub.image_ids), eb.merged.detach().cpu()))
    return rows


def _f1_curves(eb: EvalBatch) -> list[list[float]] | None:
    """Per-image binary F1 of the merged mask at thresholds 0.1..0.9 (the paper's F1 figure)."""
    if eb.gt_masks is None:
        return None
    from .metrics.localization import binary_f1
    from .plots import F1_THRESHOLDS

    return binary_f1(eb.merged, eb.gt_union, F1_THRESHOLDS).cpu().tolist()


def _to_py(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, dict):
        return {str(k): _to_py(x) for k, x in v.items()}
    return v


def format_summary(run_dir: str | Path, columns: str | None = None) -> str:
    """The terminal table (:func:`attrbench.tables.render_text`; ``columns``: None = headline
    metrics fitted to 100 columns, ``"all"`` or ``"a,b"``)."""
    from .tables import render_text

    return render_text(json.loads((Path(run_dir) / "summary.json").read_text()), columns)
