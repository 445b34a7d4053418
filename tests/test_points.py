import json

import numpy as np
import pytest

from pointseg.data.points import PointSet, check_against, image_rng, load_points, sample_points, save_points, simulate
from pointseg.data.sources import LoveDA

IGNORE = 255


def mask_with_classes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 4, (50, 60)).astype(np.uint8)
    mask[:10] = IGNORE
    mask[40:, 50:] = 3
    return mask


@pytest.mark.parametrize("strategy", ["uniform", "class-balanced"])
def test_points_carry_their_mask_class_and_avoid_ignore(strategy):
    mask = mask_with_classes()
    pts = sample_points(mask, 40, np.random.default_rng(0), strategy, IGNORE)
    assert pts.shape == (40, 3)
    assert np.array_equal(mask[pts[:, 0], pts[:, 1]], pts[:, 2])
    assert np.all(pts[:, 2] != IGNORE)
    assert len({(r, c) for r, c, _ in pts}) == 40, "points must be distinct pixels"


def test_same_seed_same_points_other_seed_other_points():
    mask = mask_with_classes()
    a = sample_points(mask, 20, image_rng(7, "img"), "uniform", IGNORE)
    b = sample_points(mask, 20, image_rng(7, "img"), "uniform", IGNORE)
    c = sample_points(mask, 20, image_rng(8, "img"), "uniform", IGNORE)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_class_balanced_splits_budget_evenly():
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[:, 95:] = 1  # class 1 is 5% of the image
    pts = sample_points(mask, 10, np.random.default_rng(0), "class-balanced", IGNORE)
    assert np.bincount(pts[:, 2], minlength=2).tolist() == [5, 5]


def test_budget_larger_than_valid_pixels_takes_them_all():
    mask = np.full((4, 4), IGNORE, dtype=np.uint8)
    mask[0, :3] = 1
    assert len(sample_points(mask, 20, np.random.default_rng(0), "uniform", IGNORE)) == 3


def test_save_load_roundtrip(tmp_path):
    ps = PointSet(["a", "b"], {"x": np.array([[1, 2, 0], [3, 4, 1]])}, {"x": (10, 10)}, {"seed": 1})
    back = load_points(save_points(tmp_path / "p.json", ps))
    assert np.array_equal(back.images["x"], ps.images["x"]) and back.sizes == {"x": (10, 10)}
    assert back.classes == ["a", "b"] and back.meta == {"seed": 1}


def write_doc(tmp_path, images, version=1, fmt="pointseg.points"):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": fmt, "version": version, "classes": ["a", "b"], "images": images}))
    return path


@pytest.mark.parametrize("points, message", [
    ([[10, 2, 0]], "outside the 10x10 image"),
    ([[-1, 2, 0]], "outside"),
    ([[1, 2, 5]], "class 5 is not in 0..1"),
])
def test_bad_points_are_reported_with_image(tmp_path, points, message):
    path = write_doc(tmp_path, {"img7": {"height": 10, "width": 10, "points": points}})
    with pytest.raises(ValueError, match=message) as e:
        load_points(path)
    assert "img7" in str(e.value)


def test_empty_point_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no points"):
        load_points(write_doc(tmp_path, {"img": {"height": 10, "width": 10, "points": []}}))


def test_wrong_format_and_version(tmp_path):
    with pytest.raises(ValueError, match="not a pointseg point file"):
        load_points(write_doc(tmp_path, {}, fmt="other"))
    with pytest.raises(ValueError, match="version 2"):
        load_points(write_doc(tmp_path, {}, version=2))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_points(tmp_path / "bad.json")


def test_simulate_on_dataset_reads_full_resolution_masks(tiny_loveda):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    ps = simulate(source, 5, seed=3, progress=False)
    assert set(ps.images) == {r.id for r in source.refs} and len(ps) == 20
    for ref in source.refs:
        mask = source.read_mask(ref)
        pts = ps.images[ref.id]
        assert np.array_equal(mask[pts[:, 0], pts[:, 1]], pts[:, 2])
        assert ps.sizes[ref.id] == (64, 64)


@pytest.mark.parametrize("images, message", [
    ([], '"images" must be an object mapping image ids'),
    ({"img": {"width": 10, "points": []}}, "image 'img': missing 'height' (each image needs height, width and points)"),
    ({"img": [1, 2]}, "image 'img': expected an object with height, width and points"),
    ({"img": {"height": 10.0, "width": 10, "points": []}}, "height and width must be positive integers"),
    ({"img": {"height": 10, "width": 10, "points": [1, 2, 0, 3, 4, 1]}}, "point #0 is 1, not [row, col, class]"),
    ({"img": {"height": 10, "width": 10, "points": [[1, 2, 0], [1.5, 2, 0]]}}, "point #1 is [1.5, 2, 0]"),
    ({"img": {"height": 10, "width": 10, "points": [[1, 2, 2.6]]}}, "point #0 is [1, 2, 2.6]"),
    ({"img": {"height": 10, "width": 10, "points": [[1, 2, True]]}}, "with integer values"),
    ({"img": {"height": 10, "width": 10, "points": [[1, 2]]}}, "point #0 is [1, 2], not [row, col, class]"),
    ({"img": {"height": 10, "width": 10, "points": [[1, 2, 0], [3, 3, 1], [1, 2, 1]]}},
     "pixel (row 1, col 2) is given 2 times (points #0, #2)"),
])
def test_malformed_point_files_are_errors_naming_file_image_and_point(tmp_path, images, message):
    path = write_doc(tmp_path, images)
    with pytest.raises(ValueError) as e:
        load_points(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_points_that_do_not_fit_the_dataset_name_the_file(tmp_path, tiny_loveda):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    ids, sizes = [r.id for r in source.refs], {r.id: (64, 64) for r in source.refs}
    names = list(source.classes.names)
    for images, classes, message in [
        ({"Rural/9": {"height": 64, "width": 64, "points": [[1, 1, 0]]}}, names, "names 1 images not in the dataset"),
        ({"Rural/0": {"height": 64, "width": 32, "points": [[1, 1, 0]]}}, names, "the image is (64, 64)"),
        ({"Rural/0": {"height": 64, "width": 64, "points": [[1, 1, 0]]}}, names[::-1], "names and order must match"),
    ]:
        path = tmp_path / "p.json"
        path.write_text(json.dumps({"format": "pointseg.points", "version": 1, "classes": classes, "images": images}))
        with pytest.raises(ValueError) as e:
            check_against(load_points(path), ids, sizes, names)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_answering_suggestions_takes_the_mask_class_and_drops_unlabeled_pixels(tmp_path):
    from pointseg.data.points import UNCLASSIFIED, answer
    from pointseg.data.sources import LoveDA
    from tests.conftest import write_loveda

    write_loveda(tmp_path, "Train", range(1))  # rows 0-1 of every mask are no-data
    source = LoveDA(tmp_path, "Train", ("Rural",))
    mask = source.read_mask(source.refs[0])
    names = list(source.classes.names)
    asked = PointSet(names, {"Rural/0": np.array([[10, 10, 3], [20, 30, UNCLASSIFIED], [0, 5, UNCLASSIFIED]])},
                     {"Rural/0": (64, 64)}, {}, extra={"Rural/0": {"suggestion_score": [None, 0.5, 0.4]}})
    answered, dropped = answer(source, asked)
    assert answered.images["Rural/0"].tolist() == [[10, 10, 3], [20, 30, int(mask[20, 30])]]  # made click kept
    assert answered.extra["Rural/0"]["suggestion_score"] == [None, 0.5]
    assert dropped == ["Rural/0 (row 0, col 5)"]
