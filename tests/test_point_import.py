import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from pointseg.cli import main
from pointseg.data.classes import ClassTable
from pointseg.data.points import load_points
from pointseg.point_import import import_points, read_point_layer
from tests.conftest import shared_path

ENMAP_NAMES = ("impervious", "low vegetation", "tree", "soil", "water")


def enmap(*parts):
    return shared_path("data", "geo", "enmap-berlin", *parts)


@pytest.fixture
def enmap_table(tmp_path):
    path = tmp_path / "enmap.csv"
    path.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},{v * 40},0,0\n" for v, n in enumerate(ENMAP_NAMES, 1)))
    return path


def land_on_their_class(points_file):
    """Fraction of imported points whose pixel in the EnMAP level-2 map is their class (map values 1..5)."""
    points = load_points(points_file)
    with rasterio.open(enmap("landcover_map_l2.tif")) as ds:
        landcover = ds.read(1)
    pts = points.images["landcover_map_l2"]
    names = np.array(points.classes)[pts[:, 2]]
    return float(np.mean(np.array(ENMAP_NAMES)[landcover[pts[:, 0], pts[:, 1]] - 1] == names)), len(pts)


@pytest.mark.parametrize("field, with_table", [("level_2_id", True), ("level_2", True), ("level_2", False)])
def test_qgis_points_in_another_crs_land_on_their_own_class(tmp_path, enmap_table, field, with_table, capsys):
    out = tmp_path / "points.json"
    args = ["points", "import", "--vector", str(enmap("landcover_point_singlepart_3035.gpkg")),
            "--raster", str(enmap("landcover_map_l2.tif")), "--class-field", field, "--out", str(out)]
    assert main([*args, *(["--classes", str(enmap_table)] if with_table else [])]) == 0
    assert "imported 58 of 58 points" in capsys.readouterr().out
    assert land_on_their_class(out) == (1.0, 58), "EPSG:3035 points reprojected onto the EPSG:32633 map"
    doc = json.loads(out.read_text())
    entry = doc["images"]["landcover_map_l2"]
    assert doc["meta"]["map_crs"] == "EPSG:3035" and len(entry["fid"]) == len(entry["map_xy"]) == 58
    with rasterio.open(enmap("landcover_map_l2.tif")) as ds:  # the kept map coordinates give back the pixel
        to_map = Transformer.from_crs("EPSG:3035", ds.crs, always_xy=True)
        col, row = ~ds.transform @ to_map.transform(*entry["map_xy"][7])
    assert [int(row), int(col)] == entry["points"][7][:2]
    table = ClassTable.from_csv(out.with_suffix(".classes.csv"), color_coded=False)
    assert table.names == (ENMAP_NAMES if with_table else tuple(sorted(ENMAP_NAMES)))


def test_points_on_nodata_outside_or_of_unknown_class_are_reported_and_left_out(tmp_path, enmap_table):
    layer = read_point_layer(enmap("points_in_no_data_region.gpkg"), "class")
    table = ClassTable(("Valid Data",), ((0, 0, 0),))
    points, report = import_points(layer, [enmap("landcover_map_l2.tif")], table)
    assert (report.imported, dict(report.skipped)) == (1, {"unknown_class": 1})
    both = ClassTable(("No Data", "Valid Data"), ((0, 0, 0), (1, 1, 1)))
    points, report = import_points(layer, [enmap("landcover_map_l2.tif")], both)
    assert report.imported == 1 and dict(report.skipped) == {"nodata": 1}
    assert "on landcover_map_l2.tif" in report.examples["nodata"][0] and "EPSG:4326" in report.summary()
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")  # another continent
    points, report = import_points(layer, [landsat], both)
    assert report.imported == 0 and report.skipped["outside"] == 2


def test_repeated_clicks_merge_and_conflicting_clicks_are_left_out(tmp_path):
    with rasterio.open(enmap("landcover_map_l2.tif")) as ds:
        x, y = ds.transform @ (100.5, 200.5)  # the centre of pixel (row 200, col 100)
        crs = ds.crs.to_string()
    csv = tmp_path / "clicks.csv"
    csv.write_text(f"x,y,cls\n{x},{y},tree\n{x + 1},{y - 1},tree\n{x + 60},{y},soil\n{x + 61},{y},water\n"
                   f"{x + 90},{y},\n")
    out = tmp_path / "p.json"
    assert main(["points", "import", "--vector", str(csv), "--crs", crs, "--raster", str(enmap("landcover_map_l2.tif")),
                 "--class-field", "cls", "--out", str(out)]) == 0
    points = load_points(out)
    report = points.meta["report"]
    assert points.images["landcover_map_l2"].tolist() == [[200, 100, points.classes.index("tree")]]
    assert report["merged"] == 1 and report["skipped"] == {"no_class": 1, "conflict": 2}


