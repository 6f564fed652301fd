"""`hwnas export ARCH --format openvino --out MODEL.xml [--int8 --calib-data SRC] [--lut TABLE]`.

The network is converted with `openvino.convert_model` (as the `openvino` backend converts; with
an openvino `--lut` table, the table's own converter), its IR serialised (float32 weights) and
read back, and the IR that will be written is checked against PyTorch on the CPU plugin (f32
precision hint). `--int8` quantizes it with NNCF (`nncf.quantize`, post-training) on real
images: `--calib-data digits|cifar10|DIR-with-train/-and-val/` calibrates on the training split
and measures top-1 accuracy of the f32 and int8 IRs on the val split; a plain folder of images
calibrates only. The f32 and int8 IRs are then timed interleaved on one inference thread (the
speed-up). With `--lut` (an openvino table) the exported IR is measured end to end against the
prediction, and its per-layer times (`get_profiling_info`) are the report's breakdown.
Files (.bin, then .xml, then the report) are written atomically once every check passed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..export import openvino_export as ov_export
from ..export.model import ExportModel, prepare_model
from ..export.parity import compare, random_inputs, torch_reference
from ..export.report import build_report, write_report
from ..jsonio import atomic_write_bytes
from ..latency_tables.published import is_published
from ..latency_tables.validation import exported_latency, exported_prediction
from ..profilers.table import LatencyTable
from ..runtimes.openvino import OpenVinoRunner, OpenVinoSettings, converter_name

#: calls whose per-layer times are averaged into the report's breakdown
LAYER_CALLS = 20


@dataclass(frozen=True)
class Int8Data:
    """Calibration batches and, where the source has labels, a val split (images, labels)."""

    source: str
    batches: list
    images: int
    val: tuple[np.ndarray, np.ndarray] | None


def int8_data(calib_data: str, source: ExportModel, batch: int, count: int) -> Int8Data:
    """Calibration images at the model's resolution and preprocessing: a built-in dataset or an
    ImageFolder with train/ and val/ (the training split calibrates, val measures accuracy), else
    a folder of images (hwnas.export.int8_calibration, as TensorRT int8 uses)."""
    from ..train.data import BUILTIN, load_data

    root = Path(calib_data)
    if calib_data in BUILTIN or ((root / "train").is_dir() and (root / "val").is_dir()):
        data = load_data(calib_data, resolution=source.resolution)
        if tuple(data.preprocessing.mean) != tuple(source.preprocessing.mean) or \
                tuple(data.preprocessing.std) != tuple(source.preprocessing.std):
            raise ExportError(f"--calib-data {calib_data} is normalised with mean {data.preprocessing.mean}, std "
                              f"{data.preprocessing.std}, but the model expects mean {source.preprocessing.mean}, std "
                              f"{source.preprocessing.std}; calibrate on the data the weights were trained on")
        train = data.train
        train.augment = "none"  # calibration sees the images as deployed
        order = np.random.default_rng(0).permutation(len(train))[:count]
        images = np.stack([train[int(i)][0].numpy() for i in order])
        usable = len(images) // batch * batch
        batches = [images[i:i + batch] for i in range(0, usable, batch)]
        val_x = np.stack([data.val[i][0].numpy() for i in range(len(data.val))])
        val_y = np.asarray([data.val[i][1] for i in range(len(data.val))])
        return Int8Data(f"{calib_data} (train split)", batches, usable, (val_x, val_y))
    from ..export.int8_calibration import ImageBatches

    folder = ImageBatches(calib_data, source.resolution, batch, count, preprocessing=source.preprocessing)
    return Int8Data(str(calib_data), list(folder), len(folder.paths), None)


def accuracy(runner: OpenVinoRunner, images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Top-1 accuracy of a compiled model on labelled images (the last partial batch padded)."""
    correct = 0
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        pad = batch - len(x)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)])
        out = runner.infer(x)[:batch - pad]
        correct += int(np.sum(out.argmax(axis=1) == labels[start:start + batch]))
    return correct / len(images)


def time_interleaved(models: dict, shape, exporter: str | None) -> dict[str, float]:
    """Median time (ms) of each openvino.Model, timed in interleaved rounds on one inference thread."""
    from ..profilers.end_to_end import measure_end_to_end
    from ..profilers.openvino_backend import OpenVinoProfiler

    with OpenVinoProfiler(threads=1, exporter=exporter) as profiler:
        rounds = measure_end_to_end({k: (lambda m=m: m) for k, m in models.items()}, shape, profiler)
    return {k: float(np.median([r.time_ms for r in v])) for k, v in rounds.items()}


def layer_breakdown(runner: OpenVinoRunner, top: int = 10) -> dict:
    """The per-layer times of `get_profiling_info()`, each the mean of LAYER_CALLS calls after a
    warm-up (hwnas.runtimes.openvino.OpenVinoRunner.layer_times): their sum, the sum per layer
    type, and the slowest layers."""
    layers = runner.layer_times(LAYER_CALLS)
    by_type: dict[str, float] = {}
    for layer in layers:
        by_type[layer.type] = by_type.get(layer.type, 0.0) + layer.ms
    slowest = sorted(layers, key=lambda layer: -layer.ms)[:top]
    return {"calls": LAYER_CALLS, "sum_ms": sum(layer.ms for layer in layers), "layers": len(layers),
            "by_type_ms": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "slowest": [{"name": x.name, "type": x.type, "exec_type": x.exec_type, "ms": x.ms} for x in slowest]}


