"""Point labels: simulate clicks from dense masks, store them in a versioned file, rasterise them.

File format (JSON, ``"format": "pointseg.points"``, ``"version": 1``)::

    {
      "format": "pointseg.points", "version": 1,
      "classes": ["background", "building", ...],        # class index -> name
      "meta": {"strategy": "uniform", "per_image": 20, "seed": 0, ...},
      "images": {
        "Rural/0": {"height": 1024, "width": 1024,
                    "points": [[row, col, class], ...]}   # full-resolution pixel coordinates
      }
    }

Rows and columns are 0-based pixel indices at the image's full resolution; ``class`` is a class index, or
``null`` for a click still to be classified (``pointseg suggest`` writes the clicks it proposes so; such a file is
answered in QGIS or, to simulate an analyst, from dense masks by ``pointseg points simulate --at``).
Real clicked points (GeoPackage/Shapefile/GeoJSON/CSV from a GIS, ``pointseg.point_import``) are converted into this
same file; their image ids are raster names, and each image entry also keeps ``fid`` and ``map_xy`` (the original
map coordinates, in ``meta["map_crs"]``) lists parallel to ``points``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pointseg.choices import STRATEGIES
from pointseg.data.sources import Source
from pointseg.io import write_text

FORMAT = "pointseg.points"
VERSION = 1
UNCLASSIFIED = -1  # the class of a suggested click nobody has classified yet (``null`` in the file)


@dataclass
class PointSet:
    """Points per image id: ``(N, 3)`` int arrays of ``(row, col, class)`` plus each image's full size.

    ``path``: the file the points were read from (named in errors), ``None`` for points made in memory.
    ``extra``: per image, lists parallel to its points kept in the file (imported clicks: ``fid``, the feature
    ids, and ``map_xy``, the original map coordinates in ``meta["map_crs"]``).
    """

    classes: list[str]
    images: dict[str, np.ndarray]
    sizes: dict[str, tuple[int, int]]
    meta: dict
    path: Path | None = None
    extra: dict[str, dict[str, list]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(p) for p in self.images.values())

    def class_counts(self) -> np.ndarray:
        """Clicks per class over all images, ``(C,)``; unclassified clicks are not counted."""
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for pts in self.images.values():
            counts += np.bincount(pts[pts[:, 2] >= 0, 2], minlength=len(self.classes))[:len(self.classes)]
        return counts


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the image id (not on the order of images)."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode())])


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator, strategy: str = "uniform",
                  ignore_index: int = 255) -> np.ndarray:
    """Sample up to ``n`` distinct labeled pixels of ``mask`` (H, W); returns ``(n, 3)`` rows of (row, col, class).

    The simulated analyst:

    - ``uniform`` clicks ``n`` distinct pixels drawn uniformly among the labeled (non-ignore) ones, so classes
      get clicks in proportion to their area (a class covering 1% of an image gets one of 100 clicks on average).
    - ``class-balanced`` looks at every class present in the image and gives each ``n // k`` clicks (``k`` classes
      present; the ``n % k`` left over go to that many classes drawn at random), each drawn uniformly among the
      pixels of its class. With ``n >= k`` every class present gets at least one click. A class with fewer pixels
      than its share gets all its pixels (the image then has fewer than ``n`` clicks).
    """
    if strategy not in STRATEGIES:
        raise KeyError(f"unknown point strategy {strategy!r}; valid: {list(STRATEGIES)}")
    flat = mask.ravel()
    valid = np.flatnonzero(flat != ignore_index)
    if strategy == "uniform":
        chosen = rng.choice(valid, size=min(n, valid.size), replace=False)
    else:
        present = np.unique(flat[valid])
        quota = np.full(present.size, n // max(present.size, 1))
        quota[rng.choice(present.size, size=n % max(present.size, 1), replace=False)] += 1
        picks = []
        for cls, q in zip(present, quota, strict=True):
            members = valid[flat[valid] == cls]
            picks.append(rng.choice(members, size=min(q, members.size), replace=False))
        chosen = np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)
    rows, cols = np.divmod(chosen, mask.shape[1])
    return np.stack([rows, cols, flat[chosen]], axis=1).astype(np.int64)


def simulate(source: Source, per_image: int, seed: int = 0, strategy: str = "uniform",
             progress: bool = True) -> PointSet:
    """Simulate ``per_image`` clicks on every image of ``source`` from its full-resolution masks."""
    images, sizes = {}, {}
    for ref in tqdm(source.refs, desc="points", disable=not progress, leave=False):
        mask = source.read_mask(ref)
        images[ref.id] = sample_points(mask, per_image, image_rng(seed, ref.id), strategy,
                                       source.classes.ignore_index)
        sizes[ref.id] = mask.shape
    meta = {"strategy": strategy, "per_image": per_image, "seed": seed, "source": source.description}
    return PointSet(list(source.classes.names), images, sizes, meta)


def corrective_points(mask: np.ndarray, predicted: np.ndarray, existing: np.ndarray, n: int,
                      rng: np.random.Generator, ignore_index: int = 255) -> np.ndarray:
    """``existing`` clicks (N, 3) plus ``n`` new ones where a map is wrong: drawn uniformly among the labelled
    pixels of ``mask`` where ``predicted`` disagrees with it and no click is yet (classes from the mask); when
    fewer than ``n`` pixels are wrong, the rest are drawn uniformly among the other labelled pixels. The simulated
    analyst who clicks where the map is wrong."""
    if mask.shape != predicted.shape:
        raise ValueError(f"a map of {predicted.shape} for a mask of {mask.shape} (height, width)")
    labelled = mask != ignore_index
    free = labelled.copy()
    free[existing[:, 0], existing[:, 1]] = False
    wrong = np.flatnonzero((free & (predicted != mask)).ravel())
    picked = rng.choice(wrong, size=min(n, wrong.size), replace=False)
    if picked.size < n:
        right = np.flatnonzero((free & (predicted == mask)).ravel())
        picked = np.concatenate([picked, rng.choice(right, size=min(n - picked.size, right.size), replace=False)])
    rows, cols = np.divmod(picked, mask.shape[1])
    new = np.stack([rows, cols, mask.ravel()[picked]], axis=1).astype(np.int64)
    return np.concatenate([existing.astype(np.int64).reshape(-1, 3), new])


def corrective(source: Source, predictions: Mapping[str, np.ndarray], made: PointSet, per_image: int,
               seed: int = 0) -> PointSet:
    """``made`` plus ``per_image`` corrective clicks (``corrective_points``) on every image of ``source`` that has
    a map in ``predictions`` (full-resolution classes by image id), seeded by the seed and the image."""
    images, sizes = dict(made.images), dict(made.sizes)
    for ref in source.refs:
        if ref.id not in predictions:
            continue
        mask = source.read_mask(ref)
        existing = made.images.get(ref.id, np.zeros((0, 3), np.int64))
        rng = np.random.default_rng([seed, zlib.crc32(ref.id.encode()), len(existing)])
        images[ref.id] = corrective_points(mask, predictions[ref.id], existing, per_image, rng,
                                           source.classes.ignore_index)
        sizes[ref.id] = mask.shape
    meta = {**made.meta, "strategy": "corrective", "per_image_added": per_image, "seed": seed}
    return PointSet(made.classes, images, sizes, meta)


def answer(source: Source, points: PointSet) -> tuple[PointSet, list[str]]:
    """``points`` with every unclassified click given the class of the dense mask at its pixel (a simulated
    analyst answering suggestions); clicks on unlabeled pixels are left out and described in the returned list."""
    images, dropped, extra = {}, [], {k: dict(v) for k, v in points.extra.items()}
    refs = {r.id: r for r in source.refs}
    for image_id, pts in points.images.items():
        if image_id not in refs:
            raise ValueError(f"{points.path}: image {image_id!r} is not in {source.description}")
        open_ = pts[:, 2] == UNCLASSIFIED
        if open_.any():
            mask = source.read_mask(refs[image_id])
            if mask.shape != points.sizes[image_id]:
                raise ValueError(f"{points.path}: image {image_id!r} is {points.sizes[image_id]} in the point file but "
                                 f"its mask is {mask.shape} (height, width)")
            pts = pts.copy()
            pts[open_, 2] = mask[pts[open_, 0], pts[open_, 1]]
            unlabeled = pts[:, 2] == source.classes.ignore_index
            dropped += [f"{image_id} (row {r}, col {c})" for r, c, _ in pts[unlabeled]]
            pts = pts[~unlabeled]
            for key, values in extra.get(image_id, {}).items():  # lists parallel to the points lose the same ones
                if isinstance(values, list) and len(values) == len(unlabeled):
                    extra[image_id][key] = [v for v, gone in zip(values, unlabeled, strict=True) if not gone]
        images[image_id] = pts
    meta = {**points.meta, "answered_from": source.description}
    return PointSet(points.classes, images, dict(points.sizes), meta, None, extra), dropped


def save_points(path: str | Path, points: PointSet) -> Path:
    """Write ``points`` as a point file: one line per image, so files stay readable and diff well."""
    head = {"format": FORMAT, "version": VERSION, "classes": points.classes, "meta": points.meta}
    lines = [json.dumps(head)[:-1] + ', "images": {']
    entries = [
        f"  {json.dumps(k)}: " + json.dumps({"height": points.sizes[k][0], "width": points.sizes[k][1],
                                              "points": [[r, c, None if cls == UNCLASSIFIED else cls]
                                                         for r, c, cls in v.tolist()],
                                              **points.extra.get(k, {})})
        for k, v in points.images.items()
    ]
    return write_text(path, "\n".join(lines + [",\n".join(entries), "}}\n"]))


def load_points(path: str | Path, unclassified: bool = False) -> PointSet:
    """Read a point file, checking its structure, the integer coordinates and classes of every point, and that
    no pixel is given twice. Every error names the file (and the image and point). Points without a class
    (``null``, suggestions) are an error unless ``unclassified``, which reads them as class ``UNCLASSIFIED``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read point file ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pointseg point file (missing \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: point file version {doc.get('version')} unsupported (expected {VERSION})")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{path}: \"classes\" must be a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{path}: \"classes\" names a class twice: {classes}")
    entries = doc.get("images")
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: \"images\" must be an object mapping image ids to "
                         f"{{\"height\", \"width\", \"points\"}}, got {type(entries).__name__}")
    images, sizes, extra = {}, {}, {}
    for image_id, entry in entries.items():
        where = f"{path}: image {image_id!r}"
        images[image_id], sizes[image_id] = _read_entry(entry, len(classes), where, unclassified)
        kept = {k: v for k, v in entry.items() if k not in ("height", "width", "points")}
        if kept:
            extra[image_id] = kept
    meta = doc.get("meta", {})
    result = PointSet(classes, images, sizes, meta if isinstance(meta, dict) else {}, path, extra)
    if len(result) == 0:
        raise ValueError(f"{path}: the point file holds no points")
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_entry(entry: object, num_classes: int, where: str, unclassified: bool = False
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """``(N, 3)`` points and ``(height, width)`` of one image entry; raises ``ValueError`` at ``where``."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with height, width and points, got {entry!r:.60}")
    missing = [k for k in ("height", "width", "points") if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)} (each image needs height, "
                         "width and points)")
    h, w, raw = entry["height"], entry["width"], entry["points"]
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        raise ValueError(f"{where}: height and width must be positive integers, got {h!r} and {w!r}")
    if not isinstance(raw, list):
        raise ValueError(f"{where}: points must be a list of [row, col, class], got {raw!r:.60}")
    for i, point in enumerate(raw):
        if not (isinstance(point, list) and len(point) == 3 and all(_is_int(v) for v in point[:2])
                and (_is_int(point[2]) or point[2] is None)):
            raise ValueError(f"{where}: point #{i} is {point!r:.60}, not [row, col, class] with integer values")
        if point[2] is not None and point[2] < 0:
            raise ValueError(f"{where}: point class {point[2]} is not in 0..{num_classes - 1}")
        if point[2] is None and not unclassified:
            file = where.split(": image")[0]
            raise ValueError(f"{where}: point #{i} has no class (a suggested click): classify it in QGIS, or answer "
                             f"the suggestions from dense masks with `pointseg points simulate --at {file}`")
    pts = np.asarray([[r, c, UNCLASSIFIED if k is None else k] for r, c, k in raw], dtype=np.int64).reshape(-1, 3)
    _check_points(pts, h, w, num_classes, where)
    return pts, (h, w)


def _check_points(pts: np.ndarray, height: int, width: int, num_classes: int, where: str) -> None:
    outside = (pts[:, 0] < 0) | (pts[:, 0] >= height) | (pts[:, 1] < 0) | (pts[:, 1] >= width)
    if outside.any():
        r, c, _ = pts[np.argmax(outside)]
        raise ValueError(f"{where}: point (row {r}, col {c}) lies outside the {width}x{height} image")
    unknown = ((pts[:, 2] < 0) & (pts[:, 2] != UNCLASSIFIED)) | (pts[:, 2] >= num_classes)
    if unknown.any():
        raise ValueError(f"{where}: point class {pts[np.argmax(unknown), 2]} is not in 0..{num_classes - 1}")
    _, first, counts = np.unique(pts[:, :2], axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        i = int(first[np.argmax(counts > 1)])
        twice = np.flatnonzero((pts[:, :2] == pts[i, :2]).all(1))
        raise ValueError(f"{where}: pixel (row {pts[i, 0]}, col {pts[i, 1]}) is given {len(twice)} times "
                         f"(points #{', #'.join(map(str, twice))}); keep one point per pixel")


def check_against(points: PointSet, ids: list[str], sizes: dict[str, tuple[int, int]],
                  class_names: list[str]) -> None:
    """Fail clearly if ``points`` do not fit a dataset: unknown image ids, other sizes or other classes."""
    where = f"{points.path}: " if points.path else ""
    if points.classes != class_names:
        raise ValueError(f"{where}point classes {points.classes} differ from the dataset's classes {class_names} "
                         "(names and order must match)")
    unknown = sorted(set(points.images) - set(ids))
    if unknown:
        raise ValueError(f"{where}names {len(unknown)} images not in the dataset, e.g. {unknown[:3]}")
    for image_id in points.images:
        if sizes[image_id] != points.sizes[image_id]:
            raise ValueError(f"{where}image {image_id!r}: the point file says size {points.sizes[image_id]}, "
                             f"the image is {sizes[image_id]} (height, width)")
