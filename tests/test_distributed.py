"""Multi-process evaluation and training on 2 CPU processes (gloo), issue 8."""

from __future__ import annotations

import json
import math

import pytest

from attrbench.runner import RunConfig, run

COST = {"time_ms", "model_calls", "peak_mem_mb"}


def _values(path):
    s = json.loads((path / "summary.json").read_text())
    return {(m, k): v["value"] for m, r in s["results"].items() for k, v in r["metrics"].items()
            if k not in COST}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out.update({f"{prefix}{k}.{i}": (math.nan if x is None else x) for i, x in enumerate(v)})
        else:
            out[f"{prefix}{k}"] = math.nan if v is None else v
    return out


def _rows(path):
    out = {}
    for line in (path / "scores.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[(r["image_id"], r["method"])] = _flat(
            {k: v for k, v in r["scores"].items() if k not in COST})
    return out


def test_two_process_evaluation_equals_one_process(tmp_path):
    common = dict(methods=["gradcam", "random", "ideal"],
                  metrics=["mean_f1", "cont_iou", "pointing_game", "deletion_auc", "time_ms"],
                  limit=10, batch_size=4, progress=False, report=False)
    one = run(RunConfig(out=str(tmp_path / "one"), **common))
    two = run(RunConfig(out=str(tmp_path / "two"), devices=2, **common))
    assert not list(two.glob("scores.rank*.jsonl")), "shard files must be merged away"
    v1, v2 = _values(one), _values(two)
    assert v1.keys() == v2.keys()
    for k in v1:
        a, b = v1[k], v2[k]
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), k
    r1, r2 = _rows(one), _rows(two)
    assert r1.keys() == r2.keys()
    for key in r1:  # batch composition changes float rounding in batched forwards: ~1e-6
        assert r1[key] == pytest.approx(r2[key], rel=1e-5, abs=1e-6, nan_ok=True), key
    order1 = [(json.loads(x)["image_id"], json.loads(x)["method"])
              for x in (one / "scores.jsonl").read_text().splitlines()]
    order2 = [(json.loads(x)["image_id"], json.loads(x)["method"])
              for x in (two / "scores.jsonl").read_text().splitlines()]
    assert order1 == order2, "merged rows keep the one-process order"


@pytest.mark.slow
def test_two_process_ddp_training_runs(tmp_path):
    from attrbench.models import save_classifier
    from attrbench.models.classifiers import SmallCNN
    from attrbench.presets import SYNTHETIC
    from attrbench.training.train import train_explainer

    ck = tmp_path / "cls.pt"
    save_classifier(SmallCNN(6).eval(), ck, "synthetic_cnn", list("abcdef"))
    summary = train_explainer(SYNTHETIC, tmp_path / "ddp", classifier_checkpoint=str(ck),
                              devices=2, strategy="ddp_spawn", accelerator="cpu", max_steps=3,
                              limit=64, progress=False, max_epochs=1)
    assert (tmp_path / "ddp" / "explainer.pt").exists()
    assert summary["loss"] == "explainer"
