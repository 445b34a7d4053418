import numpy as np
import pytest
from PIL import Image

from pointseg.data.classes import LOVEDA_CLASSES, ClassTable
from pointseg.data.sources import ImageMaskFolder, LoveDA
from tests.conftest import shared_path


def test_loveda_decodes_no_data_as_ignore_and_shifts_classes(tiny_loveda):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    ref = source.refs[0]
    raw = np.asarray(Image.open(ref.mask))
    sample = source.read(ref)
    assert np.all(sample["mask"][raw == 0] == 255)
    assert np.array_equal(sample["mask"][raw > 0], raw[raw > 0] - 1)
    assert sample["image"].shape == (64, 64, 3)


def test_real_loveda_mini_splits():
    root = shared_path("data", "loveda-mini")
    train, val = LoveDA(root, "Train", ("Rural",)), LoveDA(root, "Val", ("Rural",))
    assert [r.id for r in train.refs] == [f"Rural/{i}" for i in range(16)]
    assert [r.id for r in val.refs] == [f"Rural/{i}" for i in range(16, 24)]


def test_dubai_loads_through_the_generic_folder_reader():
    root = shared_path("data", "dubai-aerial")
    classes = ClassTable.from_csv(root / "classes.csv")
    assert classes.names == ("building", "land", "road", "vegetation", "water", "unlabeled")
    source = ImageMaskFolder(root, classes)
    assert len(source) == 63 and source.refs[0].id == "Tile 1/image_part_001"
    sample = source.read(source.refs[0])
    assert sample["mask"].shape == sample["image"].shape[:2]
    assert set(np.unique(sample["mask"])) <= set(range(6)) | {255}


def test_mask_values_outside_the_table_are_reported(tiny_loveda):
    bad = tiny_loveda / "Train" / "Rural" / "masks_png" / "0.png"
    mask = np.asarray(Image.open(bad)).copy()
    mask[5, 5] = 9
    Image.fromarray(mask).save(bad)
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    with pytest.raises(ValueError, match=r"0\.png: 1 pixels have values outside the class table.*\[9\]"):
        source.read(source.refs[0])


def test_unknown_colour_is_reported(tmp_path):
    table = ClassTable(("a", "b"), ((255, 0, 0), (0, 255, 0)), color_coded=True, ignore_colors=((0, 0, 0),))
    raw = np.zeros((2, 2, 3), dtype=np.uint8)
    raw[0, 0] = (255, 0, 0)
    raw[1, 1] = (1, 2, 3)
    with pytest.raises(ValueError, match="#010203"):
        table.decode(raw, "m.png")
    raw[1, 1] = (0, 255, 0)
    assert table.decode(raw).tolist() == [[0, 255], [255, 1]]


def test_size_mismatch_is_reported(tiny_loveda):
    mask_path = tiny_loveda / "Train" / "Rural" / "masks_png" / "1.png"
    Image.fromarray(np.ones((32, 48), dtype=np.uint8)).save(mask_path)
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    with pytest.raises(ValueError, match="mask size 48x32 does not match image .* size 64x64"):
        source.read(source.refs[1])


def test_unreadable_image_is_reported(tiny_loveda):
    (tiny_loveda / "Train" / "Rural" / "images_png" / "2.png").write_bytes(b"not a png")
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    with pytest.raises(ValueError, match=r"2\.png: unreadable image"):
        source.read(source.refs[2])


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        LoveDA(tmp_path, "Train", ("Rural",))


def test_colorize_uses_table_colours():
    out = LOVEDA_CLASSES.colorize(np.array([[0, 2], [255, 6]], dtype=np.uint8))
    assert tuple(out[0, 1]) == LOVEDA_CLASSES.colors[2] and tuple(out[1, 0]) == (0, 0, 0)
