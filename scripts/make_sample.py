"""Build ``src/pointseg/sample/`` (the small sample shipped inside the package) from ``../shared/data``.

- ``dubai/``: tile 2 of the CC0 Dubai aerial set (images 1-6 as ``Train``, 7-9 as ``Val``, masks beside them) and its
  class table.
- ``landsat/``: the public-domain Landsat 7 scene ``RGB.byte.tif`` (rasterio's test data, BSD-3-Clause licence
  beside it) and ``clicks.gpkg``, 10 clicks per class placed on pixels that a rule on the pixel values assigns to
  that class (written down in ``RULES``), at least 25 pixels apart, drawn with seed 0: a stand-in for an analyst's
  clicks to try the commands on, not a reference.

    python scripts/make_sample.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "pointseg" / "sample"
TRAIN, VAL = range(1, 7), range(7, 10)
PER_CLASS, SPACING, SEED = 10, 25, 0
RULES = {  # class -> rule on the raw bands (uint8 red, green, blue) of a pixel with data
    "deep water": lambda r, g, b: (r < 20) & (g < 40) & (b < 60),
    "shallow water": lambda r, g, b: (b > 90) & (r < 60) & (b < 180),
    "land": lambda r, g, b: (g > b) & (r > 25) & (r < 90),
    "cloud": lambda r, g, b: (r > 200) & (g > 200) & (b > 200),
}
COLOURS = {"deep water": (20, 40, 120), "shallow water": (60, 200, 220), "land": (120, 140, 60),
           "cloud": (240, 240, 240)}


def copy_dubai(shared: Path) -> None:
    tile = shared / "dubai-aerial" / "Tile 2"
    for split, parts in (("Train", TRAIN), ("Val", VAL)):
        for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
            folder = SAMPLE / "dubai" / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for part in parts:
                shutil.copy(tile / kind / f"image_part_{part:03d}{suffix}", folder)
    shutil.copy(shared / "dubai-aerial" / "classes.csv", SAMPLE / "dubai" / "classes.csv")


def spaced(rows: np.ndarray, cols: np.ndarray, taken: list[tuple[int, int]], rng: np.random.Generator) -> list:
    picked = []
    for i in rng.permutation(len(rows)):
        r, c = int(rows[i]), int(cols[i])
        if all((r - a) ** 2 + (c - b) ** 2 >= SPACING**2 for a, b in taken + picked):
            picked.append((r, c))
        if len(picked) == PER_CLASS:
            break
    return picked


def landsat_clicks(shared: Path) -> None:
    source = shared / "geo" / "landsat-rgb"
    (SAMPLE / "landsat").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "RGB.byte.tif", SAMPLE / "landsat" / "RGB.byte.tif")
    shutil.copy(source / "LICENSE.txt", SAMPLE / "landsat" / "LICENSE.txt")
    with rasterio.open(source / "RGB.byte.tif") as ds:
        red, green, blue = ds.read().astype(int)
        valid = ds.read_masks().min(0) > 0
        transform, crs = ds.transform, ds.crs.to_wkt()
    rng, taken, names, points = np.random.default_rng(SEED), [], [], []
    for name, rule in RULES.items():
        rows, cols = np.nonzero(rule(red, green, blue) & valid)
        picked = spaced(rows, cols, taken, rng)
        taken += picked
        names += [name] * len(picked)
        points += [transform * (c + 0.5, r + 0.5) for r, c in picked]
    xy = np.array(points)
    pyogrio.raw.write(SAMPLE / "landsat" / "clicks.gpkg", shapely.to_wkb(shapely.points(xy[:, 0], xy[:, 1])),
                      [np.array(names, dtype=object)], ["class"], driver="GPKG", geometry_type="Point", crs=crs,
                      layer="clicks")
    table = "value,name,r,g,b\n" + "".join(f"{i},{n},{r},{g},{b}\n" for i, (n, (r, g, b)) in
                                             enumerate(COLOURS.items()))
    (SAMPLE / "landsat" / "classes.csv").write_text(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = p.parse_args()
    copy_dubai(args.shared)
    landsat_clicks(args.shared)


if __name__ == "__main__":
    main()
