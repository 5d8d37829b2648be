"""A run on the user's own data or model: sensible defaults (224 px, printed and recorded; no
settings of the synthetic dataset), class names from classes.txt or --classes, one clear error
for class names the run cannot know, and a non-zero exit when every image fails."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fixtures import make_voc_fixture

from attrbench.cli import main
from attrbench.data.voc import VOC_CLASSES


def _run(args, capsys):
    rc = main(args + ["--no-progress", "--no-report"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _config(out):
    return json.loads((out / "config.json").read_text())["config"]


def test_own_data_defaults_to_224_px_and_the_protocol_tolerance(tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "pointing_game",
                     "--out", str(out)], capsys)
    assert rc == 0, e
    assert "224 x 224 px" in e  # printed
    cfg = _config(out)
    assert cfg["image_size"] == 224 and cfg["preset"]["image_size"] == 224  # recorded
    assert cfg["metrics"]["pointing_game"]["options"]["tolerance"] == 15.0
    assert cfg["preset"]["data_metric_options"] == {}
    # --image-size still wins
    out2 = tmp_path / "run2"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "pointing_game", "--image-size", "48",
                     "--out", str(out2)], capsys)
    assert rc == 0, e
    assert _config(out2)["image_size"] == 48 and "48 x 48 px (--image-size)" in e
    assert _config(out2)["metrics"]["pointing_game"]["options"]["tolerance"] == 15.0


def test_own_model_on_the_synthetic_data(tmp_path, capsys):
    """--model alone: the images are the synthetic ones (64-px originals), so the tolerance
    scaled to them stays; the network input is 224 px; the shipped Explainer (trained for the
    preset's classifier) is left out of the default methods with a note."""
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--model", "ext_model:make_net", "--metrics", "pointing_game",
                     "--limit", "2", "--method-option", "rise.num_masks=16",
                     "--method-option", "extremal_perturbations.max_iter=1",
                     "--method-option", "igos_pp.iterations=1",
                     "--method-option", "igos_pp.ig_iter=1", "--out", str(out)], capsys)
    assert rc == 0, e
    cfg = _config(out)
    assert cfg["image_size"] == 224
    assert cfg["metrics"]["pointing_game"]["options"]["tolerance"] == pytest.approx(15 * 64 / 224)
    assert "explainer" not in cfg["methods"] and "rt_saliency" not in cfg["methods"]
    assert "explainer, rt_saliency left out" in e


def test_the_synthetic_preset_keeps_its_own_settings(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--methods", "center", "--metrics", "pointing_game", "--limit", "2",
                     "--out", str(out)], capsys)
    assert rc == 0, e
    cfg = _config(out)
    assert cfg["image_size"] == 64
    assert cfg["metrics"]["pointing_game"]["options"]["tolerance"] == pytest.approx(15 * 64 / 224)
    assert "px" not in e  # nothing to announce


def _renamed(fx, tmp_path):
    """The fixture with its own class names (obj_<voc name>) and no classes.txt."""
    root = tmp_path / "own"
    shutil.copytree(fx.root, root)
    for xml in root.rglob("Annotations/*.xml"):
        xml.write_text(re.sub(r"<name>(\w+)</name>", r"<name>obj_\1</name>", xml.read_text()))
    return root


def test_unknown_class_names_are_one_error_before_any_work(tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    root = _renamed(fx, tmp_path)
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "mean_f1", "--out", str(out)], capsys)
    assert rc == 2
    err = [ln for ln in e.strip().splitlines() if ln.startswith("attrbench: error")]
    assert len(err) == 1 and "obj_" in err[0]
    assert "classes.txt" in err[0] and "--classes" in err[0]
    assert not (out / "scores.jsonl").exists()  # no work was done


@pytest.mark.parametrize("how", ["flag", "file"])
def test_own_class_names_from_classes_txt_or_the_flag(how, tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    root = _renamed(fx, tmp_path)
    names = [f"obj_{c}" for c in VOC_CLASSES]
    extra = []
    if how == "flag":
        extra = ["--classes", ",".join(names)]
    else:
        (root / "VOCdevkit" / "VOC2007" / "classes.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(root), "--model", "ext_model:make_net",
                     "--methods", "center,ideal", "--metrics", "mean_f1,cont_iou",
                     "--image-size", "48", "--out", str(out), *extra], capsys)
    assert rc == 0, e
    cfg = _config(out)
    assert cfg["classes"] == names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["ideal"]["metrics"]["cont_iou"]["value"] == pytest.approx(1.0)
    assert summary["results"]["center"]["n_failed"] == 0


def test_classes_flag_is_refused_for_coco(tmp_path, capsys):
    from fixtures import make_coco_fixture

    fx = make_coco_fixture(tmp_path)
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--format", "coco", "--model",
                     "ext_model:make_net", "--classes", "a,b", "--methods", "center",
                     "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "COCO" in e and "categories" in e


def test_a_run_in_which_every_image_fails_exits_non_zero(tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    for jpg in fx.root.rglob("JPEGImages/*.jpg"):
        jpg.write_bytes(b"\x00" * 100)  # no image can be read
    out = tmp_path / "run"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center,gradcam", "--metrics", "mean_f1", "--image-size", "32",
                     "--out", str(out)], capsys)
    assert rc != 0
    err = [ln for ln in e.strip().splitlines() if ln.startswith("attrbench: error")]
    assert len(err) == 1
    assert "every image failed" in err[0] and "unreadable image file" in err[0]
    assert (out / "summary.json").exists()  # the run folder is still written


def test_metric_class_names_must_exist_in_the_dataset(tmp_path, capsys):
    fx = make_voc_fixture(tmp_path)
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "class_specificity_diag",
                     "--metric-option", 'class_specificity_diag.classes=["cat","unicorn"]',
                     "--image-size", "32", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "unicorn" in e
    out = tmp_path / "r2"
    rc, _, e = _run(["run", "--data-root", str(fx.root), "--model", "ext_model:make_net",
                     "--methods", "center", "--metrics", "class_specificity_diag",
                     "--metric-option", 'class_specificity_diag.classes=["cat","dog"]',
                     "--image-size", "32", "--out", str(out)], capsys)
    assert rc == 0, e
    assert _config(out)["metrics"]["class_specificity_diag"]["options"]["classes"] == [7, 11]
