"""Benchmark of the batched deletion curves (attrbench.metrics.perturbation). Not a test.

A thin wrapper of :func:`attrbench.bench.deletion_overhead` and
:func:`attrbench.bench.deletion_vs_quantus` (their docstrings hold the Quantus analysis:
``features_in_step`` must divide H * W and Quantus ranks the colour channels separately, so it
runs 3x the steps). Prints

  (a) our deletion time / the time of the bare batched classifier forwards it needs (the same
      P * (steps + 1) images in the same chunks of ``batch_size``, pre-built): the overhead of
      ranking and building the perturbed images (aim: <= 1.15);
  (b) Quantus ``PixelFlipping`` (``features_in_step = H * W / steps``) time / ours, and (b') the
      same with equal classifier work (ours with Quantus's number of steps and forward batch),
      when Quantus is installed (``pip install quantus``); skipped with a message otherwise.

Setup: ``SmallCNN(6)`` (random init), 16 images of 64 x 64, one class per image, random
saliency maps, steps = 32, zero baseline, sigmoid score. Timings: one warm-up, then the median of
``--repeats`` interleaved runs (ratios: the median of the per-repeat ratios, with their range);
``torch.set_num_threads(--threads)``.
``attrbench bench`` runs the same measurements on the synthetic preset's images and classifier.

Usage: ``python benchmarks/bench_deletion.py [--device cpu] [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse

import torch

from attrbench.bench import deletion_overhead, deletion_vs_quantus
from attrbench.models.classifiers import SmallCNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    torch.manual_seed(0)
    model = SmallCNN(6).eval().to(dev)
    n, s, steps, bs = args.images, args.size, args.steps, args.batch_size
    images = torch.randn(n, 3, s, s, device=dev)
    masks = torch.rand(n, s, s, device=dev)
    targets = torch.arange(n, device=dev) % 6

    a = deletion_overhead(model, images, masks, targets, steps, bs, args.repeats, device=dev)
    print(f"device={dev} threads={args.threads} images={n} size={s} steps={steps} "
          f"batch_size={bs} forwards={a['forwards']}")
    print(f"ours (deletion curves): {a['ours_ms']:8.1f} ms")
    print(f"bare batched forwards : {a['bare_ms']:8.1f} ms")
    print(f"(a) ours / bare forwards = {a['ratio']:.3f} (median of {a['repeats']} per-repeat "
          f"ratios, range {a['ratio_min']:.3f}-{a['ratio_max']:.3f})  (aim <= 1.15)")

    q = deletion_vs_quantus(model, images, masks, targets, steps, bs, args.repeats, device=dev)
    if "skipped" in q:
        print(f"(b) skipped: {q['skipped']}")
        return
    qs = q["quantus_steps"]
    print(f"Quantus PixelFlipping : {q['quantus_ms']:8.1f} ms  (quantus {q['quantus_version']}, "
          f"features_in_step={q['features_in_step']} -> {qs} steps, {n * qs} images evaluated)")
    print(f"ours, steps={steps:<3d}        : {q['ours_ms']:8.1f} ms  ({n * (steps + 1)} images "
          "evaluated)")
    print(f"ours, steps={qs:<3d}        : {q['ours_same_work_ms']:8.1f} ms  ({n * (qs + 1)} "
          f"images evaluated, batch_size={n} like Quantus)")
    print(f"(b) Quantus / ours(steps={steps}) = {q['speedup']:.2f}x  (aim >= 10)")
    print(f"(b') same number of evaluated images: Quantus / ours(steps={qs}) = "
          f"{q['speedup_equal_work']:.2f}x")


if __name__ == "__main__":
    main()
