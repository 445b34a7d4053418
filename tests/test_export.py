"""ONNX export: onnxruntime reproduces torch, and the file carries what the QGIS plugin Deepness reads."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pointseg import runs
from pointseg.cli import main
from pointseg.export import TOLERANCE
from pointseg.io import write_json
from tests.conftest import shared_path


@pytest.mark.parametrize("output", ["probabilities", "logits"])
def test_onnxruntime_matches_torch_on_new_windows(tmp_path, tiny_run, output):
    path = tmp_path / "model.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path), "--tile", "64", "--output", output]) == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # another batch size than exported
    got = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    with torch.no_grad():
        logits = runs.load_run(tiny_run, device="cpu").model(image)
    want = logits.softmax(1) if output == "probabilities" else logits
    assert got.shape == (3, 7, 64, 64)
    assert np.abs(got - want.numpy()).max() <= TOLERANCE[output]
    if output == "probabilities":
        assert np.allclose(got.sum(1), 1, atol=1e-5)


def test_the_file_holds_what_deepness_reads(tmp_path, tiny_run):
    path = tmp_path / "model.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path), "--tile", "64", "--overlap", "0.25",
                 "--resolution", "30", "--min-segment", "3"]) == 0
    graph = onnx.load(path)  # what the onnxruntime 1.17 Deepness installs loads: IR <= 9, opset <= 20
    assert graph.ir_version <= 9 and max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) <= 20
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Deepness: one input, one 4-D output with square windows, metadata values JSON-encoded
    assert len(session.get_inputs()) == 1 and len(session.get_outputs()) == 1
    assert session.get_inputs()[0].shape[1:] == [3, 64, 64]
    assert session.get_outputs()[0].shape[1:] == [7, 64, 64]
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["model_type"] == "Segmentor"
    names = meta["class_names"]
    assert [names[str(i)] for i in range(len(names))] == list(runs.load_run(tiny_run).classes.names)
    assert (meta["tile_size"], meta["tiles_overlap"], meta["resolution"]) == (64, 25, 30)
    assert (meta["pointseg_band_low"], meta["pointseg_band_high"]) == ([0.0] * 3, [255.0] * 3)  # uint8: /255
    assert (meta["seg_thresh"], meta["seg_small_segment"]) == (0, 3)  # no threshold sends pixels to class 0


def test_the_resolution_of_a_raster_run_is_its_pixel_size_over_the_scale(tmp_path):
    raster = shared_path("data", "geo", "sentinel2-strzegom", "images", "strzegom_20210619_33u.tif")
    write_json(tmp_path / runs.INFO, {"inputs": {"rasters": [str(raster)]}})
    assert runs.training_resolution_cm(tmp_path, 0.5) == pytest.approx(2000)  # 10 m at half size
    write_json(tmp_path / runs.INFO, {"inputs": {"data_root": "tiles"}})
    assert runs.training_resolution_cm(tmp_path, 0.5) is None  # image tiles: unknown


def test_a_window_size_the_model_cannot_take_is_an_error(tmp_path, tiny_run, capsys):
    assert main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "m.onnx"), "--tile", "50"]) == 2
    assert "--tile must be a positive multiple of" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
