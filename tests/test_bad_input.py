"""Bad input to ``attrbench run``.

Per-image problems (a truncated or corrupt image, an unreadable mask, an unknown class, an image
without labels, an empty ground-truth mask, a method that raises or returns NaN/inf on one
image) fail that image only: a ``failed`` row with the reason in ``scores.jsonl``, counted per
method in the summary, and the run goes on; nothing is turned into a score. Configuration
problems (a wrong data root, a checkpoint that does not fit, unknown names, invalid option
values) stop the run before any work with a one-line message naming the file or option.

The datasets are small VOC-layout copies of synthetic test images, made in a temporary folder.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attrbench.cli import main
from attrbench.config import image_seed
from attrbench.interfaces import AttributionMethod
from attrbench.runner import RunConfig, run

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "attrbench" / "weights" / "synthetic_cnn.pt"
IDS = [f"2000{i:02d}" for i in range(10)]
GOOD = ["200000", "200008", "200009"]


def make_voc(dst: Path, ids: list[str] = IDS) -> Path:
    """Copy synthetic test images, their annotations and masks into a VOC layout at ``dst``."""
    from attrbench.data.synthetic import ensure_synthetic

    src = Path(ensure_synthetic(splits=["test"]))
    for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".xml"),
                     ("SegmentationClass", ".png")):
        (dst / sub).mkdir(parents=True)
        for i in ids:
            shutil.copy(src / sub / f"{i}{ext}", dst / sub / f"{i}{ext}")
    (dst / "ImageSets" / "Main").mkdir(parents=True)
    (dst / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ids))
    shutil.copy(src / "classes.txt", dst / "classes.txt")
    return dst


def _run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--data-root", str(root), "--format", "voc", "--checkpoint", str(CKPT),
            "--model", "synthetic_cnn", "--device", "cpu", "--out", str(out), "--no-progress",
            "--no-report", *extra]


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A VOC folder in which every image but GOOD has one problem; the expected reasons."""
    root = make_voc(tmp_path_factory.mktemp("broken") / "voc")
    j, a, s = root / "JPEGImages", root / "Annotations", root / "SegmentationClass"
    data = (j / "200001.jpg").read_bytes()
    (j / "200001.jpg").write_bytes(data[: len(data) // 2])          # truncated JPEG
    (j / "200002.jpg").write_bytes(b"\x00" * 300)                   # not an image at all
    (s / "200003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")    # unreadable mask
    xml = (a / "200004.xml").read_text()
    (a / "200004.xml").write_text(re.sub(r"<name>\w+</name>", "<name>unicorn</name>", xml,
                                         count=1))                    # unknown class
    xml = (a / "200005.xml").read_text()
    (a / "200005.xml").write_text(re.sub(r"<object>.*</object>", "", xml))   # no labels
    Image.fromarray(np.zeros((64, 64), np.uint8), mode="P").save(s / "200006.png")  # empty GT
    (a / "200007.xml").unlink()                                      # missing annotation
    reasons = {
        "200001": ("data: unreadable image file", str(j / "200001.jpg")),
        "200002": ("data: unreadable image file", str(j / "200002.jpg")),
        "200003": ("data: unreadable mask file", str(s / "200003.png")),
        "200004": ("data: ", "unknown class name 'unicorn'"),
        "200005": ("no labels", "no ground-truth class"),
        "200006": ("data: empty ground-truth mask", "200006"),
        "200007": ("data: missing annotation file", str(a / "200007.xml")),
    }
    return root, reasons


@pytest.fixture(scope="module")
def broken_run(broken, tmp_path_factory):
    root, _ = broken
    out = tmp_path_factory.mktemp("broken_run") / "run"
    rc = main(_run_args(root, out, "--methods", "center,gradcam,ideal", "--metrics",
                        "mean_f1,cont_iou,pointing_game,gini", "--batch-size", "4"))
    assert rc == 0
    return out


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    keyed = {(r["image_id"], r["method"]): r for r in rows}
    assert len(keyed) == len(rows), "duplicate rows"
    return keyed


def test_per_image_data_problems_fail_that_image_only(broken, broken_run):
    _, reasons = broken
    rows = _rows(broken_run)
    methods = ("center", "gradcam", "ideal")
    assert set(rows) == {(i, m) for i in IDS for m in methods}
    for (iid, m), r in rows.items():
        if iid in GOOD:
            assert r["status"] == "ok" and r["error"] is None, r
            assert 0.0 <= r["scores"]["mean_f1"] <= 1.0
        else:
            prefix, needle = reasons[iid]
            assert r["status"] == "failed" and r["scores"] == {}, r
            assert r["error"].startswith(prefix) and needle in r["error"], (iid, r["error"])
    summary = json.loads((broken_run / "summary.json").read_text())
    for m in methods:
        res = summary["results"][m]
        assert res["n_images"] == len(GOOD) and res["n_failed"] == len(IDS) - len(GOOD)
        assert res["failures"] == {"data": 6, "no labels": 1}
        assert res["metrics"]["mean_f1"]["n"] == len(GOOD)
    assert summary["results"]["ideal"]["metrics"]["mean_f1"]["value"] == pytest.approx(1.0)


def test_broken_run_resumes_without_recomputing(broken, broken_run, tmp_path):
    root, _ = broken
    before = (broken_run / "scores.jsonl").read_text()
    assert main(_run_args(root, broken_run, "--methods", "center,gradcam,ideal", "--metrics",
                          "mean_f1,cont_iou,pointing_game,gini", "--batch-size", "4")) == 0
    assert (broken_run / "scores.jsonl").read_text() == before


# ------------------------------------------------------------------------------- methods
class Flaky(AttributionMethod):
    """A test double: NaN on one image, inf on another, values > 1 on a third, raises on a
    fourth (picked by their per-image seeds), a constant map elsewhere."""

    name = "flaky"
    black_box = True
    nan_seed = inf_seed = big_seed = raise_seed = -1

    def __init__(self, model) -> None:
        super().__init__(model)

    def _attribute(self, images, targets, *, gt_masks, seeds):
        if any(int(s) == self.raise_seed for s in seeds):
            raise RuntimeError("boom on one image")
        out = torch.full((images.shape[0], *images.shape[-2:]), 0.5, device=images.device)
        for i, s in enumerate(seeds.tolist()):
            if s == self.nan_seed:
                out[i, 3, 4] = float("nan")
            elif s == self.inf_seed:
                out[i] = float("inf")
            elif s == self.big_seed:
                out[i, 0, 0] = 1.5
        return out


@pytest.fixture
def flaky():
    from attrbench.catalog import METHODS

    METHODS.register("flaky", Flaky)
    try:
        yield Flaky
    finally:
        METHODS.unregister("flaky")
    assert "flaky" not in METHODS


def test_method_nan_inf_or_raise_fails_only_that_image(flaky, tmp_path):
    from attrbench.data.synthetic import ensure_synthetic

    test_list = Path(ensure_synthetic(splits=["test"])) / "ImageSets" / "Main" / "test.txt"
    ids = test_list.read_text().split()[:8]
    flaky.nan_seed, flaky.inf_seed = image_seed(ids[1], 0), image_seed(ids[2], 0)
    flaky.big_seed, flaky.raise_seed = image_seed(ids[5], 0), image_seed(ids[6], 0)
    out = run(RunConfig(methods=["flaky", "center"], metrics=["mean_f1", "gini"], limit=8,
                        batch_size=4, out=str(tmp_path / "run"), device="cpu", progress=False,
                        report=False))
    rows = _rows(out)
    assert len(rows) == 16
    expect = {ids[1]: "non-finite mask (NaN or inf)", ids[2]: "non-finite mask (NaN or inf)",
              ids[5]: "mask values outside [0, 1]", ids[6]: "method raised RuntimeError"}
    for iid in ids:
        r = rows[(iid, "flaky")]
        if iid in expect:
            assert r["status"] == "failed" and r["scores"] == {}
            assert r["error"].startswith(expect[iid]), r["error"]
        else:  # the other images of the same batches are scored
            assert r["status"] == "ok" and r["scores"]["gini"] == pytest.approx(0.0)
        assert rows[(iid, "center")]["status"] == "ok"
    assert "boom on one image" in rows[(ids[6], "flaky")]["error"]
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["flaky"]["failures"] == {"non-finite mask (NaN or inf)": 2,
                                        "mask values outside [0, 1]": 1,
                                        "method raised RuntimeError": 1}
    assert res["flaky"]["n_images"] == 4 and res["flaky"]["metrics"]["gini"]["n"] == 4
    assert res["center"]["n_failed"] == 0


# ------------------------------------------------------------------------------- config errors
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("good") / "voc", GOOD)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from attrbench.models import save_classifier
    from attrbench.models.classifiers import SmallCNN

    d = tmp_path_factory.mktemp("ckpt")
    six = ["circle", "square", "triangle", "star", "cross", "ring"]
    save_classifier(SmallCNN(num_classes=4), d / "four.pt", "synthetic_cnn", six[:4])
    save_classifier(SmallCNN(num_classes=6, widths=(4, 8, 8, 8)), d / "narrow.pt",
                    "synthetic_cnn", six)
    save_classifier(SmallCNN(num_classes=6), d / "other_arch.pt", "resnet50", six)
    torch.save(torch.nn.Linear(3, 6).state_dict(), d / "linear.pt")
    (d / "garbage.pt").write_bytes(b"this is not a checkpoint")
    return d


CONFIG_ERRORS = [
    # (extra args, what the one line must say); {root} is the data root, {ck} the ckpt folder
    (["--data-root", "{root}/nope"], "{root}/nope does not exist"),
    (["--data-root", "{root}/JPEGImages"], "expected a JPEGImages/ folder"),
    (["--split", "nosuch"], "missing split file {root}/ImageSets/Main/nosuch.txt"),
    (["--format", "coco"], "missing annotation file {root}/annotations/instances_val2014.json"),
    (["--checkpoint", "{ck}/four.pt"],
     "{ck}/four.pt was trained for 4 classes, but the dataset has 6"),
    (["--checkpoint", "{ck}/narrow.pt"], "{ck}/narrow.pt does not fit model 'synthetic_cnn'"),
    (["--checkpoint", "{ck}/other_arch.pt"],
     "{ck}/other_arch.pt holds a 'resnet50' classifier, but model 'synthetic_cnn' was requested"),
    (["--checkpoint", "{ck}/linear.pt"], "{ck}/linear.pt does not fit model 'synthetic_cnn'"),
    (["--checkpoint", "{ck}/garbage.pt"], "refusing to load {ck}/garbage.pt"),
    (["--checkpoint", "{ck}/missing.pt"], "checkpoint file {ck}/missing.pt does not exist"),
    (["--methods", "gradcm"], "Unknown method 'gradcm'. Did you mean: gradcam"),
    (["--metrics", "mean_f2"], "Unknown metric 'mean_f2'. Did you mean: mean_f1?"),
    (["--preset", "synthetc"], "Unknown preset 'synthetc'. Did you mean: synthetic?"),
    (["--model", "smallcnn"], "Unknown model 'smallcnn'."),
    (["--reference", "gradcm"], "Unknown method 'gradcm'"),
    (["--reference", "rise"], "--reference rise is not one of this run's methods"),
    (["--limit", "0"], "--limit must be a positive integer, got 0"),
    (["--batch-size", "-2"], "--batch-size must be a positive integer, got -2"),
    (["--image-size", "4"], "--image-size must be an integer >= 8, got 4"),
    (["--device", "tpu:x"], "invalid --device 'tpu:x'"),
    (["--method-option", "center.sigma=-1"], "method 'center': sigma"),
    (["--method-option", "center.nope=1"], "unexpected keyword argument 'nope'"),
    (["--method-option", "rise.num_masks=10"], "method 'rise' is not one of this run's methods"),
    (["--method-option", "center-sigma"], "--method-option expects NAME.KEY=VALUE"),
    (["--metric-option", "pointing_game.tolerance=-3"], "metric 'pointing_game': tolerance"),
    (["--metric-option", "mean_f1.x=1"], "metric 'mean_f1' takes no options"),
]


@pytest.mark.parametrize("extra,needle", CONFIG_ERRORS, ids=[" ".join(e) for e, _ in CONFIG_ERRORS])
def test_configuration_errors_stop_before_any_work(extra, needle, good, checkpoints, tmp_path,
                                                   capsys):
    def fill(s: str) -> str:
        return s.format(root=good, ck=checkpoints)

    out = tmp_path / "run"
    args = _run_args(good, out, "--methods", "center", "--metrics", "mean_f1,pointing_game")
    for opt, value in zip(extra[::2], extra[1::2]):  # an option given twice: the last one wins
        args += [opt, fill(value)]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("attrbench: error: ") and fill(needle) in err, err
    assert not out.exists(), "a configuration error must stop the run before any work"


def test_image_ids_cannot_escape_the_data_root(good, tmp_path, capsys):
    root = tmp_path / "voc"
    shutil.copytree(good, root)
    (root / "ImageSets" / "Main" / "test.txt").write_text("200000\n../../../etc/passwd\n")
    out = tmp_path / "run"
    assert main(_run_args(root, out, "--methods", "center")) == 2
    err = capsys.readouterr().err
    assert "invalid image id '../../../etc/passwd'" in err and not out.exists()


@pytest.fixture
def flaky_metric():
    from attrbench.catalog import METRICS
    from attrbench.interfaces import Metric

    class _Flaky(Metric):
        """Raises on any batch that holds ``bad_id``; 1.0 elsewhere."""

        name = "flaky_metric"
        definition = "test double"
        bad_id = ""

        def score(self, batch):
            if self.bad_id in batch.image_ids:
                raise RuntimeError("metric bug")
            return [1.0] * len(batch.image_ids)

    METRICS.register("flaky_metric", _Flaky)
    try:
        yield _Flaky
    finally:
        METRICS.unregister("flaky_metric")


def test_metric_that_raises_is_recorded_not_scored(flaky_metric, tmp_path):
    from attrbench.data.synthetic import ensure_synthetic

    test_list = Path(ensure_synthetic(splits=["test"])) / "ImageSets" / "Main" / "test.txt"
    ids = test_list.read_text().split()[:8]
    flaky_metric.bad_id = ids[5]
    out = run(RunConfig(methods=["center"], metrics=["flaky_metric", "gini"], limit=8,
                        batch_size=4, out=str(tmp_path / "run"), device="cpu", progress=False,
                        report=False))
    rows = _rows(out)
    for iid in ids:
        r = rows[(iid, "center")]
        assert r["status"] == "ok" and r["scores"]["gini"] is not None
        if iid in ids[4:]:  # the batch the metric raised on: undefined, with the reason
            assert r["scores"]["flaky_metric"] is None
            assert r["metric_error"] == "metric flaky_metric raised RuntimeError: metric bug"
        else:
            assert r["scores"]["flaky_metric"] == 1.0 and "metric_error" not in r
    res = json.loads((out / "summary.json").read_text())["results"]["center"]
    assert res["metric_errors"] == {"metric flaky_metric raised RuntimeError": 4}
    assert res["metrics"]["flaky_metric"]["n"] == 4
    assert res["metrics"]["flaky_metric"]["n_undefined"] == 4


def test_coco_corrupt_image_fails_that_image_only(tmp_path):
    from fixtures import make_coco_fixture

    from attrbench.models import save_classifier
    from attrbench.models.classifiers import SmallCNN

    fx = make_coco_fixture(tmp_path)
    bad = fx.root / "val2014" / f"COCO_val2014_{fx.photo_id:012d}.jpg"
    bad.write_bytes(bad.read_bytes()[:500])
    ck = tmp_path / "cls5.pt"
    save_classifier(SmallCNN(num_classes=5), ck, "synthetic_cnn",
                    [f"c{i}" for i in range(5)])
    out = tmp_path / "run"
    assert main(["run", "--data-root", str(fx.root), "--format", "coco", "--checkpoint", str(ck),
                 "--model", "synthetic_cnn", "--methods", "center,ideal", "--metrics",
                 "mean_f1,gini", "--device", "cpu", "--out", str(out), "--no-progress",
                 "--no-report"]) == 0
    rows = _rows(out)
    ids = {i for i, _ in rows}
    assert ids == {str(fx.photo_id), str(fx.polygon_id), str(fx.crowd_only_id)}
    for m in ("center", "ideal"):
        r = rows[(str(fx.photo_id), m)]
        assert r["status"] == "failed" and r["error"].startswith("data: unreadable image file")
        assert str(bad) in r["error"]
        assert rows[(str(fx.polygon_id), m)]["status"] == "ok"
