"""Export: torch -> ONNX (checked against ONNX Runtime), ONNX -> TensorRT engine, and a report.

One module, one job: `model` builds the eval-mode network (with trained weights) to export,
`onnx_export` writes and checks ONNX, `parity` runs ONNX Runtime and compares outputs,
`calibration` reads real images for int8, `tensorrt_engine` builds and runs engines (TensorRT is
imported lazily), `report` assembles `MODEL.export_report.json`.
"""
