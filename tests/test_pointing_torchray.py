"""The pointing game against TorchRay's own implementation (the ``torchray`` package, a test
dependency used as an oracle only: its code and flag files are not part of attrbench).

Several hundred random maps at 224 px, with random boxes (VOC) or instance masks (COCO) at real
VOC/COCO image sizes, some of them with plateaus, constant or all-zero maps; the oracle is
TorchRay's ``PointingGameBenchmark.evaluate`` fed with the point TorchRay's benchmark script
computes (the map resized bilinearly to the original size, then ``argmax``). Hits, skipped
pairs and the per-class accuracy must be identical, on the full set and on the difficult subset.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchray.benchmark.pointing_game as trpg  # a declared test dependency (oracle only)
from torchray.benchmark import datasets as trds

from attrbench.data.sample import Original
from attrbench.interfaces import EvalBatch
from attrbench.metrics import pointing as P

VOC_SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 281), (353, 500), (486, 500)]
COCO_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (612, 612), (500, 375), (640, 360)]
S = 224


def _flag_rows(kind: str) -> list[tuple[str, list[int]]]:
    """(image name, indices of the classes flagged difficult) of TorchRay's list."""
    path = P._torchray_flag_file(kind)
    assert path is not None, "the installed torchray package ships its flag files"
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    return [(r[0], [i for i, x in enumerate(r[1:]) if x == "1"]) for r in rows]


def _pick_class(rng, flagged: list[int], k: int) -> int:
    """Half of the objects from the image's difficult-flagged classes, the rest at random."""
    if flagged and rng.random() < 0.5:
        return int(rng.choice(flagged))
    return int(rng.integers(0, k)) if rng.random() < 0.5 else int(rng.integers(0, 3))


def _random_maps(g: torch.Generator, n: int) -> torch.Tensor:
    """Smooth random maps, with plateaus (quantised), constant and all-zero ones."""
    low = torch.rand(n, 1, 7, 7, generator=g)
    maps = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    kind = torch.randint(0, 10, (n,), generator=g)
    maps[kind == 0] = 0.0                                   # all-zero: first pixel
    maps[kind == 1] = 0.5                                   # constant
    q = kind == 2
    maps[q] = (maps[q] * 4).floor() / 4                     # large plateaus: ties
    peak = kind == 3                                        # one sharp peak
    for i in torch.nonzero(peak).flatten().tolist():
        y, x = torch.randint(0, S, (2,), generator=g).tolist()
        maps[i, y, x] = 2.0
    return maps.clamp(0, 2) / 2


def _add_peaks(maps, rng, targets):
    """Half the maps get a sharp bump near a ground-truth pixel (x, y, w, h of the original),
    offset by up to 25 original pixels: hits and near misses around the tolerance."""
    ys = torch.arange(S, dtype=torch.float32).view(S, 1)
    xs = torch.arange(S, dtype=torch.float32).view(1, S)
    for p, t in enumerate(targets):
        if t is None or rng.random() < 0.5:
            continue
        x, y, w, h = t
        x = (x + rng.uniform(-25, 25)) * S / w
        y = (y + rng.uniform(-25, 25)) * S / h
        bump = torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * 2.0 ** 2))
        maps[p] = (maps[p] * 0.3 + bump).clamp(0, 1)
    return maps


