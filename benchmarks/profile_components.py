"""Where a default run's time goes, per method and per metric (a benchmark, not a test).

Builds the synthetic preset's run exactly as ``attrbench run`` does (preset options, shipped
classifier and checkpoints), takes the first ``--images`` test images as one batch and, for each
method, times the method call and then every metric's ``update`` on the method's masks. For each
piece it prints the median wall time over ``--repeats`` runs and, from ``getrusage``, the user
and system CPU seconds and the minor page faults of the median run. System time and minor
faults are the signature of allocation churn: large temporaries that glibc serves with
``mmap`` and gives back with ``munmap`` every call, each fresh page zeroed by the kernel.

Usage:
    python benchmarks/profile_components.py [--images 50] [--repeats 3]
        [--methods rise,gradcam] [--metrics deletion_auc,class_specificity_diag]
        [--tune-allocator]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def measure(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall ms of ``repeats`` calls, with the user/sys seconds and faults of that call."""
    runs = []
    for _ in range(repeats):
        u0, s0, f0 = _usage()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        u1, s1, f1 = _usage()
        runs.append((wall, u1 - u0, s1 - s0, f1 - f0))
    runs.sort()
    wall, user, sys_, faults = runs[len(runs) // 2]
    return {"ms": 1000 * wall, "user": user, "sys": sys_, "faults": faults,
            "ms_min": 1000 * runs[0][0], "ms_all": [1000 * r[0] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=None, help="comma-separated (default: the run's)")
    ap.add_argument("--metrics", default=None, help="comma-separated (default: the run's)")
    ap.add_argument("--tune-allocator", action="store_true",
                    help="call attrbench._process.tune_allocator() first")
    args = ap.parse_args()
    if args.tune_allocator:
        from attrbench._process import tune_allocator

        print(f"tune_allocator: {tune_allocator()}")

    from attrbench import runner
    from attrbench.catalog import METHODS, METRICS, PRESETS
    from attrbench.data import collate_samples, open_dataset
    from attrbench.models import load_classifier
    from attrbench.presets import resolve_weights

    preset = PRESETS.get("synthetic")
    cfg = runner.RunConfig(progress=False, report=False)
    dataset = open_dataset(preset, preset.split, limit=args.images)
    model, cmeta = load_classifier(resolve_weights(preset.classifier_weights),
                                   preset.classifier, dataset.num_classes)
    model = model.eval()
    names = METHODS.resolve_list(args.methods.split(",") if args.methods else None)
    methods = runner.build_methods(names, model, preset, cfg, cmeta, dataset.num_classes,
                                   torch.device("cpu"))
    metric_names = (METRICS.resolve_list(args.metrics.split(",")) if args.metrics else
                    [m for m in METRICS.names() if METRICS.meta(m).get("default", True)])
    metrics = {}
    for n in metric_names:
        opts = {**preset.metric_options.get(n, {}), **preset.data_metric_options.get(n, {})}
        metrics[n] = METRICS.get(n)(**opts)
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    batch.errors = None
    seeds = torch.tensor([runner.image_seed(i, 0) for i in batch.image_ids])
    b = len(batch)
    print(f"threads={torch.get_num_threads()} images={b} repeats={args.repeats}")
    print(f"{'piece':44s} {'ms/img':>9s} {'user s':>7s} {'sys s':>7s} {'faults':>9s}")
    totals = {"ms": 0.0, "user": 0.0, "sys": 0.0, "faults": 0}

    def show(label: str, r: dict[str, float]) -> None:
        print(f"{label:44s} {r['ms'] / b:9.2f} {r['user']:7.2f} {r['sys']:7.2f} "
              f"{r['faults']:9d}", flush=True)
        for k in totals:
            totals[k] += r[k]

    for name, method in methods.items():
        runner.run_method_on_batch(method, batch.select([0]), seeds[:1], torch.device("cpu"))
        out: dict = {}

        def call(method=method, out=out) -> None:
            out["res"] = runner.run_method_on_batch(method, batch, seeds, torch.device("cpu"))

        show(f"{name} (method)", measure(call, args.repeats))
        masks = out["res"][0]
        pi, pc = runner._pairs(batch.labels)
        cm, merged = method.merge_pairs(masks, pi, b)
        from attrbench.interfaces import EvalBatch

        def make_eb(name=name, method=method, cm=cm, merged=merged, pi=pi, pc=pc) -> EvalBatch:
            return EvalBatch(images=batch.images, labels=batch.labels, pair_image=pi,
                             pair_class=pc, class_masks=cm, merged=merged,
                             gt_masks=batch.masks if bool(batch.has_gt.any()) else None,
                             has_gt=batch.has_gt, boxes=batch.boxes,
                             originals=batch.originals or (), model=model, method=method,
                             method_name=name, image_ids=batch.image_ids, seeds=seeds,
                             time_ms=torch.zeros(b),
                             extras={"model_calls": torch.zeros(b), "peak_mem_mb": 0.0,
                                     "forward_rows": 0.0, "backward_rows": 0.0})

        for mname, metric in metrics.items():
            if metric.not_applicable(method, name) is not None:
                continue

            def upd(metric=metric, make_eb=make_eb) -> None:
                metric.update(make_eb())  # a fresh batch: no cache shared between repeats
                metric.reset()

            show(f"  {name} / {mname}", measure(upd, args.repeats))
    print(f"{'TOTAL':44s} {totals['ms'] / b:9.2f} {totals['user']:7.2f} {totals['sys']:7.2f} "
          f"{totals['faults']:9d}")


if __name__ == "__main__":
    main()
