"""RISE overhead benchmark (not a test); a thin wrapper of :func:`attrbench.bench.rise_overhead`.

Measures RISE's time per image divided by the time of the bare batched forward passes of its
masked images (the same number of images, the same chunking: ``batch_size * B`` images per
forward). The ratio is RISE's overhead over the classifier cost it cannot avoid (masking,
score accumulation, normalisation); 1.0 is the floor. Warm-up first (which also fills RISE's
mask cache), then the median of ``--repeats`` interleaved timed runs. ``attrbench bench`` runs
the same measurement on the synthetic preset's images and shipped classifier.

Usage:
    python benchmarks/bench_rise.py [--device cpu|cuda] [--num-masks 1000] [--batch 8]
"""

from __future__ import annotations

import argparse

import torch

from attrbench.bench import rise_overhead
from attrbench.models.classifiers import SmallCNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num-masks", type=int, default=1000)
    ap.add_argument("--mask-batch", type=int, default=32, help="RISE batch_size (masks/chunk)")
    ap.add_argument("--batch", type=int, default=8, help="images per call")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallCNN(6).to(device).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    r = rise_overhead(model, images, args.num_masks, args.mask_batch, args.repeats, device)
    b = args.batch
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} threads={torch.get_num_threads()} size={args.size} batch={b} "
          f"num_masks={args.num_masks} mask_batch={args.mask_batch}")
    print(f"RISE      : {r['rise_ms'] / b:8.2f} ms/image")
    print(f"bare fwd  : {r['bare_ms'] / b:8.2f} ms/image")
    print(f"ratio     : {r['ratio']:.3f}  (median of {r['repeats']} per-repeat ratios, range "
          f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}; target <= 1.15)")


if __name__ == "__main__":
    main()
