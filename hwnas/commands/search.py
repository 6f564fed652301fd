"""`hwnas search`: find an architecture under budgets with a registered strategy and evaluator."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from ..data import load_data, peek_num_classes
from ..errors import HwnasError
from ..jsonio import read_json
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.table import LatencyTable
from ..locks import hold
from ..runs import refuse_nonempty
from ..scaleout import ddp
from ..search import EVALUATORS, STRATEGIES, LoopConfig, SearchProblem, get_strategy, parse_budget, resolve_budget
from ..search.evaluators import make_evaluator
from ..search.loop import run_search
from ..search.verify import Verification, verify_result
from ..search.objectives import (BUDGET_MODES, parse_memory_budget, parse_objectives, parse_params_budget,
                                 refuse_infeasible_budgets)
from ..spaces import get_space
from ..tabular.nb201 import CSV as NB201_CSV, DEVICES, ENV as NB201_ENV, SIGNALS
from .common import add_data_arguments

S = argparse.SUPPRESS
#: evaluator flags (dests) each evaluator uses
EVALUATOR_OPTIONS = {"scratch": {"holdout"},
                     "shared": {"holdout", "supernet", "calib_batches", "calib_batch_size", "score_batches"},
                     "nb201": {"benchmark_dataset", "benchmark_data"}}
#: dest -> flag of every option whose use depends on the strategy or evaluator; filled by register
OPTIONAL: dict[str, str] = {}
#: strategy name -> the dests of its own flags
OWN: dict[str, set[str]] = {}


def _optional(group, flag: str, **kwargs) -> None:
    action = group.add_argument(flag, default=S, **kwargs)
    OPTIONAL[action.dest] = flag


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
    p.add_argument("--lut", default=None, metavar="FILE",
                   help="latency table of the target device (hwnas profile); required unless --device gives one")
    p.add_argument("--device", default=None, choices=sorted(DEVICES),
                   help="space nb201 only: the latency is HW-NAS-Bench's measured (raspi4, pixel3) or simulated "
                        "(eyeriss, fpga) latency of the whole network on that device, in place of --lut")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution the latency is predicted at (default: the space's, e.g. 224 for fbnet)")
    p.add_argument("--latency-budget", default=None, metavar="BUDGET",
                   help="8ms, 8 (ms), 1.5s, 900us, or P%% of the space's range (0%% fastest, 100%% slowest by the LUT)")
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
    loop = p.add_argument_group("trial strategies (random, evolution, tpe, nsga2, mnas)")
    _optional(loop, "--trials", type=int, help="evaluated candidates (default 20; those rejected over a budget do "
                                               "not count); a resume may raise it")
    _optional(loop, "--time-limit", type=float, metavar="S", help="seconds of run time after which no trial starts")
    _optional(loop, "--evaluator", choices=EVALUATORS,
              help="scratch: train each candidate --epochs (default); shared: score it with the weights of a SPOS "
                   "supernet trained once for --epochs (see --supernet); nb201 (space nb201): look its accuracy up "
                   "in NAS-Bench-201, no training, no --data (one query is one trial)")
    _optional(loop, "--objectives", help="acc (default), acc,latency or acc,latency,memory: several write the "
                                         "Pareto front (pareto.json, pareto.png); the result is its most accurate "
                                         "member within the budgets")
    _optional(loop, "--memory-budget", help="peak activation memory, e.g. 2MB, 512KiB (predicted from the LUT)")
    _optional(loop, "--params-budget", help="parameters, e.g. 1.5M, 300k")
    _optional(loop, "--budget-mode", choices=BUDGET_MODES,
              help="reject (default): a candidate over a budget is not evaluated; penalise: it is, and its "
                   "objective is scaled by (value/budget)^-penalty (MnasNet)")
    _optional(loop, "--penalty", type=float, help="exponent of the penalise mode (default 1.0)")
    _optional(loop, "--batch", type=int, metavar="N",
              help="proposals asked before any is told, evaluated in parallel (default 1; with --ray the number of "
                   "trials the cluster runs at once; a resume keeps the run's). Part of the run's identity: the "
                   "same seed and batch give the same search wherever it runs")
    _optional(loop, "--population", type=int, help="evolution (default 30) and nsga2 (default 20): population size")
    scale = p.add_argument_group("Ray (trial strategies: each evaluation a Ray task; see README 'Scale-out')")
    _optional(scale, "--ray", nargs="?", const="local", metavar="ADDRESS",
              help="evaluate candidates as Ray tasks: alone, on RAY_ADDRESS, else the cluster `ray start` started on "
                   "this machine, else a new local Ray instance; 'auto': the cluster `ray start` started here (an "
                   "error if none); HOST:PORT: that cluster's head (install: "
                   "pip install -r requirements-ray.txt)")
    _optional(scale, "--ray-cpus-per-trial", type=float, help="CPUs each evaluation task reserves (default 1)")
    _optional(scale, "--ray-gpus-per-trial", type=float, help="GPUs each evaluation task reserves (default 0; "
                                                               "fractions share a GPU)")
    _optional(scale, "--ray-retries", type=int, help="re-runs of a task after a system failure (its worker or node "
                                                     "died) before the trial is recorded failed (default 2); an "
                                                     "error of the evaluation itself is never re-run")
    ev = p.add_argument_group("evaluators")
    _optional(ev, "--holdout", type=float, help="share of the training set candidates are scored on (default 0.2)")
    _optional(ev, "--supernet", metavar="FILE", help="shared: the SPOS supernet checkpoint; trained there when "
                                                     "absent, reused (and resumed) when present with the same "
                                                     "settings (default RUN_DIR/spos_supernet.pt)")
    _optional(ev, "--calib-batches", type=int, help="shared: batches that recalibrate batch norm per candidate "
                                                    "(SPOS: 200, the default)")
    _optional(ev, "--calib-batch-size", type=int, help="shared: their size (SPOS: 128, the default)")
    _optional(ev, "--score-batches", type=int, help="shared: cap on held-out batches of 256 per score")
    _optional(ev, "--benchmark-dataset", choices=sorted(SIGNALS),
              help="nb201: the dataset whose accuracies are looked up (default cifar10): the search sees the "
                   "12-epoch validation accuracy, the result reports the 200-epoch test accuracy")
    _optional(ev, "--benchmark-data", metavar="DIR", help=f"nb201: the folder holding {NB201_CSV} (default "
                                                          f"${NB201_ENV}, else ../shared/data/nasbench)")
    for name, cls in sorted(STRATEGIES.items()):
        group = p.add_argument_group(f"{name} strategy")
        before = len(group._group_actions)
        cls.add_arguments(group)
        OWN[name] = set()
        for action in group._group_actions[before:]:
            OPTIONAL[action.dest] = action.option_strings[0]
            OWN[name].add(action.dest)
    p.set_defaults(func=cmd_search)


def refuse_unused(args: argparse.Namespace) -> None:
    """A flag the strategy (or its evaluator) does not use is an error, not silently dropped."""
    cls = get_strategy(args.strategy)
    accepted = OWN[cls.name] | set(cls.shared_options)
    if cls.uses_evaluator:
        accepted |= EVALUATOR_OPTIONS[getattr(args, "evaluator", "scratch")]
    for dest in sorted(set(vars(args)) & set(OPTIONAL)):
        if dest == "ray" and dest not in accepted:
            raise HwnasError(f"--ray evaluates trials of the sampler strategies (random, evolution, tpe, nsga2, mnas); "
                             f"--strategy {cls.name} trains one supernet: run it under torchrun --nproc-per-node N "
                             "instead (README 'Scale-out')")
        if dest not in accepted:
            users = sorted(n for n, c in STRATEGIES.items() if dest in OWN[n] | set(c.shared_options))
            where = f"strategies {', '.join(users)}" if users else "--evaluator " + " / ".join(
                e for e, opts in EVALUATOR_OPTIONS.items() if dest in opts)
            raise HwnasError(f"{OPTIONAL[dest]} is not used by --strategy {cls.name}"
                             + (f" with --evaluator {getattr(args, 'evaluator', 'scratch')}" if cls.uses_evaluator else "")
                             + f" (it is for {where}); drop it")


def refuse_torchrun(args: argparse.Namespace) -> None:
    """Under torchrun (WORLD_SIZE > 1) only supernet training is distributed: --strategy fbnet's,
    or the SPOS supernet of --evaluator shared. Any other search is refused, not run N times."""
    size = ddp.from_env().size
    cls = get_strategy(args.strategy)
    if size > 1 and cls.name != "fbnet" and not (cls.uses_evaluator and getattr(args, "evaluator", None) == "shared"):
        what = f"--strategy {cls.name}" + (f" with --evaluator {getattr(args, 'evaluator', 'scratch')}"
                                           if cls.uses_evaluator else "")
        raise HwnasError(f"{what} trains no supernet that torchrun's {size} processes could share (only --strategy "
                         "fbnet and --evaluator shared do); run it as one process (--ray evaluates trials in parallel)")


def cmd_search(args) -> int:
    """The search; under torchrun every process joins the supernet training, process 0 does the rest."""
    refuse_unused(args)
    refuse_torchrun(args)
    with ddp.session():
        _search(args)  # processes other than 0 leave it (quietly) once the supernet is trained
    return 0


def _search(args) -> None:
    if args.task_classes is not None and not args.task_head:
        raise HwnasError("--task-classes is used with --task-head only; add --task-head HEAD or drop it")
    if args.task_head and args.device:
        raise HwnasError("--task-head measures a head on this machine with the LUT's backend; --device's latency is "
                         "HW-NAS-Bench's whole classification network: drop one")
    args.task_classes = 2 if args.task_classes is None else args.task_classes
    if hasattr(args, "penalty") and getattr(args, "budget_mode", "reject") != "penalise":
        raise HwnasError("--penalty is used by --budget-mode penalise only; add it or drop --penalty")
    strategy_cls = get_strategy(args.strategy)
    spec = parse_budget(args.latency_budget) if args.latency_budget is not None else None
    memory = parse_memory_budget(args.memory_budget) if hasattr(args, "memory_budget") else None
    params = parse_params_budget(args.params_budget) if hasattr(args, "params_budget") else None
    objectives = parse_objectives(args.objectives) if hasattr(args, "objectives") else ("acc",)
    ray_options = _ray_options(args)
    if hasattr(args, "batch"):
        LoopConfig(batch=args.batch)  # says what is wrong with it before the data loads
    tabular = strategy_cls.uses_evaluator and getattr(args, "evaluator", None) == "nb201"
    space, predictor, evaluator = _space_and_latency(args, tabular)
    if args.task_head:
        _use_task_head(predictor, args)
    budget = resolve_budget(spec, predictor) if spec is not None else None
    refuse_infeasible_budgets(predictor, memory, params)
    strategy = strategy_cls.from_args(args)
    ddp.on_main(lambda: refuse_nonempty(args.out, args.resume))  # only process 0 looks at (and writes) --out
    data = None if tabular else load_data(args.data, args.train_resolution, args.seed, args.data_root)
    progress = not args.no_progress and ddp.is_main()
    problem = SearchProblem(space, predictor, budget, data, Path(args.out), args.seed, args.resume, progress,
                            lut_source=str(args.lut) if args.lut else predictor.source, memory_budget=memory,
                            params_budget=params, budget_mode=getattr(args, "budget_mode", "reject"),
                            penalty=getattr(args, "penalty", 1.0), objectives=objectives,
                            task_head=f"{args.task_head}, {args.task_classes} classes" if args.task_head else None)
    if strategy_cls.uses_evaluator and not tabular:
        evaluator = make_evaluator(
            getattr(args, "evaluator", "scratch"), problem, epochs=args.epochs, batch_size=args.batch_size,
            max_batches=args.max_batches, holdout=getattr(args, "holdout", 0.2), supernet=getattr(args, "supernet", None),
            calib_batches=getattr(args, "calib_batches", 200), calib_batch_size=getattr(args, "calib_batch_size", 128),
            score_batches=getattr(args, "score_batches", None))
    if progress:
        budget_text = f"budget {budget:.4g} ms" if budget is not None else "no latency budget"
        what = data.describe() if data is not None else f"looked up in NAS-Bench-201 ({evaluator.signal.dataset})"
        print(f"search {args.strategy} on {space.name}@{space.resolution} ({budget_text}), {what}")
    if hasattr(evaluator, "check_supernet") and ddp.is_main():
        evaluator.check_supernet()  # a bad --supernet file is refused before the run folder is made
    with contextlib.ExitStack() as claimed:
        def claim():
            claimed.enter_context(hold(args.out, "run directory"))  # a second search into this --out is refused
            refuse_nonempty(args.out, args.resume)  # again, under the lock
        ddp.on_main(claim)
        # under torchrun the other processes only train the supernet with process 0: no Ray for them
        with _ray_connection(args) if ddp.is_main() else contextlib.nullcontext(None) as ray:
            if ray is not None:
                from ..scaleout.ray_evaluator import RayEvaluator

                evaluator = RayEvaluator(evaluator, ray_options)
            loop = LoopConfig(trials=getattr(args, "trials", 20), time_limit_s=getattr(args, "time_limit", None),
                              batch=_batch(args, ray, ray_options))
            if ray is not None:
                print(f"Ray: {loop.batch} trials at a time on {_describe_cluster(ray)}, {ray_options.cpus:g} CPU(s) "
                      f"and {ray_options.gpus:g} GPU(s) per trial")
            result = run_search(problem, strategy, evaluator, loop)
        print_result(result, args, budget)
        if result.finished and args.device:
            print(f"on-device check skipped: the latency is {predictor.device_name}; no such device here")
        elif result.finished and not args.no_verify:
            print_verification(verify_result(args.out, result, predictor, budget, progress=progress), budget)


def _space_and_latency(args, tabular: bool):
    """The space (its classes those of --data, or of the benchmark's dataset), the latency model
    (--lut's table, or --device's published latencies) and, for --evaluator nb201, the evaluator."""
    if args.lut and args.device:
        raise HwnasError("give --lut (a table profiled here) or --device (HW-NAS-Bench's latency), not both")
    if not args.lut and not args.device:
        raise HwnasError("--lut TABLE is required (hwnas profile makes one)" + (
            "; or --device raspi4|pixel3|eyeriss|fpga for HW-NAS-Bench's published latency"
            if args.space == "nb201" else ""))
    evaluator = None
    if tabular:
        from ..search.tabular import NUM_CLASSES, RESOLUTION, TabularEvaluator

        if args.space != "nb201":
            raise HwnasError(f"--evaluator nb201 looks architectures up in NAS-Bench-201: use --space nb201, "
                             f"not {args.space}")
        if args.data is not None:
            raise HwnasError("--evaluator nb201 trains nothing (NAS-Bench-201 trained every candidate): drop --data")
        dataset = getattr(args, "benchmark_dataset", "cifar10")
        evaluator = TabularEvaluator(dataset, getattr(args, "benchmark_data", None))
        if args.resolution not in (None, RESOLUTION[dataset]):
            raise HwnasError(f"NAS-Bench-201 trained on {dataset} at {RESOLUTION[dataset]}px: drop --resolution")
        space = get_space("nb201", resolution=RESOLUTION[dataset], num_classes=NUM_CLASSES[dataset])
    else:
        if args.data is None:
            raise HwnasError("--data DIR|digits is required: candidates are trained on it (only --evaluator nb201 "
                             "needs none)")
        num_classes = peek_num_classes(args.data)
        if num_classes is None:
            load_data(args.data, args.train_resolution, args.seed, args.data_root)  # says what is wrong with it
        # latency is predicted for the network that will be deployed: its head has the data's classes
        space = get_space(args.space, resolution=args.resolution, num_classes=num_classes)
    if args.device:
        from ..tabular.latency import DeviceLatency
        from ..tabular.nb201 import NB201Table

        root = evaluator.root if evaluator is not None else None
        return space, DeviceLatency(NB201Table.load(root), args.device, space), evaluator
    return space, LatencyPredictor(LatencyTable.load(args.lut), space), evaluator


def _ray_options(args):
    """The Ray task options of --ray-*; those flags without --ray are an error. None without --ray."""
    given = [OPTIONAL[dest] for dest in ("ray_cpus_per_trial", "ray_gpus_per_trial", "ray_retries")
             if hasattr(args, dest)]
    if not hasattr(args, "ray"):
        if given:
            raise HwnasError(f"{given[0]} applies to Ray tasks only; add --ray [ADDRESS] or drop it")
        return None
    from ..scaleout.ray_evaluator import RayTaskOptions  # Ray itself is imported on connecting only

    return RayTaskOptions(getattr(args, "ray_cpus_per_trial", 1.0), getattr(args, "ray_gpus_per_trial", 0.0),
                          getattr(args, "ray_retries", 2))


def _ray_connection(args):
    """Ray, connected for the search (--ray), or a no-op context giving None."""
    if not hasattr(args, "ray"):
        return contextlib.nullcontext(None)
    from ..scaleout.ray_runtime import connected

    return connected(args.ray)


def _batch(args, ray, options) -> int:
    """--batch; else the resumed run's; else the cluster's parallel trials with --ray, 1 without."""
    if hasattr(args, "batch"):
        return args.batch
    from ..search.loop import RUN_FILE

    settings = Path(args.out) / RUN_FILE
    if args.resume and settings.is_file():
        return int(read_json(settings, "search run settings")["config"].get("batch", 1))
    if ray is None:
        return 1
    from ..scaleout.ray_evaluator import task_slots

    return task_slots(ray, options)


def _describe_cluster(ray) -> str:
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return (f"a Ray cluster of {nodes} node(s), {total.get('CPU', 0):g} CPUs" +
            (f", {total.get('GPU', 0):g} GPUs" if total.get("GPU") else ""))


def _use_task_head(predictor: LatencyPredictor, args) -> None:
    from ..errors import BackendError
    from ..reference import reference_arch
    from ..transfer.latency import head_on_device, task_head_latency

    if args.task_classes < 1:
        raise HwnasError(f"--task-classes must be >= 1, got {args.task_classes}")
    space, table = predictor.space, predictor.table
    arch = reference_arch(space)
    try:  # one measurement, on the table's own backend and options, at its speed (a published table: here)
        timed = ddp.on_main(lambda: task_head_latency(arch, args.task_head, space.resolution,
                                                      num_classes=args.task_classes, table=table))
    except BackendError as exc:
        raise BackendError(f"--task-head times the head on the LUT's backend {table.backend}, which cannot run "
                           f"here ({exc}); search with a LUT profiled on this machine") from None
    backbone_ms = predictor.latency_ms(arch) - predictor.op_cost_ms(arch.ops(space)[-1])
    head_ms, derived = head_on_device(timed.head_ms, timed.backbone_ms, backbone_ms, table)
    predictor.use_task_head(head_ms, derived)
    if ddp.is_main():
        print(f"task model: the {args.task_head} head measured {timed.head_ms:.3g} ms on {space.name}'s reference "
              f"architecture ({timed.backend}){'' if derived is None else f'; {derived}'}; predictions add "
              f"{predictor.task_head_offset_ms:+.3g} ms for it in place of the classifier head")


def print_verification(verification: Verification, budget: float | None) -> None:
    if verification.skipped:
        print(f"on-device check skipped: {verification.skipped}")
        return
    first, final = verification.attempts[0], verification.final
    text = (f"measured end to end: {first['measured_ms']:.4g} ms at the table's speed "
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


def print_result(result, args, budget) -> None:
    status = "" if result.finished else " (interrupted: rerun with --resume)"
    latency = f"{args.device} latency (HW-NAS-Bench)" if args.device else "predicted"
    print(f"architecture {result.arch.hash}: {latency} {result.predicted_ms:.4g} ms"
          + (f" (budget {budget:.4g} ms)" if budget is not None else "") + status)
    details = result.details
    if "trial_states" in details:
        states, best = details["trial_states"], details["best_trial"]
        where = "on the held-out split" if "benchmark" not in details else "looked up"
        print(f"best of {details['trials']} evaluated trials: trial {best['number']}, top-1 {best['metrics']['top1']:.2f}% "
              f"{where} ({details['evaluator']['evaluator']} evaluator); {states['failed']} failed, "
              f"{states['infeasible']} rejected over a budget (see trials.jsonl, `hwnas runs show {args.out}`)")
        if len(details["objectives"]) > 1:
            print(f"Pareto front of {details['front_size']} architectures: {Path(args.out) / 'pareto.json'}, "
                  f"{Path(args.out) / 'pareto.png'}")
    bench = details.get("benchmark")
    if bench:
        print(f"NAS-Bench-201 #{bench['index']} {bench['arch_str']}: {bench['final']} {bench['final_value']:.2f}% "
              f"(the search saw {bench['signal']} {bench['signal_value']:.2f}%)")
    curve_path = Path(args.out) / "controller.json"  # mnas, enas
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
    print(f"wrote {Path(args.out) / 'arch.json'}; train it with `hwnas train {Path(args.out) / 'arch.json'} "
          f"--data {args.data or 'DIR'} --epochs N --out RUN_DIR`")
