"""The synthetic generator: determinism, exact masks, and the VOC layout it writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import make_coco_fixture, make_voc_fixture
from PIL import Image

import attrbench.data.synthetic as syn
from attrbench.data import VOCDataset, detect_format
from attrbench.data.sample import IMAGENET_MEAN, IMAGENET_STD
from attrbench.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticConfig,
    draw_image,
    image_id_for,
    write_synthetic,
)

CFG = SyntheticConfig()
TINY = SyntheticConfig(n_train=4, n_val=2, n_test=3)


def test_draw_image_deterministic():
    for split, i in (("train", 0), ("val", 3), ("test", 7)):
        a, b = draw_image(CFG, split, i), draw_image(CFG, split, i)
        for key in ("image", "cls", "inst"):
            assert a[key].dtype == np.uint8 and np.array_equal(a[key], b[key])
        assert a["objects"] == b["objects"]
    base = draw_image(CFG, "train", 0)["image"]
    assert not np.array_equal(base, draw_image(SyntheticConfig(seed=1), "train", 0)["image"])
    assert not np.array_equal(base, draw_image(CFG, "train", 1)["image"])
    assert not np.array_equal(base, draw_image(CFG, "val", 0)["image"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_masks_exact_and_visible_fraction(split, monkeypatch):
    calls: list[tuple[str, np.ndarray]] = []
    real = syn.shape_mask

    def recording(kind, *args, **kwargs):
        m = real(kind, *args, **kwargs)
        calls.append((kind, m.copy()))
        return m

    monkeypatch.setattr(syn, "shape_mask", recording)
    for i in range(25):
        calls.clear()
        d = draw_image(CFG, split, i)
        cls, inst, objects = d["cls"], d["inst"], d["objects"]
        assert cls.shape == inst.shape == (CFG.image_size,) * 2
        assert CFG.min_objects <= len(objects) <= CFG.max_objects
        # the class map is the instance map with each instance replaced by its class
        expected = np.zeros_like(cls)
        for y in range(cls.shape[0]):
            for x in range(cls.shape[1]):
                n = int(inst[y, x])
                if n:
                    expected[y, x] = SYNTHETIC_CLASSES.index(objects[n - 1]["class"]) + 1
        assert np.array_equal(cls, expected), (split, i)
        assert set(np.unique(inst)) == set(range(len(objects) + 1))
        # the last attempt drew one full shape per object; each visible instance lies inside a
        # full shape of its class and keeps at least min_visible of it
        full = calls[-len(objects):]
        for n, obj in enumerate(objects, start=1):
            vis = inst == n
            ys, xs = np.nonzero(vis)
            assert obj["bbox"] == (xs.min(), ys.min(), xs.max(), ys.max())
            fracs = [vis.sum() / m.sum() for kind, m in full
                     if kind == obj["class"] and not (vis & ~m).any()]
            assert fracs, (split, i, n)
            assert max(fracs) >= CFG.min_visible, (split, i, n, fracs)
            assert vis.sum() >= 25


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "ds", TINY, progress=False)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_write_synthetic_reads_back(tiny_root, split):
    ds = VOCDataset(tiny_root, split, TINY.image_size)
    assert ds.classes == SYNTHETIC_CLASSES
    assert ds.ids == [image_id_for(split, i) for i in range(TINY.split_size(split))]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i in range(len(ds)):
        d = draw_image(TINY, split, i)
        s = ds[i]
        for k in range(len(SYNTHETIC_CLASSES)):
            assert torch.equal(s.masks[k], torch.from_numpy(d["cls"] == k + 1)), (split, i, k)
        want = sorted((SYNTHETIC_CLASSES.index(o["class"]), *map(float, o["bbox"]), False)
                      for o in d["objects"])
        assert sorted(s.boxes) == want
        assert s.class_ids == sorted({b[0] for b in want})
        pixels = (s.image * std + mean).permute(1, 2, 0).numpy() * 255
        jpeg = np.array(Image.open(tiny_root / "JPEGImages" / f"{ds.ids[i]}.jpg"))
        assert np.abs(pixels - jpeg).max() < 1e-3  # the file, decoded and normalised
        # the file is the drawn image up to JPEG noise (a wrong image differs by ~60 levels)
        assert np.abs(pixels - d["image"].astype(np.float32)).mean() < 8.0


def test_detect_format(tiny_root, tmp_path):
    assert detect_format(tiny_root) == "voc"
    assert detect_format(make_voc_fixture(tmp_path).root) == "voc"
    assert detect_format(make_coco_fixture(tmp_path).root) == "coco"


def test_splits_generated_on_demand_equal_a_full_write(tiny_root, tmp_path):
    """A split added later to a folder (the cache generates only what a run reads) gives the
    same files as writing every split at once; trainval appears once train and val exist."""
    from attrbench.data.synthetic import ensure_synthetic, generated_splits

    root = tmp_path / "lazy"
    ensure_synthetic(TINY, root=root, progress=False, splits=["test"])
    assert generated_splits(root) == ["test"]
    assert not (root / "ImageSets/Main/train.txt").exists()
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == [
        f"{image_id_for('test', i)}.jpg" for i in range(TINY.n_test)]
    ensure_synthetic(TINY, root=root, progress=False, splits=["train"])
    assert generated_splits(root) == ["train", "test"]
    assert not (root / "ImageSets/Main/trainval.txt").exists()
    ensure_synthetic(TINY, root=root, progress=False, splits=["trainval"])
    assert generated_splits(root) == ["train", "val", "test"]
    full = sorted(p.relative_to(tiny_root) for p in tiny_root.rglob("*") if p.is_file())
    lazy = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert lazy == full
    for rel in full:
        if rel.name != "attrbench_synthetic.json":
            assert (root / rel).read_bytes() == (tiny_root / rel).read_bytes(), rel
    with pytest.raises(ValueError, match=r"unknown synthetic split\(s\) \['dev'\]"):
        ensure_synthetic(TINY, root=root, progress=False, splits=["dev"])
    with pytest.raises(FileExistsError, match="another configuration"):
        write_synthetic(root, SyntheticConfig(n_train=5), progress=False, splits=["test"])
