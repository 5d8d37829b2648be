"""The Explainer method: one forward pass per batch, checkpoint pairing, training smoke test."""

from __future__ import annotations

import pytest
import torch

from attrbench.models import (CheckpointError, fingerprint, load_explainer, save_classifier,
                              save_explainer)
from attrbench.models.classifiers import SmallCNN
from attrbench.models.explainer_nets import SmallUNet
from attrbench.presets import SYNTHETIC


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
    loaded, meta = load_explainer(path, "abc", num_classes=4)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(CheckpointError, match="outputs 4 classes"):
        load_explainer(path, "abc", num_classes=6)
    with pytest.raises(CheckpointError, match="'explainer' loss, not 'rt_saliency'"):
        load_explainer(path, "abc", loss="rt_saliency")


def test_training_smoke_loss_goes_down_and_resume(tmp_path):
    """A few optimisation steps on a fixed batch lower the paper's loss; Lightning resume."""
    from attrbench.training.train import train_explainer

    clf = SmallCNN(6).eval()
    ck = tmp_path / "cls.pt"
    save_classifier(clf, ck, "synthetic_cnn", ["a", "b", "c", "d", "e", "f"])
    s1 = train_explainer(SYNTHETIC, tmp_path / "run", classifier_checkpoint=str(ck),
                         max_steps=4, limit=64, progress=False, max_epochs=1)
    assert (tmp_path / "run" / "explainer.pt").exists()
    net, meta = load_explainer(tmp_path / "run" / "explainer.pt", fingerprint(clf))
    assert meta["loss"] == "explainer"
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.exists()
    s2 = train_explainer(SYNTHETIC, tmp_path / "run", classifier_checkpoint=str(ck),
                         max_steps=6, limit=64, progress=False, max_epochs=2, resume=str(last))
    assert s2["epochs"] >= s1["epochs"]


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
    w = dict(entropy=1.0, tv=1.0, area_constraint=1.0, target_area=0.1, nontarget_area=0.3,
             class_min_area=0.05, class_max_area=0.3)
    first = None
    for _ in range(15):
        loss = explainer_loss(net(x), x, y, clf, **w)["loss"]
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first
