"""`hwnas export`: ARCH (+ trained weights) -> checked ONNX, optionally a TensorRT engine, a report.

Every check (ONNX checker, ONNX Runtime parity, engine parity) runs on in-memory bytes; files are
written, atomically, only once all of them pass. Bad input writes nothing.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from ..errors import ExportError
from ..export.onnx_export import DEFAULT_OPSET, OUTPUT_NAME, OnnxSpec, export_model
from ..runtimes.onnx_model import EXPORTERS
from ..export.parity import FP32_TOLERANCE, OnnxRuntimeRunner, compare, random_inputs, torch_reference
from ..export.report import build_report, report_name, write_report
from ..latency_tables.validation import exported_latency, exported_prediction
from ..jsonio import atomic_write_bytes, sha256_file
from ..locks import hold_all
from ..runs import check_writable

DYNAMIC_PARITY_BATCHES = (1, 3)
DEFAULT_MAX_BATCH = 16
DEFAULT_CALIB_COUNT = 512


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export an architecture (and its trained weights) to ONNX, optionally a TensorRT engine",
        description="Export to ONNX, check it with onnx.checker and against PyTorch in ONNX Runtime, "
        "optionally build and check a TensorRT engine, and write MODEL.export_report.json.",
    )
    p.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    p.add_argument("--weights", metavar="CKPT", help="model.pt from `hwnas train`/`hwnas search` (default: untrained)")
    p.add_argument("--onnx", metavar="FILE", required=True, help="ONNX file to write")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the weights', else the space's)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=None, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET}, or the --lut table's)")
    p.add_argument("--exporter", choices=EXPORTERS, default=None,
                   help="torch.onnx exporter: dynamo (default, opset >= 18) or torchscript (opset 9-20); with --lut "
                        "the default is the exporter and opset the table's ops were measured with")
    p.add_argument("--lut", metavar="FILE", default=None,
                   help="also measure the exported model on this table's backend and compare with the prediction")
    p.add_argument("--report", metavar="PATH", default=None, help="report path (default: MODEL.export_report.json beside the ONNX file MODEL.onnx)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--force", action="store_true",
                   help="replace existing output files (atomically; the report records each replaced file's sha256)")
    trt = p.add_argument_group("TensorRT (needs the tensorrt package and an NVIDIA GPU)")
    trt.add_argument("--tensorrt", metavar="FILE", default=None, help="also build a serialized TensorRT engine")
    trt.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    trt.add_argument("--int8", action="store_true",
                     help="int8 by explicit quantization: Q/DQ nodes calibrated on real images (needs --calib-data)")
    trt.add_argument("--int8-mode", choices=("qdq", "legacy"), default=None,
                     help="qdq (default; TensorRT 10 and 11) or legacy: the implicit IInt8EntropyCalibrator2, "
                          "deprecated since TensorRT 10.1, only where the installed TensorRT still has it")
    trt.add_argument("--calib-data", metavar="DIR", default=None, help="images for int8 calibration (ImageFolder-style)")
    trt.add_argument("--calib-count", type=int, default=DEFAULT_CALIB_COUNT, help=f"calibration images (default {DEFAULT_CALIB_COUNT})")
    trt.add_argument("--max-batch", type=int, default=None,
                     help=f"largest batch of a --dynamic-batch engine (default {DEFAULT_MAX_BATCH})")
    trt.add_argument("--workspace-mb", type=int, default=None, help="builder workspace limit in MiB (default 2048)")
    p.set_defaults(func=cmd_export)


def _check_options(args) -> None:
    """Cross-option rules argparse cannot express; one-line errors before any work."""
    if not args.tensorrt:
        given = [flag for flag, on in (("--fp16", args.fp16), ("--int8", args.int8), ("--calib-data", args.calib_data),
                                       ("--max-batch", args.max_batch), ("--workspace-mb", args.workspace_mb),
                                       ("--int8-mode", args.int8_mode)) if on]
        if given:
            raise ExportError(f"{given[0]} applies to a TensorRT engine; add --tensorrt FILE")
    if args.int8 and not args.calib_data:
        raise ExportError("--int8 needs calibration images: add --calib-data DIR (an ImageFolder-style folder)")
    if args.int8_mode and not args.int8:
        raise ExportError("--int8-mode applies to --int8 engines; add --int8 or drop --int8-mode")
    if args.calib_data and not args.int8:
        raise ExportError("--calib-data is used by --int8 only; add --int8 or drop --calib-data")
    if args.max_batch is not None and not args.dynamic_batch:
        raise ExportError("--max-batch applies to --dynamic-batch engines; a fixed-batch engine uses --batch")
    if args.max_batch is not None and args.max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.workspace_mb is not None and args.workspace_mb < 1:
        raise ExportError(f"--workspace-mb must be >= 1, got {args.workspace_mb}")
    outputs = [Path(p).resolve() for p in _outputs(args)]
    if len(set(outputs)) != len(outputs):
        raise ExportError("--onnx, --tensorrt and the report must be different files")
    _check_outputs(args)


def _check_outputs(args) -> None:
    """No output is a directory, none exists without --force, every folder is writable."""
    for path in _outputs(args):
        if Path(path).is_dir():
            raise ExportError(f"output {path} is a directory; give a file path")
        if Path(path).exists() and not args.force:
            raise ExportError(f"{path} exists; pass --force to replace it (atomically, its sha256 recorded in the report) "
                              "or choose another path")
    for flag, path in (("--onnx", args.onnx), ("--tensorrt", args.tensorrt), ("--report", _report_path(args))):
        if path:
            check_writable(path, flag)


def _outputs(args) -> list[str]:
    return [str(p) for p in (args.onnx, args.tensorrt, _report_path(args)) if p]


def _replaced(args) -> dict | None:
    """{output kind: {path, sha256}} of the files --force is about to replace (None when none)."""
    kinds = {"onnx": args.onnx, "tensorrt": args.tensorrt, "report": str(_report_path(args))}
    found = {kind: {"path": str(path), "sha256": sha256_file(path)} for kind, path in kinds.items()
             if path and Path(path).is_file()}
    return found or None


def _exporter_and_opset(args, table) -> tuple[str, int]:
    """The flags; else, with a --lut table, the exporter and opset its ops were measured with (ONNX
    Runtime tables), so that the deployed graph is the one the prediction is made of; else dynamo."""
    exporter, opset = args.exporter, args.opset
    if table is not None and exporter is None and opset is None:
        options = table.backend_options
        if options.get("exporter") in EXPORTERS and isinstance(options.get("opset"), int):
            return options["exporter"], options["opset"]
    exporter = exporter or "dynamo"
    return exporter, DEFAULT_OPSET if opset is None else opset


def _report_path(args) -> Path:
    return Path(args.report) if args.report else Path(args.onnx).parent / report_name(args.onnx)


def cmd_export(args) -> int:
    _check_options(args)
    with hold_all(_outputs(args), "export output"):
        _check_outputs(args)  # again under the lock: another export may have written them meanwhile
        return _export(args)


def _export(args) -> int:
    from ..export.model import prepare_model
    from ..profilers.table import LatencyTable

    batch = None if args.dynamic_batch else (1 if args.batch is None else args.batch)
    table = LatencyTable.load(args.lut) if args.lut else None
    exporter, opset = _exporter_and_opset(args, table)
    onnx_spec = OnnxSpec(batch=batch, opset=opset, exporter=exporter)
    onnx_spec.validate()
    if args.tensorrt:
        from ..export import tensorrt_engine

        trt = tensorrt_engine.check_available()
    source = prepare_model(args.arch, weights=args.weights, resolution=args.resolution)
    prediction = None
    if table is not None:
        if onnx_spec.dynamic_batch:
            raise ExportError("--lut compares a fixed-batch model with the table; drop --dynamic-batch or --lut")
        prediction = exported_prediction(table, source.arch, source.resolution, onnx_spec.batch, source.num_classes)
    engine_spec, calibration = None, None
    if args.tensorrt:
        engine_spec = tensorrt_engine.EngineSpec(
            resolution=source.resolution, batch=onnx_spec.batch, max_batch=args.max_batch or DEFAULT_MAX_BATCH,
            fp16=args.fp16, int8=args.int8, workspace_mb=args.workspace_mb or tensorrt_engine.DEFAULT_WORKSPACE_MB,
            int8_mode=args.int8_mode or "qdq",
        )
        tensorrt_engine.plan_build(trt, engine_spec)  # a precision this TensorRT cannot build fails here
        if args.int8:
            from ..export.int8_calibration import ImageBatches

            calibration = ImageBatches(args.calib_data, source.resolution, engine_spec.calibration_batch, args.calib_count,
                                       preprocessing=source.preprocessing)

    onnx_bytes = export_model(source, onnx_spec)
    batches = DYNAMIC_PARITY_BATCHES if onnx_spec.dynamic_batch else (onnx_spec.batch,)
    inputs = random_inputs(batches, source.resolution)
    parity, engine = {}, None
    with OnnxRuntimeRunner(onnx_bytes, threads=_torch_threads()) as ort_runner:
        parity["onnxruntime"] = compare(
            torch_reference(source.model), ort_runner.infer, inputs, FP32_TOLERANCE,
            "pytorch", "onnxruntime (CPUExecutionProvider)",
        ).check()
        if engine_spec:
            engine = tensorrt_engine.build_engine(onnx_bytes, engine_spec, calibration)
            if calibration is not None:  # int8 ranges fit real images; noise would say little
                trt_inputs, kind = list(itertools.islice(iter(calibration), 2)), "calibration image"
            else:
                trt_inputs, kind = random_inputs(tensorrt_engine.engine_batches(engine_spec, batches), source.resolution), "random"
            with tensorrt_engine.TensorRTRunner(engine) as trt_runner:
                parity["tensorrt"] = compare(
                    ort_runner.infer, trt_runner.infer, trt_inputs, engine_spec.tolerance,
                    "onnxruntime (CPUExecutionProvider)", f"tensorrt {engine_spec.precision}", kind,
                ).check()
    latency = None
    if table is not None:
        latency = exported_latency(args.lut, table, prediction, source.arch, source.model, source.resolution,
                                  onnx_spec.batch, onnx_bytes)

    replaced = _replaced(args) if args.force else None
    atomic_write_bytes(args.onnx, onnx_bytes)
    if engine is not None:
        atomic_write_bytes(args.tensorrt, engine)
    report_path = _report_path(args)
    report = build_report(
        source=source, onnx_spec=onnx_spec, onnx_path=args.onnx, onnx_bytes=len(onnx_bytes),
        parity={k: v.to_dict() for k, v in parity.items()},
        output_shape=[onnx_spec.input_shape(source.resolution)[0], source.num_classes],
        engine_spec=engine_spec, engine_path=args.tensorrt, engine_bytes=len(engine) if engine is not None else None,
        latency=latency, replaced=replaced,
    )
    write_report(report_path, report)

    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    trained = f"weights {Path(args.weights).name}" if source.weights else "untrained"
    print(f"exported {args.arch} ({source.arch.space}, arch {source.arch.hash}, {trained}): "
          f"input {onnx_spec.input_shape(source.resolution)} -> {OUTPUT_NAME} [{report['onnx']['output']['shape'][0]}, "
          f"{source.num_classes}], {onnx_spec.exporter} exporter, opset {onnx_spec.opset}")
    print("  onnx.checker: ok")
    for record in parity.values():
        print(f"  parity: {record.summary()}")
    print(f"  wrote {args.onnx} ({_mb(len(onnx_bytes))})")
    if latency and latency["measured_ms"] is None:
        derived = f"; {latency['derived']}" if latency["derived"] else ""
        print(f"  latency on {latency['device']} (published table): predicted {latency['predicted_ms']:.2f} ms, error "
              f"unknown, not measured here (this machine is not that device){derived}")
    elif latency:
        stated = f", stated error ±{latency['stated_error_pct']:.1f}%" if latency["stated_error_pct"] is not None else ""
        print(f"  latency on {latency['backend']}: predicted {latency['predicted_ms']:.2f} ms{stated}, measured "
              f"{latency['measured_ms']:.2f} ms ({latency['measured_what']}, at the table's speed), error "
              f"{latency['error_pct']:+.1f}%; as timed now {latency['absolute_ms']:.2f} ms (the machine runs "
              f"{latency['speed_vs_table']:.3f}x its time at profiling)")
    if engine is not None:
        print(f"  wrote {args.tensorrt} ({_mb(len(engine))}, {engine_spec.precision})")
    print(f"  wrote {report_path}")
    for kind, old in (replaced or {}).items():
        print(f"  replaced {old['path']} (was sha256 {old['sha256'][:12]}...; recorded in the report)")
    return 0


def _torch_threads() -> int:
    """ONNX Runtime checks use as many threads as torch does (tests pin torch to 1)."""
    import torch

    return torch.get_num_threads()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
