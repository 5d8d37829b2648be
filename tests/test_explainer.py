"""The Explainer method: one forward pass per batch, checkpoint pairing; training lowers the
validation loss and resumes from the saved epoch and optimizer state."""

from __future__ import annotations

import copy
import csv
import dataclasses

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from attrbench.models import (
    CheckpointError,
    load_explainer,
    save_explainer,
)
from attrbench.models.classifiers import SmallCNN
from attrbench.models.explainer_nets import SmallUNet
from attrbench.presets import SYNTHETIC, ExplainerRecipe


def test_one_forward_pass_per_batch_whatever_the_number_of_classes(synthetic_classifier,
                                                                    synthetic_batch):
    import attrbench

    images, labels, _ = synthetic_batch
    m = attrbench.create_method("explainer", synthetic_classifier, preset=SYNTHETIC)
    calls = []
    h = m.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        allm = m.attribute_all(images)
        assert len(calls) == 1 and allm.shape == (4, 6, 64, 64)
        m.attribute(images, labels.argmax(1))
        assert len(calls) == 2
    finally:
        h.remove()


def test_masks_are_sigmoid_of_the_network(synthetic_classifier, synthetic_batch):
    import attrbench

    images, _, _ = synthetic_batch
    m = attrbench.create_method("explainer", synthetic_classifier, preset=SYNTHETIC)
    with torch.no_grad():
        ref = torch.sigmoid(m.net(images))
    torch.testing.assert_close(m.attribute_all(images), ref)


def test_checkpoint_refuses_another_classifier(tmp_path, synthetic_batch):
    import attrbench

    other = SmallCNN(6).eval()
    with pytest.raises(ValueError, match="trained for classifier"):
        attrbench.create_method("explainer", other, preset=SYNTHETIC)


def test_save_load_round_trip_and_class_count(tmp_path):
    net = SmallUNet(4).eval()
    path = tmp_path / "e.pt"
    save_explainer(net, path, "unet_small", 4, "abc", "explainer")
    loaded, _ = load_explainer(path, "abc", num_classes=4)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(CheckpointError, match="outputs 4 classes"):
        load_explainer(path, "abc", num_classes=6)
    with pytest.raises(CheckpointError, match="'explainer' loss, not 'rt_saliency'"):
        load_explainer(path, "abc", loss="rt_saliency")


# ------------------------------------------------------------------------------ training
class _TrainStart(Callback):
    """Records where a fit starts: epoch, global step and the optimizer's state."""

    def __init__(self) -> None:
        self.starts: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.starts.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict())})


#: one optimisation step per epoch (16 images, batch 16) and a constant learning rate, so that
#: a run resumed after epoch 2 must end where an uninterrupted run ends
# Lightning resume is tested without the recipe's encoder pretraining (a separate fit, tested
# below), so that every fit the probe sees is an Explainer fit.
TRAIN_PRESET = dataclasses.replace(
    SYNTHETIC, explainer_train=dataclasses.replace(SYNTHETIC.explainer_train, batch_size=16,
                                                   schedule="constant"),
    explainer_recipe=ExplainerRecipe())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_synthetic_root):
    """An uninterrupted 3-epoch run and a 2-epoch run resumed to 3 epochs from its last.ckpt."""
    import attrbench.training.train as train_mod

    probe = _TrainStart()
    real = train_mod._trainer

    def with_probe(*args, **kwargs):
        trainer, ckpt = real(*args, **kwargs)
        trainer.callbacks.append(probe)
        return trainer, ckpt

    tmp = tmp_path_factory.mktemp("train")
    common = {"data_root": str(tiny_synthetic_root), "limit": 16, "progress": False}
    train_mod._trainer = with_probe
    try:
        full = train_mod.train_explainer(TRAIN_PRESET, tmp / "full", max_epochs=3, **common)
        first = train_mod.train_explainer(TRAIN_PRESET, tmp / "resumed", max_epochs=2, **common)
        saved = torch.load(tmp / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu",
                           weights_only=True)
        resumed = train_mod.train_explainer(
            TRAIN_PRESET, tmp / "resumed", max_epochs=3,
            resume=str(tmp / "resumed" / "checkpoints" / "last.ckpt"), **common)
    finally:
        train_mod._trainer = real
    return {"dir": tmp, "full": full, "first": first, "resumed": resumed, "saved": saved,
            "starts": probe.starts}


def _val_losses(run_dir) -> dict[int, float]:
    """Epoch -> validation loss from the Lightning CSV logs of every (resumed) fit."""
    out = {}
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("val_loss"):
                out[int(row["epoch"])] = float(row["val_loss"])
    return out


def test_training_lowers_the_validation_loss(trained):
    losses = _val_losses(trained["dir"] / "full")
    assert sorted(losses) == [0, 1, 2]
    assert losses[0] > losses[1] > losses[2], losses
    assert trained["full"]["best_val_loss"] == pytest.approx(losses[2])
    _, meta = load_explainer(trained["dir"] / "full" / "explainer.pt")
    assert meta["loss"] == "explainer" and meta["meta"]["epochs"] == 3


