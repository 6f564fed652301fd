#!/usr/bin/env python3
"""Latency and throughput of an ONNX model (ONNX Runtime) or a TensorRT engine on this machine.

    python deploy/benchmark.py model.onnx --threads 4 --batch 1 --warmup 20 --iters 200
    python deploy/benchmark.py model.engine --batch 8 --json

Needs numpy plus onnxruntime, or tensorrt plus cuda-python for engines. Each timed run is one
`infer` call on a fixed random input, as an application sees it (for engines: host-to-device
copy, execution, device-to-host copy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runners import DeployError, batch_shape, host, open_runner  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark an ONNX model or TensorRT engine.")
    p.add_argument("model", metavar="MODEL", help="model.onnx, or model.engine / .plan / .trt")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the model's, or 1 if dynamic)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--iters", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime execution providers, in order (default: CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def benchmark(runner, batch, warmup: int, iters: int) -> dict:
    """Time `iters` runs after `warmup` runs; milliseconds percentiles and images per second."""
    shape = batch_shape(runner, batch)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        runner.infer(x)
    times = np.empty(iters)
    for i in range(iters):
        start = time.perf_counter()
        runner.infer(x)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    stats = {f"p{q}": float(np.percentile(ms, q)) for q in (10, 50, 90)}
    stats.update(mean=float(ms.mean()), std=float(ms.std()), min=float(ms.min()), max=float(ms.max()))
    return {"input_shape": list(shape), "batch": shape[0], "latency_ms": stats,
            "throughput_ips": shape[0] * 1e3 / stats["mean"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.warmup < 0 or args.iters < 1 or (args.batch is not None and args.batch < 1):
            raise DeployError("need --warmup >= 0, --iters >= 1 and --batch >= 1")
        with open_runner(args.model, threads=args.threads, providers=args.providers) as runner:
            result = benchmark(runner, args.batch, args.warmup, args.iters)
            result.update(model=str(args.model), warmup=args.warmup, iters=args.iters, **runner.describe())
            result.update(host=host(), versions=runner.versions)
    except DeployError as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    lat = result["latency_ms"]
    engine = f" {result['providers']}, threads {result['threads'] or 'default'}" if result["backend"] == "onnxruntime" else ""
    print(f"{result['model']}: {result['backend']}{engine}, input {result['input_shape']}")
    print(f"  latency ms  p10 {lat['p10']:.3f}  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
          f"mean {lat['mean']:.3f}  std {lat['std']:.3f}  ({args.iters} runs after {args.warmup} warm-up)")
    print(f"  throughput  {result['throughput_ips']:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
