"""The built-in synthetic dataset: shapes on photographic and procedural backgrounds, with exact
per-pixel ground truth, written in **VOC layout** so that it goes through the same reader as
PASCAL VOC.

Design:
    * 6 object classes that differ only by **shape** (circle, square, triangle, star, cross,
      ring); colour and texture (solid, stripes, checker, noise, gradient) are drawn per instance,
      so colour alone cannot classify.
    * 1-3 labelled objects per image, drawn in random order so they occlude each other; the class
      and instance masks hold only the *visible* pixels. An image is redrawn until every labelled
      object keeps at least ``min_visible`` of its area visible.
    * 0-2 unlabelled distractors (thick bars and zig-zag lines), which are background in the
      ground truth.
    * Backgrounds: random crops of the photographs that ship inside the scikit-image wheel,
      blended with procedural textures.
    * Deterministic: image ``i`` of a split is drawn from ``numpy.random.default_rng((seed,
      split_code, i))``, so any image can be regenerated alone and the result does not depend on
      the order of generation.

The ``version`` in :class:`SyntheticConfig` is bumped whenever the generator's output changes;
the cache folder name includes it and the shipped weights record it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SPLITS = tuple(_SPLIT_CODES)
_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "brick.png", "grass.png",
           "gravel.png", "camera.png", "coins.png", "moon.png", "page.png")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset (all recorded in the dataset folder)."""

    seed: int = 0
    image_size: int = 64
    n_train: int = 6000
    n_val: int = 600
    n_test: int = 100
    min_objects: int = 1
    max_objects: int = 3
    max_distractors: int = 2
    min_radius: float = 7.0
    max_radius: float = 14.0
    min_visible: float = 0.5
    jpeg_quality: int = 95
    version: int = GENERATOR_VERSION

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


# ------------------------------------------------------------------------------- drawing
def _polygon_mask(size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros((size, size), dtype=bool)
    rr, cc = polygon(ys, xs, shape=(size, size))
    mask[rr, cc] = True
    return mask


def _regular(n: int, cx: float, cy: float, r: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    t = angle + np.arange(n) * 2 * np.pi / n
    return cx + r * np.cos(t), cy + r * np.sin(t)


def shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Boolean (size, size) mask of one shape of 'radius' ``r`` centred at (cx, cy)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if kind == "ring":
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if kind == "square":
        xs, ys = _regular(4, cx, cy, r * 1.05, angle)
        return _polygon_mask(size, xs, ys)
    if kind == "triangle":
        xs, ys = _regular(3, cx, cy, r * 1.15, angle)
        return _polygon_mask(size, xs, ys)
    if kind == "star":
        t = angle + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r * 1.15, r * 0.45)
        return _polygon_mask(size, cx + rad * np.cos(t), cy + rad * np.sin(t))
    if kind == "cross":
        a = 0.33 * r
        pts = np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r),
                        (-a, a), (-r, a), (-r, -a), (-a, -a)])
        c, s = np.cos(angle), np.sin(angle)
        xs = cx + pts[:, 0] * c - pts[:, 1] * s
        ys = cy + pts[:, 0] * s + pts[:, 1] * c
        return _polygon_mask(size, xs, ys)
    raise ValueError(f"unknown shape '{kind}'")


