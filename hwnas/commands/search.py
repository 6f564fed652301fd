"""`hwnas search`: find an architecture under a latency budget with a registered strategy."""

from __future__ import annotations

from pathlib import Path

from ..data import load_data, peek_num_classes
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.table import LatencyTable
from ..runs import refuse_nonempty
from ..search import STRATEGIES, SearchProblem, get_strategy, parse_budget, resolve_budget
from ..search.verify import Verification, verify_result
from ..spaces import get_space
from .common import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search an architecture under a latency budget",
        description="Search a space for an accurate architecture whose LUT-predicted latency meets the budget. "
                    "Writes RUN_DIR/arch.json (the result), result.json, log.jsonl, plots and a checkpoint.",
    )
    p.add_argument("--strategy", default="fbnet", choices=sorted(STRATEGIES))
    p.add_argument("--space", required=True)
    p.add_argument("--lut", required=True, metavar="FILE", help="latency table of the target device (hwnas profile)")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution the latency is predicted at (default: the space's, e.g. 224 for fbnet)")
    p.add_argument("--latency-budget", default=None, metavar="BUDGET",
                   help="8ms, 8 (ms), 1.5s, 900us, or P%% of the space's range (0%% fastest, 100%% slowest by the LUT)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not measure the result end to end on this machine against the budget (by default, "
                        "when the table's backend runs here, it is measured and repaired if over the budget)")
    add_data_arguments(p)
    for name, cls in sorted(STRATEGIES.items()):
        cls.add_arguments(p.add_argument_group(f"{name} strategy"))
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    strategy_cls = get_strategy(args.strategy)
    spec = parse_budget(args.latency_budget) if args.latency_budget is not None else None
    table = LatencyTable.load(args.lut)
    num_classes = peek_num_classes(args.data)
    if num_classes is None:
        load_data(args.data, args.train_resolution, args.seed, args.data_root)  # says what is wrong with it
    # latency is predicted for the network that will be deployed: its head has the data's classes
    space = get_space(args.space, resolution=args.resolution, num_classes=num_classes)
    predictor = LatencyPredictor(table, space)
    budget = resolve_budget(spec, predictor) if spec is not None else None
    strategy = strategy_cls.from_args(args)
    refuse_nonempty(args.out, args.resume)
    data = load_data(args.data, args.train_resolution, args.seed, args.data_root)
    progress = not args.no_progress
    if progress:
        budget_text = f"budget {budget:.4g} ms" if budget is not None else "no budget"
        print(f"search {args.strategy} on {space.name}@{space.resolution} ({budget_text}), {data.describe()}")
    problem = SearchProblem(space, predictor, budget, data, Path(args.out), args.seed, args.resume, progress,
                            lut_source=str(args.lut))
    result = strategy.search(problem)
    status = "" if result.finished else " (interrupted: rerun with --resume)"
    print(f"architecture {result.arch.hash}: predicted {result.predicted_ms:.4g} ms"
          + (f" (budget {budget:.4g} ms)" if budget is not None else "") + status)
    if result.finished and not args.no_verify:
        _print_verification(verify_result(args.out, result, predictor, budget, progress=progress), budget)
    finalists = result.details.get("finalists")
    if finalists:
        picked = next(f for f in finalists if f["hash"] == result.arch.hash)
        print(f"best of {len(finalists)} finalists after short training: the {picked['note']} architecture, "
              f"top-1 {picked['score']:.1f}% on the architecture split (see finalists.json)")
    which = f"the {result.details.get('picked', 'argmax')} architecture"
    if result.repaired:
        print(f"{which} exceeded the budget and was repaired with {len(result.budget_steps)} "
              f"LUT-guided downgrade(s) (see result.json)")
    elif result.filled:
        print(f"{which} was well under the budget and was filled with {len(result.budget_steps)} "
              f"LUT-guided upgrade(s) (see result.json; --no-fill-budget keeps it as sampled)")
    print(f"wrote {Path(args.out) / 'arch.json'}; train it with `hwnas train {Path(args.out) / 'arch.json'} "
          f"--data {args.data} --epochs N --out RUN_DIR`")
    return 0


def _print_verification(verification: Verification, budget: float | None) -> None:
    if verification.skipped:
        print(f"on-device check skipped: {verification.skipped}")
        return
    first, final = verification.attempts[0], verification.final
    text = (f"measured end to end: {first['measured_ms']:.4g} ms at the table's speed "
            f"({first['absolute_ms']:.4g} ms as timed now, machine {first['speed']:.3f}x its speed at profiling)")
    if budget is not None:
        text += f", {first['measured_ms'] / budget:.3f}x the budget"
    print(text)
    if verification.repaired:
        print(f"over the budget: repaired with measured feedback in {len(verification.attempts) - 1} round(s) to "
              f"{verification.arch.hash}, measured {final['measured_ms']:.4g} ms "
              f"({final['measured_ms'] / budget:.3f}x the budget; see result.json 'verify')")
    if verification.note:
        print(verification.note)
