"""Hostile-user sweep (issue 16): many bad inputs across commands; each must end in a one-line
error, exit 2 and nothing touched (every file in the case's folder byte-identical, nothing added).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bad_input_sweep.py --out sweep.json

Each case runs `hwnas` in-process (`hwnas.cli.main`) in its own folder holding a good tiny table,
an architecture, trained-looking weights and whatever the case breaks; the closed-pipe case runs
in a subprocess. Prints the count tried / handled and the failures; writes a JSON report.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

torch.set_num_threads(1)

from hwnas.core.arch import Arch, save_arch  # noqa: E402
from hwnas.cli import main  # noqa: E402
from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.locks import hold  # noqa: E402
from hwnas.core.models import arch_model  # noqa: E402
from hwnas.core.reference import reference_arch  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.core.weights import save_weights  # noqa: E402
from lut_fixtures import mac_table  # noqa: E402

CHOICES = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "skip"}
READ_ONLY = Path("/sys") if os.geteuid() == 0 else None  # root ignores mode bits; sysfs refuses files


# --- what the cases break ----------------------------------------------------------------------
def entry(field, value):
    def edit(doc):
        key = next(k for k in doc["entries"] if k.startswith("block:"))
        doc["entries"][key][field] = value
    return edit


def all_entries(field, value):
    def edit(doc):
        for m in doc["entries"].values():
            m[field] = value
    return edit


TABLE_DEFECTS = {
    "nan latency": all_entries("p50_ms", math.nan),
    "inf latency": entry("p50_ms", math.inf),
    "negative latency": entry("p50_ms", -4.0),
    "string latency": entry("p50_ms", "3"),
    "null latency": entry("p50_ms", None),
    "p10 above p50": entry("p10_ms", 1e9),
    "count 0": entry("count", 0),
    "negative std": entry("std_ms", -1.0),
    "negative bytes": entry("param_bytes", -5),
    "unknown dtype": lambda d: d.update(dtype="float64"),
    "batch 0": lambda d: d.update(batch=0),
    "nan overhead": lambda d: d.update(overhead_ms=math.nan),
    "malformed key": lambda d: d["entries"].update({"block:x|y": d["entries"][next(iter(d["entries"]))]}),
    "entries missing": lambda d: d.pop("entries"),
    "nan calibration": lambda d: d.update(calibration={"32": {"model": "scale", "a": math.nan, "b": 0, "error_pct": 1,
                                                              "n_samples": 3, "resolution": 32}}),
    "unknown calibration model": lambda d: d.update(calibration={"32": {"model": "x", "a": 1, "b": 0, "error_pct": 1,
                                                                        "n_samples": 3, "resolution": 32}}),
    "version 7": lambda d: d.update(version=7),
}
RAW_TABLES = {"not json": "{nope", "empty file": "", "a list": "[]"}

ARCH_DEFECTS = {
    "not json": "{",
    "a list": "[]",
    "no choices": json.dumps({"space": "tiny"}),
    "number choice": json.dumps({"space": "tiny", "choices": {**CHOICES, "layer0": 3}}),
    "unknown space": json.dumps({"space": "nope", "choices": {}}),
    "unknown decision": json.dumps({"space": "tiny", "choices": {**CHOICES, "layer9": "k3_e1"}}),
    "bad choice": json.dumps({"space": "tiny", "choices": {**CHOICES, "layer0": "k9_e9"}}),
    "version 7": json.dumps({"space": "tiny", "version": 7, "choices": CHOICES}),
}


def weights_defects():
    def tensor_nan(p):
        next(iter(p["state_dict"].values())).fill_(math.nan)
    return {
        "nan weights": tensor_nan,
        "num_classes 0": lambda p: p.update(num_classes=0),
        "std 0": lambda p: p["preprocessing"].update(std=[0.5, 0.0, 0.5]),
        "unknown resize": lambda p: p["preprocessing"].update(resize="zoom"),
        "wrong format": lambda p: p.update(format="other"),
        "missing tensors": lambda p: p.update(state_dict={}),
    }


# --- one case ----------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def setup(folder: Path) -> None:
    space = get_space("tiny")
    mac_table(space).save(folder / "good.json")
    arch = Arch.create(space, CHOICES)
    save_arch(arch, folder / "arch.json")
    save_weights(folder / "model.pt", arch, arch_model(arch, num_classes=10), 10, 32)


def run_case(name: str, argv: list[str], prepare=None, expect: int = 2, lock: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="hwnas-sweep-") as tmp:
        folder = Path(tmp)
        setup(folder)
        if prepare:
            prepare(folder)
        before = snapshot(folder)
        argv = [a.replace("{dir}", str(folder)) for a in argv]
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if lock:
                stack.enter_context(hold(folder / lock, "sweep"))
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except BaseException as exc:  # a traceback a user would have seen
                    code = f"raised {type(exc).__name__}: {str(exc)[:200]}"
        elapsed = time.perf_counter() - start
        text = err.getvalue().strip()
        after = snapshot(folder)
    problems = []
    if code != expect:
        problems.append(f"exit {code}, expected {expect}")
    if expect == 2 and not (text.startswith("hwnas: error:") and "\n" not in text):
        problems.append(f"not a one-line error: {text[:300]!r}")
    if "--backend published" in text or "reference network has no time yet" in text and "published" in str(argv):
        problems.append(f"prescribes what cannot work for a published table: {text[:300]!r}")
    if after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in after if before.get(k) != after[k]})
        problems.append(f"touched {changed[:5]}")
    return {"case": name, "argv": argv, "exit": code, "stderr": text[:400], "seconds": round(elapsed, 2),
            "handled": not problems, "problems": problems}


def closed_pipe_case() -> dict:
    cmd = f"{sys.executable} -c 'import sys; from hwnas.cli import main; sys.exit(main(sys.argv[1:]))' space show fbnet | head -n 1"
    result = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ok = "Traceback" not in result.stderr
    return {"case": "closed pipe: space show fbnet | head", "argv": cmd, "exit": None, "stderr": result.stderr[-400:],
            "seconds": None, "handled": ok, "problems": [] if ok else ["traceback on a closed pipe"]}


# --- the cases ---------------------------------------------------------------------------------
def table_commands(table: str) -> dict[str, list[str]]:
    return {
        "predict": ["predict", "--lut", table, "{dir}/arch.json"],
        "lut show": ["lut", "show", table],
        "lut merge": ["lut", "merge", "{dir}/good.json", table, "--out", "{dir}/merged.json"],
        "search": ["search", "--space", "tiny", "--lut", table, "--latency-budget", "50%", "--data", "digits",
                   "--epochs", "1", "--out", "{dir}/run", "--no-progress"],
        "validate": ["validate", "--lut", table, "--samples", "2", "--out", "{dir}/val"],
        "export --lut": ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx", "--lut", table],
    }


def write_table(edit):
    def prepare(folder):
        doc = json.loads((folder / "good.json").read_text())
        edit(doc)
        (folder / "bad.json").write_text(json.dumps(doc))
    return prepare


def write_memory_table(folder: Path) -> None:
    from search_contract_setup import memory_table

    memory_table(get_space("tiny")).save(folder / "mem.json")


def write_text(name, text):
    return lambda folder: (folder / name).write_text(text)


def edit_weights(edit):
    def prepare(folder):
        payload = torch.load(folder / "model.pt", weights_only=True)
        edit(payload)
        torch.save(payload, folder / "model.pt")
    return prepare


def cases():
    for defect, edit in TABLE_DEFECTS.items():
        for command, argv in table_commands("{dir}/bad.json").items():
            yield f"table {defect}: {command}", argv, write_table(edit)
    for defect, text in RAW_TABLES.items():
        for command, argv in table_commands("{dir}/bad.json").items():
            yield f"table {defect}: {command}", argv, write_text("bad.json", text)
    for defect, text in ARCH_DEFECTS.items():
        for command, argv in {
            "predict": ["predict", "--lut", "{dir}/good.json", "{dir}/bad_arch.json"],
            "export": ["export", "{dir}/bad_arch.json", "--onnx", "{dir}/m.onnx"],
            "train": ["train", "{dir}/bad_arch.json", "--data", "digits", "--epochs", "1", "--out", "{dir}/run"],
            "arch summary": ["arch", "summary", "{dir}/bad_arch.json"],
        }.items():
            yield f"arch {defect}: {command}", argv, write_text("bad_arch.json", text)
    for defect, edit in weights_defects().items():
        yield f"weights {defect}: export", ["export", "{dir}/arch.json", "--weights", "{dir}/model.pt", "--onnx",
                                            "{dir}/m.onnx"], edit_weights(edit)
    yield "weights not a checkpoint: export", ["export", "{dir}/arch.json", "--weights", "{dir}/junk.pt", "--onnx",
                                               "{dir}/m.onnx"], write_text("junk.pt", "junk")
    # overwrites
    yield "export onto an existing onnx", ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx"], write_text("m.onnx", "x")
    yield "export onto an existing report", ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx"], \
        write_text("m.export_report.json", "{}")
    yield "lut merge onto an existing file", ["lut", "merge", "{dir}/good.json", "{dir}/good.json", "--out",
                                              "{dir}/arch.json"], None
    yield "arch sample onto an existing file", ["arch", "sample", "--space", "tiny", "--out", "{dir}/good.json"], None
    # flags
    search = ["search", "--space", "tiny", "--lut", "{dir}/good.json", "--data", "digits", "--out", "{dir}/run"]
    flags = {
        "search --latency-budget -5ms": search + ["--latency-budget", "-5ms"],
        "search --latency-budget 0.0001ms (infeasible)": search + ["--latency-budget", "0.0001ms"],
        "search --latency-budget fast": search + ["--latency-budget", "fast"],
        "export --batch -2": ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx", "--batch", "-2"],
        "export --resolution -32": ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx", "--resolution", "-32"],
        "export --int8 without --tensorrt": ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx", "--int8"],
        "profile --threads -1": ["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", "{dir}/t.json",
                                 "--threads", "-1"],
        "profile --backend nope": ["profile", "--space", "tiny", "--backend", "nope", "--out", "{dir}/t.json"],
        "train --epochs 0": ["train", "{dir}/arch.json", "--data", "digits", "--epochs", "0", "--out", "{dir}/run"],
        "train --data missing": ["train", "{dir}/arch.json", "--data", "{dir}/nodata", "--epochs", "1", "--out",
                                 "{dir}/run"],
        "train --out is a file": ["train", "{dir}/arch.json", "--data", "digits", "--epochs", "1", "--out",
                                  "{dir}/good.json"],
    }
    flags.update({  # issue 23: every flag checked before any work or file
        "search --seed -1": search + ["--seed", "-1"],
        "search --max-batches 0": search + ["--max-batches", "0"],
        "search --task-classes without --task-head": search + ["--task-classes", "3"],
        "search --ray HOST:PORT nothing listens on": search + ["--strategy", "random", "--ray", "127.0.0.1:1"],
        "calibrate --rounds 1": ["calibrate", "--lut", "{dir}/good.json", "--rounds", "1"],
        "validate --out an existing file": ["validate", "--lut", "{dir}/good.json", "--samples", "2", "--out",
                                            "{dir}/arch.json"],
        "runs show a file": ["runs", "show", "{dir}/arch.json"],
        "runs show --failures -1": ["runs", "show", "{dir}", "--failures", "-1"],
        "arch sample --seed -3": ["arch", "sample", "--space", "tiny", "--seed", "-3"],
    })
    for name, argv in flags.items():
        yield f"flag: {name}", argv, None
    # issue 23: budgets below the space's smallest network (a table that holds memory figures)
    with_memory = ["search", "--space", "tiny", "--lut", "{dir}/mem.json", "--data", "digits", "--out", "{dir}/run",
                   "--strategy", "random"]
    for flag in ("--params-budget", "--memory-budget"):
        yield f"search {flag} below the smallest network", with_memory + [flag, "10"], write_memory_table
    # issue 23: files that are not what they claim
    yield "search --supernet not a checkpoint", search + ["--strategy", "random", "--evaluator", "shared", "--supernet",
                                                          "{dir}/junk.pt"], \
        write_text("junk.pt", "junk")
    row = "expanded_conv-input:7x7x160-output:7x7x160-expand:960-kernel:3-stride:1-idskip:1-se:1-hs:1"
    for defect, body in {"a NaN mean": f"{row}:\n  count: 1\n  mean: .nan\n  std: 0.1\n",
                         "a boolean mean": f"{row}:\n  count: 1\n  mean: true\n  std: 0.1\n",
                         "a negative variance": f"{row}:\n  count: 1\n  mean: 1.0\n  var: -1\n",
                         "a count of 0": f"{row}:\n  count: 0\n  mean: 1.0\n  std: 0.1\n",
                         "a row given twice": f"{row}:\n  mean: 0.9\n  std: 0.1\n{row}:\n  mean: 99.0\n  std: 0.1\n"
                         }.items():
        yield f"lut import with {defect}", ["lut", "import", "{dir}/note10.yaml", "--format", "ofa", "--device",
                                           "Note10", "--out", "{dir}/imported.json"], write_text("note10.yaml", body)
    yield "lut import of a file that is not UTF-8", ["lut", "import", "{dir}/bin.yaml", "--format", "ofa", "--device",
                                                     "Note10", "--out", "{dir}/imported.json"], \
        lambda folder: (folder / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    yield "lut import --device ''", ["lut", "import", "{dir}/note10.yaml", "--format", "ofa", "--device", "",
                                     "--out", "{dir}/imported.json"], write_text("note10.yaml", f"{row}:\n  mean: 1.0\n  std: 0.1\n")


SHARED = Path(os.environ.get("HWNAS_SHARED", ROOT.parent / "shared")) / "data"
NOTE10_160 = SHARED / "ofa_luts" / "note10" / "160_lookup_table.yaml"


def write_published(stale: bool = False):
    """The OFA Note10 160px table imported into the case's folder as pub.json (`stale`: as an
    hwnas that kept no classifier rows wrote it)."""
    def prepare(folder: Path) -> None:
        from hwnas.latency_tables.published import import_published
        ((table, _),) = import_published([NOTE10_160], "ofa")
        if stale:
            table.statistics.pop("classifiers")
        table.save(folder / "pub.json")
        save_arch(reference_arch(get_space("mobilenetv3_w12")), folder / "ofa.json")
    return prepare


def published_cases():
    """Issue 23: a published table's dead ends (skipped where ../shared is absent)."""
    if not NOTE10_160.exists():
        return
    predict = ["predict", "--lut", "{dir}/pub.json", "{dir}/ofa.json"]
    yield "predict on a published table at a resolution it lacks", predict + ["--resolution", "224"], write_published()
    yield "predict an architecture of another space on a published table", \
        ["predict", "--lut", "{dir}/pub.json", "{dir}/arch.json"], write_published()
    yield "predict on a published table imported without classifier rows", predict + ["--num-classes", "10"], \
        write_published(stale=True)
    yield "calibrate a published table", ["calibrate", "--lut", "{dir}/pub.json", "--samples", "2"], write_published()
    yield "search on a published table at a resolution it lacks", \
        ["search", "--strategy", "random", "--space", "mobilenetv3_w12", "--lut", "{dir}/pub.json", "--data", "digits",
         "--latency-budget", "20ms", "--out", "{dir}/run"], write_published()
    yield "export --lut a published table at a resolution it lacks", \
        ["export", "{dir}/ofa.json", "--lut", "{dir}/pub.json", "--onnx", "{dir}/m.onnx"], write_published()