def _distractor_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A thick bar or a zig-zag polyline: no class, background in the ground truth."""
    from scipy.ndimage import binary_dilation
    from skimage.draw import line_aa  # noqa: F401  (import check only)

    mask = np.zeros((size, size), dtype=bool)
    n_pts = 2 if rng.random() < 0.5 else int(rng.integers(3, 5))
    pts = rng.uniform(0, size, size=(n_pts, 2))
    from skimage.draw import line

    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        rr, cc = line(int(y0), int(x0), int(min(y1, size - 1)), int(min(x1, size - 1)))
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        mask[rr[keep], cc[keep]] = True
    width = 1
    return binary_dilation(mask, iterations=width)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, size=3).astype(np.float32)


def _texture(rng: np.random.Generator, size: int, contrast: float = 1.0,
             avoid: np.ndarray | None = None) -> np.ndarray:
    """(size, size, 3) float texture in [0, 1] with random colours; ``contrast`` pulls the second
    colour towards the first; the first colour is redrawn (up to 20 times) while it lies within
    0.4 (RGB distance) of ``avoid``, so that objects stand out from what is under them."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if avoid is not None:
        for _ in range(20):
            if float(np.linalg.norm(c1 - avoid)) >= 0.4:
                break
            c1 = _random_colour(rng)
    c2 = c1 + np.float32(contrast) * (c2 - c1)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # solid
        w = np.zeros((size, size), np.float32)
    elif kind == 1:  # stripes
        th = rng.uniform(0, np.pi)
        period = rng.uniform(3, 9)
        w = (np.sin((xx * np.cos(th) + yy * np.sin(th)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:  # checker
        p = int(rng.integers(2, 6))
        w = (((xx // p) + (yy // p)) % 2).astype(np.float32)
    elif kind == 3:  # noise
        w = rng.uniform(0, 1, size=(size, size)).astype(np.float32)
    else:  # gradient
        th = rng.uniform(0, 2 * np.pi)
        g = xx * np.cos(th) + yy * np.sin(th)
        w = ((g - g.min()) / max(float(g.max() - g.min()), 1e-6)).astype(np.float32)
    return c1[None, None] * (1 - w[..., None]) + c2[None, None] * w[..., None]


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name in _PHOTOS:
        path = folder / name
        if not path.exists():
            continue
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        out.append(arr)
    if not out:
        raise RuntimeError(f"no background photographs found in {folder} (scikit-image data)")
    return tuple(out)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    photos = _photos()
    photo = photos[int(rng.integers(0, len(photos)))]
    h, w = photo.shape[:2]
    crop = int(rng.integers(size, max(size + 1, min(h, w) // 2)))
    y0 = int(rng.integers(0, h - crop + 1))
    x0 = int(rng.integers(0, w - crop + 1))
    patch = photo[y0:y0 + crop, x0:x0 + crop]
    img = np.asarray(
        Image.fromarray((patch * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
        dtype=np.float32,
    ) / 255.0
    if rng.random() < 0.5:  # grey photos become coloured by a random tint
        img = img * rng.uniform(0.6, 1.2, size=3).astype(np.float32)
    alpha = float(rng.choice([0.0, 0.3, 0.6, 1.0]))
    if alpha > 0:  # background textures are weaker than object textures
        tex = _texture(rng, size, contrast=float(rng.uniform(0.15, 0.5)))
        img = (1 - alpha) * img + alpha * tex
    return np.clip(img, 0, 1)


def draw_image(cfg: SyntheticConfig, split: str, index: int) -> dict:
    """Draw image ``index`` of ``split``.

    Returns:
        dict with ``image`` (H, W, 3) uint8, ``cls`` (H, W) uint8 class map (0 = background,
        k + 1 = class k), ``inst`` (H, W) uint8 instance map (0 = none), and ``objects``: a list
        of dicts ``{"class": name, "bbox": (x0, y0, x1, y1)}`` of the visible extents.
    """
    rng = np.random.default_rng((cfg.seed, _SPLIT_CODES[split], index))
    size = cfg.image_size
    for _attempt in range(100):
        img = _background(rng, size)
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        n_dis = int(rng.integers(0, cfg.max_distractors + 1))
        items = [("object", i) for i in range(n_obj)] + [("distractor", i) for i in range(n_dis)]
        order = rng.permutation(len(items))
        owner = np.zeros((size, size), dtype=np.int16)  # 0 bg, >0 object id, <0 distractor
        full_area: dict[int, int] = {}
        classes: dict[int, int] = {}
        for j in order:
            kind, idx = items[j]
            if kind == "object":
                k = int(rng.integers(0, len(SYNTHETIC_CLASSES)))
                r = rng.uniform(cfg.min_radius, cfg.max_radius)
                cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
                m = shape_mask(SYNTHETIC_CLASSES[k], size, cx, cy, r, rng.uniform(0, 2 * np.pi))
                oid = idx + 1
                owner[m] = oid
                full_area[oid] = int(m.sum())
                classes[oid] = k
            else:
                m = _distractor_mask(rng, size)
                owner[m] = -(idx + 1)
            contrast = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.1, 0.5))
            under = img[m].mean(axis=0) if m.any() else None
            tex = _texture(rng, size, contrast=contrast, avoid=under)
            img[m] = tex[m]
        ok = True
        for oid, area in full_area.items():
            vis = int((owner == oid).sum())
            if area == 0 or vis < cfg.min_visible * area or vis < 25:
                ok = False
        if ok:
            break
    img = np.clip(img + rng.normal(0, 0.02, size=img.shape).astype(np.float32), 0, 1)
    cls_map = np.zeros((size, size), np.uint8)
    inst_map = np.zeros((size, size), np.uint8)
    objects = []
    for n, oid in enumerate(sorted(full_area), start=1):
        m = owner == oid
        cls_map[m] = classes[oid] + 1
        inst_map[m] = n
        ys, xs = np.nonzero(m)
        objects.append({"class": SYNTHETIC_CLASSES[classes[oid]],
                        "bbox": (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))})
    return {"image": (img * 255 + 0.5).astype(np.uint8), "cls": cls_map, "inst": inst_map,
            "objects": objects}


# ------------------------------------------------------------------------------- VOC writing
def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour palette (256 entries, flattened RGB)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def save_label_png(path: Path, label: np.ndarray) -> None:
    """Write an index map as a VOC-style palette PNG."""
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def voc_annotation_xml(image_id: str, size: int, objects: list[dict], folder: str = "VOC2007") -> bytes:
    """A VOC ``Annotations/<id>.xml`` document (1-based pixel coordinates, as in VOC)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    sz = ET.SubElement(root, "size")
    ET.SubElement(sz, "width").text = str(size)
    ET.SubElement(sz, "height").text = str(size)
    ET.SubElement(sz, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for obj in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = obj["class"]
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "0"
        ET.SubElement(o, "difficult").text = str(int(obj.get("difficult", 0)))
        bb = ET.SubElement(o, "bndbox")
        x0, y0, x1, y1 = obj["bbox"]
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1 + 1, y1 + 1)):
            ET.SubElement(bb, tag).text = str(int(v))
    return ET.tostring(root)


def image_id_for(split: str, index: int) -> str:
    return f"{_SPLIT_CODES[split]}{index:05d}"


def _write_split(out: Path, cfg: SyntheticConfig, split: str, bar=None) -> None:
    """Draw one split into ``out`` (the image, annotation and label files, then the split's
    ``ImageSets`` lists, so a split whose lists exist is complete)."""
    ids = []
    per_class: dict[str, list[str]] = {c: [] for c in SYNTHETIC_CLASSES}
    for i in range(cfg.split_size(split)):
        d = draw_image(cfg, split, i)
        iid = image_id_for(split, i)
        ids.append(iid)
        Image.fromarray(d["image"]).save(out / "JPEGImages" / f"{iid}.jpg",
                                         quality=cfg.jpeg_quality, subsampling=0)
        save_label_png(out / "SegmentationClass" / f"{iid}.png", d["cls"])
        save_label_png(out / "SegmentationObject" / f"{iid}.png", d["inst"])
        (out / "Annotations" / f"{iid}.xml").write_bytes(
            voc_annotation_xml(iid, cfg.image_size, d["objects"]))
        present = {o["class"] for o in d["objects"]}
        for c in SYNTHETIC_CLASSES:
            per_class[c].append(f"{iid} {1 if c in present else -1}")
        if bar is not None:
            bar.update(1)
    for c, lines in per_class.items():
        _write_text(out / "ImageSets/Main" / f"{c}_{split}.txt", "\n".join(lines) + "\n")
    text = "\n".join(ids) + "\n"
    _write_text(out / "ImageSets/Segmentation" / f"{split}.txt", text)
    _write_text(out / "ImageSets/Main" / f"{split}.txt", text)


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _finish(out: Path, cfg: SyntheticConfig, splits: list[str]) -> None:
    main = out / "ImageSets" / "Main"
    if "train" in splits and "val" in splits:
        _write_text(main / "trainval.txt",
                    (main / "train.txt").read_text() + (main / "val.txt").read_text())
    _write_text(out / "classes.txt", "\n".join(SYNTHETIC_CLASSES) + "\n")
    _write_text(out / "attrbench_synthetic.json", json.dumps(
        {"config": asdict(cfg), "classes": list(SYNTHETIC_CLASSES),
         "splits": [s for s in _SPLIT_CODES if s in splits]}, indent=2))


def _check_splits(splits) -> list[str]:
    if splits is None:
        return list(_SPLIT_CODES)
    bad = [s for s in splits if s not in _SPLIT_CODES]
    if bad:
        raise ValueError(f"unknown synthetic split(s) {bad}; expected some of {list(_SPLIT_CODES)}")
    return [s for s in _SPLIT_CODES if s in splits]


def generated_splits(root: str | Path) -> list[str] | None:
    """The splits a synthetic dataset folder holds (None when it holds no dataset). Folders
    written before splits were generated separately hold all three."""
    meta_path = Path(root) / "attrbench_synthetic.json"
    if not meta_path.exists():
        return None
    return list(json.loads(meta_path.read_text()).get("splits", list(_SPLIT_CODES)))


def write_synthetic(out: str | Path, cfg: SyntheticConfig = SyntheticConfig(),
                    progress: bool = True, splits: list[str] | tuple[str, ...] | None = None
                    ) -> Path:
    """Write the dataset (or some of its splits) to ``out``.

    A new folder is created atomically (a temporary folder renamed at the end). Splits missing
    from an existing folder of the same configuration are added to it (each split's
    ``ImageSets`` lists and the metadata are written last, so an interrupted addition is redone
    on the next call); splits it already holds are left alone.

    Args:
        out: the dataset root.
        cfg: the generator's parameters (a folder made with others is refused).
        progress: show a progress bar.
        splits: some of ``train``, ``val``, ``test``; default all three.

    Returns the dataset root (``out``), which holds ``JPEGImages``, ``Annotations``,
    ``SegmentationClass``, ``SegmentationObject``, ``ImageSets/{Main,Segmentation}``,
    ``classes.txt`` and ``attrbench_synthetic.json`` (config, classes, generated splits).
    """
    out = Path(out)
    want = _check_splits(splits)
    have = generated_splits(out)
    if have is not None:
        meta = json.loads((out / "attrbench_synthetic.json").read_text())
        if meta.get("config") != asdict(cfg):
            raise FileExistsError(
                f"{out} holds a synthetic dataset with another configuration; choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    todo = [s for s in want if s not in (have or [])]
    if have is not None and not todo:
        return out
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(cfg.split_size(s) for s in todo), desc="synthetic dataset",
                   unit="img")
    try:
        if have is not None:  # add the missing splits in place
            for split in todo:
                _write_split(out, cfg, split, bar)
            _finish(out, cfg, have + todo)
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out.parent))
        try:
            for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                        "ImageSets/Main", "ImageSets/Segmentation"):
                (tmp / sub).mkdir(parents=True)
            for split in todo:
                _write_split(tmp, cfg, split, bar)
            _finish(tmp, cfg, todo)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        if bar is not None:
            bar.close()
    return out


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on ``path`` (POSIX ``flock``; elsewhere no lock): processes that start
    together (a multi-process run) generate a split once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_dir() -> Path:
    """Where on-demand datasets go: ``$ATTRBENCH_CACHE`` or ``~/.cache/attrbench``."""
    env = os.environ.get("ATTRBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "attrbench"


def ensure_synthetic(cfg: SyntheticConfig = SyntheticConfig(), root: str | Path | None = None,
                     progress: bool = True, splits: list[str] | tuple[str, ...] | None = None
                     ) -> Path:
    """The synthetic dataset's root in the cache folder; the requested ``splits`` (default all;
    ``trainval`` means ``train`` and ``val``) are generated on first use, each on its own, so a
    run on the 100 test images never draws the 6,600 training images."""
    root = Path(root) if root else cache_dir() / f"synthetic-v{cfg.version}-{cfg.key()}"
    want = None if splits is None else _check_splits(
        {p for s in splits for p in (("train", "val") if s == "trainval" else (s,))})
    have = generated_splits(root)
    if have is not None and all(s in have for s in (_SPLIT_CODES if want is None else want)):
        return root
    with _lock(root.parent / f".{root.name}.lock"):
        write_synthetic(root, cfg, progress=progress, splits=want)
    return root
