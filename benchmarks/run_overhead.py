"""A run's wall time over the bare classifier work it had to do.

``timings.json`` of a run folder counts the classifier calls of the whole evaluation (methods and
metrics) by their number of rows: ``forward_sizes`` (rows per forward -> calls) and
``backward_sizes`` (rows per backward -> calls). This script replays that work on the same
classifier (the run's preset's) with random images of the run's size: for every call size, the
median time of a bare forward (inference mode) and of a bare forward + backward to the input,
and prints::

    bare = sum over forward sizes s of calls(s) x t_forward(s)
         + sum over backward sizes s of calls(s) x (t_forward_backward(s) - t_forward_grad(s))
    ratio = the run's evaluation wall time (timings.json total_s) / bare

1.0 would mean the run did nothing but its classifier calls; the rest is the methods' own
networks (the Explainer's), mask generation and optimisation steps, metric bookkeeping, data
loading and Python. The forward of a call that is later backpropagated is counted once, as a
forward (the backward's share is the difference).

    python benchmarks/run_overhead.py results/runs/my-run [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attrbench._process import tune_allocator
from attrbench.catalog import PRESETS
from attrbench.models import load_classifier
from attrbench.presets import resolve_weights


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_seconds(model, size: int, forward_sizes: dict, backward_sizes: dict,
                 repeats: int) -> tuple[float, float]:
    """(bare forward seconds, bare backward seconds) of the recorded calls."""
    big = max([1, *map(int, forward_sizes), *map(int, backward_sizes)])
    x = torch.randn(big, 3, size, size, generator=torch.Generator().manual_seed(0))
    fwd = 0.0
    for s, calls in forward_sizes.items():
        s = int(s)

        def forward(s: int = s) -> None:
            with torch.inference_mode():
                model(x[:s])

        fwd += calls * _median_s(forward, repeats)
    bwd = 0.0
    for s, calls in backward_sizes.items():
        s = int(s)

        def forward_grad(s: int = s) -> None:
            model(x[:s].clone().requires_grad_(True))

        def forward_backward(s: int = s) -> None:
            xs = x[:s].clone().requires_grad_(True)
            model(xs)[:, 0].sum().backward()

        bwd += calls * max(0.0, _median_s(forward_backward, repeats)
                           - _median_s(forward_grad, repeats))
    return fwd, bwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder with timings.json")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tune_allocator()  # as the CLI does for the run: same allocator behaviour on both sides
    run = Path(args.run)
    timings = json.loads((run / "timings.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    rows = timings.get("classifier_rows") or {}
    if "forward_sizes" not in rows:
        raise SystemExit(f"{run}/timings.json has no classifier call sizes (a run made before "
                         f"they were recorded)")
    preset = PRESETS.get(config["preset"]["name"])
    model, _ = load_classifier(resolve_weights(preset.classifier_weights))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fwd, bwd = bare_seconds(model, int(config["image_size"]), rows["forward_sizes"],
                            rows["backward_sizes"], args.repeats)
    total = float(timings["total_s"])
    print(f"run: {run} ({config['preset']['name']}, {torch.get_num_threads()} threads)")
    print(f"classifier calls: {rows['forward_calls']:,} forwards ({rows['forward_rows']:,} rows, "
          f"{len(rows['forward_sizes'])} sizes), backwards of {rows['backward_rows']:,} rows")
    print(f"bare classifier time: forwards {fwd:.1f} s + backwards {bwd:.1f} s = "
          f"{fwd + bwd:.1f} s (median of {args.repeats} per call size)")
    print(f"run evaluation wall time {total:.1f} s (methods {sum(timings['methods_s'].values()):.1f}"
          f" s, metrics {sum(timings['metrics_s'].values()):.1f} s)")
    print(f"ratio (run / bare classifier work): {total / (fwd + bwd):.2f}x" if fwd + bwd > 0
          else "ratio: undefined (no classifier calls)")


if __name__ == "__main__":
    main()
