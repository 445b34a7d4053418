"""Build ``src/pointseg/sample/`` (the small sample shipped inside the package) from ``../shared/data``.

- ``dubai/``: tile 2 of the CC0 Dubai aerial set (images 1-6 as ``Train``, 7-9 as ``Val``, masks beside them) and its
  class table.
- ``landsat/``: the public-domain Landsat 7 scene ``RGB.byte.tif`` (rasterio's test data, BSD-3-Clause licence
  beside it), ``clicks.gpkg``: 10 clicks per class placed by looking at the scene (``CLICKS``: deep water in the
  ocean east of the island, shallow water on the banks west and east of it, land inside the islands, cloud inside
  the large clouds; spread over the scene, none on a boundary or a small cloud), and ``clicks.png``: the clicks on
  the image, for the sample's README.

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
from PIL import Image, ImageDraw

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "pointseg" / "sample"
TRAIN, VAL = range(1, 7), range(7, 10)
CLICKS = {  # class -> (column, row) pixels, placed by looking at the scene
    "deep water": [(558, 116), (626, 134), (336, 89), (469, 285), (516, 329), (497, 433), (537, 494), (512, 596),
        (554, 646), (455, 227)],
    "shallow water": [(150, 155), (124, 254), (123, 356), (101, 404), (174, 450), (234, 574), (304, 607), (624, 281),
        (655, 236), (601, 526)],
    "land": [(264, 242), (325, 300), (386, 333), (409, 423), (396, 578), (424, 642), (505, 185), (532, 191),
        (298, 369), (392, 502)],
    "cloud": [(230, 142), (252, 167), (315, 213), (344, 225), (451, 89), (454, 69), (420, 124), (464, 109),
        (391, 162), (311, 219)],
}
COLOURS = {"deep water": (20, 40, 120), "shallow water": (60, 200, 220), "land": (120, 140, 60),
           "cloud": (240, 240, 240)}
MARKER = {"deep water": (255, 60, 60), "shallow water": (255, 230, 0), "land": (255, 0, 255), "cloud": (0, 230, 0)}


def copy_dubai(shared: Path) -> None:
    tile = shared / "dubai-aerial" / "Tile 2"
    for split, parts in (("Train", TRAIN), ("Val", VAL)):
        for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
            folder = SAMPLE / "dubai" / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for part in parts:
                shutil.copy(tile / kind / f"image_part_{part:03d}{suffix}", folder)
    shutil.copy(shared / "dubai-aerial" / "classes.csv", SAMPLE / "dubai" / "classes.csv")


def landsat_clicks(shared: Path) -> None:
    source = shared / "geo" / "landsat-rgb"
    (SAMPLE / "landsat").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "RGB.byte.tif", SAMPLE / "landsat" / "RGB.byte.tif")
    shutil.copy(source / "LICENSE.txt", SAMPLE / "landsat" / "LICENSE.txt")
    with rasterio.open(source / "RGB.byte.tif") as ds:
        transform, crs, image, valid = ds.transform, ds.crs.to_wkt(), ds.read(), ds.read_masks().min(0) > 0
    names = [name for name, pixels in CLICKS.items() for _ in pixels]
    xy = np.array([transform * (c + 0.5, r + 0.5) for pixels in CLICKS.values() for c, r in pixels])
    pyogrio.raw.write(SAMPLE / "landsat" / "clicks.gpkg", shapely.to_wkb(shapely.points(xy[:, 0], xy[:, 1])),
                      [np.array(names, dtype=object)], ["class"], driver="GPKG", geometry_type="Point", crs=crs,
                      layer="clicks")
    table = "value,name,r,g,b\n" + "".join(f"{i},{n},{r},{g},{b}\n" for i, (n, (r, g, b)) in
                                             enumerate(COLOURS.items()))
    (SAMPLE / "landsat" / "classes.csv").write_text(table)
    picture(image, valid, SAMPLE / "landsat" / "clicks.png")


def picture(image: np.ndarray, valid: np.ndarray, out: Path) -> None:
    """The scene (2-98% stretch of the pixels with data) at half size with the clicks as rings in class colours."""
    rgb = np.moveaxis(image, 0, -1).astype(float)
    low, high = np.percentile(rgb[valid], 2, axis=0), np.percentile(rgb[valid], 98, axis=0)
    stretched = np.clip((rgb - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(stretched).resize((image.shape[2] // 2, image.shape[1] // 2), Image.LANCZOS)
    draw = ImageDraw.Draw(canvas)
    for name, pixels in CLICKS.items():
        for c, r in pixels:
            draw.ellipse([c / 2 - 4, r / 2 - 4, c / 2 + 4, r / 2 + 4], outline=MARKER[name], width=2)
    for i, name in enumerate(CLICKS):
        draw.rectangle([6, 6 + 14 * i, 16, 16 + 14 * i], outline=MARKER[name], width=2)
        draw.text((22, 5 + 14 * i), name, fill=(255, 255, 255))
    canvas.save(out, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = p.parse_args()
    copy_dubai(args.shared)
    landsat_clicks(args.shared)


if __name__ == "__main__":
    main()
