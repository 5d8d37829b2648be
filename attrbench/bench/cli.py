"""``attrbench bench``: the argument parser, the order of the measurements, the printed tables
and ``bench.json``. The measurements themselves are in :mod:`~attrbench.bench.measure`,
:mod:`~attrbench.bench.libraries` and :mod:`~attrbench.bench.memory`."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..rundir import atomic_write_text, clean_json
from .libraries import deletion_vs_quantus, gradcam_vs_libraries
from .measure import (
    PAPER_EP_ITERS,
    PAPER_RISE_MASK_BATCH,
    PAPER_RISE_MASKS,
    deletion_overhead,
    explainer_vs_paper,
    first_targets,
    method_costs,
    metric_costs,
    metric_totals,
    rise_overhead,
)
from .memory import memory_growth
from .table import format_methods, format_metric_costs, format_table, ratio_rows

__all__ = ["bench_main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="attrbench bench",
        description="Speed and memory of attrbench's methods and metrics as ratios against "
                    "bare forwards and other libraries, on the synthetic preset.")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--images", type=int, default=16, help="synthetic test images (default 16)")
    ap.add_argument("--repeats", type=int, help="timed repeats of each method and metric after "
                    "a warm-up (default 3; 1 with --quick)")
    ap.add_argument("--ratio-repeats", type=int,
                    help="interleaved repeats of each ratio; its value is the median of the "
                         "per-repeat ratios (default 7; 3 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="small settings (for tests): 4 images, the quick method options of "
                         "attrbench.presets, extrapolated paper settings")
    ap.add_argument("--out", help="output folder (default results/runs/bench-<time>)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument("--paper-rise-masks", type=int,
                    help=f"RISE masks actually run for the paper-setting row (default "
                         f"{PAPER_RISE_MASKS}; fewer are extrapolated linearly)")
    ap.add_argument("--paper-ep-iters", type=int,
                    help=f"EP iterations actually run for the paper-setting row (default "
                         f"{PAPER_EP_ITERS}; fewer are extrapolated linearly)")
    ap.add_argument("--paper-images", type=int, default=2,
                    help="images for the RISE paper-setting timing (default 2; EP uses 1)")
    ap.add_argument("--memory-sizes", default="1000,5000",
                    help="training-image counts for the memory-growth runs (default 1000,5000)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory-growth runs")
    ap.add_argument("--methods", help="comma-separated methods for the per-method and "
                                      "per-metric tables (default: every registered method)")
    args = ap.parse_args(argv)
    _check_args(ap, args)
    return args


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("images", "repeats", "ratio_repeats", "threads", "paper_rise_masks",
                 "paper_ep_iters", "paper_images"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    try:
        args.memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--memory-sizes expects comma-separated ints, got '{args.memory_sizes}'")
    if not args.skip_memory and (len(args.memory_sizes) < 2 or min(args.memory_sizes) < 1):
        ap.error(f"--memory-sizes needs at least two positive sizes, got {args.memory_sizes}")


@dataclass
class _Setup:
    """What every measurement needs: the resolved run, the classifier, the batch, the built
    methods and metrics, and the settings derived from the arguments."""

    run: Any
    model: torch.nn.Module
    meta: dict
    batch: Any
    methods: dict[str, Any]
    metrics: dict[str, Any]
    options: dict[str, dict]
    quick: bool
    reps: int
    ratio_reps: int
    out: Path
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def device(self) -> torch.device:
        return self.run.device

    def stage(self, name: str) -> float:
        print(f"  [{time.perf_counter() - self.t_start:6.1f} s] {name} ...", flush=True)
        return time.perf_counter()


def _setup(args: argparse.Namespace) -> _Setup:
    """Resolve the synthetic run, load its classifier and images, build methods and metrics.
    Raises :class:`~attrbench.config.ConfigError` (or a registry / checkpoint error)."""
    from attrbench.assemble import build_metrics, load_run_classifier
    from attrbench.config import RunConfig, default_run_folder, resolve
    from attrbench.data import collate_samples, open_dataset

    quick = args.quick
    n_img = 4 if quick and args.images == 16 else args.images
    out = Path(args.out) if args.out else default_run_folder("bench")
    run = resolve(RunConfig(preset="synthetic", device=args.device, out=str(out), limit=n_img,
                            methods=args.methods.split(",") if args.methods else None,
                            progress=False, report=False))
    ds = open_dataset(run.preset, run.split, limit=n_img)
    model, meta, _ = load_run_classifier(run, ds.num_classes)
    batch = collate_samples([ds[i] for i in range(len(ds))]).to(run.device)
    metrics = build_metrics(list(run.metrics), run.preset, {}, ds.classes)
    setup = _Setup(run=run, model=model, meta=meta, batch=batch, methods={}, metrics=metrics,
                   options={}, quick=quick, reps=args.repeats or (1 if quick else 3),
                   ratio_reps=args.ratio_repeats or (3 if quick else 7), out=out)
    _build_methods(setup, ds.num_classes)
    return setup


def _build_methods(s: _Setup, num_classes: int) -> None:
    """The run's methods with the preset's options (with ``--quick``: overridden by
    :data:`~attrbench.presets.QUICK_METHOD_OPTIONS`); one that cannot be built (e.g. a
    checkpoint not trained yet) is skipped with its reason."""
    from attrbench.assemble import build_methods
    from attrbench.presets import quick_method_options

    for name in s.run.methods:
        user = {name: quick_method_options(name)} if s.quick else {}
        try:
            s.methods.update(build_methods([name], s.model, s.run.preset, user, s.meta,
                                           num_classes, s.run.seed))
        except Exception as e:  # noqa: BLE001 - one method must not stop the bench
            s.skipped[f"method:{name}"] = f"cannot build: {type(e).__name__}: {e}"
            continue
        s.options[name] = {**s.run.preset.method_options.get(name, {}), **user.get(name, {})}


def bench_main(argv: list[str] | None = None) -> int:
    """Entry point of ``attrbench bench``; returns the exit code (0; 2 on a setup error)."""
    from attrbench.config import ConfigError
    from attrbench.models import CheckpointError
    from attrbench.registry import RegistryError

    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        s = _setup(args)
    except (ConfigError, RegistryError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    images = s.batch.images
    dev_name = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else (
        platform.processor() or "cpu")
    print(f"attrbench bench: device={s.device} ({dev_name}) threads={torch.get_num_threads()} "
          f"images={images.shape[0]} ({images.shape[2]}x{images.shape[3]}) quick={s.quick} "
          f"repeats={s.reps} ratio repeats={s.ratio_reps}", flush=True)
    res: dict[str, Any] = {}
    _measure_methods(s, res)
    _measure_metrics(s, res)
    _measure_paper(s, res, args)
    _measure_overheads(s, res)
    _measure_libraries(s, res)
    _measure_memory(s, res, args)
    s.timings["total_s"] = time.perf_counter() - s.t_start
    _write_and_print(s, res, args, dev_name)
    return 0


def _measure_methods(s: _Setup, res: dict[str, Any]) -> None:
    t0 = s.stage("per-method costs")
    b = s.batch
    gt = b.masks if bool(b.has_gt.all()) else None
    costs = method_costs(s.methods, b.images, b.labels, gt, s.reps, s.device)
    for k, v in costs.items():
        if "skipped" in v:
            s.skipped[f"method:{k}"] = v["skipped"]
        else:
            v["options"] = s.options.get(k, {})
    res["methods"] = {k: v for k, v in costs.items() if "skipped" not in v}
    s.timings["methods_s"] = time.perf_counter() - t0


def _measure_metrics(s: _Setup, res: dict[str, Any]) -> None:
    t0 = s.stage(f"per-metric costs ({len(s.metrics)} metrics x {len(res['methods'])} methods)")
    methods = {k: v for k, v in s.methods.items() if k in res["methods"]}
    mc = metric_costs(methods, s.metrics, s.batch, s.model, s.reps, s.device, s.run.seed)
    for k, v in mc["skipped"].items():
        s.skipped[f"metric_costs:{k}"] = v
    method_ms = {k: v["ms_per_image"] for k, v in res["methods"].items()}
    res["metric_costs"] = {**mc, "metrics": list(s.metrics),
                           "metric_options": {k: m.options for k, m in s.metrics.items()},
                           "method_ms_per_image": method_ms,
                           "totals": metric_totals(mc, method_ms)}
    s.timings["metrics_s"] = time.perf_counter() - t0


def _measure_paper(s: _Setup, res: dict[str, Any], args: argparse.Namespace) -> None:
    t0 = s.stage("Explainer vs RISE/EP at the paper's settings")
    explainer = s.methods.get("explainer") if "explainer" in res["methods"] else None
    if explainer is None:
        s.skipped["explainer_vs_paper"] = "no Explainer: " + s.skipped.get(
            "method:explainer", "not in --methods")
    rise_paper = args.paper_rise_masks or (256 if s.quick else PAPER_RISE_MASKS)
    ep_paper = args.paper_ep_iters or (8 if s.quick else PAPER_EP_ITERS)
    k = min(args.paper_images, s.batch.images.shape[0])
    res["paper_settings"] = explainer_vs_paper(
        s.model, explainer, s.batch.images[:k], first_targets(s.batch.labels)[:k], rise_paper,
        ep_paper, s.reps, device=s.device)
    s.timings["paper_settings_s"] = time.perf_counter() - t0


def _saliency(s: _Setup) -> torch.Tensor:
    """Fixed random saliency maps (seed 0) for the deletion / insertion / Quantus timings."""
    n, _, h, w = s.batch.images.shape
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(0)).to(s.device)


def _measure_overheads(s: _Setup, res: dict[str, Any]) -> None:
    t0 = s.stage("RISE overhead")
    images, targets = s.batch.images, first_targets(s.batch.labels)
    res["rise_overhead"] = rise_overhead(s.model, images, 64 if s.quick else 256,
                                         PAPER_RISE_MASK_BATCH, s.ratio_reps, s.device)
    s.stage("deletion / insertion overhead")
    sal, bs = _saliency(s), 64 if s.quick else 256
    for mode in ("deletion", "insertion"):
        res[f"{mode}_overhead"] = deletion_overhead(s.model, images, sal, targets, 32, bs,
                                                    s.ratio_reps, mode, s.device)
    s.timings["overheads_s"] = time.perf_counter() - t0


def _measure_libraries(s: _Setup, res: dict[str, Any]) -> None:
    t0 = s.stage("Grad-CAM vs captum / pytorch-grad-cam")
    images, targets = s.batch.images, first_targets(s.batch.labels)
    # a few ms per call: more repeats, the median is otherwise at the mercy of machine load
    res["gradcam_vs_libraries"] = gradcam_vs_libraries(s.model, images, targets,
                                                       3 * s.ratio_reps, device=s.device)
    for lib, v in res["gradcam_vs_libraries"].items():
        if "skipped" in v:
            s.skipped[f"gradcam_vs_{lib}"] = v["skipped"]
    s.stage("deletion vs Quantus PixelFlipping")
    q = deletion_vs_quantus(s.model, images, _saliency(s), targets, 32,
                            64 if s.quick else 256, s.reps, s.device)
    if "skipped" in q:
        s.skipped["deletion_vs_quantus"] = q["skipped"]
    else:
        res["deletion_vs_quantus"] = q
    s.timings["libraries_s"] = time.perf_counter() - t0


def _measure_memory(s: _Setup, res: dict[str, Any], args: argparse.Namespace) -> None:
    if args.skip_memory:
        s.skipped["memory_growth"] = "--skip-memory"
        return
    t0 = s.stage(f"memory of `attrbench run` on {args.memory_sizes} training images")
    mg = memory_growth(args.memory_sizes, device=str(s.device))
    if "skipped" in mg:
        s.skipped["memory_growth"] = mg["skipped"]
    else:
        res["memory_growth"] = mg
    s.timings["memory_s"] = time.perf_counter() - t0


def _write_and_print(s: _Setup, res: dict[str, Any], args: argparse.Namespace,
                     dev_name: str) -> None:
    rows = ratio_rows(res)
    n, _, h, w = s.batch.images.shape
    report = {
        "config": {"device": str(s.device), "device_name": dev_name,
                   "threads": torch.get_num_threads(), "images": n, "image_size": [h, w],
                   "quick": s.quick, "repeats": s.reps, "method_repeats": s.reps,
                   "ratio_repeats": s.ratio_reps, "torch": torch.__version__,
                   "python": platform.python_version(),
                   "classifier_fingerprint": s.meta.get("fingerprint"),
                   "memory_sizes": None if args.skip_memory else args.memory_sizes},
        "ratios": {r.key: r.to_dict() for r in rows},
        **res,
        "skipped": s.skipped,
        "timings_s": s.timings,
    }
    atomic_write_text(s.out / "bench.json", json.dumps(clean_json(report), indent=2))
    print("\nper method (all ground-truth classes of each image; synthetic preset options):")
    print(format_methods(res["methods"]))
    mc = res["metric_costs"]
    print(f"\nms per image: each method, then each default metric on its masks ({n} images "
          f"in one batch; the runner's batches are {s.run.batch_size}):")
    print(format_metric_costs(mc, mc["method_ms_per_image"], mc["totals"]))
    print("\nratios: median of per-repeat ratios of interleaved runs (range: min-max)")
    print(format_table(rows))
    for k, v in s.skipped.items():
        print(f"skipped {k}: {v}")
    print(f"\n{s.timings['total_s']:.1f} s; written {s.out / 'bench.json'}")
