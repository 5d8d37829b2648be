"""Tests of the localisation metrics (attrbench.metrics.localization) and the pointing games
(attrbench.metrics.pointing): batched code vs slow, obvious python-loop references, analytic
cases, sklearn for the AUC, and hand-made pointing-game geometry."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from attrbench.catalog import METRICS
from attrbench.interfaces import EvalBatch
from attrbench.metrics import localization as L
from attrbench.metrics import pointing as P

IMAGE_METRICS = [
    "mean_f1", "cont_f1", "accuracy", "iou_mean", "cont_iou", "auc",
    "object_coverage", "background_coverage", "overlap",
]


# ------------------------------------------------------------------------------ batch helpers
def make_batch(class_masks, pair_image, pair_class, gt_masks, has_gt=None, boxes=()):
    """An EvalBatch built by hand; B and K come from gt_masks (B, K, H, W)."""
    b, k, h, w = gt_masks.shape
    pair_image = torch.as_tensor(pair_image, dtype=torch.long)
    pair_class = torch.as_tensor(pair_class, dtype=torch.long)
    labels = torch.zeros(b, k)
    labels[pair_image, pair_class] = 1.0
    return EvalBatch(
        images=torch.zeros(b, 3, h, w),
        labels=labels,
        pair_image=pair_image,
        pair_class=pair_class,
        class_masks=class_masks,
        merged=EvalBatch.merge(class_masks, pair_image, b),
        gt_masks=gt_masks,
        has_gt=torch.ones(b, dtype=torch.bool) if has_gt is None else torch.as_tensor(has_gt),
        boxes=boxes,
    )


def random_batch(seed, b=5, k=4, h=12, w=11, quantize=True):
    """Random multi-class batch: 1-3 classes per image, random blob GT, masks with ties (values
    on a 0.05 grid, so exactly at the thresholds too). Image 1 has no GT; image 2's GT is empty."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.zeros(b, k, h, w, dtype=torch.bool)
    pi, pc = [], []
    for i in range(b):
        n = int(torch.randint(1, 4, (1,), generator=g))
        classes = torch.randperm(k, generator=g)[:n].tolist()
        for c in classes:
            pi.append(i)
            pc.append(c)
            gt[i, c] = torch.rand(h, w, generator=g) < 0.3
    gt[1] = False
    gt[2] = False
    cm = torch.rand(len(pi), h, w, generator=g)
    if quantize:
        cm = torch.round(cm * 20) / 20
    has_gt = torch.ones(b, dtype=torch.bool)
    has_gt[1] = False
    return make_batch(cm, pi, pc, gt, has_gt)


# --------------------------------------------------------------------- slow python references
def _f1(tp, fp, fn):
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2 * tp / den


def _iou(tp, fp, fn):
    den = tp + fp + fn
    return 1.0 if den == 0 else tp / den


def ref_image(m, s):
    """All nine metrics of one image, by pixel loops. m: list of floats, s: list of 0/1."""
    n = len(m)

    def counts(t):
        tp = fp = fn = 0
        for mi, si in zip(m, s):
            p = mi > t
            tp += p and si
            fp += p and not si
            fn += (not p) and si
        return tp, fp, fn

    out = {}
    out["mean_f1"] = sum(_f1(*counts(t)) for t in (0.25, 0.5, 0.75)) / 3
    out["iou_mean"] = sum(_iou(*counts(i / 10)) for i in range(1, 10)) / 9
    tp = sum(mi * si for mi, si in zip(m, s))
    fp = sum(mi * (1 - si) for mi, si in zip(m, s))
    fn = sum((1 - mi) * si for mi, si in zip(m, s))
    tn = sum((1 - mi) * (1 - si) for mi, si in zip(m, s))
    out["cont_f1"] = _f1(tp, fp, fn)
    out["accuracy"] = (tp + tn) / (tp + tn + fp + fn)
    smin = sum(min(mi, si) for mi, si in zip(m, s))
    smax = sum(max(mi, si) for mi, si in zip(m, s))
    out["cont_iou"] = 1.0 if smax == 0 else smin / smax
    pos = [mi for mi, si in zip(m, s) if si]
    neg = [mi for mi, si in zip(m, s) if not si]
    if pos and neg:
        wins = 0.0
        for a in pos:
            for c in neg:
                wins += 1.0 if a > c else (0.5 if a == c else 0.0)
        out["auc"] = wins / (len(pos) * len(neg))
    else:
        out["auc"] = math.nan
    ns = sum(s)
    out["object_coverage"] = (
        math.nan if ns == 0 else 1 - sum(max(si - mi, 0) for mi, si in zip(m, s)) / ns
    )
    out["background_coverage"] = (
        math.nan if ns == n else sum(max(mi - si, 0) for mi, si in zip(m, s)) / (n - ns)
    )
    out["overlap"] = 1 - sum(abs(si - mi) for mi, si in zip(m, s)) / n
    return out


