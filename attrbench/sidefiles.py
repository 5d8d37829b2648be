"""The run folder's side files that the report draws: the qualitative grid
(``qualitative.npz``) and the class-specificity matrices (``class_specificity.json``), their
writers, readers and format checks. numpy only (no torch, no matplotlib).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLASS_SPECIFICITY_FILE",
    "QUALITATIVE_FILE",
    "WORST_FILE",
    "images_to_uint8",
    "load_class_specificity",
    "load_qualitative",
    "load_worst",
    "save_class_specificity",
    "save_qualitative",
    "save_worst",
]

QUALITATIVE_FILE = "qualitative.npz"
CLASS_SPECIFICITY_FILE = "class_specificity.json"
QUALITATIVE_FORMAT = "attrbench-qualitative-v1"
CLASS_SPECIFICITY_FORMAT = "attrbench-class-specificity-v1"


def images_to_uint8(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (N,3,H,W) float images (tensor or array) -> (N,3,H,W) uint8, for
    :func:`save_qualitative`."""
    x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(x.shape)}")
    m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    s = np.asarray(std, dtype=np.float32)[None, :, None, None]
    return np.clip(np.rint((x * s + m) * 255.0), 0, 255).astype(np.uint8)


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def save_qualitative(
    run_dir: str | Path,
    images_uint8: Any,
    masks_by_method: Mapping[str, Any],
    class_names: Sequence[str],
    labels: Any,
    image_ids: Sequence[str] | None = None,
) -> Path:
    """Write ``RUN_DIR/qualitative.npz`` for the qualitative grid (images x methods).

    Format (``np.load(path, allow_pickle=False)`` reads it; every array is a plain dtype):

    ==============  ==================  ====================================================
    key             dtype, shape        meaning
    ==============  ==================  ====================================================
    ``format``      str scalar          ``"attrbench-qualitative-v1"``
    ``images``      uint8 (N,3,H,W)     the (un-normalised) RGB images
    ``methods``     str (M,)            method names, in column order
    ``masks``       float16 (M,N,H,W)   ``masks[j, i]``: method j's merged mask of image i, in
                                        [0, 1] (values are clipped; NaN -> 0)
    ``class_names`` str (K,)            the dataset's class names
    ``labels``      uint8 (N,K)         multi-hot ground-truth labels
    ``image_ids``   str (N,)            sample ids (``""`` when not given)
    ==============  ==================  ====================================================

    Args:
        run_dir: the run folder.
        images_uint8: (N,3,H,W) uint8 images (see :func:`images_to_uint8`).
        masks_by_method: ``{method: (N,H,W) float mask}`` (tensors or arrays).
        class_names: K class names.
        labels: (N,K) multi-hot labels.
        image_ids: optional N sample ids.

    Returns:
        The written path.
    """
    images = _as_numpy(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images_uint8 must be a uint8 array of shape (N, 3, H, W), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    n, _, h, w = images.shape
    if not masks_by_method:
        raise ValueError("masks_by_method must map at least one method name to (N, H, W) masks")
    methods = list(masks_by_method)
    masks = []
    for m in methods:
        a = _as_numpy(masks_by_method[m]).astype(np.float32)
        if a.shape != (n, h, w):
            raise ValueError(
                f"masks of method {m!r} must have shape {(n, h, w)} to match the "
                f"images, got {tuple(a.shape)}"
            )
        masks.append(np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0).astype(np.float16))
    lab = _as_numpy(labels)
    if lab.ndim != 2 or lab.shape != (n, len(class_names)):
        raise ValueError(
            f"labels must be multi-hot of shape (N, K) = {(n, len(class_names))}, "
            f"got {tuple(lab.shape)}"
        )
    ids = [str(i) for i in image_ids] if image_ids is not None else [""] * n
    if len(ids) != n:
        raise ValueError(f"image_ids must have {n} entries, got {len(ids)}")
    path = Path(run_dir) / QUALITATIVE_FILE
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(
        tmp,
        format=np.str_(QUALITATIVE_FORMAT),
        images=images,
        methods=np.asarray(methods, dtype=str),
        masks=np.stack(masks),
        class_names=np.asarray(list(class_names), dtype=str),
        labels=(lab > 0.5).astype(np.uint8),
        image_ids=np.asarray(ids, dtype=str),
    )
    tmp.replace(path)
    return path


def load_qualitative(path: str | Path) -> dict[str, Any]:
    """Read a :func:`save_qualitative` file (checks the format tag and shapes)."""
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    if str(d.get("format", "")) != QUALITATIVE_FORMAT:
        raise ValueError(f"{path} is not an {QUALITATIVE_FORMAT} file (format={d.get('format')!r})")
    n = d["images"].shape[0]
    if d["masks"].shape[:2] != (len(d["methods"]), n):
        raise ValueError(
            f"{path}: masks have shape {d['masks'].shape}, expected "
            f"({len(d['methods'])}, {n}, H, W)"
        )
    return d


