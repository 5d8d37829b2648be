"""``attrbench bench``: speed and memory of attrbench's implementations, as ratios.

Everything is measured in one process, on the same machine and the same inputs (the synthetic
preset's test images and its shipped classifier), so that the *ratios* carry over between
machines; absolute times are printed only as context. Results go to ``<out>/bench.json``.

Measurements (modules of this package):

* **Per method** (:func:`~.measure.method_costs`; every registered method with the synthetic
  preset's options, :data:`~attrbench.presets.QUICK_METHOD_OPTIONS` with ``--quick``): ms per
  image, classifier rows (forward + backward) per image and peak memory, for all ground-truth
  classes of each image as the runner does.
* **Per metric** (:func:`~.measure.metric_costs`): every default metric of the preset, with the
  preset's metric options, timed on each method's masks in the runner's ``EvalBatch``; printed
  as a method x metric table of ms per image with totals: where a run's time goes.
* **Explainer vs the paper's settings** (:func:`~.measure.explainer_vs_paper`): the Explainer's
  ms per image against RISE with 8000 masks and Extremal Perturbations with 800 iterations x 4
  areas, on the same images (aim: the Explainer >= 100x faster than RISE). With ``--quick`` (or
  ``--paper-rise-masks`` / ``--paper-ep-iters`` below the paper's values) fewer masks /
  iterations are timed and the time is extrapolated linearly; such rows say "extrapolated".
* **Overheads** (:func:`~.measure.rise_overhead`, :func:`~.measure.deletion_overhead`): RISE
  and deletion / insertion time divided by the time of the bare batched classifier forwards
  they need (same images, same chunks, pre-built outside the timing; aim <= 1.15).
* **Against other libraries** (:mod:`~.libraries`): Grad-CAM vs captum's ``LayerGradCam`` +
  ``interpolate`` and vs pytorch-grad-cam's ``GradCAM`` (aim <= 1.0: ours no slower); deletion
  vs Quantus ``PixelFlipping`` (aim >= 10x faster). Missing libraries are skipped with a message.
* **Memory growth of** ``attrbench run`` on 1,000 vs 5,000 training images (aim <= 10 %), from
  the peak RSS of child processes (:func:`~.memory.memory_growth`).

Ratios: the two functions are called in turn (interleaved) ``--ratio-repeats`` times after a
warm-up; the reported ratio is the median of the per-repeat ratios, with their min and max
(:func:`~.stats.ratio_stats`): a slow repeat hits both sides of the same ratio. Single timings:
one warm-up call, then the median of ``--repeats`` calls, CUDA-synchronised before and after each
call (:func:`~attrbench.metrics.cost.time_call`). Peak memory: :mod:`~.memory`.
"""

from __future__ import annotations

from .cli import bench_main
from .libraries import deletion_vs_quantus, gradcam_vs_libraries
from .measure import (
    deletion_overhead,
    explainer_vs_paper,
    method_costs,
    metric_costs,
    metric_totals,
    rise_overhead,
)
from .memory import MethodPeakMemory, memory_growth
from .stats import (
    interleaved_ms,
    linear_extrapolation,
    median_ms,
    ratio_stats,
    relative_growth,
    safe_ratio,
)
from .table import Row, format_metric_costs, format_table

__all__ = [
    "MethodPeakMemory",
    "Row",
    "bench_main",
    "deletion_overhead",
    "deletion_vs_quantus",
    "explainer_vs_paper",
    "format_metric_costs",
    "format_table",
    "gradcam_vs_libraries",
    "interleaved_ms",
    "linear_extrapolation",
    "median_ms",
    "memory_growth",
    "method_costs",
    "metric_costs",
    "metric_totals",
    "ratio_stats",
    "relative_growth",
    "rise_overhead",
    "safe_ratio",
]
