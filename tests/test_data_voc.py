"""VOCDataset on a format-exact VOC2007 fixture (tests/fixtures.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fixtures import VOC_PHOTO_ID, make_voc_fixture, save_index_png
from PIL import Image

from attrbench.data import DataError, VOCDataset, detect_format
from attrbench.data.sample import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc_fixture(tmp_path_factory.mktemp("vocfx"))


@pytest.fixture
def voc_copy(voc, tmp_path):
    """A private copy of the fixture for tests that break files."""
    dst = tmp_path / "voc"
    shutil.copytree(voc.root, dst)
    return dst, dst / "VOCdevkit" / "VOC2007"


def nearest(label: np.ndarray, size: int) -> np.ndarray:
    """The documented mask resize: PIL nearest-neighbour on the index map."""
    if label.shape == (size, size):
        return label
    return np.asarray(Image.fromarray(label).resize((size, size), Image.NEAREST))


def sample_of(ds: VOCDataset, image_id: str):
    return ds[ds.ids.index(image_id)]


def slow_void_foreground(label: np.ndarray, k: int, r: int) -> np.ndarray:
    """Class k's pixels plus every void pixel with a class-k pixel within Chebyshev distance r."""
    out = label == k + 1
    for y, x in zip(*np.nonzero(label == 255)):
        win = label[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
        if (win == k + 1).any():
            out[y, x] = True
    return out


# ------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("image_id,size", [("000007", 48), (VOC_PHOTO_ID, 64),
                                           (VOC_PHOTO_ID, 101)])
def test_void_background_masks_equal_label_map(voc, image_id, size):
    ds = VOCDataset(voc.root, "test", size, void="background")
    s = sample_of(ds, image_id)
    label = nearest(voc.label[image_id], size)
    assert s.masks.shape == (20, size, size) and s.masks.dtype == torch.bool
    for k in range(20):
        assert torch.equal(s.masks[k], torch.from_numpy(label == k + 1)), voc.classes[k]
    # "ignore" drops void pixels from the masks too
    s2 = sample_of(VOCDataset(voc.root, "test", size, void="ignore"), image_id)
    assert torch.equal(s.masks, s2.masks)


@pytest.mark.parametrize("image_id,size,radius", [("000007", 48, 3), (VOC_PHOTO_ID, 64, 2)])
def test_void_foreground_adds_only_adjacent_void(voc, image_id, size, radius):
    label = nearest(voc.label[image_id], size)
    assert (label == 255).any()
    fg = sample_of(VOCDataset(voc.root, "test", size, void="foreground", void_radius=radius),
                   image_id)
    bg = sample_of(VOCDataset(voc.root, "test", size, void="background"), image_id)
    added_any = False
    for k in range(20):
        expected = slow_void_foreground(label, k, radius)
        assert torch.equal(fg.masks[k], torch.from_numpy(expected)), voc.classes[k]
        added = fg.masks[k] & ~bg.masks[k]
        assert bool((torch.from_numpy(label == 255) | ~added).all())  # only void pixels added
        added_any |= bool(added.any())
    assert added_any


def test_labels_include_difficult_and_boxes(voc):
    ds = VOCDataset(voc.root, "test", 48)
    s = sample_of(ds, "000007")
    # native size: boxes are the fixture's inclusive 0-based boxes
    assert sorted(s.boxes) == sorted(tuple(float(v) if i else v for i, v in enumerate(o))
                                     for o in voc.objects["000007"])
    assert s.class_ids == sorted({o[0] for o in voc.objects["000007"]})

    size = 96
    s = sample_of(VOCDataset(voc.root, "test", size), VOC_PHOTO_ID)
    names = {voc.classes[k] for k in s.class_ids}
    assert names == {"bottle", "chair", "diningtable", "person"}
    bottle = voc.classes.index("bottle")
    assert [b[5] for b in s.boxes if b[0] == bottle] == [True]
    assert sum(b[5] for b in s.boxes) == 1
    w, h = voc.size[VOC_PHOTO_ID]
    sx, sy = size / w, size / h
    expected = [(k, x0 * sx, y0 * sy, (x1 + 1) * sx - 1, (y1 + 1) * sy - 1, d)
                for k, x0, y0, x1, y1, d in voc.objects[VOC_PHOTO_ID]]
    assert len(s.boxes) == len(expected) == 19
    for got, exp in zip(s.boxes, expected):
        assert got[0] == exp[0] and got[5] == exp[5]
        assert got[1:5] == pytest.approx(exp[1:5], abs=1e-9)
        assert -1e-9 <= got[1] <= got[3] <= size - 1 + 1e-9
        assert -1e-9 <= got[2] <= got[4] <= size - 1 + 1e-9


