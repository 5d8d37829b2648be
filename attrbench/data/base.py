"""What the VOC and COCO readers share: image decoding with readable errors, the paper's
resize-and-normalise, and the optional in-memory cache of decoded samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .sample import Sample


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and what is expected."""


def open_rgb(path: Path) -> Image.Image:
    """Decode an image file to RGB; a missing or unreadable file raises :class:`DataError`."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"missing image file {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable image file {path}: {exc}") from None


class ImageDataset(Dataset):
    """Base of the readers: subclasses set ``ids``, ``classes`` and implement :meth:`_load`."""

    ids: list[str]
    classes: tuple[str, ...]

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                 cache: bool) -> None:
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._cache: dict[int, Sample] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def to_tensor(self, im: Image.Image) -> torch.Tensor:
        """Resize to ``image_size`` squared (squashed, bilinear: the paper's ``Resize((S, S))``)
        and normalise with ``mean``/``std``."""
        s = self.image_size
        if im.size != (s, s):
            im = im.resize((s, s), Image.BILINEAR)
        arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (arr.float() / 255.0 - self.mean) / self.std

    def _load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self._load(index)
        if self._cache is not None:
            self._cache[index] = sample
        return sample
