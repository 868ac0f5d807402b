"""Pictures for the image interface: image files as uint8 arrays or float tensors, and a dump dir's
``utt2image`` table (utterance -> picture) loaded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asr.data.datadir import DataDirError, read_table


def read_image(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """(3, H, W) uint8 RGB of any image file PIL reads; ``size`` (side, or (height, width)): resized to
    it (bicubic) where it differs."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        height, width = (size, size) if isinstance(size, int) else (size or (None, None))
        if size and im.size != (width, height):
            im = im.resize((width, height), Image.BICUBIC)
        return np.asarray(im).transpose(2, 0, 1).copy()


def load_picture(path: str | Path, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """An image file -> (1, 3, h, w) float in [0, 1], RGB, resized to ``size`` where given; a file that
    is no readable picture raises ValueError naming it."""
    from PIL import UnidentifiedImageError

    try:
        array = read_image(path, size)
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"{path}: cannot read the picture: {exc}") from None
    return torch.from_numpy(array).unsqueeze(0).float() / 255.0


class PictureTable:
    """``utt2image`` of a dump dir: each distinct PNG loaded once (uint8), looked up per utterance;
    ``size`` (side, or (height, width)): resized to it where it differs (the image encoder's
    :meth:`ImageX2L.picture_size`)."""

    def __init__(self, table_path: Path, size: int | tuple[int, int] | None = None):
        try:
            table = read_table(table_path)
        except DataDirError as exc:
            raise ValueError(str(exc)) from None
        paths = sorted(set(table.values()))
        arrays = []
        for p in paths:
            try:
                arrays.append(read_image(p, size))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{table_path}: cannot read picture {p}: {exc}") from None
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"{table_path}: the pictures differ in size; all must have one size")
        self.images = torch.from_numpy(np.stack(arrays))  # (P, 3, h, w) uint8
        index = {p: i for i, p in enumerate(paths)}
        self.index_of = {utt: index[p] for utt, p in table.items()}

    def pictures(self, utts: list[str]) -> torch.Tensor:
        return self.images[[self.index_of[u] for u in utts]].float() / 255.0  # (B, 3, h, w)

    @classmethod
    def merge(cls, tables: list[PictureTable]) -> PictureTable:
        """One table of several (their index keys must already be distinct); the first is extended in place."""
        merged = tables[0]
        for t in tables[1:]:
            if t.images.shape[1:] != merged.images.shape[1:]:
                raise ValueError("the pictures of the joint dirs differ in size; all must have one size")
            base = merged.images.shape[0]
            merged.images = torch.cat([merged.images, t.images])
            merged.index_of.update({u: base + i for u, i in t.index_of.items()})
        return merged
