"""Test-session setup and shared fixtures.

* ``ATTRBENCH_CACHE`` points at a temporary folder for the session unless it is already set, so
  the tests never write into the user's ``~/.cache/attrbench``; the synthetic splits a test
  reads are generated there on first use (the 100 test images take about a second).
* Under ``CI=true`` a skipped test is a failure (the message says why it skipped), except for
  tests marked ``gpu`` on a machine without CUDA: a missing optional library or browser must
  not turn CI green without running its tests. :func:`require_module` and
  :func:`require_executable` (module ``optional``) are the way to depend on one.
* ``gpu``-marked tests are skipped where CUDA is not available.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

from optional import in_ci  # tests/ is on sys.path (above)

_TMP_CACHE: str | None = None


def pytest_configure(config):
    global _TMP_CACHE
    if not os.environ.get("ATTRBENCH_CACHE"):
        _TMP_CACHE = tempfile.mkdtemp(prefix="attrbench-test-cache-")
        os.environ["ATTRBENCH_CACHE"] = _TMP_CACHE


def pytest_unconfigure(config):
    if _TMP_CACHE is not None:
        shutil.rmtree(_TMP_CACHE, ignore_errors=True)
        os.environ.pop("ATTRBENCH_CACHE", None)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (in_ci() and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true, which runs every test but the gpu-marked "
                           f"ones: {_skip_reason(report)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true: {_skip_reason(report)}"


@pytest.fixture(scope="session")
def synthetic_classifier():
    from attrbench.models import load_classifier
    from attrbench.presets import SYNTHETIC, resolve_weights

    model, _ = load_classifier(resolve_weights(SYNTHETIC.classifier_weights))
    return model


@pytest.fixture(scope="session")
def synthetic_batch():
    """4 test images of the synthetic generator (drawn directly, no dataset on disk needed):
    normalised images (4,3,64,64), multi-hot labels (4,6), class maps (4,64,64)."""
    import numpy as np

    from attrbench.data.sample import IMAGENET_MEAN, IMAGENET_STD
    from attrbench.data.synthetic import SyntheticConfig, draw_image

    cfg = SyntheticConfig()
    imgs, labels, cls = [], [], []
    for i in range(4):
        d = draw_image(cfg, "test", i)
        x = torch.from_numpy(d["image"].astype(np.float32) / 255).permute(2, 0, 1)
        imgs.append((x - torch.tensor(IMAGENET_MEAN)[:, None, None])
                    / torch.tensor(IMAGENET_STD)[:, None, None])
        c = torch.from_numpy(d["cls"].astype(np.int64))
        cls.append(c)
        lab = torch.zeros(6)
        for k in c.unique().tolist():
            if k > 0:
                lab[k - 1] = 1
        labels.append(lab)
    return torch.stack(imgs), torch.stack(labels), torch.stack(cls)


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A small dataset of the synthetic generator (64 train, 16 val, 8 test images) for the
    training tests: the default dataset's 6,000 training images are not needed to take a few
    optimisation steps."""
    from attrbench.data.synthetic import SyntheticConfig, write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny",
                           SyntheticConfig(n_train=64, n_val=16, n_test=8), progress=False)