def ref_batch(batch):
    """{metric: [per-image value]} with the paper protocol: merged = max over the image's pairs,
    s = union of the image's class GT; NaN where has_gt is False."""
    b, k, h, w = batch.gt_masks.shape
    res = {name: [] for name in IMAGE_METRICS}
    for i in range(b):
        m, s = [], []
        for y in range(h):
            for x in range(w):
                vals = [
                    float(batch.class_masks[p, y, x])
                    for p in range(len(batch.pair_image))
                    if int(batch.pair_image[p]) == i
                ]
                m.append(max(vals) if vals else 0.0)
                s.append(int(any(bool(batch.gt_masks[i, c, y, x]) for c in range(k))))
        r = ref_image(m, s)
        for name in IMAGE_METRICS:
            res[name].append(r[name] if bool(batch.has_gt[i]) else math.nan)
    return res


def assert_values(got, expected, atol=1e-9):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if math.isnan(e):
            assert math.isnan(g), (got, expected)
        else:
            assert g == pytest.approx(e, abs=atol), (got, expected)


# --------------------------------------------------------------------- image-level: references
@pytest.mark.parametrize("seed", [0, 1])
def test_image_metrics_match_slow_reference(seed):
    batch = random_batch(seed)
    ref = ref_batch(batch)
    for name in IMAGE_METRICS:
        metric = METRICS.get(name)()
        assert metric.name == name
        assert metric.version == 1 and metric.definition
        assert_values(metric.score(batch), ref[name])


def test_empty_gt_conventions():
    # image 2 of random_batch: has_gt True but no foreground pixel.
    batch = random_batch(3)
    vals = {n: METRICS.get(n)().score(batch)[2] for n in IMAGE_METRICS}
    assert vals["mean_f1"] == 0.0 and vals["iou_mean"] < 1.0  # the mask is not empty at 0.25
    assert math.isnan(vals["auc"]) and math.isnan(vals["object_coverage"])
    assert not math.isnan(vals["background_coverage"])
    # both empty: thresholded F1/IoU and soft F1 / Ruzicka give 1 (documented convention)
    z = torch.zeros(1, 4, 4)
    e = torch.zeros(1, 4, 4, dtype=torch.bool)
    for fn in (L.mean_f1, L.iou_mean, L.cont_f1, L.cont_iou):
        assert fn(z, e).tolist() == [1.0]
    assert L.object_coverage(z, e).isnan().all()
    assert L.roc_auc(z, e).isnan().all()
    # full foreground: background coverage undefined
    assert L.background_coverage(z, ~e).isnan().all()


def test_accumulated_over_two_updates_equals_one_batch():
    batch = random_batch(4)
    split = [2, 3]  # images 0-1 in the first update, 2-4 in the second
    parts = []
    for lo, hi in ((0, split[0]), (split[0], 5)):
        sel = [(int(i) >= lo and int(i) < hi) for i in batch.pair_image]
        idx = torch.tensor([j for j, s in enumerate(sel) if s])
        parts.append(
            make_batch(
                batch.class_masks[idx], batch.pair_image[idx] - lo, batch.pair_class[idx],
                batch.gt_masks[lo:hi], batch.has_gt[lo:hi],
            )
        )
    for name in IMAGE_METRICS:
        one, two = METRICS.get(name)(), METRICS.get(name)()
        v_one = one.update(batch)
        v_two = two.update(parts[0]) + two.update(parts[1])
        assert_values(v_two, v_one, atol=1e-12)
        c1, c2 = one.compute(), two.compute()
        assert c1 == pytest.approx(c2, abs=1e-12) and math.isfinite(c1)
        two.reset()
        assert math.isnan(two.compute())


