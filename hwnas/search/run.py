"""Carry out one `SearchConfig`: the space and latency model, the budgets, the data, the evaluator
(on Ray with --ray), the search under the run directory's lock, and the on-device check of the
result. What it has to tell goes to a `Report` (the command prints it)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..train.data import load_data, peek_num_classes
from ..errors import HwnasError
from ..jsonio import read_json
from ..latency_tables.multi_device import MultiDevicePredictor
from ..latency_tables.predictor import LatencyPredictor
from ..profilers.table import LatencyTable
from ..locks import hold
from ..runs import refuse_nonempty
from ..tabular.nb201 import DEVICE_NAMES
from ..train import ddp
from ..core.spaces import get_space
from .base import SearchProblem, SearchResult
from .devices import build_model, parse_devices
from .config import SearchConfig, TrialOptions
from .loop import RUN_FILE, LoopConfig, run_search
from .objectives import refuse_infeasible_budgets
from .registry import evaluator_kind
from .verify import Verification, verify_result


class Report:
    """What a search tells as it goes: plain lines (`say`), its result, the on-device check.
    This one prints the lines and nothing else; the command shows the rest."""

    def say(self, text: str) -> None:
        print(text)

    def result(self, result: SearchResult, budget: float | None) -> None:
        pass

    def verification(self, verification: Verification, budget: float | None) -> None:
        pass


def run(config: SearchConfig, report: Report | None = None) -> SearchResult:
    """The search of `config`, written to `config.out`; under torchrun every process joins the
    supernet training and process 0 does the rest (call it inside `ddp.session()`)."""
    report = report or Report()
    space, predictors, evaluator = space_and_latency(config)
    if config.task_head:
        use_task_head(predictors[0], config, report)
    predictor, budget = build_model(*parse_devices(config.latency_sources, config.latency_budgets), predictors)
    trial = config.trial
    refuse_infeasible_budgets(predictor, trial_or_default(config).memory_bytes, trial_or_default(config).params_count)
    strategy = config.make_strategy()
    ddp.on_main(lambda: refuse_nonempty(config.out, config.resume))  # only process 0 looks at (and writes) --out
    data = None if config.tabular else load_data(config.data, config.train_resolution, config.seed, config.data_root)
    progress = config.progress and ddp.is_main()
    problem = search_problem(config, space, predictor, budget, data, progress)
    if trial is not None and not config.tabular:
        evaluator = evaluator_kind(config.evaluator_name).build(config.evaluator, problem)
    if progress:
        budget_text = describe_budgets(predictor, budget)
        what = data.describe() if data is not None else f"looked up in NAS-Bench-201 ({evaluator.signal.dataset})"
        report.say(f"search {config.strategy} on {space.name}@{space.resolution} ({budget_text}), {what}")
    if hasattr(evaluator, "check_supernet") and ddp.is_main():
        evaluator.check_supernet()  # a bad --supernet file is refused before the run folder is made
    with contextlib.ExitStack() as claimed:
        def claim():
            claimed.enter_context(hold(config.out, "run directory"))  # a second search into this --out is refused
            refuse_nonempty(config.out, config.resume)  # again, under the lock
        ddp.on_main(claim)
        # under torchrun the other processes only train the supernet with process 0: no Ray for them
        with ray_connection(config) if ddp.is_main() else contextlib.nullcontext(None) as ray:
            if ray is not None:
                from .ray_evaluator import RayEvaluator

                evaluator = RayEvaluator(evaluator, config.ray)
            loop = LoopConfig(trials=trial.trials, time_limit_s=trial.time_limit,
                              batch=trial_batch(config, ray)) if trial else LoopConfig()
            if ray is not None:
                report.say(f"Ray: {loop.batch} trials at a time on {describe_cluster(ray)}, {config.ray.cpus:g} "
                           f"CPU(s) and {config.ray.gpus:g} GPU(s) per trial")
            result = run_search(problem, strategy, evaluator, loop)
        report.result(result, budget)
        if result.finished and config.devices:
            names = ", ".join(DEVICE_NAMES[d] for d in config.devices)
            report.say(f"on-device check skipped: the latency is HW-NAS-Bench's ({names}); no such device here")
        elif result.finished and config.verify:
            for verification in verify_result(config.out, result, predictor, budget, progress=progress):
                report.verification(verification, verification.budget_ms)
    return result


def trial_or_default(config: SearchConfig) -> TrialOptions:
    """The trial loop's options; a strategy without the loop has their defaults (no other budget, acc only)."""
    return config.trial if config.trial is not None else TrialOptions()


def search_problem(config: SearchConfig, space, predictor, budget: float | None, data, progress: bool) -> SearchProblem:
    trial = trial_or_default(config)
    return SearchProblem(space, predictor, budget, data, Path(config.out), config.seed, config.resume, progress,
                         lut_source=config.lut or predictor.source,
                         memory_budget=trial.memory_bytes, params_budget=trial.params_count,
                         budget_mode=trial.budget_mode, penalty=1.0 if trial.penalty is None else trial.penalty,
                         objectives=trial.objective_names,
                         task_head=f"{config.task_head}, {config.task_classes} classes" if config.task_head else None)


