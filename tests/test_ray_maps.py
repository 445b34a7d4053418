"""predict --ray: many rasters mapped by Ray actors on a local cluster give the maps of the plain loop."""

import numpy as np
import rasterio

from pointseg.cli import main
from tests.test_maps import write_raster


def test_ray_actors_map_every_raster_as_the_plain_loop_and_list_the_unreadable(tmp_path, tiny_run, capsys):
    inputs = tmp_path / "rasters"
    inputs.mkdir()
    for i, (height, width) in enumerate([(90, 70), (64, 130), (33, 45)]):
        write_raster(inputs / f"scene{i}.tif", height, width, seed=i)
    (inputs / "broken.tif").write_bytes(b"II*\x00 truncated")
    args = ["predict", "--run", str(tiny_run), "--input", str(inputs), "--tile", "32", "--overlap", "0.25"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 2
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "2"]) == 2  # the broken raster is skipped, listed
    assert "broken.tif" in (tmp_path / "ray" / "unreadable.txt").read_text()
    for i in range(3):
        name = f"scene{i}.tif"
        with rasterio.open(tmp_path / "plain" / name) as a, rasterio.open(tmp_path / "ray" / name) as b:
            assert (a.crs, a.transform, a.shape, a.colormap(1)) == (b.crs, b.transform, b.shape, b.colormap(1))
            # actors compute with 1 torch thread, the loop with the process's threads: float sums in another order
            # may flip a pixel whose top two classes tie to the last bit
            assert np.mean(a.read(1) == b.read(1)) > 0.999
