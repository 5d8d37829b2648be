"""Benchmark of the batched ROAD curves (attrbench.metrics.road). Not a test.

Prints, for MoRF curves with noisy linear imputation:

  ours / bare forwards: the time of :func:`attrbench.metrics.road.road_curves` over the time of
  the bare classifier forwards it needs (the same ``P * S`` images in the same chunks of
  ``batch_size``, pre-built): the overhead of ranking, the imputation solve and the noise
  (aim: <= 1.15; 1.0 is the floor), and the milliseconds per image.

Two kinds of maps, because the solver's cost depends on them: ``random`` (i.i.d. uniform: the
removed pixels are scattered, every hole is small, the conjugate gradient converges in a few
dozen iterations) and ``smooth`` (8 x 8 noise upsampled bilinearly, like a CAM: large holes,
iterations grow with the hole's diameter).

Setup: ``SmallCNN(6)`` (random init), 16 images of 64 x 64, one class per image, the default
fractions 0.1..0.9, noise 0.01, sigmoid score, solver tolerance 1e-4. Timings: one warm-up, then
the median of ``--repeats`` interleaved runs (and the best run); ``torch.set_num_threads``.

Usage: ``python benchmarks/bench_road.py [--device cpu] [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from attrbench.bench import median_ms, safe_ratio
from attrbench.metrics.road import DEFAULT_FRACTIONS, road_curves
from attrbench.models.classifiers import SmallCNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--maps", default="random,smooth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    torch.manual_seed(0)
    model = SmallCNN(6).eval().to(dev)
    n, s, bs = args.images, args.size, args.batch_size
    images = torch.randn(n, 3, s, s, device=dev)
    targets = torch.arange(n, device=dev) % 6
    seeds = torch.arange(n)
    k = len(DEFAULT_FRACTIONS)
    total = n * k
    prebuilt = images.repeat_interleave(k, 0).contiguous()

    @torch.no_grad()
    def bare() -> None:
        for start in range(0, total, bs):
            model(prebuilt[start:start + bs])

    print(f"device={dev} threads={args.threads} images={n} size={s} fractions={k} "
          f"batch_size={bs} tol={args.tol:g} forwards={total}")
    for kind in args.maps.split(","):
        if kind == "random":
            maps = torch.rand(n, s, s, device=dev)
        elif kind == "smooth":
            maps = F.interpolate(torch.rand(n, 1, 8, 8, device=dev), size=(s, s),
                                 mode="bilinear", align_corners=False)[:, 0]
        else:
            raise SystemExit(f"--maps: unknown kind {kind!r} (random, smooth)")

        def ours(maps=maps) -> None:
            road_curves(model, images, maps, targets, DEFAULT_FRACTIONS, "morf", seeds=seeds,
                        batch_size=bs, tol=args.tol)

        (t_ours, t_bare), (m_ours, m_bare) = median_ms([ours, bare], dev, args.repeats)
        print(f"[{kind:6s}] ours (ROAD MoRF curves): {t_ours:8.1f} ms = {t_ours / n:6.2f} ms/image;"
              f" bare forwards: {t_bare:8.1f} ms")
        print(f"[{kind:6s}] ours / bare forwards = {safe_ratio(t_ours, t_bare):.3f} (medians), "
              f"{safe_ratio(m_ours, m_bare):.3f} (best of repeats)  (aim <= 1.15)")


if __name__ == "__main__":
    main()
