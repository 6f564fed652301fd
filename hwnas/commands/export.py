"""`hwnas export`: ARCH (+ trained weights) -> checked ONNX, optionally a TensorRT engine, a report
(the job: hwnas.jobs.export)."""

from __future__ import annotations

import json
from pathlib import Path

from ..export.onnx_export import DEFAULT_OPSET, OUTPUT_NAME
from ..errors import ExportError
from ..jobs.export import DEFAULT_CALIB_COUNT, DEFAULT_MAX_BATCH, FORMATS, Exported, ExportRequest, export
from ..jobs.export_mobile import FORMATS as MOBILE_FORMATS, MobileExported, MobileExportRequest, export_mobile
from ..runtimes.onnx_model import EXPORTERS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export an architecture (and its trained weights) to ONNX, optionally a TensorRT engine",
        description="Export to ONNX, check it with onnx.checker and against PyTorch in ONNX Runtime, "
        "optionally build and check a TensorRT engine, and write MODEL.export_report.json.",
    )
    p.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    p.add_argument("--weights", metavar="CKPT", help="model.pt from `hwnas train`/`hwnas search` (default: untrained)")
    p.add_argument("--onnx", metavar="FILE", default=None, help="ONNX file to write (--format onnx; or --out)")
    p.add_argument("--format", choices=(*FORMATS, *MOBILE_FORMATS), default="onnx",
                   help="onnx (default; optionally a TensorRT engine beside it), openvino (an IR: --out MODEL.xml, "
                        "MODEL.bin beside it; --int8 quantizes it with NNCF), pte (ExecuTorch, XNNPACK; --int8 "
                        "quantises with PT2E) or tflite (LiteRT), written to --out FILE")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the model file to write (MODEL.onnx, MODEL.xml, MODEL.pte, MODEL.tflite)")
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
                     help="int8 by explicit quantization: Q/DQ nodes calibrated on real images (needs --calib-data); "
                          "with --format openvino: NNCF post-training quantization (nncf.quantize); with --format pte: "
                          "PT2E XNNPACK quantisation calibrated on the training data")
    trt.add_argument("--int8-mode", choices=("qdq", "legacy"), default=None,
                     help="qdq (default; TensorRT 10 and 11) or legacy: the implicit IInt8EntropyCalibrator2, "
                          "deprecated since TensorRT 10.1, only where the installed TensorRT still has it")
    trt.add_argument("--calib-data", metavar="DIR", default=None,
                     help="images for int8 calibration (ImageFolder-style); --format openvino and pte also take "
                          "digits, cifar10 or a folder with train/ and val/ (calibrate on train, report top-1 on val)")
    trt.add_argument("--calib-count", type=int, default=DEFAULT_CALIB_COUNT, help=f"calibration images (default {DEFAULT_CALIB_COUNT})")
    trt.add_argument("--max-batch", type=int, default=None,
                     help=f"largest batch of a --dynamic-batch engine (default {DEFAULT_MAX_BATCH})")
    trt.add_argument("--workspace-mb", type=int, default=None, help="builder workspace limit in MiB (default 2048)")
    p.set_defaults(func=cmd_export)


#: flags of the ONNX/TensorRT export that a mobile format does not take
_ONNX_ONLY = {"onnx": "--onnx", "dynamic_batch": "--dynamic-batch", "opset": "--opset", "exporter": "--exporter",
              "tensorrt": "--tensorrt", "fp16": "--fp16", "int8_mode": "--int8-mode", "max_batch": "--max-batch",
              "workspace_mb": "--workspace-mb"}


def cmd_export(args) -> int:
    if args.format in MOBILE_FORMATS:
        given = vars(args)
        wrong = [flag for key, flag in _ONNX_ONLY.items() if given[key]]
        if wrong:
            raise ExportError(f"{wrong[0]} applies to --format onnx; --format {args.format} writes --out FILE")
        if not args.out:
            raise ExportError(f"--format {args.format} needs --out FILE (e.g. model.{args.format})")
        return _mobile(export_mobile(MobileExportRequest.from_args(args)), args.json)
    done = export(ExportRequest.from_args(args))
    if args.json:
        print(json.dumps(done.report, indent=2, sort_keys=True))
        return 0
    _print(done)
    return 0


def _print(done: Exported) -> None:
    if done.report["openvino"] is not None:
        _print_openvino(done)
        return
    r, report, onnx = done.request, done.report, done.report["onnx"]
    trained = f"weights {Path(r.weights).name}" if done.weights else "untrained"
    print(f"exported {r.arch} ({report['arch']['space']}, arch {report['arch']['hash']}, {trained}): "
          f"input {onnx['input']['shape']} -> {OUTPUT_NAME} [{onnx['output']['shape'][0]}, "
          f"{report['model']['num_classes']}], {onnx['exporter']} exporter, opset {onnx['opset']}")
    print("  onnx.checker: ok")
    for record in done.parity.values():
        print(f"  parity: {record.summary()}")
    print(f"  wrote {r.model_path} ({_mb(done.onnx_bytes)})")
    _print_latency(report["latency"])
    if done.engine_bytes is not None:
        print(f"  wrote {r.tensorrt} ({_mb(done.engine_bytes)}, {done.engine_precision})")
    _print_written(done)


