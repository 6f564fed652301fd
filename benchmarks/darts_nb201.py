"""DARTS against its robust variant and against sampling, on NAS-Bench-201, at equal CPU time.

Per seed: `--strategy darts`, `--darts-variant darts-minus` (DARTS-) and `--darts-variant darts-pt`
(DARTS-PT: DARTS's supernet, the cell selected by perturbation) train their supernets on the two
halves of the CIFAR-10 subset; the mean process CPU time of darts and darts-minus (`--budget-from`)
is the budget of the two samplers of that seed (darts-pt spends its selection phase on top: its CPU
time is printed; `--budget-from darts-pt --methods darts-pt random+scratch --out OTHER` gives random
search darts-pt's time), which run one trial at a time (each increment a resume of the same run, in this process)
until they have spent it:
  spos+evolution  `--strategy evolution --evaluator shared` (a SPOS supernet of the nb201 space,
                  trained once per run for `--spos-epochs`, then candidates scored with its weights)
  random+scratch  `--strategy random --evaluator scratch`: each candidate trained from scratch for
                  `--scratch-epochs` x `--scratch-batches` batches on 80% of the subset, scored on
                  the other 20% (the evaluator at hand when there is no benchmark to look up)
Every search selects on its own data only; afterwards each result is looked up in NAS-Bench-201:
its 200-epoch CIFAR-10 test accuracy, printed beside the published figures (NB201 paper, Dong & Yang
2020, Table 5: DARTS-V1 54.30, random search 93.70, REA 93.92; DARTS-, Chu et al. 2021: 93.80; DARTS+PT,
Wang et al. 2021: 88.11, not re-checked against the paper here).

CPU time is `time.process_time()` of this process (one torch thread), so other jobs on the machine
do not distort it. No search here uses the latency budget (accuracy only); the LUT is needed by the
search problem (`--lut`, an nb201 table of `hwnas profile --space nb201`; profiled quickly into OUT
when absent).

  python benchmarks/darts_nb201.py --out runs/bench_darts              # defaults: ~24 CPU-min per DARTS run
  python benchmarks/darts_nb201.py --smoke                             # a few CPU-minutes: it runs end to end

A full run costs, per seed, 2 DARTS searches (about 24 CPU-minutes each at the defaults) plus the
same CPU time for each of the 2 samplers: about 95 CPU-minutes a seed, 4.7 CPU-hours for 3 seeds.
Finished rows are kept in OUT/rows/ and reused (a killed run is continued by running it again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.cli import main as hwnas_main  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402
from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.latency_tables import LatencyTable  # noqa: E402
from hwnas.latency_tables.predictor import LatencyPredictor  # noqa: E402
from hwnas.search import DARTSConfig, DARTSStrategy, LoopConfig, SearchProblem, run_search  # noqa: E402
from hwnas.search.evolution import EvolutionStrategy  # noqa: E402
from hwnas.search.random_search import RandomStrategy  # noqa: E402
from hwnas.search.registry import make_evaluator  # noqa: E402
from hwnas.tabular.nb201 import SIGNALS, NB201Table  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"
METHODS = ("darts", "darts-minus", "darts-pt", "spos+evolution", "random+scratch")
DARTS_METHODS = ("darts", "darts-minus", "darts-pt")
#: published NB201 CIFAR-10 test accuracy (%) of each method, and where it is from
ANCHORS = {"darts": ("54.30", "NB201 Table 5, DARTS-V1"), "darts-minus": ("93.80", "Chu et al. 2021, DARTS-"),
           "darts-pt": ("88.11", "Wang et al. 2021, DARTS+PT; not re-checked here"),
           "spos+evolution": ("93.92", "NB201 Table 5, REA (evolution on true accuracies)"),
           "random+scratch": ("93.70", "NB201 Table 5, random search")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lut", help="nb201 latency table (default: profiled quickly into OUT)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="training data (default: the CIFAR-10 subset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=10, help="DARTS epochs (default 10)")
    p.add_argument("--max-batches", type=int, default=None, help="DARTS steps per epoch (default: the whole half)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=16, help="DARTS supernet width (default 16)")
    p.add_argument("--cells", type=int, default=1, help="DARTS cells per stage (default 1)")
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--cpu-budget", type=float, default=None,
                   help="CPU seconds per sampler run (default: the mean of the seed's DARTS runs)")
    p.add_argument("--budget-from", nargs="+", default=["darts", "darts-minus"], choices=DARTS_METHODS, help=(
        "the DARTS methods whose mean CPU time per seed is the samplers' budget (default: darts darts-minus; "
        "darts-pt to give them its selection phase too)"))
    p.add_argument("--spos-epochs", type=int, default=3, help="SPOS supernet epochs (default 3)")
    p.add_argument("--spos-batches", type=int, default=None, help="SPOS batches per epoch (default: all)")
    p.add_argument("--calib-batches", type=int, default=10, help="SPOS batch-norm recalibration batches (default 10)")
    p.add_argument("--scratch-epochs", type=int, default=1)
    p.add_argument("--scratch-batches", type=int, default=20, help="batches per scratch epoch (default 20)")
    p.add_argument("--max-trials", type=int, default=1000, help="cap on sampler trials")
    p.add_argument("--out", default="runs/bench_darts_nb201")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs (a few CPU-minutes)")
    args = p.parse_args(argv)
    if args.smoke:
        given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
        smoke = {"--seeds": ("seeds", [0]), "--epochs": ("epochs", 1), "--max-batches": ("max_batches", 3),
                 "--batch-size": ("batch_size", 16), "--channels": ("channels", 4), "--spos-epochs": ("spos_epochs", 1),
                 "--spos-batches": ("spos_batches", 3), "--calib-batches": ("calib_batches", 1),
                 "--scratch-batches": ("scratch_batches", 2), "--max-trials": ("max_trials", 4)}
        for flag, (dest, value) in smoke.items():
            if flag not in given:
                setattr(args, dest, value)
    return args


def lookup(table: NB201Table, arch) -> dict:
    record = table.record(arch, SIGNALS["cifar10"])
    return {"index": record["index"], "arch_str": record["arch_str"], "test_200ep": record["final_value"]}


def run_darts(variant: str, args, space, predictor, data, seed: int, out: Path) -> dict:
    cfg = DARTSConfig(epochs=args.epochs, batch_size=args.batch_size, max_batches=args.max_batches,
                      variant=variant, order=args.order, channels=args.channels, cells=args.cells)
    resume = out.exists()  # a killed run continues from its checkpoint, which keeps the CPU time spent
    problem = SearchProblem(space, predictor, None, data, out, seed=seed, resume=resume, progress=False)
    c0 = time.process_time()
    result = run_search(problem, DARTSStrategy(cfg))
    cpu = result.details["cpu_s"] if resume else time.process_time() - c0
    return {"arch": result.arch, "cpu_s": cpu, "trials": None,
            "parameter_free_edges": result.details["parameter_free_edges"]}


def run_sampler(method: str, args, space, predictor, data, seed: int, out: Path, budget_s: float) -> dict:
    """Trials one at a time (each a resume of the run) until `budget_s` CPU seconds are spent. A
    killed sampler run is started again from scratch (its CPU time was not kept)."""
    shutil.rmtree(out, ignore_errors=True)
    c0 = time.process_time()
    trials, result = 0, None
    while trials < args.max_trials and (result is None or time.process_time() - c0 < budget_s):
        trials += 1
        problem = SearchProblem(space, predictor, None, data, out, seed=seed, resume=trials > 1, progress=False)
        if method == "spos+evolution":
            strategy = EvolutionStrategy()
            evaluator = make_evaluator("shared", problem, epochs=args.spos_epochs, batch_size=args.batch_size,
                                       max_batches=args.spos_batches, calib_batches=args.calib_batches)
        else:
            strategy = RandomStrategy()
            evaluator = make_evaluator("scratch", problem, epochs=args.scratch_epochs, batch_size=args.batch_size,
                                       max_batches=args.scratch_batches)
        result = run_search(problem, strategy, evaluator, LoopConfig(trials=trials))
    return {"arch": result.arch, "cpu_s": time.process_time() - c0, "trials": trials, "parameter_free_edges": None}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    lut = Path(args.lut) if args.lut else out / "nb201_lut.json"
    if not lut.is_file():
        hwnas_main(["profile", "--space", "nb201", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                    "--no-progress"])
    data = load_data(args.data, 32, 0)
    space = get_space("nb201", num_classes=data.num_classes)
    predictor = LatencyPredictor(LatencyTable.load(lut), space)
    table = NB201Table.load()
    rows = []
    for seed in args.seeds:
        darts_cpu = []
        for method in args.methods:
            row_path = out / "rows" / f"{method}_s{seed}.json"
            if row_path.is_file():
                row = json.loads(row_path.read_text())
            else:
                run_dir = out / "runs" / f"{method}_s{seed}"
                if method in DARTS_METHODS:
                    found = run_darts(method, args, space, predictor, data, seed, run_dir)
                else:
                    budget = args.cpu_budget or (statistics.mean(darts_cpu) if darts_cpu else None)
                    if budget is None:
                        print(f"{method}: no CPU budget (give --cpu-budget or run a darts method first); skipped")
                        continue
                    try:
                        found = run_sampler(method, args, space, predictor, data, seed, run_dir, budget)
                    except HwnasError as exc:
                        print(f"{method} seed {seed}: cannot run in this checkout: {exc}")
                        continue
                row = {"method": method, "seed": seed, "cpu_s": round(found["cpu_s"], 1), "trials": found["trials"],
                       "parameter_free_edges": found["parameter_free_edges"], **lookup(table, found["arch"])}
                atomic_write_json(row_path, row)
            if method in args.budget_from:
                darts_cpu.append(row["cpu_s"])
            rows.append(row)
            print(f"seed {seed} {method:15s} {row['test_200ep']:6.2f}%  {row['cpu_s']:8.1f} CPU-s  "
                  f"{row['arch_str']}" + (f"  ({row['trials']} trials)" if row["trials"] else ""), flush=True)
    print(f"\nNB201 200-epoch CIFAR-10 test accuracy of each result (seeds {args.seeds}; DARTS: {args.epochs} epochs, "
          f"C={args.channels}, {args.cells} cell(s)/stage, max batches {args.max_batches}):")
    print(f"{'method':16s} {'mean':>7s} {'sd':>6s} {'CPU-s':>8s}  published")
    for method in args.methods:
        acc = [r["test_200ep"] for r in rows if r["method"] == method]
        if not acc:
            continue
        cpu = statistics.mean(r["cpu_s"] for r in rows if r["method"] == method)
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        anchor, source = ANCHORS[method]
        print(f"{method:16s} {statistics.mean(acc):7.2f} {sd:6.2f} {cpu:8.1f}  {anchor} ({source})")
    atomic_write_json(out / "report.json", {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
