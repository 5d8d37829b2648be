"""Protocol fidelity: class-specificity summaries against the paper's printed matrices, the
multi-class merge order, the model-randomisation test over the whole registry, and the pointing
game on original-size annotations (hand geometry and a user-given difficult-flag file)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from attrbench.catalog import METHODS, METRICS
from attrbench.data.sample import Original
from attrbench.interfaces import EvalBatch, minmax_rescale
from attrbench.metrics import pointing as P
from attrbench.metrics import specificity as SP
from attrbench.presets import quick_method_options

# ------------------------------------------------------------ the paper's VOC / VGG-16 matrices
# Mean softmax probability x 100 of the row's class on the image masked by the column's mask,
# classes bottle, car, cat, dog, person; the first column is the unmasked image ("none").
PAPER = {
    "explainer": [[20.57, 15.29, 4.91, 4.82, 4.82, 2.72],
                  [70.52, 6.71, 62.92, 6.67, 6.66, 7.11],
                  [72.78, 6.09, 6.18, 60.55, 6.33, 5.74],
                  [58.00, 4.67, 4.70, 5.93, 57.60, 4.58],
                  [69.37, 8.90, 6.18, 5.83, 6.57, 71.01]],
    "gradcam": [[20.57, 16.10, 5.24, 4.85, 4.76, 3.61],
                [70.52, 6.93, 50.19, 6.65, 6.53, 8.92],
                [72.78, 6.17, 6.39, 43.74, 8.99, 5.85],
                [58.00, 4.46, 4.39, 8.23, 41.88, 4.38],
                [69.37, 11.81, 8.18, 5.90, 8.75, 56.38]],
    "rise": [[20.57, 18.67, 10.94, 12.05, 10.70, 9.73],
             [70.52, 29.75, 56.66, 30.27, 34.43, 32.42],
             [72.78, 37.89, 39.28, 49.61, 41.89, 36.02],
             [58.00, 19.64, 20.34, 23.72, 45.12, 22.83],
             [69.37, 56.06, 53.39, 47.33, 54.81, 63.52]],
    "rt_saliency": [[20.57, 18.92, 11.19, 13.37, 13.44, 17.24],
                    [70.52, 41.25, 67.02, 40.69, 31.87, 54.31],
                    [72.78, 45.84, 36.27, 72.62, 59.21, 54.16],
                    [58.00, 41.37, 34.76, 57.59, 61.22, 58.76],
                    [69.37, 64.71, 54.41, 43.42, 61.55, 73.59]],
}
#: the paper's summary (off-diagonal, diagonal), and the number of test images per class
PAPER_OFFDIAG = {"explainer": 5.81, "gradcam": 6.55, "rise": 31.17, "rt_saliency": 41.77}
PAPER_DIAG = {"explainer": 53.47, "gradcam": 41.66, "rise": 46.72, "rt_saliency": 58.67}
PER_IMAGE_RULE = {"explainer": 6.42, "gradcam": 7.61, "rise": 41.36, "rt_saliency": 49.12}
IMAGES = [240, 775, 332, 433, 2097]


def _rows_from_matrix(mat, counts):
    """Per-image metric values reproducing the matrix: ``counts[t]`` images of class t each."""
    diag, off = [], []
    for t, n in enumerate(counts):
        row = mat[t][1:]
        d = row[t] / 100
        o = sum(v for c, v in enumerate(row) if c != t) / (len(row) - 1) / 100
        diag += [{t: d}] * n
        off += [{t: o}] * n
    return diag, off


@pytest.mark.parametrize("method", list(PAPER))
def test_summary_of_the_papers_matrices(method):
    mat = PAPER[method]
    s = SP.specificity_summary(mat)
    assert round(s["offdiag"], 2) == PAPER_OFFDIAG[method]
    assert round(s["diag"], 2) == PAPER_DIAG[method]
    assert round(s["none"], 2) == 58.25
    # the metrics' aggregation of per-image values gives the same numbers whatever the number
    # of images per class (the paper's unweighted mean over classes) ...
    diag, off = _rows_from_matrix(mat, IMAGES)
    assert round(100 * METRICS.get("class_specificity_offdiag").aggregate(off), 2) == \
        PAPER_OFFDIAG[method]
    assert round(100 * METRICS.get("class_specificity_diag").aggregate(diag), 2) == \
        PAPER_DIAG[method]
    # ... while a mean over images (person: 2097 of 3877 images) gives another quantity
    per_image = sum(next(iter(v.values())) for v in off) / len(off)
    assert round(100 * per_image, 2) == PER_IMAGE_RULE[method]


def test_summary_handles_square_and_nan_cells():
    s = SP.specificity_summary([[0.9, 0.1], [math.nan, 0.7]])
    assert s["diag"] == pytest.approx(0.8) and s["offdiag"] == pytest.approx(0.1)
    assert math.isnan(s["none"])
    with pytest.raises(ValueError, match="shape"):
        SP.specificity_summary([[1.0, 2.0, 3.0, 4.0]])


# ------------------------------------------------------------------------------ merge order
def test_merge_order_is_declared_on_the_method_classes():
    orders = {n: METHODS.get(n).merge for n in METHODS.names()}
    assert orders["extremal_perturbations"] == orders["guided_backprop"] == "max_then_rescale"
    assert all(v == "rescale_then_max" for k, v in orders.items()
               if k not in ("extremal_perturbations", "guided_backprop"))
    for n in METHODS.names():  # every method's documentation says which order it uses
        cls = METHODS.get(n)
        doc = (cls.__doc__ or "") + (inspect.getmodule(cls).__doc__ or "")
        assert cls.merge in doc, n


def test_guided_backprop_merges_before_rescaling(synthetic_classifier, synthetic_batch):
    from attrbench.methods.guided_backprop import GuidedBackprop

    images, labels, _ = synthetic_batch
    gbp = GuidedBackprop(synthetic_classifier)
    pairs = torch.nonzero(labels > 0.5)
    pi, pc = pairs[:, 0], pairs[:, 1]
    assert len(pi) > len(images)  # some images have several classes
    raw = gbp.attribute(images[pi], pc, rescale=False)  # gradient magnitudes, not rescaled
    cm, merged = gbp.merge_pairs(raw, pi, len(images))
    torch.testing.assert_close(cm, gbp.attribute(images[pi], pc))
    torch.testing.assert_close(merged, minmax_rescale(EvalBatch.merge(raw, pi, len(images))))
    other = EvalBatch.merge(minmax_rescale(raw), pi, len(images))  # the other order
    multi = [b for b in range(len(images)) if int((pi == b).sum()) > 1]
    assert any(not torch.allclose(merged[b], other[b]) for b in multi)


def test_runner_merges_in_the_methods_order(synthetic_classifier, synthetic_batch):
    from attrbench.data.sample import Batch
    from attrbench.evaluate import score_batch
    from attrbench.interfaces import Metric
    from attrbench.methods.extremal import ExtremalPerturbations

    class Capture(Metric):
        name = "capture"

        def score(self, batch):
            self.batch = batch
            return [0.0] * batch.batch_size

    images, labels, cls = synthetic_batch
    b = images.shape[0]
    masks = torch.stack([(cls == k + 1) for k in range(labels.shape[1])], 1)
    batch = Batch(images, labels, masks, torch.ones(b, dtype=torch.bool), [[] for _ in range(b)],
                  [f"i{i}" for i in range(b)])
    ep = ExtremalPerturbations(synthetic_classifier, areas=[0.1], max_iter=3)
    cap = Capture()
    score_batch("extremal_perturbations", ep, batch, torch.zeros(b, dtype=torch.long),
           synthetic_classifier, {"capture": cap}, torch.device("cpu"))
    eb = cap.batch
    raw = ep.attribute(images[eb.pair_image], eb.pair_class, rescale=False)
    torch.testing.assert_close(eb.merged, minmax_rescale(EvalBatch.merge(raw, eb.pair_image, b)))
    torch.testing.assert_close(eb.class_masks, minmax_rescale(raw))


# ------------------------------------------------------- model randomisation over the registry
REGISTRY = METHODS.names() + ["captum:Saliency", "captum:IntegratedGradients",
                              "gradcam-lib:GradCAM"]


@pytest.mark.parametrize("name", REGISTRY)
def test_randomization_works_for_every_registered_method(name, synthetic_classifier,
                                                         synthetic_batch):
    images, labels, cls = synthetic_batch
    images, labels, cls = images[:2], labels[:2], cls[:2]
    klass = METHODS.get(name)
    opts = quick_method_options(name)
    if getattr(klass, "needs_checkpoint", False):
        from attrbench.presets import SYNTHETIC

        opts["preset"] = SYNTHETIC
    if getattr(klass, "stochastic", False):
        opts.setdefault("seed", 0)
    method = klass(synthetic_classifier, **opts)
    pairs = torch.nonzero(labels > 0.5)
    pi, pc = pairs[:, 0], pairs[:, 1]
    gt = torch.stack([(cls == k + 1) for k in range(labels.shape[1])], 1)
    seeds = torch.tensor([3, 4])
    cm = method.attribute(images[pi], pc, gt_masks=gt[pi, pc].float(), seeds=seeds[pi])
    batch = EvalBatch(images=images, labels=labels, pair_image=pi, pair_class=pc,
                      class_masks=cm, merged=EvalBatch.merge(cm, pi, 2), gt_masks=gt,
                      has_gt=torch.ones(2, dtype=torch.bool), model=synthetic_classifier,
                      method=method, method_name=name, seeds=seeds, image_ids=["a", "b"])
    metric = METRICS.get("randomization_spearman")(num_layers=2)
    reason = metric.not_applicable(method, name)
    vals = metric.update(batch)
    if klass.classifier_use == "training":
        assert reason and "classifier" in reason
        assert all(math.isnan(v) for v in vals)
        return
    assert reason is None
    assert all(0.0 <= v <= 1.0 for v in vals), vals
    if klass.classifier_use == "none":  # ignores the model: its maps cannot change
        assert vals == pytest.approx([1.0, 1.0])
    # the original model is untouched and the method was rebuilt from its constructor options
    assert method.model is synthetic_classifier


def test_runner_reports_randomization_not_applicable(tmp_path, capsys):
    import json

    from attrbench.cli import main

    out = tmp_path / "run"
    assert main(["run", "--methods", "explainer,center", "--metrics",
                 "mean_f1,randomization_spearman", "--limit", "3", "--out", str(out),
                 "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["results"]["explainer"]["metrics"]["randomization_spearman"]
    assert cell["not_applicable"] and cell["n_undefined"] == 0
    assert summary["results"]["explainer"]["n_failed"] == 0
    assert summary["results"]["center"]["metrics"]["randomization_spearman"]["value"] == \
        pytest.approx(1.0)
    md = (out / "summary.md").read_text()
    assert "n/a" in md and "does not call the classifier" in md


# -------------------------------------------------------------- pointing at the original size
def _one_image_batch(maps, classes, original, image_id="000001", k=20):
    p = len(classes)
    pi = torch.zeros(p, dtype=torch.long)
    pc = torch.tensor(classes)
    labels = torch.zeros(1, k)
    labels[0, pc] = 1
    return EvalBatch(images=torch.zeros(1, 3, *maps.shape[-2:]), labels=labels, pair_image=pi,
                     pair_class=pc, class_masks=maps, merged=EvalBatch.merge(maps, pi, 1),
                     originals=[original], image_ids=[image_id])


def test_pointing_is_measured_in_original_pixels():
    # a 10 x 10 map whose maximum is pixel (0, 9): upsampled to 100 x 50 (w x h) its first
    # maximum lies at the top right, around x = 95, y = 0
    m = torch.zeros(1, 10, 10)
    m[0, 0, 9] = 1.0
    up = P.upsample_maps(m, 50, 100)
    pts, _ = P.pointing_points(up)
    y, x = pts[0].tolist()
    assert y == 0 and 90 <= x <= 99
    # a box 14 px to the left of the point hits, 15 px misses (in original pixels; on the
    # 10-px map the same box would be about 1.5 px away)
    for dx, hit in ((14, 1.0), (15, 0.0)):
        box = (3, 0, 0, x - dx, 40, False)
        got = P.PointingGame().score(_one_image_batch(m, [3], Original(50, 100, [box])))
        assert got == [{3: hit}]


def test_voc_classes_with_only_difficult_objects_are_skipped_and_boxes_clipped():
    m = torch.zeros(2, 8, 8)
    m[:, 7, 7] = 1.0  # bottom-right corner
    orig = Original(80, 80, [(1, 0, 0, 5, 5, True),              # class 1: only difficult
                             (2, 0, 0, 5, 5, True), (2, 70, 70, 200, 200, False)])
    got = P.PointingGame().score(_one_image_batch(m, [1, 2], orig))
    assert got == [{2: 1.0}]  # class 2's clipped box contains the point; class 1 skipped


def test_coco_regions_are_instance_masks():
    m = torch.zeros(2, 8, 8)
    m[:, 0, 0] = 1.0
    near = torch.zeros(60, 60, dtype=torch.bool)
    near[10, 10] = True  # distance sqrt(200) < 15
    far = torch.zeros(60, 60, dtype=torch.bool)
    far[0, 20] = True
    empty = torch.zeros(60, 60, dtype=torch.bool)
    orig = Original(60, 60, [(0, 0, 0, 59, 59, False)], {0: near, 1: far, 2: empty}, "coco")
    got = P.PointingGame().score(_one_image_batch(torch.cat([m, m[:1]]), [0, 1, 2], orig,
                                                  k=80))
    # the boxes are not used on COCO; an annotated class whose mask is empty is a miss
    assert got == [{0: 1.0, 1: 0.0, 2: 0.0}]


def test_difficult_subset_from_a_user_file(tmp_path):
    flags = tmp_path / "flags.txt"
    row = ["0"] * 20
    row[2] = "1"
    flags.write_text("000001\t" + "\t".join(row) + "\n")
    with pytest.raises(ValueError, match="flags"):
        P.PointingGameDifficult(flags=str(tmp_path / "missing.txt"))
    metric = P.PointingGameDifficult(flags=str(flags))
    m = torch.zeros(2, 8, 8)
    m[:, 7, 7] = 1.0
    orig = Original(80, 80, [(1, 70, 70, 79, 79, False), (2, 70, 70, 79, 79, False)])
    assert metric.score(_one_image_batch(m, [1, 2], orig)) == [{2: 1.0}]
    assert metric.score(_one_image_batch(m, [1, 2], orig, image_id="000002")) == [{}]
    coco = tmp_path / "coco.txt"
    coco.write_text("COCO_val2014_000000000042 1 0\n7 0 1\n")
    # COCO file stems are keyed by the integer image id, as attrbench names COCO images
    assert P.load_difficult_flags(coco) == {"42": [True, False], "7": [False, True]}
    coco.write_text("COCO_val2014_000000000042 1 0\n7 0 1 1\n")
    with pytest.raises(ValueError, match="earlier lines"):
        P.load_difficult_flags(coco)
    # the flags' class count must match the dataset's
    with pytest.raises(ValueError, match="classes"):
        metric.score(_one_image_batch(m, [1, 2], orig, k=21))


def test_pointing_through_the_runner_uses_original_voc_boxes(tmp_path, capsys):
    """A run on the VOC fixture: every pair's value equals the hand computation with the
    centre map upsampled to the original size and the XML boxes in original pixels."""
    import json

    import torch.nn.functional as F
    from fixtures import make_voc_fixture

    from attrbench.cli import main
    from attrbench.methods.sanity import Center

    fx = make_voc_fixture(tmp_path)
    out = tmp_path / "run"
    assert main(["run", "--data-root", str(fx.root), "--format", "voc", "--model",
                 "ext_model:make_net", "--methods", "center", "--metrics", "pointing_game",
                 "--image-size", "64", "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    rows = {r["image_id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text()
                                          .splitlines())}
    method = Center(torch.nn.Identity())
    method._num_classes = 1
    center = method.attribute(torch.zeros(1, 3, 64, 64), torch.zeros(1, dtype=torch.long))
    checked = 0
    for iid, objects in fx.objects.items():
        if iid not in rows:
            continue
        w, h = fx.size[iid]
        up = F.interpolate(center[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        flat = int(torch.argmax(up.flatten()))
        py, px = divmod(flat, w)
        for c in sorted({o[0] for o in objects}):
            mine = [o for o in objects if o[0] == c]
            if all(o[5] for o in mine):
                assert str(c) not in rows[iid]["scores"]["pointing_game"]
                continue
            hit = any((y - py) ** 2 + (x - px) ** 2 < 15 ** 2
                      for o in mine for y in range(o[2], o[4] + 1) for x in range(o[1], o[3] + 1))
            assert rows[iid]["scores"]["pointing_game"][str(c)] == float(hit), (iid, c)
            checked += 1
    assert checked >= 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["metrics"]["pointing_game"]["options"]["tolerance"] == 15.0