def export_openvino(r, replaced: dict | None, threads: int) -> tuple[dict, dict, int, bool]:
    """Export as `r` (a hwnas.jobs.export.ExportRequest, checked) says, with `threads` for the
    checks; `replaced`: the files --force replaces. Returns (report, parity records, model
    bytes, whether trained weights were exported)."""
    batch = 1 if r.batch is None else r.batch
    if batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    table = LatencyTable.load(r.lut) if r.lut else None
    exporter = r.exporter
    if table is not None and not is_published(table):
        if table.backend != "openvino":
            raise ExportError(f"--lut {r.lut} is a {table.backend} table: the exported IR is measured on the table's "
                              "backend; give an openvino table (hwnas profile --backend openvino) or drop --lut")
        exporter = table.backend_options.get("exporter") if r.exporter is None else r.exporter
    source = prepare_model(r.arch, weights=r.weights, resolution=r.resolution)
    prediction = None
    if table is not None:
        prediction = exported_prediction(table, source.arch, source.resolution, batch, source.num_classes)
    calibration = int8_data(r.calib_data, source, batch, r.calib_count) if r.int8 else None

    model = ov_export.convert(source, batch, exporter)
    ov_export.set_metadata(model, ov_export.metadata(source, "f32", exporter))
    f32_files = ov_export.serialize(model)
    f32_model = ov_export.load(f32_files)
    settings = OpenVinoSettings(threads=threads)
    shape = (batch, 3, source.resolution, source.resolution)
    parity, files, int8 = {}, f32_files, None
    with OpenVinoRunner(f32_model, settings, timing_shape=shape, error=ExportError, what="the exported IR") as f32:
        parity["openvino"] = compare(torch_reference(source.model), f32.infer, random_inputs((batch,), source.resolution),
                                     ov_export.TOLERANCES["f32"], "pytorch", "openvino f32 (CPU)").check()
        breakdown = layer_breakdown(f32)
        if calibration is not None:
            quantized = ov_export.quantize_int8(f32_model, calibration.batches, r.calib_count)
            ov_export.set_metadata(quantized, ov_export.metadata(source, "int8", exporter))
            files = ov_export.serialize(quantized)
            int8_model = ov_export.load(files)
            with OpenVinoRunner(int8_model, settings, timing_shape=shape, error=ExportError,
                                what="the int8 IR") as q:
                parity["openvino_int8"] = compare(f32.infer, q.infer, list(itertools.islice(calibration.batches, 2)),
                                                  ov_export.TOLERANCES["int8"], "openvino f32 (CPU)",
                                                  "openvino int8 (nncf)", "calibration image").check()
                breakdown = layer_breakdown(q)
                int8 = {"calibration": calibration.source, "calibration_images": calibration.images,
                        "method": "nncf.quantize (post-training, default preset)"}
                if calibration.val is not None:
                    images, labels = calibration.val
                    acc32, acc8 = accuracy(f32, images, labels, batch), accuracy(q, images, labels, batch)
                    int8.update({"val_images": len(labels), "accuracy_f32": acc32, "accuracy_int8": acc8,
                                 "accuracy_drop_points": (acc32 - acc8) * 100.0})
            times = time_interleaved({"f32": f32_model, "int8": int8_model}, shape, exporter)
            int8.update({"timing": "interleaved rounds, 1 inference thread (median)", "f32_ms": times["f32"],
                         "int8_ms": times["int8"], "speedup": times["f32"] / times["int8"]})
    latency = None
    if table is not None:
        exported = (lambda: ov_export.load(files), "exported OpenVINO IR")
        latency = exported_latency(r.lut, table, prediction, source.arch, source.model, source.resolution, batch,
                                   b"", exported=exported)

    bin_path = r.outputs()[1]
    atomic_write_bytes(bin_path, files.bin)
    atomic_write_bytes(r.out, files.xml)
    section = {"path": str(r.out), "bin": bin_path, "converter": converter_name(exporter),
               "exporter": exporter, "precision": "int8" if int8 else "f32", "weights": "float32 (compress_to_fp16 off)",
               "input": {"name": "input", "shape": list(shape)}, "output": {"name": "logits", "shape": [batch, source.num_classes]},
               "rt_info": f"{ov_export.META}/hwnas.* (as the ONNX metadata)", "int8": int8, "layer_breakdown": breakdown}
    report = build_report(source=source, onnx_spec=None, onnx_path=None, onnx_bytes=None,
                          parity={k: v.to_dict() for k, v in parity.items()}, output_shape=[batch, source.num_classes],
                          latency=latency, replaced=replaced, openvino=section,
                          sizes={"xml_bytes": len(files.xml), "bin_bytes": len(files.bin)})
    write_report(r.report_path, report)
    return report, parity, len(files.xml) + len(files.bin), bool(source.weights)
