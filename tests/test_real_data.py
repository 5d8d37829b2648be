"""Real-data code paths on format-exact fixtures (VOC and COCO), bring-your-own model,
and the paper presets' error messages."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import make_coco_fixture, make_voc_fixture

from attrbench.cli import main


def _run(args, capsys):
    rc = main(args + ["--no-progress", "--no-report"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_voc_run_with_external_model_and_exact_masks(tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--format", "voc", "--model",
                     "ext_model:make_net", "--methods", "gradcam,ideal", "--metrics",
                     "mean_f1,cont_iou,pointing_game", "--image-size", "64", "--out", str(out)], capsys)
    assert rc == 0, e
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["num_classes"] == 20 and cfg["config"]["classes"][4] == "bottle"
    summary = json.loads((out / "summary.json").read_text())
    ideal = summary["results"]["ideal"]
    assert ideal["metrics"]["cont_iou"]["value"] == pytest.approx(1.0)
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    ids = {r["image_id"] for r in rows}
    assert ids == set(fx.splits["test"])
    # the detection-only image has no masks: ideal fails there with a reason, gradcam is scored
    by = {(r["image_id"], r["method"]): r for r in rows}
    assert by[("000009", "ideal")]["status"] == "failed"
    assert "no ground truth" in by[("000009", "ideal")]["error"]
    assert by[("000009", "gradcam")]["status"] == "ok"


def test_voc_reader_masks_match_fixture_labels(tmp_path):
    from attrbench.data import open_dataset
    from attrbench.presets import PRESET_OBJECTS

    fx = make_voc_fixture(tmp_path)
    ds = open_dataset(PRESET_OBJECTS["voc2007-vgg16"], "test", data_root=str(fx.root),
                      image_size=48)
    s = ds[ds.ids.index("000007")]
    lab = torch.from_numpy(fx.label["000007"].astype("int64"))
    for k in range(20):
        expect = lab == k + 1
        got = s.masks[k] & (lab != 255)
        assert torch.equal(got, expect), k


def test_coco_run_with_external_model(tmp_path, capsys):
    fx = make_coco_fixture(tmp_path)
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--format", "coco", "--model",
                     "ext_model:make_net", "--methods", "center,ideal", "--metrics",
                     "mean_f1,cont_iou", "--image-size", "64", "--out", str(out)], capsys)
    assert rc == 0, e
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["ideal"]["metrics"]["cont_iou"]["value"] == pytest.approx(1.0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["num_classes"] == len(cfg["config"]["classes"])


def test_detected_format_without_format_flag(tmp_path, capsys):
    fx = make_coco_fixture(tmp_path)
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "mean_f1", "--image-size", "32",
                     "--out", str(tmp_path / "r")], capsys)
    assert rc == 0, e


@pytest.mark.parametrize("preset", ["voc2007-vgg16", "coco2014-resnet50"])
def test_paper_preset_needs_checkpoint_message(preset, tmp_path, capsys):
    fx = make_voc_fixture(tmp_path) if preset.startswith("voc") else make_coco_fixture(tmp_path)
    rc, _, e = _run(["run", "--preset", preset, "--data-root", str(fx.root), "--methods",
                     "gradcam", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2
    assert "needs --checkpoint FILE" in e and len(e.strip().splitlines()) == 1


def test_paper_preset_without_data_root(capsys, tmp_path):
    rc, _, e = _run(["run", "--preset", "voc2007-resnet50", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "needs --data-root DIR" in e


def test_train_paper_classifier_names_missing_imagenet_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    fx = make_voc_fixture(tmp_path)
    rc = main(["train", "classifier", "--preset", "voc2007-resnet50", "--data-root", str(fx.root),
               "--out", str(tmp_path / "t"), "--no-progress", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "resnet50-" in err and "cannot be downloaded" in err
