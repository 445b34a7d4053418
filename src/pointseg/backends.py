"""Inference backends: who runs a trained model's forward pass for the ``Predictor``.

``torch`` runs the model itself (CUDA when the model is there, else the CPU; bf16 autocast as ``train.amp``
resolves). ``onnxruntime`` runs the model's ONNX graph on the CPU in float32: one graph per padded window size (the
batch size is free), exported on first use with ``torch.onnx`` and kept in the run directory's ``onnx/`` folder (a
user cache folder when the run directory cannot be written), named by the model file's digest, so a changed model
gets new graphs. A graph onnxruntime cannot build falls back to torch with a warning.

``auto`` (the default) picks onnxruntime on the CPU and torch on a GPU: on this project's CPU onnxruntime ran the
model's forward 1.74x faster than torch and made the same map 1.47x faster (BENCHMARKS 11); on a GPU torch runs
CUDA (onnxruntime's CUDA build is another package).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pointseg.choices import BACKENDS
from pointseg.data.cache import default_cache_dir
from pointseg.io import atomic_path

log = logging.getLogger(__name__)

OPSET = 18
# Deepness's installer pins onnxruntime <= 1.17, which loads IR version <= 9 and opsets <= 20 (onnxruntime's
# compatibility table); the exporter writes IR 10, which it refuses ("Unsupported model IR version: 10").
IR_VERSION, MAX_OPSET = 9, 20


class ExportedModel(nn.Module):
    """The model as exported: logits, or their softmax over classes."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image)
        return logits.softmax(1) if self.output == "probabilities" else logits


def export_graph(model: nn.Module, example: torch.Tensor, path: Path, output: str = "logits",
                 metadata: dict[str, str] | None = None, doc: str = "") -> Path:
    """``model`` (float32, on the CPU) as an ONNX graph at ``path`` for inputs of ``example``'s band count, height and
    width and any batch size; IR version and opset as onnxruntime 1.17 loads them; ``metadata`` as its properties."""
    import onnx

    exported = ExportedModel(model.float().eval(), output).eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(exported, (example,), tmp, input_names=["image"], output_names=[output],
                          opset_version=OPSET, dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          verbose=False, external_data=False)
        graph = onnx.load(tmp)
        for key, value in (metadata or {}).items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = doc
        graph.ir_version = IR_VERSION
        opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
        if opsets.get("ai.onnx", 0) > MAX_OPSET:
            raise RuntimeError(f"the graph needs opset {opsets['ai.onnx']}; onnxruntime 1.17 loads <= {MAX_OPSET}")
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
    return path


def graph_folder(run_dir: Path | None) -> Path:
    """Where a run's graphs are kept: its ``onnx/`` folder, or the user cache's when it cannot be written."""
    if run_dir is not None:
        folder = run_dir / "onnx"
        try:
            folder.mkdir(exist_ok=True)
            probe = folder / ".writable"
            probe.touch()
            probe.unlink()
            return folder
        except OSError:
            pass
    folder = default_cache_dir() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


CALIBRATION_WINDOWS = 16  # windows int8 quantization is calibrated on


def quantize_graph(float_graph: Path, out: Path, windows: list[np.ndarray]) -> Path:
    """Static int8 quantization (QDQ) of the convolutions of ``float_graph`` into ``out``: int8 weights per output
    channel, uint8 activations whose ranges are calibrated (min-max) on ``windows`` (``(1, B, H, W)`` float32, as
    the graph takes them). The other operators stay float."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            window = next(self.left, None)
            return None if window is None else {"image": window}

    with atomic_path(out) as tmp, tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(tmp), Windows(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


class OnnxModel:
    """A model run by onnxruntime on the CPU: ``(N, B, H, W)`` float32 images -> ``(N, C, H, W)`` logits. A graph
    per input size is exported on first use into ``folder`` as ``<key>-<H>x<W>.onnx`` (``key``: the model file's
    digest and the head) and its session kept; ``threads``: onnxruntime's intra-op threads (default: torch's).
    When a graph cannot be built or run, the model runs in torch from then on (``failed`` says why)."""

    def __init__(self, model: nn.Module, folder: Path, key: str, threads: int | None = None,
                 calibration: Callable[[int, int, int], list[np.ndarray]] | None = None) -> None:
        self.model, self.folder, self.key = model, folder, key
        self.threads = threads or torch.get_num_threads()
        self.calibration = calibration  # int8: the windows (n, height, width) of the graph's calibration
        self.sessions: dict[tuple[int, int], object] = {}
        self.failed: str | None = None
        self.lock = threading.Lock()

    @property
    def precision(self) -> str:
        return "float32" if self.calibration is None else "int8"

    def session(self, bands: int, height: int, width: int):  # -> onnxruntime.InferenceSession
        import onnxruntime as ort

        with self.lock:
            if (height, width) not in self.sessions:
                path = self.folder / f"{self.key}-{height}x{width}.onnx"
                if not path.exists():
                    log.info("building the onnxruntime graph of %d x %d windows: %s", height, width, path)
                    export_graph(self.model, torch.rand(2, bands, height, width), path)
                if self.calibration is not None:  # the int8 graph beside the float one
                    float_path, path = path, path.with_name(f"{path.stem}-int8.onnx")
                    if not path.exists():
                        log.info("quantizing it to int8, calibrated on %d windows: %s", CALIBRATION_WINDOWS, path)
                        quantize_graph(float_path, path, self.calibration(CALIBRATION_WINDOWS, height, width))
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                self.sessions[(height, width)] = ort.InferenceSession(str(path), options,
                                                                      providers=["CPUExecutionProvider"])
            return self.sessions[(height, width)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.failed is None:
            n, bands, height, width = images.shape
            try:
                session = self.session(bands, height, width)
                pixels = np.ascontiguousarray(images.detach().float().cpu().numpy())
                return torch.from_numpy(session.run(None, {"image": pixels})[0])
            except Exception as e:  # noqa: BLE001 - any failure of the exporter or the runtime: torch runs it
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                log.warning("onnxruntime cannot run this model (%s); torch runs it instead", self.failed)
        with torch.no_grad():
            return self.model(images.float())


def onnx_model(model: nn.Module, model_file: Path | None, head: str,
               calibration: Callable[[int, int, int], list[np.ndarray]] | None = None) -> OnnxModel:
    """``model`` (its head ``head``) run by onnxruntime, its graphs kept beside ``model_file`` (the run's
    ``model.pt``; ``None``: a model without a file, whose graphs go to a temporary folder); with ``calibration``
    (windows of a size), its int8 graphs."""
    if model_file is None:
        return OnnxModel(model, Path(tempfile.mkdtemp(prefix="pointseg-onnx-")), head, calibration=calibration)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in head)
    return OnnxModel(model, graph_folder(model_file.parent), f"{file_digest(model_file)}-{safe}",
                     calibration=calibration)


def resolve_backend(backend: str, device: torch.device, refusal: str | None = None) -> str:
    """``torch`` or ``onnxruntime`` for ``backend`` on ``device`` (``auto``: onnxruntime on the CPU, else torch;
    torch for a model that cannot be a graph, ``refusal`` saying why)."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise ValueError("--backend onnxruntime runs on the CPU: load the model there (or use torch on the GPU)")
    if backend == "onnxruntime" and refusal:
        raise ValueError(f"--backend onnxruntime: {refusal}")
    if backend == "auto":
        return "onnxruntime" if device.type == "cpu" and not refusal else "torch"
    return backend
