"""`hwnas runs show RUN_DIR`: what a search run holds: settings, trials by state, the best trial,
the Pareto front, the failures; for an fbnet search, its epochs and result."""

from __future__ import annotations

from pathlib import Path

from ..errors import HwnasError
from ..jsonio import read_json
from ..runs import read_jsonl
from ..search.loop import PARETO, RUN_FILE
from ..search.objectives import choose
from ..search.trials import FINISHED, HISTORY, TrialState, read_history


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="inspect run directories")
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    show = sub.add_parser("show", help="summarise a search run: best trial, front, failures")
    show.add_argument("run_dir", metavar="RUN_DIR")
    show.add_argument("--failures", type=int, default=5, help="failed trials to list (default 5)")
    show.set_defaults(func=cmd_show)


def _trial_line(t) -> str:
    top1 = f"{t.top1:.2f}%" if t.top1 is not None else "-"
    return (f"  #{t.number:<4} {t.arch.hash} top-1 {top1:>7}  {t.predicted_ms:.4g} ms  {t.params:,} params  "
            f"{t.peak_activation_bytes:,} B peak  {t.wall_s:.1f} s")


def cmd_show(args) -> int:
    run_dir = Path(args.run_dir)
    if args.failures < 0:
        raise HwnasError(f"--failures must be >= 0, got {args.failures}")
    if run_dir.exists() and not run_dir.is_dir():
        raise HwnasError(f"{run_dir} is a file, not a run directory; give the --out of a `hwnas search`")
    if not run_dir.is_dir():
        raise HwnasError(f"run directory {run_dir} does not exist; give the --out of a `hwnas search`")
    result = read_json(run_dir / "result.json", "search result") if (run_dir / "result.json").is_file() else None
    if result is not None and not isinstance(result, dict):
        raise HwnasError(f"{run_dir / 'result.json'} is not a search result (a JSON object); remove it and rerun the "
                         "search with --resume")
    if (run_dir / RUN_FILE).is_file():
        show_trials(run_dir, result, args.failures)
    elif (run_dir / "log.jsonl").is_file() and (run_dir / "supernet.pt").is_file():
        log = read_jsonl(run_dir / "log.jsonl")
        print(f"{run_dir}: fbnet search, {len(log)} epoch(s) trained"
              + (f", last expected latency {log[-1]['expected_latency_ms']:.4g} ms" if log else ""))
    elif (run_dir / "log.jsonl").is_file() and (run_dir / "darts_supernet.pt").is_file():
        log = read_jsonl(run_dir / "log.jsonl")
        last = log[-1] if log else None
        print(f"{run_dir}: darts search, {len(log)} epoch(s) trained"
              + (f", argmax cell has {last['parameter_free_edges']} of {last.get('derived_edges', len(last['argmax']))} edges parameter-free"
                 if last else ""))
    elif (run_dir / "enas.pt").is_file():
        curve = read_json(run_dir / "controller.json", "controller curve") if (run_dir / "controller.json").is_file() else {}
        updates = curve.get("curve", [])
        print(f"{run_dir}: enas search (controller over a shared supernet), {len(updates)} controller update(s)")
    else:
        raise HwnasError(f"{run_dir} holds no search run ({RUN_FILE}, an fbnet or darts log.jsonl or an enas.pt); give the --out of a "
                         f"`hwnas search`")
    if result is None:
        print("no result yet (the search was interrupted before it finished; rerun it with --resume)")
    else:
        budget = result.get("budget_ms")
        print(f"result: {result['strategy']} {result['arch_hash']}, predicted {result['predicted_latency_ms']:.4g} ms"
              + (f" (budget {budget:.4g} ms, {'met' if result['meets_budget'] else 'NOT met'})" if budget else "")
              + ("" if result.get("finished", True) else ", interrupted"))
        for d in result.get("devices", []):  # a search over several devices
            within = "" if d["budget_ms"] is None else (f" (budget {d['budget_ms']:.4g} ms, "
                                                         f"{'met' if d['meets_budget'] else 'NOT met'})")
            print(f"  {d['device']}: predicted {d['predicted_ms']:.4g} ms{within}")
    return 0


def show_trials(run_dir: Path, result: dict | None, failures: int) -> None:
    config = read_json(run_dir / RUN_FILE, "search run settings")["config"]
    trials = read_history(run_dir / HISTORY)
    counts = {s.value: sum(t.state == s for t in trials) for s in FINISHED}
    budgets = {k: v for k, v in config["budgets"].items() if k not in ("mode", "penalty") and v is not None}
    data = config["data"] or f"NAS-Bench-201 look-ups ({config['evaluator'].get('dataset')})"
    print(f"{run_dir}: {config['strategy']} search of {config['space']}@{config['resolution']} on {data}, "
          f"seed {config['seed']}, {config['evaluator']['evaluator']} evaluator, objectives "
          f"{','.join(config['objectives'])}, budgets {budgets or 'none'} ({config['budgets']['mode']})")
    print(f"trials: {len(trials)} ({counts['complete']} complete, {counts['failed']} failed, "
          f"{counts['infeasible']} rejected over a budget); run time "
          f"{max((t.elapsed_s for t in trials), default=0.0):.1f} s")
    best = choose(trials, config["objectives"])
    if best is not None:
        print("best trial within the budgets (the most accurate of the front):")
        print(_trial_line(best))
    bench = (result or {}).get("benchmark")
    if bench:
        print(f"result in NAS-Bench-201: #{bench['index']} {bench['arch_str']}, {bench['final']} "
              f"{bench['final_value']:.2f}% ({bench['signal']} {bench['signal_value']:.2f}%)")
    if (run_dir / PARETO).is_file():
        front = read_json(run_dir / PARETO, "Pareto front")["front"]
        print(f"Pareto front ({len(front)}):")
        by_number = {t.number: t for t in trials}
        for doc in front:
            if doc["number"] in by_number:
                print(_trial_line(by_number[doc["number"]]))
    failed = [t for t in trials if t.state == TrialState.FAILED]
    if failed:
        print(f"failed trials ({len(failed)}, first {min(failures, len(failed))}):")
        for t in failed[:failures]:
            print(f"  #{t.number} {t.arch.hash}: {t.note}")