@pytest.mark.parametrize("case, message", [
    ("field", "no field 'kind' for the classes; the layer has fields ['level_1_id', 'level_1', 'level_2_id', "
              "'level_2']"),
    ("csv crs", "the layer has no CRS; give the CRS of the x/y columns with --crs"),
    ("csv columns", "a CSV of points needs columns 'x' and 'y'"),
    ("not georeferenced", "the raster is not georeferenced"),
    ("nothing placed", "no point could be placed on the rasters"),
    ("missing", "vector layer not found"),
])
def test_bad_layers_are_errors_naming_the_file(tmp_path, capsys, case, message):
    vector, raster, field = enmap("landcover_point_singlepart_3035.gpkg"), enmap("landcover_map_l2.tif"), "level_2"
    extra = []
    if case == "field":
        field = "kind"
    elif case in ("csv crs", "csv columns"):
        vector = tmp_path / "p.csv"
        vector.write_text("x,y,level_2\n1,2,tree\n" if case == "csv crs" else "lon,lat,level_2\n1,2,tree\n")
    elif case == "not georeferenced":
        raster = tmp_path / "plain.tif"
        with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(
                raster, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
            dst.write(np.zeros((1, 4, 4), dtype=np.uint8))
    elif case == "nothing placed":
        raster = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    else:
        vector = tmp_path / "missing.gpkg"
    code = main(["points", "import", "--vector", str(vector), "--raster", str(raster), "--class-field", field,
                 "--out", str(tmp_path / "p.json"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "p.json").exists()


def test_class_values_stored_as_text_match_the_tables_values(tmp_path, enmap_table):
    """A CSV holds numbers as text, as does a text field: "3" is the table's value 3 (tree), as README promises."""
    with rasterio.open(enmap("landcover_map_l2.tif")) as ds:
        x, y = ds.transform @ (100.5, 200.5)
        crs = ds.crs.to_string()
    csv = tmp_path / "clicks.csv"
    csv.write_text(f"x,y,cls\n{x},{y},3\n{x + 60},{y},\" 4.0\"\n")
    out = tmp_path / "p.json"
    assert main(["points", "import", "--vector", str(csv), "--crs", crs, "--raster", str(enmap("landcover_map_l2.tif")),
                 "--class-field", "cls", "--classes", str(enmap_table), "--out", str(out)]) == 0
    points = load_points(out)
    assert [points.classes[c] for c in points.images["landcover_map_l2"][:, 2]] == ["tree", "soil"]


def test_class_names_with_commas_and_quotes_survive_the_class_table(tmp_path):
    table = ClassTable(('crops, "mixed"', "urban|dense"), ((1, 2, 3), (4, 5, 6)))
    table.to_csv(tmp_path / "t.csv")
    again = ClassTable.from_csv(tmp_path / "t.csv", color_coded=False)
    assert again.names == table.names and again.colors == table.colors


def test_points_on_two_rasters_count_once_each(tmp_path, capsys):
    import shutil

    for name in ("a.tif", "b.tif"):
        shutil.copy(enmap("landcover_map_l2.tif"), tmp_path / name)
    vector = enmap("landcover_point_singlepart_3035.gpkg")
    assert main(["points", "import", "--vector", str(vector), "--raster", str(tmp_path / "a.tif"), "--raster",
                 str(tmp_path / "b.tif"), "--class-field", "level_2", "--out", str(tmp_path / "p.json")]) == 0
    summary = capsys.readouterr().out
    report = load_points(tmp_path / "p.json").meta["report"]
    assert report["imported"] <= report["total"] and report["clicks"] == 2 * report["imported"]
    assert f"imported {report['imported']} of {report['total']} points; {report['clicks']} clicks" in summary


def test_a_polygon_layer_and_a_table_without_geometry_are_named_as_such(tmp_path, capsys):
    import pyogrio
    import shapely

    polygons = tmp_path / "polygons.gpkg"
    squares = [shapely.box(x, 0, x + 10, 10) for x in (0, 20)]
    pyogrio.raw.write(str(polygons), shapely.to_wkb(np.array(squares)), [np.array(["tree", "soil"], dtype=object)],
                      ["cls"], driver="GPKG", geometry_type="Polygon", crs="EPSG:3035")
    table = tmp_path / "table.gpkg"
    pyogrio.raw.write(str(table), None, [np.array(["tree"], dtype=object)], ["cls"], driver="GPKG")
    for vector, message in ((polygons, "a Polygon layer, but clicks are points"),
                            (table, "the layer has no geometry (a table, not points)")):
        assert main(["points", "import", "--vector", str(vector), "--raster", str(enmap("landcover_map_l2.tif")),
                     "--class-field", "cls", "--out", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and "no CRS" not in err and "empty geometry" not in err
