"""Export: torch -> ONNX (checked against ONNX Runtime), ONNX -> TensorRT engine, and a report.

One module, one job: `model` builds the eval-mode network (with trained weights) to export,
`onnx_export` writes and checks ONNX, `parity` compares outputs across runtimes,
`int8_calibration` reads real images for int8, `quantize` rewrites graphs for TensorRT
precisions, `tensorrt_engine` plans and builds engines, `report` assembles
`MODEL.export_report.json`. Exporting, sessions, engines and runners are the runtime layer's
(hwnas.runtimes); export does not import the profilers.
Mobile formats: `pte_export` (ExecuTorch, XNNPACK; int8 by PT2E, calibrated on the training data;
the ETDump kernel breakdown; the preprocessing sidecar) and `tflite_export` (LiteRT).
"""