def locked_cases():
    yield "second writer: profile", ["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", "{dir}/t.json",
                                     "--quick", "--no-progress"], "t.json"
    yield "second writer: train", ["train", "{dir}/arch.json", "--data", "digits", "--epochs", "1", "--out",
                                   "{dir}/run", "--no-progress"], "run"
    yield "second writer: export", ["export", "{dir}/arch.json", "--onnx", "{dir}/m.onnx"], "m.onnx"
    yield "second writer: lut merge", ["lut", "merge", "{dir}/good.json", "{dir}/good.json", "--out",
                                       "{dir}/merged.json"], "merged.json"


def read_only_cases():
    if READ_ONLY is None:
        return
    ro = str(READ_ONLY)
    yield "read-only: search --out", ["search", "--space", "tiny", "--lut", "{dir}/good.json", "--data", "digits",
                                      "--epochs", "1", "--out", f"{ro}/hwnas-run", "--no-progress"]
    yield "read-only: train --out", ["train", "{dir}/arch.json", "--data", "digits", "--epochs", "1", "--out",
                                     f"{ro}/hwnas-run", "--no-progress"]
    yield "read-only: export --onnx", ["export", "{dir}/arch.json", "--onnx", f"{ro}/m.onnx"]
    yield "read-only: lut merge --out", ["lut", "merge", "{dir}/good.json", "{dir}/good.json", "--out", f"{ro}/m.json"]


def main_sweep(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    results = [run_case(name, a, prep) for name, a, prep in cases()]
    results += [run_case(name, a, prep) for name, a, prep in published_cases()]
    results += [run_case(name, a, lock=lock) for name, a, lock in locked_cases()]
    results += [run_case(name, a) for name, a in read_only_cases()]
    results.append(closed_pipe_case())
    handled = sum(r["handled"] for r in results)
    slowest = max((r for r in results if r["seconds"] is not None), key=lambda r: r["seconds"])
    print(f"bad inputs tried: {len(results)}, handled (one-line error, exit 2, nothing touched): {handled}")
    print(f"slowest: {slowest['case']} ({slowest['seconds']} s)")
    for r in results:
        if not r["handled"]:
            print(f"  NOT HANDLED {r['case']}: {'; '.join(r['problems'])}")
    if args.out:
        atomic_write_json(args.out, {"tried": len(results), "handled": handled, "cases": results})
    return 0 if handled == len(results) else 1


if __name__ == "__main__":
    sys.exit(main_sweep())
