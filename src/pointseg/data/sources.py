"""Where samples live on disk. A source lists :class:`SampleRef` records and reads them, or windows of them, as arrays.

Every source has the same four verbs: ``read(ref, window)`` (a source sample, see ``pointseg.data.schema``),
``read_mask(ref)``, and from the file header alone ``size(ref)`` and ``georef(ref)``. A new kind of source (e.g.
georeferenced rasters) is one more class; caching wraps any source (``pointseg.data.cache.CachedSource``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pointseg.data.classes import LOVEDA_CLASSES, ClassTable
from pointseg.io import read_list

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


Window = tuple[int, int, int, int]  # (row, col, height, width) in full-resolution pixels


def window_of(array: np.ndarray, window: Window | None) -> np.ndarray:
    """The part of ``window`` inside ``array`` (first two axes; clipped at the bottom and right, like slicing)."""
    if window is None:
        return array
    row, col, height, width = window
    return array[row:row + height, col:col + width]


@dataclass(frozen=True)
class GeoRef:
    """Where a sample lies on Earth: ``crs`` (WKT), the affine ``transform`` (a, b, c, d, e, f) from pixel
    (col, row) to map coordinates, and the ``nodata`` value of its bands (``None``: none declared)."""

    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None = None


@dataclass(frozen=True)
class SampleRef:
    """One image (and optionally its mask) on disk; ``id`` is unique within its source."""

    id: str
    image: Path
    mask: Path | None = None


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB. Raises ``ValueError`` naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from e


def read_raw_mask(path: Path, color_coded: bool) -> np.ndarray:
    """Read a mask as stored: ``(H, W)`` values, or ``(H, W, 3)`` colours for colour-coded masks."""
    try:
        with Image.open(path) as im:
            if color_coded:
                return np.asarray(im.convert("RGB"))
            if im.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{path}: expected a single-channel mask, got mode {im.mode}")
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable mask ({e})") from e


class Source:
    """Base class: a list of samples plus the class table that decodes their masks."""

    classes: ClassTable
    cacheable = True  # whether a decoded copy in the sample cache pays off (False for rasters read by window)

    def __init__(self, refs: list[SampleRef], classes: ClassTable, description: str) -> None:
        if not refs:
            raise ValueError(f"{description}: no images found")
        ids = [r.id for r in refs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{description}: duplicate sample ids")
        self.refs = refs
        self.classes = classes
        self.description = description

    def __len__(self) -> int:
        return len(self.refs)

    def read(self, ref: SampleRef, window: Window | None = None) -> dict[str, np.ndarray]:
        """One sample, or the part of ``window`` inside it: ``image`` (h, w, 3) uint8 and, when there is one,
        ``mask`` (h, w) uint8. Image files are decoded whole, then cut."""
        image = read_image(ref.image)
        sample = {"image": window_of(image, window)}
        if ref.mask is not None:
            sample["mask"] = window_of(self.read_mask(ref, image.shape[:2]), window)
        return sample

    def read_mask(self, ref: SampleRef, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The decoded ``(H, W)`` uint8 mask of ``ref``, checked against the image size."""
        if ref.mask is None:
            raise ValueError(f"{ref.image}: this sample has no mask")
        raw = read_raw_mask(ref.mask, self.classes.color_coded)
        h, w = image_size or self.size(ref)
        if raw.shape[:2] != (h, w):
            raise ValueError(
                f"{ref.mask}: mask size {raw.shape[1]}x{raw.shape[0]} does not match image {ref.image} size {w}x{h}"
            )
        return self.classes.decode(raw, source=str(ref.mask))

    def subset(self, ids: list[str], description: str) -> Source:
        """The samples named in ``ids`` (in that order); unknown ids are an error."""
        by_id = {r.id: r for r in self.refs}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"{description}: {len(unknown)} ids not in {self.description}, e.g. {unknown[:3]}")
        return Source([by_id[i] for i in ids], self.classes, f"{self.description} [{description}]")

    def size(self, ref: SampleRef) -> tuple[int, int]:
        """``(height, width)`` of an image without decoding its pixels."""
        try:
            with Image.open(ref.image) as im:
                return im.height, im.width
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{ref.image}: unreadable image ({e})") from e

    def band_count(self, ref: SampleRef) -> int:
        """Bands of ``read(ref)["image"]`` (image files are read as RGB)."""
        return 3

    def band_dtype(self, ref: SampleRef) -> str:
        return "uint8"

    def band_numbers(self, ref: SampleRef) -> tuple[int, ...] | None:
        """The file's bands ``read`` returns (1-based), ``None`` for image files (read as RGB)."""
        return None

    def sample_keys(self, ref: SampleRef) -> tuple[str, ...]:
        """The arrays ``read(ref)`` returns."""
        return ("image", "mask") if ref.mask is not None else ("image",)

    def georef(self, ref: SampleRef) -> GeoRef | None:
        """Where the sample lies on Earth; ``None`` for plain images (PNG/JPEG tiles carry no georeferencing)."""
        return None