# --------------------------------------------------------------------------- analytic cases
def _square_batch(mask_value=None, ideal=False):
    """One 8x8 image, two classes whose GT squares make a foreground of 16 px (a = 1/4)."""
    gt = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    gt[0, 0, 2:4, 2:6] = True
    gt[0, 2, 4:6, 2:6] = True
    if ideal:
        cm = gt[0, [0, 2]].float()
    else:
        cm = torch.full((2, 8, 8), float(mask_value))
    return make_batch(cm, [0, 0], [0, 2], gt)


def test_ideal_mask():
    batch = _square_batch(ideal=True)
    for name in IMAGE_METRICS:
        expected = 0.0 if name == "background_coverage" else 1.0
        assert METRICS.get(name)().score(batch) == [pytest.approx(expected)], name


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.0, {"mean_f1": 0, "cont_f1": 0, "accuracy": 0.75, "iou_mean": 0, "cont_iou": 0,
               "auc": 0.5, "object_coverage": 0, "background_coverage": 0, "overlap": 0.75}),
        (1.0, {"mean_f1": 2 * 0.25 / 1.25, "cont_f1": 0.4, "accuracy": 0.25, "iou_mean": 0.25,
               "cont_iou": 0.25, "auc": 0.5, "object_coverage": 1, "background_coverage": 1,
               "overlap": 0.25}),
        # 0.5: F1 of "all" only at t=0.25 (0.5 > 0.5 is false); IoU a at t=0.1..0.4
        (0.5, {"mean_f1": 0.4 / 3, "cont_f1": 0.5 / 1.5, "accuracy": 0.5,
               "iou_mean": 4 * 0.25 / 9, "cont_iou": 0.25 / 1.25, "auc": 0.5,
               "object_coverage": 0.5, "background_coverage": 0.5, "overlap": 0.5}),
    ],
)
def test_constant_masks(value, expected):
    # a = 16/64 = 1/4 foreground. Constant c: TP = c·16, FP = c·48, FN = (1-c)·16.
    batch = _square_batch(value)
    for name in IMAGE_METRICS:
        assert METRICS.get(name)().score(batch) == [pytest.approx(expected[name])], name


def test_missing_gt_nonfinite_and_bad_input():
    batch = random_batch(5)
    batch.gt_masks = None
    for name in IMAGE_METRICS:
        assert all(math.isnan(v) for v in METRICS.get(name)().score(batch))
    batch = random_batch(5)
    batch.merged = batch.merged.clone()
    batch.merged[0, 0, 0] = math.nan
    for name in IMAGE_METRICS:
        vals = METRICS.get(name)().score(batch)
        assert math.isnan(vals[0]) and not math.isnan(vals[3]), name
    m = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"\(2, 4, 5\)"):
        L.cont_f1(m, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="binary"):
        L.cont_f1(m, torch.full((2, 4, 4), 0.5))
    with pytest.raises(TypeError, match="floating"):
        L.cont_f1(m.long(), m > 0.5)
    with pytest.raises(ValueError, match="B, H, W"):
        L.roc_auc(m[0], m[0] > 0.5)
    with pytest.raises(TypeError, match="no options"):
        L.MeanF1(thresholds=(0.5,))


# ------------------------------------------------------------------------------------- AUC
@pytest.mark.parametrize("levels", [None, 5, 2])
def test_auc_matches_sklearn(levels):
    g = torch.Generator().manual_seed(7)
    m = torch.rand(4, 24, 20, generator=g)
    if levels is not None:  # heavy ties
        m = torch.floor(m * levels) / levels
    s = torch.rand(4, 24, 20, generator=g) < torch.tensor([0.1, 0.3, 0.5, 0.9]).view(4, 1, 1)
    got = L.roc_auc(m, s).tolist()
    for i in range(4):
        ref = roc_auc_score(s[i].flatten().numpy(), m[i].flatten().numpy())
        assert got[i] == pytest.approx(ref, abs=1e-12)
    # float32 masks with float32 values close together, one-class GT
    assert math.isnan(L.roc_auc(m[:1], torch.ones(1, 24, 20, dtype=torch.bool)).item())


# ============================================================================ pointing game
def ref_point(mp):
    """First maximum in raster order, by loops."""
    h, w = mp.shape
    best, by, bx = -math.inf, 0, 0
    for y in range(h):
        for x in range(w):
            if float(mp[y, x]) > best:
                best, by, bx = float(mp[y, x]), y, x
    return by, bx