def _torchray_point(m: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """The point of TorchRay's benchmark script: resize to (h, w), argmax, as (u, v)."""
    sal = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)
    idx = torch.argmax(sal.view(1, -1), dim=1, keepdim=True)
    return torch.cat((idx % w, idx // w), dim=1)[0]


def _batch(maps, pairs, originals, ids, k):
    pi = torch.tensor([p[0] for p in pairs])
    pc = torch.tensor([p[1] for p in pairs])
    n = len(originals)
    labels = torch.zeros(n, k)
    labels[pi, pc] = 1
    return EvalBatch(images=torch.zeros(n, 3, S, S), labels=labels, pair_image=pi, pair_class=pc,
                     class_masks=maps, merged=EvalBatch.merge(maps, pi, n), originals=originals,
                     image_ids=ids)


def _check_accuracy(ours, game, results, k):
    """Our summary is TorchRay's mean of per-class accuracies over the classes evaluated;
    TorchRay's own ``accuracy`` averages all K classes (an absent class counts 0), which is the
    same number when every class was evaluated."""
    for hit, c in results:
        game.aggregate(hit, c)
    tot = game.hits + game.misses
    seen = tot > 0
    assert ours == pytest.approx(float((game.hits[seen] / tot[seen]).mean()), abs=1e-12)
    if bool(seen.all()):
        assert ours == pytest.approx(float(game.accuracy), abs=1e-12)
    return int(seen.sum())


# ---------------------------------------------------------------------------------------- VOC
def _voc_case(seed: int, n_images: int):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = _flag_rows("voc")
    chosen = [rows[i] for i in rng.choice(len(rows), n_images, replace=False)]
    labels, originals, pairs = [], [], []
    for b, (name, flagged) in enumerate(chosen):
        w, h = VOC_SIZES[rng.integers(len(VOC_SIZES))]
        objs, boxes = [], []
        for _ in range(int(rng.integers(1, 5))):
            c = _pick_class(rng, flagged, 20)
            x0, x1 = sorted(int(v) for v in rng.integers(1, w + 1, 2))
            y0, y1 = sorted(int(v) for v in rng.integers(1, h + 1, 2))
            diff = bool(rng.random() < 0.25)
            objs.append({"name": trds.VOC_CLASSES[c], "difficult": str(int(diff)),
                         "bndbox": {"xmin": str(x0), "ymin": str(y0), "xmax": str(x1),
                                    "ymax": str(y1)}})
            boxes.append((c, x0 - 1, y0 - 1, x1 - 1, y1 - 1, diff))
        labels.append({"annotation": {"filename": f"{name}.jpg", "object": objs,
                                      "size": {"width": str(w), "height": str(h)}}})
        originals.append(Original(h, w, boxes, None, "voc"))
        pairs += [(b, c) for c in sorted({bx[0] for bx in boxes})]
    targets = []
    for b, c in pairs:  # a corner of one of the class's boxes
        o = originals[b]
        bx = next(x for x in o.boxes if x[0] == c)
        targets.append((bx[1 + 2 * int(rng.integers(2))], bx[2 + 2 * int(rng.integers(2))],
                        o.width, o.height))
    maps = _add_peaks(_random_maps(g, len(pairs)), rng, targets)
    return [name for name, _ in chosen], labels, originals, pairs, maps


def _ours_and_torchray(dataset, ids, labels, originals, pairs, maps, num_classes, difficult):
    """Our metric's per-image values and TorchRay's per-pair verdicts (1 hit, -1 miss, 0
    skipped) on the same maps, with TorchRay's benchmark object (for its accuracies)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        game = trpg.PointingGameBenchmark(dataset, tolerance=15, difficult=difficult)
        expect = []
        for p, (b, c) in enumerate(pairs):
            w, h = originals[b].width, originals[b].height
            expect.append(game.evaluate(labels[b], c, _torchray_point(maps[p], w, h)))
    metric = P.PointingGameDifficult() if difficult else P.PointingGame()
    got = metric.score(_batch(maps, pairs, originals, ids, num_classes))
    for p, (b, c) in enumerate(pairs):
        mine = got[b].get(c)
        want = {1: 1.0, -1: 0.0, 0: None}[expect[p]]
        assert mine == want, (p, ids[b], c, mine, expect[p])
    return got, expect, game, metric


@pytest.mark.parametrize("difficult", [False, True])
def test_voc_hits_match_torchray(difficult):
    ids, labels, originals, pairs, maps = _voc_case(0, 200)
    dataset = trds.VOCDetection.__new__(trds.VOCDetection)  # only its type is consulted
    got, expect, game, metric = _ours_and_torchray(dataset, ids, labels, originals, pairs, maps,
                                                   20, difficult)
    # hits, misses and skipped pairs are all exercised
    counts = {v: sum(e == v for e in expect) for v in (1, -1, 0)}
    print("VOC", "difficult" if difficult else "all", len(pairs), "pairs", counts)
    assert min(counts.values()) >= 15, counts
    _check_accuracy(type(metric).aggregate(got), game, [(e, c) for e, (_, c) in
                                                       zip(expect, pairs)], 20)


# --------------------------------------------------------------------------------------- COCO
def _coco_case(seed: int, n_images: int):
    from pycocotools.coco import COCO

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = _flag_rows("coco")
    chosen = [rows[i] for i in rng.choice(len(rows), n_images, replace=False)]
    raw_ids = sorted(trds._COCO_CLASS_TO_INDEX, key=trds._COCO_CLASS_TO_INDEX.get)
    images, anns = [], []
    for name, flagged in chosen:
        iid = int(name.rsplit("_", 1)[1])
        w, h = COCO_SIZES[rng.integers(len(COCO_SIZES))]
        images.append({"id": iid, "file_name": f"{name}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(1, 5))):
            c = _pick_class(rng, flagged, 80)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(3, max(w, h) / 3)
            ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            poly = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).clip(0, [w, h])
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": raw_ids[c],
                         "segmentation": [poly.flatten().tolist()], "iscrowd": 0,
                         "area": 1.0, "bbox": [0, 0, 1, 1]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": i, "name": str(i)} for i in raw_ids]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    labels, originals, pairs, ids = [], [], [], []
    for b, im in enumerate(images):
        label = coco.imgToAnns[im["id"]]
        masks: dict[int, torch.Tensor] = {}
        for a in label:  # the reader's construction: union of annToMask per class
            k = trds._COCO_CLASS_TO_INDEX[a["category_id"]]
            m = torch.from_numpy(coco.annToMask(a).astype(bool))
            masks[k] = masks[k] | m if k in masks else m
        labels.append(label)
        originals.append(Original(im["height"], im["width"], [], masks, "coco"))
        ids.append(str(im["id"]))
        pairs += [(b, k) for k in sorted({trds._COCO_CLASS_TO_INDEX[a["category_id"]]
                                          for a in label})]
    targets = []
    for b, c in pairs:  # a pixel of the class's mask
        o = originals[b]
        yx = torch.nonzero(o.masks[c])
        if len(yx) == 0:
            targets.append(None)
            continue
        y, x = yx[int(rng.integers(len(yx)))].tolist()
        targets.append((x, y, o.width, o.height))
    maps = _add_peaks(_random_maps(g, len(pairs)), rng, targets)
    return coco, ids, labels, originals, pairs, maps


@pytest.mark.parametrize("difficult", [False, True])
def test_coco_hits_match_torchray(difficult):
    coco, ids, labels, originals, pairs, maps = _coco_case(1, 120)
    dataset = trds.CocoDetection.__new__(trds.CocoDetection)
    dataset.coco = coco
    got, expect, game, metric = _ours_and_torchray(dataset, ids, labels, originals, pairs, maps,
                                                   80, difficult)
    counts = {v: sum(e == v for e in expect) for v in (1, -1, 0)}
    print("COCO", "difficult" if difficult else "all", len(pairs), "pairs", counts)
    assert counts[1] >= 15 and counts[-1] >= 15 and (counts[0] >= 15 or not difficult), counts
    _check_accuracy(type(metric).aggregate(got), game, [(e, c) for e, (_, c) in
                                                       zip(expect, pairs)], 80)
