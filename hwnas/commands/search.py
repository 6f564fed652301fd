"""`hwnas search`: find an architecture under budgets with a registered strategy and evaluator.

This module parses and prints; the options each strategy and evaluator declares, the refusal of
flags the chosen one does not use (hwnas/search/config.py) and the search itself
(hwnas/search/run.py) are the library's."""

from __future__ import annotations

from pathlib import Path

from ..jsonio import read_json
from ..train import ddp
from ..search import STRATEGIES
from ..search.config import SearchConfig, add_search_flags
from ..search.run import Report, run
from ..search.verify import Verification
from ..tabular.nb201 import DEVICES
from .common import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search an architecture under latency, memory and parameter budgets",
        description="Search a space for an accurate architecture whose predicted latency (and memory, parameters) "
                    "meet the budgets. Writes RUN_DIR/arch.json (the result) and result.json; trial strategies "
                    "also trials.jsonl (every trial) and, with several objectives, pareto.json and pareto.png. "
                    "A flag the chosen strategy or evaluator does not use is refused.",
    )
    p.add_argument("--strategy", default="fbnet", choices=sorted(STRATEGIES),
                   help="fbnet: differentiable supernet; enas: RL controller over a weight-sharing supernet; random, "
                        "evolution (aging), tpe, nsga2 (Optuna), mnas (RL controller): samplers over candidates "
                        "scored by --evaluator")
    p.add_argument("--space", required=True)
    p.add_argument("--lut", action="append", default=None, metavar="[NAME=]FILE",
                   help="latency table of the target device (hwnas profile, hwnas lut import); required unless "
                        "--device gives one. Repeat it as --lut NAME=FILE for a search under several devices' budgets")
    p.add_argument("--device", action="append", default=None, choices=sorted(DEVICES),
                   help="space nb201 only: the latency is HW-NAS-Bench's measured (raspi4, pixel3) or simulated "
                        "(eyeriss, fpga) latency of the whole network on that device, in place of --lut; repeat it "
                        "for several devices (then --latency-budget DEVICE=BUDGET)")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution the latency is predicted at (default: the space's, e.g. 224 for fbnet)")
    p.add_argument("--latency-budget", action="append", default=None, metavar="[NAME=]BUDGET",
                   help="8ms, 8 (ms), 1.5s, 900us, or P%% of the space's range (0%% fastest, 100%% slowest by the LUT); "
                        "with several devices, NAME=BUDGET per device (a device without one is only reported)")
    p.add_argument("--task-head", default=None, choices=("fasterrcnn", "ssdlite", "lraspp", "deeplabv3"),
                   help="budget the whole task model: every prediction has the classifier head replaced by this "
                        "detection or segmentation head's measured cost (ONNX Runtime CPU, on the space's reference "
                        "architecture; see `hwnas transfer`)")
    p.add_argument("--task-classes", type=int, default=None,
                   help="with --task-head: classes of the task head, background included for detection (default 2)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not measure the result end to end on this machine against the budget (by default, "
                        "when the table's backend runs here, it is measured and repaired if over the budget)")
    add_data_arguments(p, data_required=False)
    add_search_flags(p)
    p.set_defaults(func=cmd_search)


class Printed(Report):
    """The search's report, printed."""

    def __init__(self, config: SearchConfig):
        self.config = config

    def result(self, result, budget: float | None) -> None:
        print_result(result, self.config, budget)

    def verification(self, verification: Verification, budget: float | None) -> None:
        print_verification(verification, budget)


def cmd_search(args) -> int:
    """The search; under torchrun every process joins the supernet training, process 0 does the rest."""
    config = SearchConfig.from_args(args)  # refuses unused flags and bad values before any work
    with ddp.session():
        run(config, Printed(config))  # processes other than 0 leave it (quietly) once the supernet is trained
    return 0


def print_verification(verification: Verification, budget: float | None) -> None:
    device = f" ({verification.device})" if verification.device else ""
    if verification.skipped:
        print(f"on-device check{device} skipped: {verification.skipped}")
        return
    first, final = verification.attempts[0], verification.final
    text = (f"measured end to end{device}: {first['measured_ms']:.4g} ms at the table's speed "
            f"({first['absolute_ms']:.4g} ms as timed now, the machine at {first['speed']:.3f}x its time at profiling)")
    if budget is not None:
        text += f", {first['measured_ms'] / budget:.3f}x the budget"
    print(text)
    if verification.repaired:
        print(f"over the budget: repaired with measured feedback in {len(verification.attempts) - 1} round(s) to "
              f"{verification.arch.hash}, measured {final['measured_ms']:.4g} ms "
              f"({final['measured_ms'] / budget:.3f}x the budget); arch.json holds it, result.json 'verify' both")
    if verification.note:
        print(verification.note)


def print_result(result, config: SearchConfig, budget) -> None:
    status = "" if result.finished else " (interrupted: rerun with --resume)"
    latency = f"{config.device} latency (HW-NAS-Bench)" if config.device else "predicted"
    if result.devices:
        print(f"architecture {result.arch.hash}{status}, "
              f"{'HW-NAS-Bench latency' if config.devices else 'predicted'} on each device:")
        for d in result.devices:
            within = "" if d["budget_ms"] is None else (f" (budget {d['budget_ms']:.4g} ms: "
                                                         f"{'met' if d['meets_budget'] else 'OVER'})")
            print(f"  {d['device']}: {d['predicted_ms']:.4g} ms{within}")
    else:
        print(f"architecture {result.arch.hash}: {latency} {result.predicted_ms:.4g} ms"
              + (f" (budget {budget:.4g} ms)" if budget is not None else "") + status)
    details = result.details
    if "trial_states" in details:
        states, best = details["trial_states"], details["best_trial"]
        where = "on the held-out split" if "benchmark" not in details else "looked up"
        print(f"best of {details['trials']} evaluated trials: trial {best['number']}, top-1 {best['metrics']['top1']:.2f}% "
              f"{where} ({details['evaluator']['evaluator']} evaluator); {states['failed']} failed, "
              f"{states['infeasible']} rejected over a budget (see trials.jsonl, `hwnas runs show {config.out}`)")
        if len(details["objectives"]) > 1:
            print(f"Pareto front of {details['front_size']} architectures: {Path(config.out) / 'pareto.json'}, "
                  f"{Path(config.out) / 'pareto.png'}")
    bench = details.get("benchmark")
    if bench:
        print(f"NAS-Bench-201 #{bench['index']} {bench['arch_str']}: {bench['final']} {bench['final_value']:.2f}% "
              f"(the search saw {bench['signal']} {bench['signal_value']:.2f}%)")
    if "parameter_free_edges" in details:  # darts
        print(f"derived cell: {details['parameter_free_edges']} of {details.get('derived_edges', len(result.arch.choices))} edges parameter-free"
              + (" (collapsed: no conv left)" if details["collapsed"] else "")
              + f"; softmax(alpha) per edge over the epochs in {Path(config.out) / 'alphas.png'}")
    curve_path = Path(config.out) / "controller.json"  # mnas, enas
    curve = read_json(curve_path, "controller curve")["curve"] if curve_path.is_file() else []
    if curve:
        first, last = curve[0], curve[-1]
        print(f"controller: {len(curve)} policy updates, mean reward {first['mean_reward']:.4f} -> "
              f"{last['mean_reward']:.4f}, entropy {first['entropy']:.2f} -> {last['entropy']:.2f} ({curve_path})")
    finalists = details.get("finalists")
    if finalists:
        picked = next(f for f in finalists if f["hash"] == result.arch.hash)
        print(f"best of {len(finalists)} finalists after short training: the {picked['note']} architecture, "
              f"top-1 {picked['score']:.1f}% on the architecture split (see finalists.json)")
    which = f"the {details.get('picked', 'argmax')} architecture"
    if result.repaired:
        print(f"{which} exceeded the budget and was repaired with {len(result.budget_steps)} "
              f"LUT-guided downgrade(s) (see result.json)")
    elif result.filled:
        print(f"{which} was well under the budget and was filled with {len(result.budget_steps)} "
              f"LUT-guided upgrade(s) (see result.json; --no-fill-budget keeps it as sampled)")
    print(f"wrote {Path(config.out) / 'arch.json'}; train it with `hwnas train {Path(config.out) / 'arch.json'} "
          f"--data {config.data or 'DIR'} --epochs N --out RUN_DIR`")
