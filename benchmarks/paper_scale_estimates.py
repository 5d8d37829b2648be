"""Estimated wall time of each method at the paper's settings, from the committed H200 figures.

    python benchmarks/paper_scale_estimates.py            # print the markdown
    python benchmarks/paper_scale_estimates.py --update docs/performance.md
    python benchmarks/paper_scale_estimates.py --check docs/performance.md   # exit 1 if stale

Reads ``results/gpu/gpu_check_h200_quick.json`` (``benchmarks/gpu_check.py --quick``: ResNet-50
classifier and DeepLabv3-ResNet50 Explainer at 224 px, random weights, paper settings),
``results/gpu/bench_h200.json`` (``attrbench bench --device cuda``) and
``results/gpu/synthetic_default_h200.md`` (the default synthetic run on the GPU). Every estimate
is a measured ms per image times a number of images, scaled only as its row says: no figure is
invented; what was not measured is printed as "not measured". Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "results" / "gpu"
START, END = "<!-- estimates:start -->", "<!-- estimates:end -->"

#: the paper's evaluation sets: (label, images)
DATASETS = (("VOC-2007 seg. test", 210), ("COCO-2014", 2000))
GPUS = (1, 2, 4, 8)
#: method -> (key in gpu_check's ms_per_image, factor, how the measured figure is scaled)
SOURCES = {
    "explainer": ("explainer", 1, "measured (fp32, batch 4)"),
    "explainer (bf16)": ("explainer_bf16_b32", 1, "measured (bf16 autocast, batch 32)"),
    "gradcam": ("gradcam", 1, "measured (batch 4)"),
    "guided_backprop": ("guided_backprop", 1, "measured (batch 4)"),
    "rise (8000 masks)": ("rise", 1, "measured (8000 masks in chunks of 32, batch 4)"),
    "rise (8000 masks, chunks of 512)": ("rise_b512", 1, "measured (chunks of 512, batch 4)"),
    "extremal_perturbations (800 it x 4 areas)": (
        "extremal_perturbations", 8, "measured at 100 iterations x 4 areas (--quick, batch 2), x 8 linearly"),
    "igos_pp (20 x 15)": ("igos_pp", 1, "measured (20 iterations x 15 IG steps, batch 2)"),
}
NOT_MEASURED = ("gradcam_pp", "rt_saliency")


def duration(seconds: float) -> str:
    """'12 s', '3.4 min', '2.1 h'."""
    if not math.isfinite(seconds):
        return "not measured"
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def sharded_seconds(ms_per_image: float, images: int, gpus: int) -> float:
    """Wall time with linear sharding: the busiest of ``gpus`` processes gets ``ceil(images /
    gpus)`` images (image i goes to rank i mod N); start-up and merging are not included."""
    return ms_per_image * math.ceil(images / gpus) / 1000.0


def resnet50_table(check: dict, dataset: str, images: int) -> list[str]:
    """One dataset's table: each method's measured figure, its scaling and the wall time on
    1, 2, 4 and 8 GPUs."""
    ms = check["ms_per_image"]
    head = ["method", "measured ms / image (key)", "scaling", *[f"{g} GPU" for g in GPUS]]
    lines = [f"{dataset}, {images} images:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(GPUS)]
    for method, (key, factor, how) in SOURCES.items():
        v = ms.get(key)
        per = v * factor if v is not None else math.nan
        cells = [duration(sharded_seconds(per, images, g)) for g in GPUS]
        shown = f"{v:.2f} (`{key}`)" if v is not None else "not measured"
        lines.append("| " + " | ".join([method, shown, how, *cells]) + " |")
    for method in NOT_MEASURED:
        cells = ["not measured"] * len(GPUS)
        lines.append("| " + " | ".join([method, "not measured", "-", *cells]) + " |")
    return lines


def synthetic_time_ms(md: str) -> dict[str, float]:
    """method -> the ``time_ms`` value (median ms per image) of a run's ``summary.md``."""
    rows = [r for r in md.splitlines() if r.startswith("|")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    col = next(i for i, c in enumerate(head) if c.startswith("time_ms"))
    out = {}
    for r in rows[2:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        if len(cells) != len(head):
            break  # the next table
        value = cells[col].replace("*", "").split()[0]
        out[cells[0].replace("(*ref*)", "").strip()] = float(value)
    return out


def synthetic_table(bench: dict, time_ms: dict[str, float]) -> list[str]:
    lines = [("| method | `attrbench bench`: ms / image (16 images, one batch) | "
             "`attrbench run`: time_ms (median ms / image, batches of 50) |"),
             "|---|---:|---:|"]
    for name, m in bench["methods"].items():
        run = time_ms.get(name)
        lines.append(f"| {name} | {m['ms_per_image']:.3f} | "
                     f"{'not measured' if run is None else f'{run:.3f}'} |")
    return lines


def markdown() -> str:
    check = json.loads((GPU / "gpu_check_h200_quick.json").read_text())
    bench = json.loads((GPU / "bench_h200.json").read_text())
    time_ms = synthetic_time_ms((GPU / "synthetic_default_h200.md").read_text())
    p = bench["paper_settings"]
    out = [(f"Generated by `python benchmarks/paper_scale_estimates.py` from `results/gpu/` "
           f"({check['gpu']}, torch {check['torch']})."), "",
           ("**ResNet-50 at 224 px** (`gpu_check_h200_quick.json`): estimated wall time of the "
           "method calls for ONE ground-truth class per image; multiply the per-class methods "
           "(all but the Explainer and RISE, which explain every class in one pass) by the "
           "mean number of ground-truth classes per image of the split (not measured here). "
           "Metrics, data loading and start-up are not included (not measured at 224 px)."), ""]
    for dataset, images in DATASETS:
        out += resnet50_table(check, dataset, images) + [""]
    out += [("**VGG-16 at 224 px**: not measured (no VGG-16 figure in `results/gpu/`); "
            "run `benchmarks/gpu_check.py` with a VGG-16 classifier to fill this in."), "",
            ("**Context: the synthetic preset on the same GPU** (64 px, the small synthetic "
            "CNN; not the paper's networks, not used for the estimates above). "
            f"`bench_h200.json` paper-setting rows on this CNN: RISE 8000 masks "
            f"{p['rise_ms_per_image']:.0f} ms / image, EP 800 it x 4 areas "
            f"{p['ep_ms_per_image']:.0f} ms / image, Explainer "
            f"{p['explainer_ms_per_image']:.2f} ms / image."), ""]
    out += synthetic_table(bench, time_ms)
    return "\n".join(out) + "\n"


def _replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"the file has no '{START}' ... '{END}' block")
    head, rest = text.split(START, 1)
    return head + START + "\n" + block + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--update", metavar="FILE", help="rewrite FILE's estimates block")
    g.add_argument("--check", metavar="FILE", help="exit 1 when FILE's block is stale")
    args = ap.parse_args(argv)
    block = markdown()
    if args.update:
        path = Path(args.update)
        path.write_text(_replace_block(path.read_text(), block))
        print(f"updated {path}")
    elif args.check:
        path = Path(args.check)
        text = path.read_text()
        if _replace_block(text, block) != text:
            print(f"{path}: the estimates block is stale; run "
                  f"python benchmarks/paper_scale_estimates.py --update {path}", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
    else:
        print(block, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