def _print_openvino(done: Exported) -> None:
    r, report, ir = done.request, done.report, done.report["openvino"]
    trained = f"weights {Path(r.weights).name}" if done.weights else "untrained"
    print(f"exported {r.arch} ({report['arch']['space']}, arch {report['arch']['hash']}, {trained}) to OpenVINO IR: "
          f"input {ir['input']['shape']} -> logits {ir['output']['shape']}, {ir['converter']}, {ir['precision']}")
    for record in done.parity.values():
        print(f"  parity: {record.summary()}")
    int8 = ir["int8"]
    if int8 and "accuracy_f32" in int8:
        print(f"  int8 (calibrated on {int8['calibration_images']} images of {int8['calibration']}): top-1 on "
              f"{int8['val_images']} val images {int8['accuracy_f32']:.1%} f32 -> {int8['accuracy_int8']:.1%} int8 "
              f"({int8['accuracy_drop_points']:+.1f} points drop)")
    if int8:
        print(f"  int8 speed-up {int8['speedup']:.2f}x: {int8['f32_ms']:.3f} ms f32 vs {int8['int8_ms']:.3f} ms int8 "
              f"({int8['timing']})")
    layers = ir["layer_breakdown"]
    top = ", ".join(f"{k} {v:.3f}" for k, v in list(layers["by_type_ms"].items())[:4])
    print(f"  per-layer times (get_profiling_info, mean of {layers['calls']} calls): {layers['layers']} layers, "
          f"{layers['sum_ms']:.3f} ms in all; by type (ms): {top}")
    _print_latency(report["latency"])
    print(f"  wrote {ir['path']} and {ir['bin']} ({_mb(done.onnx_bytes)})")
    _print_written(done)


def _print_written(done: Exported) -> None:
    r, report = done.request, done.report
    print(f"  wrote {r.report_path}")
    for old in (report["replaced"] or {}).values():
        print(f"  replaced {old['path']} (was sha256 {old['sha256'][:12]}...; recorded in the report)")


def _print_latency(latency: dict | None) -> None:
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


def _mobile(done: MobileExported, as_json: bool) -> int:
    r, report = done.request, done.report
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    exported = report["export"]
    trained = f"weights {Path(r.weights).name}" if r.weights else "untrained"
    print(f"exported {r.arch} ({report['arch']['space']}, arch {report['arch']['hash']}, {trained}): "
          f"{exported['format']} for {exported['backend']} ({exported['delegate']}, {exported['precision']}), "
          f"input {exported['input']['shape']} -> [{', '.join(map(str, exported['output']['shape']))}]")
    for record in report["parity"].values():
        print(f"  parity: {_parity_line(record)}")
    q = report["int8"]
    if q:
        lat = q["latency"]
        if q["top1_fp32_pct"] is not None:
            print(f"  int8 top-1 {q['top1_int8_pct']:.2f}% vs fp32 {q['top1_fp32_pct']:.2f}% on "
                  f"{q['calibration']['accuracy_images']} held-out images: drop "
                  f"{q['accuracy_drop_pct_points']:+.2f} points")
        print(f"  int8 {lat['int8_ms']:.3f} ms vs fp32 {lat['fp32_ms']:.3f} ms ({lat['threads']} thread, "
              f"{lat['rounds']} interleaved rounds): speed-up {lat['speedup']:.2f}x "
              f"(rounds {lat['speedup_min']:.2f}-{lat['speedup_max']:.2f}x)")
    kernels = report["kernels"]
    if kernels:
        top = ", ".join(f"{k['name']} {k['p50_ms']:.3f} ms" for k in kernels["slowest"][:3])
        print(f"  ETDump: {kernels['kernels']} kernels ({kernels['delegated']} on XNNPACK), execute "
              f"{kernels['execute_ms']:.3f} ms; slowest: {top}")
    latency = report["latency"]
    if latency:
        print(f"  latency on {latency['backend']}: predicted {latency['predicted_ms']:.3f} ms, measured "
              f"{latency['measured_ms']:.3f} ms ({latency['measured_what']}, at the table's speed), error "
              f"{latency['error_pct']:+.1f}%")
    print(f"  wrote {r.out} ({_mb(done.model_bytes)}), {exported['sidecar']} (preprocessing) and {r.report_path}")
    return 0


def _parity_line(record: dict) -> str:
    return (f"{record['candidate']} vs {record['reference']} ({record['inputs']} inputs): max abs diff "
            f"{record['max_abs_diff']:.3g}, {record['rel_diff']:.3g} of output scale "
            f"(tolerance {record['tolerance']:g}), "
            f"top-1 agreement {record['top1_agreement']:.0%}: {'ok' if record['passed'] else 'FAILED'}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