def test_resume_continues_from_the_saved_epoch_and_optimizer_state(trained):
    saved, starts = trained["saved"], trained["starts"]
    assert saved["epoch"] == 1 and saved["global_step"] == 2  # after 2 epochs of 1 step
    # fits 1 and 2 start from scratch; the resumed fit starts at epoch 2, step 2 ...
    assert [(s["epoch"], s["step"]) for s in starts] == [(0, 0), (0, 0), (2, 2)]
    assert starts[0]["optimizer"]["state"] == {}
    # ... with the optimizer state saved after epoch 2 (Adam's step count and moments)
    want, got = saved["optimizer_states"][0], starts[2]["optimizer"]
    assert want["state"].keys() == got["state"].keys() and want["state"]
    for k in want["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(want["state"][k][name], got["state"][k][name]), (k, name)
    assert want["param_groups"][0]["lr"] == got["param_groups"][0]["lr"]
    # the resumed run logs epoch 2 only and ends where the uninterrupted run ends
    assert sorted(_val_losses(trained["dir"] / "resumed")) == [0, 1, 2]
    assert trained["resumed"]["epochs"] == trained["full"]["epochs"] == 3
    full = torch.load(trained["dir"] / "full" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    res = torch.load(trained["dir"] / "resumed" / "checkpoints" / "last.ckpt",
                     map_location="cpu", weights_only=True)
    assert full["global_step"] == res["global_step"] == 3
    moved = 0.0
    for k, v in full["state_dict"].items():
        # the batch's order differs between the runs (a fresh shuffle): float rounding only
        torch.testing.assert_close(res["state_dict"][k], v, rtol=1e-4, atol=1e-6)
        if v.is_floating_point():
            moved = max(moved, float((v - saved["state_dict"][k]).abs().max()))
    assert moved > 1e-4, "the resumed fit did not train"
    for k, st in full["optimizer_states"][0]["state"].items():
        torch.testing.assert_close(res["optimizer_states"][0]["state"][k]["exp_avg"],
                                   st["exp_avg"], rtol=1e-3, atol=1e-7)


def test_direct_optimisation_lowers_the_loss():
    from attrbench.training.losses import explainer_loss

    torch.manual_seed(0)
    clf = SmallCNN(3, widths=(4, 8, 8, 8)).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    net = SmallUNet(3, widths=(4, 8, 8))
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    w = {"entropy": 1.0, "tv": 1.0, "area_constraint": 1.0, "target_area": 0.1,
         "nontarget_area": 0.3, "class_min_area": 0.05, "class_max_area": 0.3}
    first = None
    for _ in range(15):
        loss = explainer_loss(net(x), x, y, clf, **w)["loss"]
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first


def test_recipe_pretrains_the_encoder_once_freezes_it_and_records_itself(tmp_path,
                                                                       tiny_synthetic_root):
    """The synthetic recipe: encoder pretraining (``train encoder`` and the pretraining inside
    ``train explainer`` give the same encoder), a frozen encoder during Explainer training (its
    weights and batch-norm statistics unchanged), the recipe in the checkpoint's metadata."""
    from attrbench.training.train import train_encoder, train_explainer

    recipe = dataclasses.replace(SYNTHETIC.explainer_recipe, pretrain_epochs=1)
    preset = dataclasses.replace(TRAIN_PRESET, explainer_recipe=recipe)
    common = {"data_root": str(tiny_synthetic_root), "limit": 16, "progress": False}
    alone = train_encoder(preset, tmp_path / "enc", **common)
    inside = train_explainer(preset, tmp_path / "expl", max_epochs=1, **common)
    enc_alone = torch.load(tmp_path / "enc" / "pretrain" / "encoder.pt", weights_only=True)
    enc_inside = torch.load(tmp_path / "expl" / "pretrain" / "encoder.pt", weights_only=True)
    assert enc_alone.keys() == enc_inside.keys()
    for k in enc_alone:
        assert torch.equal(enc_alone[k], enc_inside[k]), k
    assert alone["pretrain_epochs"] == inside["pretrain_epochs"] == 1
    net, meta = load_explainer(tmp_path / "expl" / "explainer.pt")
    assert meta["arch"] == "unet_deep"
    assert meta["meta"]["recipe"] == dataclasses.asdict(recipe)
    trained_sd = net.state_dict()
    for k, v in enc_inside.items():  # the wrapper's keys: net.enc.* (encoder), fc.* (its head)
        if k.startswith("net.enc."):
            assert torch.equal(trained_sd[k[len("net."):]], v), k
    assert (tmp_path / "expl" / "figures" / "mask_areas_explainer.png").stat().st_size > 0