def ref_pointing(mp, region, tol):
    """TorchRay's rule: hit iff a region pixel is at distance strictly below ``tol``."""
    if not torch.isfinite(mp).all() or not region.any():
        return math.nan
    py, px = ref_point(mp)
    h, w = mp.shape
    for y in range(h):
        for x in range(w):
            if region[y, x] and (y - py) ** 2 + (x - px) ** 2 < tol * tol:
                return 1.0
    return 0.0


def ref_energy(mp, region):
    if not torch.isfinite(mp).all() or not region.any():
        return math.nan
    tot = ins = 0.0
    h, w = mp.shape
    for y in range(h):
        for x in range(w):
            v = max(float(mp[y, x]), 0.0)
            tot += v
            ins += v * bool(region[y, x])
    return 0.0 if tot == 0 else ins / tot


def _single(mp, region):
    """Batch of one image, one pair of class 0, segmentation GT."""
    h, w = mp.shape
    gt = torch.zeros(1, 1, h, w, dtype=torch.bool)
    gt[0, 0] = region
    return make_batch(mp[None].float(), [0], [0], gt)


def _peak(h, w, y, x, value=1.0):
    mp = torch.zeros(h, w)
    mp[y, x] = value
    return mp


def test_tolerance_is_strict_as_torchray():
    region = torch.zeros(40, 40, dtype=torch.bool)
    region[10, 10] = True
    pg = P.PointingGame()  # default tolerance 15
    assert pg.options["tolerance"] == 15.0
    assert pg.score(_single(_peak(40, 40, 10, 24), region)) == [{0: 1.0}]  # distance 14
    assert pg.score(_single(_peak(40, 40, 10, 25), region)) == [{0: 0.0}]  # 15 is not < 15
    assert pg.score(_single(_peak(40, 40, 19, 21), region)) == [{0: 1.0}]  # sqrt(202) < 15
    assert pg.score(_single(_peak(40, 40, 19, 22), region)) == [{0: 0.0}]  # 9-12-15 triangle
    # 3-4-5: tolerance 5.01 hits, 5 misses; a scaled (64 px preset) tolerance works the same
    mp = _peak(40, 40, 13, 14)
    assert P.PointingGame(tolerance=5.01).score(_single(mp, region)) == [{0: 1.0}]
    assert P.PointingGame(tolerance=5).score(_single(mp, region)) == [{0: 0.0}]
    # tolerance 0 accepts nothing, not even the pixel itself; 1 accepts only the pixel itself
    assert P.PointingGame(tolerance=0).score(_single(_peak(40, 40, 10, 10), region)) == [{0: 0.0}]
    assert P.PointingGame(tolerance=1).score(_single(_peak(40, 40, 10, 10), region)) == [{0: 1.0}]
    assert P.PointingGame(tolerance=1).score(_single(_peak(40, 40, 10, 11), region)) == [{0: 0.0}]


def test_constant_map_points_at_first_pixel_and_ties_go_to_first_max():
    pts, usable = P.pointing_points(torch.full((1, 6, 7), 0.3))
    assert pts.tolist() == [[0, 0]] and usable.tolist() == [True]
    mp = torch.zeros(6, 7)
    mp[4, 1] = mp[2, 5] = mp[2, 6] = 0.9
    pts, _ = P.pointing_points(mp[None])
    assert pts.tolist() == [[2, 5]] and tuple(pts[0].tolist()) == ref_point(mp)
    region = torch.zeros(40, 40, dtype=torch.bool)
    region[0, 14] = True
    for mp in (torch.full((40, 40), 0.5), torch.zeros(40, 40)):  # all-zero: a constant map too
        assert P.PointingGame().score(_single(mp, region)) == [{0: 1.0}]
    region = torch.zeros(40, 40, dtype=torch.bool)
    region[0, 15] = True
    for mp in (torch.full((40, 40), 0.5), torch.zeros(40, 40)):
        assert P.PointingGame().score(_single(mp, region)) == [{0: 0.0}]


