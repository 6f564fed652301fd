"""`make demo`: the whole pipeline on built-in defaults, a few minutes on a laptop CPU.

profile (or reuse the table shipped for this very CPU) -> calibrate -> search under a budget on
the built-in digits data, the result measured end to end against the budget -> train the result
briefly -> predict -> export to ONNX with measured vs predicted latency. Every step goes through the `hwnas` CLI, so the demo is also a script of
commands a user can copy. Re-running continues where it stopped (`--resume` everywhere).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from .cli import main as hwnas
from .errors import HwnasError
from .profilers.table import LatencyTable, device_identity

SHIPPED_TABLES = Path(__file__).resolve().parent / "latency_tables"
BACKEND = "ort-cpu"
#: the runtimes the demo targets (`--backend`) and the export format each deploys
EXPORT_FORMATS = {"ort-cpu": "onnx", "openvino": "openvino", "executorch": "pte"}
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "pte": "model.pte"}
SPACE = "fbnet"
DIGITS_CLASSES = 10


def run(argv: list[str]) -> None:
    print(f"\n$ hwnas {shlex.join(argv)}", flush=True)
    code = hwnas(argv)
    if code != 0:
        raise SystemExit(f"demo: `hwnas {shlex.join(argv)}` failed with exit code {code}")


def shipped_table_for_this_device(backend: str = BACKEND) -> Path | None:
    """A table shipped with hwnas that was measured on this CPU with the default options."""
    from .profilers import get_profiler

    with get_profiler(backend) as profiler:
        here, options = device_identity(profiler.fingerprint()), profiler.options()
    for path in sorted(SHIPPED_TABLES.glob(f"*_{backend}_t1.json")):
        try:
            table = LatencyTable.load(path)
        except HwnasError:
            continue
        if device_identity(table.device) == here and table.backend_options == options and SPACE in table.spaces:
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwnas.demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="demo directory (default demo_out)")
    parser.add_argument("--budget", default="35%", help="latency budget: ms, or %% of the space's LUT range")
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--search-batches", type=int, default=12, help="supernet weight batches per epoch")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--calib-samples", type=int, default=16,
                        help="architectures measured end to end to calibrate a table profiled here (half lopsided)")
    parser.add_argument("--backend", default=BACKEND, choices=tuple(EXPORT_FORMATS),
                        help="the runtime to target: ort-cpu (default; ONNX), openvino (an OpenVINO IR) or executorch "
                             "(a .pte for XNNPACK, as on a phone); the last two need requirements-mobile.txt and "
                             "profile fbnet here first (minutes to half an hour on 2 cores)")
    args = parser.parse_args(argv)
    backend, fmt = args.backend, EXPORT_FORMATS[args.backend]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lut = out / f"{SPACE}_{backend}.json"
    model = out / MODEL_FILES[fmt]

    run(["spaces"])
    run(["arch", "summary", "preset:fbnet_c"])

    # 1. a latency table of this CPU: the shipped one if it was measured here, else profile now
    if not lut.exists():
        shipped = shipped_table_for_this_device(backend)
        if shipped is not None:
            print(f"\nusing the table shipped for this CPU: {shipped}")
            shutil.copyfile(shipped, lut)
    run(["profile", "--space", SPACE, "--backend", backend, "--out", str(lut), "--resume"])
    # the deployed model classifies the 10 digits: measure that head too (seconds), so that the
    # calibration, the search and the prediction are for the network that is exported
    run(["profile", "--space", SPACE, "--backend", backend, "--num-classes", str(DIGITS_CLASSES), "--out", str(lut),
         "--resume"])
    record = (LatencyTable.load(lut).calibration or {}).get("224") or {}
    if record.get("num_classes") != DIGITS_CLASSES:  # calibrate on the head that is deployed
        run(["calibrate", "--lut", str(lut), "--num-classes", str(DIGITS_CLASSES), "--samples", str(args.calib_samples),
             "--rounds", "3", "--resume"])
    run(["lut", "show", str(lut), "--top", "5"])

    # 2. search under the budget on the built-in digits data, then train the result
    search_dir, train_dir = out / "search", out / "train"
    run(["search", "--strategy", "fbnet", "--space", SPACE, "--lut", str(lut), "--latency-budget", args.budget,
         "--data", "digits", "--epochs", str(args.search_epochs), "--max-batches", str(args.search_batches),
         "--finalists", "2", "--finalist-epochs", "3", "--out", str(search_dir), "--resume"])
    arch = search_dir / "arch.json"
    run(["train", str(arch), "--data", "digits", "--epochs", str(args.train_epochs), "--out", str(train_dir), "--resume"])

    # 3. the prediction with its stated error, then the exported model measured against it
    run(["predict", "--lut", str(lut), str(arch), "--num-classes", str(DIGITS_CLASSES)])
    run(["export", str(arch), "--weights", str(train_dir / "model.pt"), "--resolution", "224", "--format", fmt,
         "--out", str(model), "--lut", str(lut), "--force"])  # a rerun of the demo replaces its own export
    print(f"\ndemo done: {model} and {out / 'model.export_report.json'}"
          + (f"; benchmark it with `python deploy/benchmark.py {model}`" if fmt == "onnx" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
