"""RISE overhead benchmark (not a test).

Measures RISE's time per image divided by the time of the bare batched forward passes of its
masked images (the same number of images, the same chunking: ``batch_size * B`` images per
forward). The ratio is RISE's overhead over the classifier cost it cannot avoid (masking,
score accumulation, normalisation); 1.0 is the floor. Warm-up first (which also fills RISE's
mask cache), then the median of ``--repeats`` timed runs.

Usage:
    python benchmarks/bench_rise.py [--device cpu|cuda] [--num-masks 1000] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attrbench.methods.rise import RISE
from attrbench.models.classifiers import SmallCNN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    rise = RISE(model, num_masks=args.num_masks, batch_size=args.mask_batch)

    t_rise = _time(lambda: rise.attribute_all(images), device, args.repeats)

    # bare forwards: pre-built masked chunks of the same shapes, built outside the timing
    masks = rise.masks(args.size, args.size, device)
    b, n = args.batch, args.mask_batch
    full = (images[:, None] * masks[:n][None, :, None]).reshape(b * n, 3, args.size, args.size)
    n_full, rem = divmod(args.num_masks, n)
    last = None
    if rem:
        last = (images[:, None] * masks[:rem][None, :, None]).reshape(b * rem, 3, args.size,
                                                                    args.size)

    def bare() -> None:
        with torch.no_grad():
            for _ in range(n_full):
                model(full)
            if last is not None:
                model(last)

    t_bare = _time(bare, device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} threads={torch.get_num_threads()} size={args.size} batch={b} "
          f"num_masks={args.num_masks} mask_batch={n}")
    print(f"RISE      : {1e3 * t_rise / b:8.2f} ms/image")
    print(f"bare fwd  : {1e3 * t_bare / b:8.2f} ms/image")
    print(f"ratio     : {t_rise / t_bare:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