def test_non_finite_maps_are_undefined_and_empty_maps_are_scored():
    region = torch.ones(10, 10, dtype=torch.bool)  # any point would hit
    for mp in (torch.full((10, 10), math.nan), _peak(10, 10, 3, 3, math.inf)):
        (val,) = P.PointingGame().score(_single(mp, region))
        assert math.isnan(val[0])
        assert math.isnan(P.PointingGame.aggregate([val]))
        assert math.isnan(P.EnergyPointingGame().score(_single(mp, region))[0])
    # an all-zero map points at (0, 0) (TorchRay's argmax) and has no energy in the region
    assert P.PointingGame().score(_single(torch.zeros(10, 10), region)) == [{0: 1.0}]
    assert P.EnergyPointingGame().score(_single(torch.zeros(10, 10), region)) == [0.0]
    # an empty region cannot be pointed at
    (val,) = P.PointingGame().score(_single(_peak(10, 10, 1, 1), torch.zeros(10, 10).bool()))
    assert math.isnan(val[0])


def test_pointing_and_energy_match_slow_reference_on_random_batches():
    batch = random_batch(11, b=4, k=3, h=16, w=15, quantize=True)
    batch.has_gt = torch.ones(4, dtype=torch.bool)
    batch.class_masks[0] = 0.0  # an empty map
    batch.class_masks[1, 2, 3] = math.nan  # a failed map
    batch.class_masks[2] = batch.class_masks[2] - 0.5  # negative values for the energy game
    for tol in (0.0, 1.0, 2.0, 3.5, 5.0):
        vals = P.PointingGame(tolerance=tol).score(batch)
        for p in range(len(batch.pair_image)):
            b, c = int(batch.pair_image[p]), int(batch.pair_class[p])
            ref = ref_pointing(batch.class_masks[p], batch.gt_masks[b, c], tol)
            got = vals[b][c]
            assert (math.isnan(got) and math.isnan(ref)) or got == ref, (p, got, ref)
    energy = P.EnergyPointingGame().score(batch)
    for b in range(4):
        refs = [
            ref_energy(batch.class_masks[p], batch.gt_masks[b, int(batch.pair_class[p])])
            for p in range(len(batch.pair_image)) if int(batch.pair_image[p]) == b
        ]
        refs = [r for r in refs if not math.isnan(r)]
        assert_values([energy[b]], [sum(refs) / len(refs) if refs else math.nan], atol=1e-9)


def test_energy_pointing_game_hand_case():
    mp = torch.zeros(4, 4)
    mp[0, 0], mp[0, 1], mp[3, 3] = 3.0, 1.0, -5.0  # negative value clipped to 0
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0, 0] = True
    assert P.energy_pointing_game(mp[None], region[None]).tolist() == [0.75]
    # no positive energy anywhere: none inside the region either
    assert P.energy_pointing_game(-mp.abs()[None], region[None]).item() == 0.0


# ---------------------------------------------------------------------------------- boxes
def ref_box_region(boxes, c, h, w):
    r = torch.zeros(h, w, dtype=torch.bool)
    for cls, x0, y0, x1, y1, _ in boxes:
        if cls != c:
            continue
        for y in range(h):
            for x in range(w):
                # pixel centre inside [x0, x1 + 1) x [y0, y1 + 1)
                if x0 <= x + 0.5 < x1 + 1 and y0 <= y + 0.5 < y1 + 1:
                    r[y, x] = True
    return r


def test_box_regions_and_box_based_hits():
    h = w = 40
    boxes = [[(0, 20.0, 20.0, 25.0, 25.0, False), (1, 3.0, 4.0, 6.0, 9.0, False),
              (1, 30.2, 2.6, 33.4, 5.5, False)]]
    gt = torch.zeros(1, 2, h, w, dtype=torch.bool)  # no segmentation: has_gt False
    maps = torch.stack([_peak(h, w, 10, 22), _peak(h, w, 39, 39)])
    batch = make_batch(maps, [0, 0], [0, 1], gt, has_gt=[False], boxes=boxes)
    regions, keep = P.class_regions(batch)
    assert keep.tolist() == [True, True]
    for p, c in enumerate((0, 1)):
        assert torch.equal(regions[p], ref_box_region(boxes[0], c, h, w))
    assert regions[0].sum() == 36 and regions[0, 20:26, 20:26].all()  # inclusive integer box
    # point (10, 22) is 10 px above the box's top row (y = 20): strict tolerance
    assert P.PointingGame(tolerance=10.1).score(batch) == [{0: 1.0, 1: 0.0}]
    assert P.PointingGame(tolerance=10).score(batch) == [{0: 0.0, 1: 0.0}]
    # the same image WITH segmentation: without original annotations the segmentation is used
    gt2 = gt.clone()
    gt2[0, 0, 0, 22] = True
    gt2[0, 1, 39, 39] = True
    seg_batch = make_batch(maps, [0, 0], [0, 1], gt2, has_gt=[True], boxes=boxes)
    assert P.PointingGame(tolerance=0.5).score(seg_batch) == [{0: 0.0, 1: 1.0}]
    regions, _ = P.class_regions(seg_batch, use_boxes=True)
    assert torch.equal(regions[0], ref_box_region(boxes[0], 0, h, w))
    # use_boxes=False on an image without segmentation: no region
    regions, _ = P.class_regions(batch, use_boxes=False)
    assert not regions.any()


