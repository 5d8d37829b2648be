"""A tiny real run folder shared by test_tables / test_report / test_compare.

The run (4 sanity methods x 6 metrics on 8 synthetic test images, with a randomly initialised
``SmallCNN(6)`` saved as the classifier checkpoint) is made once per test process and cached;
tests that modify a run work on a copy (:func:`copy_run`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

METHODS = ["ideal", "center", "random", "constant_0.5"]
METRICS = ["mean_f1", "cont_iou", "pointing_game", "auc", "time_ms", "model_calls"]
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]

_RUN: Path | None = None


def base_run() -> Path:
    """The cached run folder (do not modify it)."""
    global _RUN
    if _RUN is None:
        import torch

        from attrbench.models import save_classifier
        from attrbench.models.classifiers import SmallCNN
        from attrbench.runner import RunConfig, run

        root = Path(tempfile.mkdtemp(prefix="attrbench-report-tests-"))
        atexit.register(shutil.rmtree, root, True)
        torch.manual_seed(0)
        ck = root / "random_cls.pt"
        save_classifier(SmallCNN(6), ck, "synthetic_cnn", CLASSES)
        _RUN = run(
            RunConfig(
                methods=METHODS,
                metrics=METRICS,
                limit=8,
                out=str(root / "run"),
                progress=False,
                checkpoint=str(ck),
                model="synthetic_cnn",
            )
        )
    return _RUN


def copy_run(dest: Path) -> Path:
    out = Path(dest) / "run"
    shutil.copytree(base_run(), out)
    return out
