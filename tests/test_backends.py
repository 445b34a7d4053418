"""Inference backends: onnxruntime runs a run's model within tolerance of torch on real windows, its graphs are
built once and kept (in the run directory, or a user cache when that is read-only), rebuilt when the model
changes, and a graph that cannot be built falls back to torch."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pointseg import backends, runs
from pointseg.cli import main
from tests.conftest import shared_path

TOLERANCE = 1e-3  # max abs difference of logits, float32 (as export's check)


def real_windows(size: int = 256) -> torch.Tensor:
    """Two windows of a real LoveDA Val tile, scaled to [0, 1]."""
    image = np.asarray(Image.open(shared_path("data", "loveda-mini", "Val", "Rural", "images_png", "16.png"))
                       .convert("RGB"), dtype=np.float32) / 255
    crops = [image[:size, :size], image[-size:, -size:]]
    return torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())


def test_onnxruntime_runs_the_model_within_tolerance_of_torch_and_keeps_its_graph(tiny_run):
    trained = runs.load_run(tiny_run, device="cpu")
    torch_path = dataclasses.replace(trained.predictor(backend="torch"), amp=False)
    ort_path = trained.predictor(backend="onnxruntime")
    assert (ort_path.backend, ort_path.precision, torch_path.precision) == ("onnxruntime", "float32", "float32")
    x = real_windows()
    want, got = torch_path.logits(x), ort_path.logits(x)
    assert float((want - got).abs().max()) < TOLERANCE
    assert float((want.argmax(1) == got.argmax(1)).float().mean()) > 0.999
    graphs = sorted((tiny_run / "onnx").glob("*.onnx"))
    assert [g.name.split("-", 1)[1] for g in graphs] == ["seg-256x256.onnx"]  # one graph per head and window size
    built = graphs[0].stat().st_mtime_ns
    again = trained.predictor(backend="auto")  # auto on the CPU: onnxruntime, the kept graph
    assert again.backend == "onnxruntime" and torch.equal(again.logits(x), got)
    assert graphs[0].stat().st_mtime_ns == built
    odd = real_windows(96)  # another size: another graph (a folder of other tiles, a --tile)
    assert float((torch_path.logits(odd) - again.logits(odd)).abs().max()) < TOLERANCE
    assert len(list((tiny_run / "onnx").glob("*.onnx"))) == 2


def test_a_changed_model_gets_new_graphs_and_a_read_only_run_uses_the_user_cache(tmp_path, tiny_run):
    x = real_windows(64)
    runs.load_run(tiny_run, device="cpu").predictor(backend="onnxruntime").logits(x)
    first = {g.name for g in (tiny_run / "onnx").glob("*.onnx")}
    saved = torch.load(tiny_run / "model.pt", weights_only=False)
    key = next(k for k, v in saved["model"].items() if v.is_floating_point())
    saved["model"][key] = saved["model"][key] + 1
    torch.save(saved, tiny_run / "model.pt")
    changed = runs.load_run(tiny_run, device="cpu")
    want = dataclasses.replace(changed.predictor(backend="torch"), amp=False).logits(x)
    assert float((changed.predictor(backend="onnxruntime").logits(x) - want).abs().max()) < TOLERANCE
    assert len({g.name for g in (tiny_run / "onnx").glob("*.onnx")} - first) == 1
    shutil.rmtree(tiny_run / "onnx")
    (tiny_run / "onnx").write_text("a file where the folder would go: the run directory cannot take graphs")
    runs.load_run(tiny_run, device="cpu").predictor(backend="onnxruntime").logits(x)
    assert (tiny_run / "onnx").is_file()
    assert list((backends.default_cache_dir() / "onnx").glob("*-64x64.onnx"))  # the user cache took them


def test_a_graph_onnxruntime_cannot_build_falls_back_to_torch_with_a_message(tiny_run, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(backends, "export_graph", broken)
    trained = runs.load_run(tiny_run, device="cpu")
    predictor = trained.predictor(backend="onnxruntime")
    x = real_windows(64)
    with caplog.at_level(logging.WARNING, logger="pointseg.backends"):
        got = predictor.logits(x)
    assert "torch runs it instead" in caplog.text and "an operator the exporter does not know" in caplog.text
    want = dataclasses.replace(trained.predictor(backend="torch"), amp=False).logits(x)
    assert torch.allclose(got, want, atol=1e-5)  # torch's own result (its memory layout aside)


def test_predict_with_either_backend_gives_the_same_map(tmp_path, tiny_run):
    import rasterio

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    maps = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(out), "--tile", "128",
                     "--backend", backend]) == 0  # the tiny run trained without bf16: torch maps in float32 too
        with rasterio.open(out / "RGB.byte.tif") as ds:
            maps[backend] = ds.read(1)
    agree = (maps["torch"] == maps["onnxruntime"]).mean()
    assert agree > 0.999, agree


def test_int8_quantizes_the_convolutions_calibrated_on_the_runs_images_or_the_mapped_raster(tmp_path, tiny_run,
                                                                                           tiny_loveda):
    import onnx

    trained = runs.load_run(tiny_run, device="cpu")
    float_path = trained.predictor(backend="onnxruntime")
    int8 = trained.predictor(int8=True)
    assert (int8.backend, int8.precision) == ("onnxruntime", "int8")
    x = real_windows(128)
    want, got = float_path.logits(x).softmax(1), int8.logits(x).softmax(1)
    assert float((want - got).abs().mean()) < 0.02  # close, not equal: int8 weights and activations
    graph = onnx.load(next((tiny_run / "onnx").glob("*-128x128-int8.onnx")))
    producer = {out: n.op_type for n in graph.graph.node for out in n.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert convs and all(producer.get(n.input[0]) == producer.get(n.input[1]) == "DequantizeLinear" for n in convs)
    stored = {i.name: i.data_type for i in graph.graph.initializer}  # the convolutions' weights stored as int8
    dequantized = {out: n.input[0] for n in graph.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    assert all(stored.get(dequantized[n.input[1]]) == onnx.TensorProto.INT8 for n in convs)
    with pytest.raises(ValueError, match="--int8 runs onnxruntime"):
        trained.predictor(backend="torch", int8=True)
    shutil.move(tiny_loveda, tmp_path / "gone")  # the training images are gone: the mapped raster calibrates
    shutil.rmtree(tiny_run / "onnx")
    with pytest.raises(ValueError, match="training images, which are gone"):
        runs.load_run(tiny_run, device="cpu").calibration_windows()(2, 64, 64)
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    windows = runs.load_run(tiny_run, device="cpu").calibration_windows([landsat])(3, 64, 64)
    assert [w.shape for w in windows] == [(1, 3, 64, 64)] * 3 and all(0 <= w.min() <= w.max() <= 1 for w in windows)


def test_predictions_are_float32_unless_bf16_is_asked_for_whatever_the_run_trained_in(tiny_run, tiny_loveda, tmp_path):
    import json

    import yaml

    config = tiny_run / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["amp"] = True  # as a run trained in bf16
    config.write_text(yaml.safe_dump(cfg))
    trained = runs.load_run(tiny_run, device="cpu")
    plain, bf16 = trained.predictor(backend="torch"), trained.predictor(precision="bf16")
    assert (plain.amp, plain.precision) == (False, "float32")
    assert (bf16.amp, bf16.precision, bf16.backend) == (True, "bf16", "torch")  # auto picks torch for bf16
    x = real_windows(64)
    assert not torch.equal(plain.logits(x), bf16.logits(x))  # bf16 arithmetic: close, not equal
    assert float((plain.logits(x) - bf16.logits(x)).abs().max()) < 0.5
    for wrong in ({"backend": "onnxruntime"}, {"int8": True}):
        with pytest.raises(ValueError, match="bf16"):
            trained.predictor(precision="bf16", **wrong)
    with pytest.raises(ValueError, match="precision"):
        trained.predictor(precision="float16")
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(tmp_path / "m"),
                 "--precision", "bf16", "--tile", "256"]) == 0
    assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(tmp_path / "m"),
                 "--precision", "bf16", "--backend", "onnxruntime"]) == 2
    for precision, backend in (("bf16", "torch"), ("float32", "onnxruntime")):  # the scores say what made them
        out = tmp_path / f"{precision}.json"
        assert main(["evaluate", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--split", "Val",
                     "--precision", precision, "--out", str(out)]) == 0
        made = json.loads(out.read_text())["predicted_by"]
        assert (made["backend"], made["precision"], made["device"]) == (backend, precision, "cpu") and made["cpu"]