def test_segmentation_modes(voc):
    auto = VOCDataset(voc.root, "test", 32)
    assert auto.ids == voc.splits["test"]
    assert [auto[i].masks is not None for i in range(len(auto))] == [True, True, False]
    only = VOCDataset(voc.root, "test", 32, segmentation="only")
    assert only.ids == [i for i in voc.splits["test"] if i in voc.label] == [VOC_PHOTO_ID, "000007"]
    assert all(only[i].masks is not None for i in range(len(only)))
    none = VOCDataset(voc.root, "test", 32, segmentation="none")
    assert all(none[i].masks is None for i in range(len(none)))
    assert len(VOCDataset(voc.root, "test", 32, limit=2)) == 2
    assert VOCDataset(voc.root, "train", 32).ids == ["000010"]


@pytest.mark.parametrize("size", [40, 48, 77])
def test_resize_image_and_masks(voc, size):
    s = sample_of(VOCDataset(voc.root, "test", size), "000007")
    assert s.image.shape == (3, size, size) and s.image.dtype == torch.float32
    assert s.masks.shape == (20, size, size)
    assert s.labels.shape == (20,)
    if size == 48:  # native size: the image is the decoded JPEG, normalised
        raw = np.array(Image.open(voc.voc_dir / "JPEGImages" / "000007.jpg").convert("RGB"))
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        back = s.image * std + mean
        torch.testing.assert_close(back, torch.from_numpy(raw).permute(2, 0, 1).float() / 255,
                                   atol=1e-5, rtol=0)


def test_detect_format(voc):
    assert detect_format(voc.root) == "voc"
    assert detect_format(voc.voc_dir) == "voc"


# ------------------------------------------------------------------------------- errors
def test_missing_split_file(voc):
    with pytest.raises(DataError, match="nosuch.txt"):
        VOCDataset(voc.root, "nosuch", 32)


def test_missing_annotation_xml(voc_copy):
    root, d = voc_copy
    (d / "Annotations" / "000007.xml").unlink()
    ds = VOCDataset(root, "test", 32)
    with pytest.raises(DataError) as err:
        ds[ds.ids.index("000007")]
    assert str(d / "Annotations" / "000007.xml") in str(err.value)


def test_unknown_class_name(voc_copy):
    root, d = voc_copy
    path = d / "Annotations" / "000009.xml"
    path.write_text(path.read_text().replace("<name>car</name>", "<name>unicorn</name>"))
    # with the default (VOC) class list, an unknown name is one error when the dataset opens
    with pytest.raises(DataError, match="unicorn") as err:
        VOCDataset(root, "test", 32)
    assert path.name in str(err.value) and "classes.txt" in str(err.value)
    # with the class names given, the same annotation fails its own image only
    ds = VOCDataset(root, "test", 32, classes=VOCDataset(root, "train", 32).classes)
    with pytest.raises(DataError, match="unicorn") as err:
        ds[ds.ids.index("000009")]
    assert str(path) in str(err.value)


def test_truncated_jpeg(voc_copy):
    root, d = voc_copy
    path = d / "JPEGImages" / f"{VOC_PHOTO_ID}.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = VOCDataset(root, "test", 32)
    with pytest.raises(DataError) as err:
        ds[ds.ids.index(VOC_PHOTO_ID)]
    assert str(path) in str(err.value)


def test_mask_with_out_of_range_class(voc_copy, voc):
    root, d = voc_copy
    path = d / "SegmentationClass" / "000007.png"
    label = voc.label["000007"].copy()
    label[0, 0] = 30
    save_index_png(path, label)
    ds = VOCDataset(root, "test", 48)
    with pytest.raises(DataError, match="30") as err:
        ds[ds.ids.index("000007")]
    assert str(path) in str(err.value)


@pytest.mark.parametrize("bad_id", ["../000007", "..", "sub/../../x"])
def test_escaping_image_id(voc_copy, bad_id):
    root, d = voc_copy
    split = d / "ImageSets" / "Main" / "test.txt"
    split.write_text(split.read_text() + bad_id + "\n")
    with pytest.raises(DataError) as err:
        VOCDataset(root, "test", 32)
    msg = str(err.value)
    assert bad_id in msg and str(d) in msg