def test_difficult_classes_are_skipped():
    h = w = 20
    boxes = [[(0, 2.0, 2.0, 4.0, 4.0, True),  # class 0: only difficult boxes -> skipped
              (1, 10.0, 10.0, 12.0, 12.0, True), (1, 15.0, 15.0, 16.0, 16.0, False)]]
    gt = torch.zeros(1, 2, h, w, dtype=torch.bool)
    maps = torch.stack([_peak(h, w, 3, 3), _peak(h, w, 11, 11)])
    batch = make_batch(maps, [0, 0], [0, 1], gt, has_gt=[False], boxes=boxes)
    # class 1 keeps its difficult box in the region (a non-difficult one exists)
    assert P.PointingGame(tolerance=0.5).score(batch) == [{1: 1.0}]
    _, keep = P.class_regions(batch, skip_difficult=False)
    assert keep.tolist() == [True, True]
    assert P.EnergyPointingGame().score(batch) == [1.0]
    # segmentation-based regions ignore the difficult flags
    gt[0, 0, 3, 3] = True
    gt[0, 1, 19, 19] = True
    seg = make_batch(maps, [0, 0], [0, 1], gt, has_gt=[True], boxes=boxes)
    assert P.PointingGame(tolerance=0.5).score(seg) == [{0: 1.0, 1: 0.0}]


def test_aggregate_is_mean_of_per_class_accuracy():
    values = [{0: 1.0, 1: 0.0}, {0: 1.0}, {0: 1.0, 1: math.nan}, {}, {"0": 0.0}]
    # class 0: 3 hits / 4 -> 0.75; class 1: 0 / 1 -> 0 (NaN left out); mean 0.375.
    # Mean over pairs would be 3/5 = 0.6 and the default mean over images something else.
    assert P.PointingGame.aggregate(values) == pytest.approx(0.375)
    pg = P.PointingGame(tolerance=0.5)
    h = w = 6
    gt = torch.zeros(3, 2, h, w, dtype=torch.bool)
    gt[:, 0, 0, 0] = True
    gt[:, 1, 5, 5] = True
    maps = torch.stack([_peak(h, w, 0, 0), _peak(h, w, 0, 0), _peak(h, w, 0, 0),
                        _peak(h, w, 0, 0)])
    batch = make_batch(maps, [0, 0, 1, 2], [0, 1, 0, 0], gt)
    pg.update(batch)
    assert pg.compute() == pytest.approx(0.5)  # class 0: 3/3, class 1: 0/1
    assert P.PointingGame.per_class


def test_pointing_options_are_validated():
    with pytest.raises(ValueError, match="tolerance"):
        P.PointingGame(tolerance=-1)
    with pytest.raises(TypeError, match="unknown option"):
        P.PointingGame(use_boxes=True)  # the protocol fixes the region (VOC boxes, COCO masks)
    with pytest.raises(ValueError, match="use_boxes"):
        P.EnergyPointingGame(use_boxes=1)
    with pytest.raises(TypeError, match="unknown option"):
        P.EnergyPointingGame(tolerance=3)
    with pytest.raises(ValueError, match=r"\(1, 5, 5\)"):
        P.pointing_game(torch.rand(1, 5, 5), torch.zeros(1, 5, 4, dtype=torch.bool))
    h = w = 8
    bad = make_batch(torch.rand(1, h, w), [0], [0], torch.zeros(1, 1, h, w, dtype=torch.bool),
                     has_gt=[False], boxes=[[(0, 5.0, 5.0, 2.0, 6.0, False)]])
    with pytest.raises(ValueError, match="x1 < x0"):
        P.PointingGame().score(bad)
