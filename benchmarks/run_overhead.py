"""A run's wall time over the bare classifier work it had to do.

``timings.json`` of a run folder counts the rows that passed through the classifier's forward and
backward over the whole evaluation (methods and metrics). This script times the same classifier
(the run's preset's) on the same number of rows, in chunks of ``--forward-batch`` rows for the
forwards (inference mode; default: the run's mean rows per forward call, at most 1024) and
``--backward-batch`` rows for the backwards (forward + backward to the input, minus the
forward), and prints::

    ratio = run wall time / (forward rows x s per forward row + backward rows x s per backward row)

1.0 would mean the run did nothing but its classifier calls; the rest is the methods' own
networks (the Explainer's), mask generation, metric bookkeeping, data loading and Python.

    python benchmarks/run_overhead.py results/runs/my-run [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attrbench.catalog import PRESETS
from attrbench.models import load_classifier
from attrbench.presets import resolve_weights


def _per_row_seconds(fn, rows: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder with timings.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--forward-batch", type=int,
                    help="rows per bare forward (default: the run's mean rows per call)")
    ap.add_argument("--backward-batch", type=int, default=64)
    args = ap.parse_args()
    run = Path(args.run)
    timings = json.loads((run / "timings.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    rows = timings.get("classifier_rows") or {}
    if not rows:
        raise SystemExit(f"{run}/timings.json has no classifier_rows (a run made before they "
                         f"were recorded)")
    preset = PRESETS.get(config["preset"]["name"])
    model, _ = load_classifier(resolve_weights(preset.classifier_weights))
    model.eval()
    size = int(config["image_size"])
    if args.forward_batch is None:
        calls = max(1, int(rows.get("forward_calls") or 1))
        args.forward_batch = max(1, min(1024, round(rows["forward_rows"] / calls)))
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(args.forward_batch, 3, size, size, generator=g)
    xb = torch.randn(args.backward_batch, 3, size, size, generator=g)

    def forward() -> None:
        with torch.inference_mode():
            model(xf)

    def forward_backward() -> None:
        x = xb.clone().requires_grad_(True)
        model(x)[:, 0].sum().backward()

    t_fwd = _per_row_seconds(forward, args.forward_batch, args.repeats)
    t_fb = _per_row_seconds(forward_backward, args.backward_batch, args.repeats)
    t_bwd = max(0.0, t_fb - t_fwd)
    bare = rows["forward_rows"] * t_fwd + rows["backward_rows"] * t_bwd
    total = float(timings["total_s"])
    print(f"run: {run} ({config['preset']['name']}, {torch.get_num_threads()} threads)")
    print(f"classifier rows: {rows['forward_rows']:,} forward, {rows['backward_rows']:,} backward "
          f"({rows.get('forward_calls', 0):,} forward calls)")
    print(f"bare cost per row: forward {1e3 * t_fwd:.3f} ms (batch {args.forward_batch}), "
          f"backward {1e3 * t_bwd:.3f} ms (batch {args.backward_batch}; median of "
          f"{args.repeats})")
    print(f"bare classifier time {bare:.1f} s; run wall time {total:.1f} s "
          f"(methods {sum(timings['methods_s'].values()):.1f} s, metrics "
          f"{sum(timings['metrics_s'].values()):.1f} s)")
    print(f"ratio (run / bare classifier work): {total / bare:.2f}x" if bare > 0 else
          "ratio: undefined (no classifier rows)")


if __name__ == "__main__":
    main()