def space_and_latency(config: SearchConfig):
    """The space (its classes those of --data, or of the benchmark's dataset), the latency model of
    each device (--lut's tables in order, or --device's published latencies) and, for a tabular
    evaluator, the evaluator."""
    if config.luts and config.devices:
        raise HwnasError("give --lut (a table profiled here) or --device (HW-NAS-Bench's latency), not both")
    if not config.luts and not config.devices:
        raise HwnasError("--lut TABLE is required (hwnas profile makes one)" + (
            "; or --device raspi4|pixel3|eyeriss|fpga for HW-NAS-Bench's published latency"
            if config.space == "nb201" else ""))
    evaluator = None
    if config.tabular:
        from .tabular import NUM_CLASSES, RESOLUTION

        if config.space != "nb201":
            raise HwnasError(f"--evaluator nb201 looks architectures up in NAS-Bench-201: use --space nb201, "
                             f"not {config.space}")
        if config.data is not None:
            raise HwnasError("--evaluator nb201 trains nothing (NAS-Bench-201 trained every candidate): drop --data")
        evaluator = evaluator_kind(config.evaluator_name).build(config.evaluator)
        dataset = config.evaluator.dataset
        if config.resolution not in (None, RESOLUTION[dataset]):
            raise HwnasError(f"NAS-Bench-201 trained on {dataset} at {RESOLUTION[dataset]}px: drop --resolution")
        space = get_space("nb201", resolution=RESOLUTION[dataset], num_classes=NUM_CLASSES[dataset])
    else:
        if config.data is None:
            raise HwnasError("--data DIR|digits is required: candidates are trained on it (only --evaluator nb201 "
                             "needs none)")
        num_classes = peek_num_classes(config.data)
        if num_classes is None:
            load_data(config.data, config.train_resolution, config.seed, config.data_root)  # says what is wrong
        # latency is predicted for the network that will be deployed: its head has the data's classes
        space = get_space(config.space, resolution=config.resolution, num_classes=num_classes)
    if config.devices:
        from ..tabular.latency import DeviceLatency
        from ..tabular.nb201 import NB201Table

        table = NB201Table.load(evaluator.root if evaluator is not None else None)
        return space, [DeviceLatency(table, device, space) for device in config.devices], evaluator
    tables, _ = parse_devices(config.luts, ())
    return space, [LatencyPredictor(LatencyTable.load(t.value), space) for t in tables], evaluator


def describe_budgets(predictor, budget: float | None) -> str:
    """'budget 8 ms', or each device's budget in a search over several."""
    if isinstance(predictor, MultiDevicePredictor):
        return "devices " + ", ".join(f"{d.name} ({'budget ' + format(d.budget_ms, '.4g') + ' ms' if d.budget_ms else 'reported only'})"
                                      for d in predictor.devices)
    return f"budget {budget:.4g} ms" if budget is not None else "no latency budget"


def ray_connection(config: SearchConfig):
    """Ray, connected for the search (--ray), or a no-op context giving None."""
    if config.ray is None:
        return contextlib.nullcontext(None)
    from ..scaleout.ray_runtime import connected

    return connected(config.ray.address)


def trial_batch(config: SearchConfig, ray) -> int:
    """--batch; else the resumed run's; else the cluster's parallel trials with --ray, 1 without."""
    if config.trial.batch is not None:
        return config.trial.batch
    settings = Path(config.out) / RUN_FILE
    if config.resume and settings.is_file():
        return int(read_json(settings, "search run settings")["config"].get("batch", 1))
    if ray is None:
        return 1
    from .ray_evaluator import task_slots

    return task_slots(ray, config.ray)


def describe_cluster(ray) -> str:
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return (f"a Ray cluster of {nodes} node(s), {total.get('CPU', 0):g} CPUs" +
            (f", {total.get('GPU', 0):g} GPUs" if total.get("GPU") else ""))


def use_task_head(predictor: LatencyPredictor, config: SearchConfig, report: Report) -> None:
    """Budget the whole task model: predictions swap the classifier head for --task-head's cost,
    measured once on the table's own backend and options, at its speed; for a published table,
    measured here and scaled to its device (hwnas.transfer.latency.head_on_device, marked derived)."""
    from ..errors import BackendError
    from ..core.reference import reference_arch
    from ..transfer.latency import head_on_device, task_head_latency

    if config.task_classes < 1:
        raise HwnasError(f"--task-classes must be >= 1, got {config.task_classes}")
    space, table = predictor.space, predictor.table
    arch = reference_arch(space)
    try:
        timed = ddp.on_main(lambda: task_head_latency(arch, config.task_head, space.resolution,
                                                      num_classes=config.task_classes, table=table))
    except BackendError as exc:
        raise BackendError(f"--task-head times the head on the LUT's backend {table.backend}, which cannot run "
                           f"here ({exc}); search with a LUT profiled on this machine") from None
    backbone_ms = predictor.latency_ms(arch) - predictor.op_cost_ms(arch.ops(space)[-1])
    head_ms, derived = head_on_device(timed.head_ms, timed.backbone_ms, backbone_ms, table)
    predictor.use_task_head(head_ms, derived)
    if ddp.is_main():
        report.say(f"task model: the {config.task_head} head measured {timed.head_ms:.3g} ms on {space.name}'s "
                   f"reference architecture ({timed.backend}){'' if derived is None else f'; {derived}'}; "
                   f"predictions add {predictor.task_head_offset_ms:+.3g} ms for it in place of the classifier head")
