"""On a CUDA device the methods, the metrics and the runner give the CPU's results.

Every test here is marked ``gpu`` and is skipped where CUDA is not available (CI has no GPU).
TF32 is switched off, so float32 matrix products and convolutions round as on the CPU and the
remaining differences are those of summation order.

Exceptions, by design: iGOS++ draws its integration-path noise from a generator on the images'
device (another stream of numbers on CUDA) and Extremal Perturbations optimises its masks by
gradient steps that amplify rounding differences; for these two only a valid output is required.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attrbench.catalog import METHODS, METRICS
from attrbench.presets import SYNTHETIC

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
NOT_BITWISE = ("igos_pp", "extremal_perturbations")


@pytest.fixture(autouse=True)
def no_tf32():
    if not torch.cuda.is_available():  # the helpers below also run on the CPU
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _method(name: str, model: torch.nn.Module, fingerprint: str):
    cls = METHODS.get(name)
    opts = dict(SYNTHETIC.method_options.get(name, {}))
    if cls.needs_checkpoint:
        opts.update(preset=SYNTHETIC, classifier_fingerprint=fingerprint)
    return cls(model, **opts)


def _masks(name, model, fingerprint, images, targets, cls_maps, device):
    model = copy.deepcopy(model).to(device)
    method = _method(name, model, fingerprint)
    gt = (cls_maps == (targets[:, None, None] + 1)).to(device)
    seeds = torch.arange(images.shape[0]) + 11
    return method.attribute(images.to(device), targets.to(device),
                            gt_masks=gt if method.needs_ground_truth else None, seeds=seeds)


@pytest.mark.parametrize("name", METHODS.names())
def test_methods_on_cuda_equal_cpu(name, synthetic_classifier, synthetic_batch):
    from attrbench.models import fingerprint

    images, labels, cls_maps = synthetic_batch
    targets = labels.argmax(1)
    fp = fingerprint(synthetic_classifier)
    gpu = _masks(name, synthetic_classifier, fp, images, targets, cls_maps, DEVICE)
    assert gpu.device.type == torch.device(DEVICE).type
    assert gpu.shape == (4, 64, 64) and torch.isfinite(gpu).all()
    assert gpu.min() >= -1e-6 and gpu.max() <= 1 + 1e-6
    if name in NOT_BITWISE:
        return
    cpu = _masks(name, synthetic_classifier, fp, images, targets, cls_maps, "cpu")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


def _scores(device: str, methods: list[str]) -> dict:
    """Per-image scores of every metric (the default ones and randomization_spearman) for
    ``methods`` on 6 test images, computed by the runner's scoring step on ``device``."""
    from attrbench.assemble import build_methods
    from attrbench.config import image_seed
    from attrbench.data import collate_samples, open_dataset
    from attrbench.evaluate import score_batch
    from attrbench.models import load_classifier
    from attrbench.presets import resolve_weights

    dev = torch.device(device)
    ds = open_dataset(SYNTHETIC, "test", limit=6)
    batch = collate_samples([ds[i] for i in range(len(ds))]).to(dev)
    model, meta = load_classifier(resolve_weights(SYNTHETIC.classifier_weights))
    model = model.to(dev).eval()
    built = build_methods(methods, model, SYNTHETIC, {}, meta, ds.num_classes)
    names = [k for k in METRICS.names() if METRICS.get(k).kind != "cost"]
    metric_objs = {k: METRICS.get(k)(**SYNTHETIC.metric_options.get(k, {})) for k in names}
    seeds = torch.tensor([image_seed(i, 0) for i in batch.image_ids])
    out = {}
    for m, method in built.items():
        for row in score_batch(m, method, batch, seeds, model, metric_objs, dev):
            assert row["status"] == "ok", row
            out[(row["image_id"], m)] = {k: row["scores"][k] for k in names}
    return out


def _close(a, b, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel, abs_) for k in a)
    a = math.nan if a is None else float(a)
    b = math.nan if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_metrics_on_cuda_equal_cpu():
    """The same masks (ground truth, a fixed Gaussian) scored on CUDA and on the CPU: every
    metric's per-image value agrees."""
    methods = ["ideal", "center"]
    cpu, gpu = _scores("cpu", methods), _scores(DEVICE, methods)
    assert cpu.keys() == gpu.keys() and len(cpu) == 12
    for key, want in cpu.items():
        for k, v in want.items():
            assert _close(gpu[key][k], v), (key, k, gpu[key][k], v)


def test_a_cuda_run_passes_the_gate_against_the_cpu_run(tmp_path, capsys):
    """A run on CUDA and one on the CPU (every method but the two above, every default metric,
    10 images): ``attrbench compare`` finds the same configuration, images, failures and values
    within each metric's tolerance."""
    from attrbench.compare import compare_main, make_baseline
    from attrbench.runner import RunConfig, run

    methods = [m for m in METHODS.names() if m not in NOT_BITWISE]
    common = {"methods": methods, "limit": 10, "progress": False, "report": False}
    cpu = run(RunConfig(out=str(tmp_path / "cpu"), device="cpu", **common))
    gpu = run(RunConfig(out=str(tmp_path / "gpu"), device=DEVICE, **common))
    baseline = make_baseline(cpu, tmp_path / "cpu.json")
    capsys.readouterr()
    rc = compare_main(baseline, gpu)
    printed = capsys.readouterr().out
    assert rc == 0, printed
