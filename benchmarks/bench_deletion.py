"""Benchmark of the batched deletion curves (attrbench.metrics.perturbation). Not a test.

Prints
  (a) our deletion time / the time of the bare batched classifier forwards it needs (the same
      P * (steps + 1) images in the same chunks of ``batch_size``, pre-built): the overhead of
      ranking and building the perturbed images (aim: <= 1.15);
  (b) our deletion time / Quantus ``PixelFlipping`` with ``features_in_step = H * W / steps``,
      and (b') the same with equal classifier work (see the Quantus notes), when Quantus is
      installed (``pip install quantus``); skipped with a message otherwise.

Setup: ``SmallCNN(6)`` (random init), 16 images of 64 x 64, one class per image, random
saliency maps, steps = 32, zero baseline, sigmoid score. Timings: one warm-up, then the median of
``--repeats`` interleaved runs (for (a) also the best run); ``torch.set_num_threads(--threads)``.

Quantus notes: Quantus 0.6 requires ``features_in_step`` to divide H * W, broadcasts the
(N, 1, H, W) map to the image's (N, 3, H, W) shape and ranks the C*H*W entries, so
``features_in_step = H * W / steps`` (as asked) gives ``3 * steps`` perturbation steps of
``H * W / steps`` channel entries each; 32 steps of whole pixels (``3 * H * W / 32``) would not
divide H * W and is refused. We report the time ratio against our 32-step curves (b) and, since
Quantus then evaluates 3x more perturbed images, also against our curves with Quantus's number of
steps and Quantus's forward batch (``batch_size = images``) (b'), i.e. the same classifier work.
On a CPU the forward batch matters: with SmallCNN at 64 px a batch of 256 costs about twice as
much per image as a batch of 16 (cache), so (b) mixes that in; (a) isolates our overhead. Its ``perturb_baseline="black"`` is the
image minimum (a constant, same cost as our zero baseline). It evaluates no unperturbed step 0,
works on numpy arrays copied to the model each step, and runs with ``softmax=False``.

Usage: ``python benchmarks/bench_deletion.py [--device cpu] [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from attrbench.metrics.cost import time_call
from attrbench.metrics.perturbation import deletion_insertion_curves
from attrbench.models.classifiers import SmallCNN


def median_ms(fns, device, repeats):
    """Median ms of each function; runs are interleaved so machine load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(time_call(fn, device)[1])
    median_ms.last_min = [min(t) for t in times]  # best-of-repeats, less sensitive to load
    return [statistics.median(t) for t in times]


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

    def ours():
        return deletion_insertion_curves(model, images, masks, targets, steps, "deletion",
                                         "zero", batch_size=bs)

    total = n * (steps + 1)
    prebuilt = images.repeat_interleave(steps + 1, 0).contiguous()  # same count and chunks

    @torch.no_grad()
    def bare():
        for start in range(0, total, bs):
            model(prebuilt[start : start + bs])

    t_ours, t_bare = median_ms([ours, bare], dev, args.repeats)
    m_ours, m_bare = median_ms.last_min
    print(f"device={dev} threads={args.threads} images={n} size={s} steps={steps} "
          f"batch_size={bs} forwards={total}")
    print(f"ours (deletion curves): {t_ours:8.1f} ms")
    print(f"bare batched forwards : {t_bare:8.1f} ms")
    print(f"(a) ours / bare forwards = {t_ours / t_bare:.3f} (medians), {m_ours / m_bare:.3f} "
          "(best of repeats)  (aim <= 1.15)")

    try:
        import quantus
    except Exception as e:  # noqa: BLE001 - any import failure means: skip (b)
        print(f"(b) skipped: Quantus is not importable ({type(e).__name__}: {e}); "
              "try `pip install quantus`")
        return
    x_np = images.cpu().numpy()
    y_np = targets.cpu().numpy()
    a_np = masks.cpu().numpy()[:, None]
    fis = s * s // steps
    metric = quantus.PixelFlipping(features_in_step=fis, perturb_baseline="black",
                                   disable_warnings=True, display_progressbar=False)

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np,
                          softmax=False, device=str(dev), batch_size=n, channel_first=True)

    try:
        t0 = time.perf_counter()
        out = theirs()
        first = (time.perf_counter() - t0) * 1000
        q_steps = len(out[0])

        def ours_same_steps():  # same images evaluated and same forward batch as Quantus
            return deletion_insertion_curves(model, images, masks, targets, q_steps, "deletion",
                                             "zero", batch_size=n)

        t_ours2, t_ours3, t_q = median_ms([ours, ours_same_steps, theirs], dev, args.repeats)
    except Exception as e:  # noqa: BLE001
        print(f"(b) skipped: Quantus PixelFlipping failed ({type(e).__name__}: {e})")
        return
    print(f"Quantus PixelFlipping : {t_q:8.1f} ms  (quantus {quantus.__version__}, "
          f"features_in_step={fis} -> {q_steps} steps, {n * q_steps} images evaluated; "
          f"first call {first:.0f} ms)")
    print(f"ours, steps={steps:<3d}        : {t_ours2:8.1f} ms  ({total} images evaluated)")
    print(f"ours, steps={q_steps:<3d}        : {t_ours3:8.1f} ms  ({n * (q_steps + 1)} images "
          f"evaluated, batch_size={n} like Quantus)")
    print(f"(b) ours(steps={steps}) / Quantus(features_in_step=HW/{steps}) = {t_ours2 / t_q:.3f}"
          f"  (Quantus {t_q / t_ours2:.1f}x slower)")
    print(f"(b') same number of evaluated images: ours(steps={q_steps}) / Quantus = "
          f"{t_ours3 / t_q:.3f}")


if __name__ == "__main__":
    main()