def _natural_key(p: Path) -> tuple:
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


class LoveDA(Source):
    """LoveDA layout: ``<root>/<Split>/<Domain>/{images_png,masks_png}/<id>.png``.

    Masks: 0 = no-data (ignored), 1..7 = classes 0..6. Sample ids are ``<Domain>/<id>``.
    """

    DOMAINS = ("Rural", "Urban")

    def __init__(self, root: str | Path, split: str = "Train", domains: tuple[str, ...] = DOMAINS,
                 require_masks: bool = True) -> None:
        root = Path(root)
        refs = []
        for domain in domains:
            img_dir = root / split / domain / "images_png"
            for img in sorted(img_dir.glob("*.png"), key=_natural_key):
                mask = root / split / domain / "masks_png" / img.name
                if require_masks and not mask.exists():
                    raise ValueError(f"{img}: no mask at {mask}")
                refs.append(SampleRef(f"{domain}/{img.stem}", img, mask if mask.exists() else None))
        super().__init__(refs, LOVEDA_CLASSES, f"LoveDA {root}/{split} {'+'.join(domains)}")


class ImageMaskFolder(Source):
    """Every ``<dir>/<images>/<name>.<ext>`` below ``root`` paired with ``<dir>/<masks>/<name>.<ext>``.

    Masks hold class values or, with a colour-coded class table, RGB colours. Ids are paths relative
    to ``root`` without the suffix (spaces allowed), e.g. ``Tile 1/image_part_001``.
    """

    def __init__(self, root: str | Path, classes: ClassTable, images: str = "images", masks: str = "masks",
                 require_masks: bool = True) -> None:
        root = Path(root)
        refs = []
        for img_dir in sorted(p for p in root.rglob(images) if p.is_dir()):
            mask_dir = img_dir.parent / masks
            mask_by_stem = {p.stem: p for p in mask_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
            for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                mask = mask_by_stem.get(img.stem)
                if require_masks and mask is None:
                    raise ValueError(f"{img}: no mask named {img.stem}.* in {mask_dir}")
                rel = img.relative_to(root).with_suffix("")
                sample_id = str(rel.parent.parent / rel.name) if rel.parent.name == images else str(rel)
                refs.append(SampleRef(sample_id, img, mask))
        super().__init__(refs, classes, f"image/mask folder {root}")


class ImageFolder(Source):
    """Images only: every image file directly in ``root`` or, with ``recursive``, below it; or, when ``root`` is
    a ``.txt`` file, the images it lists (one path per line, relative to the list's folder or absolute; e.g. the
    selection ``pointseg curate`` writes).

    Recursively, if ``root`` holds directories named ``images`` (an image/mask layout), only their files
    are taken, so masks beside them are never read as images.
    """

    def __init__(self, root: str | Path, classes: ClassTable, recursive: bool = False, images: str = "images"
                 ) -> None:
        root = Path(root)
        if root.suffix.lower() == ".txt" and root.is_file():
            files = image_list(root)
            ids = [str(p.with_suffix("")) for p in files]
        else:
            if not root.is_dir():
                raise ValueError(f"{root}: not a directory (or a .txt list of images)")
            files = sorted(root.rglob("*") if recursive else root.iterdir())
            files = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if recursive and any(p.parent.name == images for p in files):
                files = [p for p in files if p.parent.name == images]
            ids = [str(p.relative_to(root).with_suffix("")) if recursive else p.stem for p in files]
        super().__init__([SampleRef(i, p) for i, p in zip(ids, files, strict=True)], classes, f"image folder {root}")


def image_list(path: Path) -> list[Path]:
    """The image files a ``.txt`` list names (blank lines and ``#`` comments skipped); each must exist."""
    files = [path.parent / line for line in read_list(path, "images")]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise ValueError(f"{path}: {len(missing)} listed images not found, e.g. {missing[0]}")
    return files