def save_class_specificity(run_dir: str | Path, matrices: Mapping[str, Mapping[str, Any]],
                           name: str = "class_specificity") -> Path:
    """Write ``RUN_DIR/<name>.json`` (the metrics' matrix group; default
    ``class_specificity.json``).

    Format::

        {"format": "attrbench-class-specificity-v1",
         "methods": {METHOD: {"classes": [name, ...],             # |C| participating classes
                              "columns": ["none", name, ...],     # optional, default this
                              "matrix": [[float|null, ...], ...],  # |C| x (|C| + 1)
                              "summary": {"diag", "offdiag", "none"}}}}  # optional

    Row ``i`` = images whose target is ``classes[i]``; column 0 = the target's probability on
    the unmasked image ("none"), column ``j + 1`` = on the image masked by the mask of
    ``classes[j]`` (the matrix of ``attrbench.metrics.specificity.confusion_matrix``). A square
    ``|C| x |C|`` matrix (no "none" column) is accepted too. NaN is stored as null.

    Args:
        matrices: ``{method: {"classes": [...], "matrix": tensor/array/list}}``.
    """
    from .rundir import atomic_write_text, clean_json

    out: dict[str, Any] = {}
    for m, d in matrices.items():
        classes = [str(c) for c in d["classes"]]
        mat = _as_numpy(d["matrix"]).astype(np.float64)
        c = len(classes)
        if mat.shape not in ((c, c + 1), (c, c)):
            raise ValueError(
                f"class-specificity matrix of {m!r} must have shape {(c, c + 1)} "
                f"(or {(c, c)}) for {c} classes, got {tuple(mat.shape)}"
            )
        cols = d.get("columns") or ((["none"] if mat.shape[1] == c + 1 else []) + classes)
        out[m] = {"classes": classes, "columns": list(cols), "matrix": mat.tolist()}
        if d.get("summary"):
            out[m]["summary"] = {k: float(v) for k, v in d["summary"].items()}
    path = Path(run_dir) / f"{name}.json"
    atomic_write_text(
        path, json.dumps(clean_json({"format": CLASS_SPECIFICITY_FORMAT, "methods": out}), indent=1)
    )
    return path


def load_class_specificity(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{method: {"classes", "columns", "matrix" (np.ndarray, NaN for null)}}``. Accepts the
    :func:`save_class_specificity` file and the bare ``{method: {...}}`` mapping."""
    d = json.loads(Path(path).read_text())
    methods = d.get("methods", d) if isinstance(d, dict) else None
    if not isinstance(methods, dict):
        raise ValueError(  # noqa: TRY004 — a malformed file, not an argument of the wrong type
            f"{path}: expected {{method: {{'classes', 'matrix'}}}}, got {type(d).__name__}"
        )
    out = {}
    for m, v in methods.items():
        if m == "format" or not isinstance(v, dict):
            continue
        mat = np.asarray(
            [[math.nan if x is None else float(x) for x in row] for row in v["matrix"]],
            dtype=np.float64,
        )
        classes = [str(c) for c in v["classes"]]
        cols = v.get("columns") or (
            (["none"] if mat.shape[1] == len(classes) + 1 else []) + classes
        )
        out[m] = {"classes": classes, "columns": list(cols), "matrix": mat}
        if isinstance(v.get("summary"), dict):
            out[m]["summary"] = v["summary"]
    return out


WORST_FILE = "worst.npz"
WORST_FORMAT = "attrbench-worst-v1"


def save_worst(run_dir: str | Path, metric: str, higher_is_better: bool,
               per_method: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> Path:
    """Write ``RUN_DIR/worst.npz``: each method's worst images by ``metric``, with its masks.

    ``per_method``: ``{method: {"images": uint8 (k,3,H,W), "masks": (k,H,W), "labels": (k,K),
    "image_ids": [k], "values": [k]}}``, worst first; every method has the same ``k``. Keys of
    the file: ``format``, ``metric``, ``higher_is_better``, ``methods`` (M,), ``images`` uint8
    (M,k,3,H,W), ``masks`` float16 (M,k,H,W) in [0, 1], ``labels`` uint8 (M,k,K),
    ``image_ids`` str (M,k), ``values`` float64 (M,k), ``class_names`` str (K,).
    """
    if not per_method:
        raise ValueError("per_method must hold at least one method")
    methods = list(per_method)
    ks = {len(per_method[m]["image_ids"]) for m in methods}
    if len(ks) != 1 or 0 in ks:
        raise ValueError(f"every method needs the same number (>= 1) of worst images, got {ks}")
    stack = {key: np.stack([_as_numpy(per_method[m][key]) for m in methods])
             for key in ("images", "masks", "labels")}
    if stack["images"].dtype != np.uint8 or stack["images"].ndim != 5:
        raise ValueError(f"images must be uint8 (k, 3, H, W) per method, got "
                         f"{stack['images'].dtype} {stack['images'].shape[1:]}")
    path = Path(run_dir) / WORST_FILE
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(
        tmp, format=np.str_(WORST_FORMAT), metric=np.str_(metric),
        higher_is_better=np.bool_(higher_is_better), methods=np.asarray(methods, dtype=str),
        images=stack["images"],
        masks=np.clip(np.nan_to_num(stack["masks"].astype(np.float32)), 0, 1).astype(np.float16),
        labels=(stack["labels"] > 0.5).astype(np.uint8),
        image_ids=np.asarray([[str(i) for i in per_method[m]["image_ids"]] for m in methods]),
        values=np.asarray([list(per_method[m]["values"]) for m in methods], dtype=np.float64),
        class_names=np.asarray(list(class_names), dtype=str))
    tmp.replace(path)
    return path


def load_worst(path: str | Path) -> dict[str, Any]:
    """Read ``worst.npz`` (see :func:`save_worst`); ``ValueError`` for another format."""
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    if str(d.get("format")) != WORST_FORMAT:
        raise ValueError(f"{path} is not an attrbench worst-images file (format "
                         f"{d.get('format')!r})")
    return {"metric": str(d["metric"]), "higher_is_better": bool(d["higher_is_better"]),
            "methods": [str(m) for m in d["methods"]], "images": d["images"],
            "masks": d["masks"].astype(np.float32), "labels": d["labels"],
            "image_ids": d["image_ids"].tolist(), "values": d["values"],
            "class_names": [str(c) for c in d["class_names"]]}
