"""Multi-process evaluation and training on 2 CPU processes (gloo)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

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
    common = {"methods": ["gradcam", "random", "ideal"],
              "metrics": ["mean_f1", "cont_iou", "pointing_game", "deletion_auc", "time_ms"],
              "limit": 10, "batch_size": 4, "progress": False, "report": False}
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


class RankRecord(Callback):
    """Saved by every rank at the end of training: its rank, the images it trained on (a
    checksum per image) and the Explainer's weights before and after training. The fit of the
    recipe's encoder pretraining (one process, before the Explainer's) is not recorded."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.images: list[float] = []
        self.batches = 0
        self.before: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "net"):  # the encoder pretraining's classifier fit
            return
        self.before = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(pl_module, "net"):
            return
        self.batches += 1
        self.images += [round(float(x.double().sum()), 3) for x in batch[0]]

    def on_train_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "net"):
            return
        torch.save({"rank": trainer.global_rank, "world_size": trainer.world_size,
                    "batches": self.batches, "images": self.images, "before": self.before,
                    "after": {k: v.detach().cpu().clone()
                              for k, v in pl_module.net.state_dict().items()}},
                   Path(self.out) / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_training_both_ranks_train_and_agree(tmp_path, tiny_synthetic_root,
                                                            monkeypatch):
    """``--devices 2 --strategy ddp_spawn``: each rank trains on its own half of the images,
    and both end with the same weights (gradients are averaged across the ranks), which are the
    weights saved in explainer.pt."""
    import attrbench.training.train as train_mod
    from attrbench.models import load_explainer
    from attrbench.presets import SYNTHETIC

    real = train_mod._trainer

    def with_record(*args, **kwargs):
        trainer, ckpt = real(*args, **kwargs)
        trainer.callbacks.append(RankRecord(str(tmp_path)))
        return trainer, ckpt

    monkeypatch.setattr(train_mod, "_trainer", with_record)
    # a constant learning rate: a one-cycle schedule over this single step would end at ~0
    preset = dataclasses.replace(SYNTHETIC, explainer_train=dataclasses.replace(
        SYNTHETIC.explainer_train, schedule="constant"))
    summary = train_mod.train_explainer(
        preset, tmp_path / "ddp", data_root=str(tiny_synthetic_root), devices=2,
        strategy="ddp_spawn", accelerator="cpu", max_steps=2, limit=32, progress=False,
        max_epochs=1)
    assert summary["loss"] == "explainer"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    # both ranks trained, each on its own half of the 32 images (batch 32 per rank: 1 step)
    for r in ranks:
        assert r["batches"] >= 1 and len(r["images"]) == 16, (r["rank"], r["batches"])
    assert not set(ranks[0]["images"]) & set(ranks[1]["images"])
    # the weights moved, and identically on both ranks
    moved = max(float((ranks[0]["after"][k] - v).abs().max())
                for k, v in ranks[0]["before"].items() if v.is_floating_point())
    assert moved > 1e-5
    assert ranks[0]["before"].keys() == ranks[1]["after"].keys()
    for k, v in ranks[0]["after"].items():
        assert torch.equal(v, ranks[1]["after"][k]), k
    saved, _ = load_explainer(tmp_path / "ddp" / "explainer.pt")
    for k, v in saved.state_dict().items():
        assert torch.equal(v, ranks[0]["after"][k]), k
