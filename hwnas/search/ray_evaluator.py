"""Candidate evaluation as Ray tasks (`hwnas search --ray`).

`RayEvaluator` wraps any evaluator of the search seam (scratch, shared, synthetic). Its one-time
set-up (`prepare`, e.g. training the SPOS supernet) runs here, once; then the evaluator is put
into Ray's object store once and every request of a batch becomes a plain Ray task with its own
CPU/GPU resources. Outcomes are taken as they finish (`ray.wait`), so the trial loop appends each
to the history at once. A worker, node or object lost under a task is a system failure: Ray
re-runs the task up to `retries` times (`max_retries`); after that the trial is recorded as
failed and the search goes on. An exception in the evaluation itself is never retried: it is
a failed trial already (the evaluator catches it), or, for an HwnasError (a bad set-up, not a
bad candidate), the end of the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from ..errors import HwnasError
from ..options import Options, option
from .evaluators import EvalOutcome, EvalRequest, Evaluator, evaluate_request
from ..scaleout.ray_runtime import LOCAL, cluster_slots, import_ray, raise_hwnas_cause


@dataclass(frozen=True)
class RayOptions(Options):
    """Every Ray option of a search, declared once: where to connect (`address`, None: no Ray;
    see ray_runtime.connected), the resources of one evaluation task and its re-runs after system
    failures."""

    title = "Ray (trial strategies: each evaluation a Ray task; see README 'Scale-out')"
    address: str | None = option(
        None, "--ray", nargs="?", const=LOCAL, metavar="ADDRESS", help=(
            "evaluate candidates as Ray tasks: alone, on RAY_ADDRESS, else the cluster `ray start` started on "
            "this machine, else a new local Ray instance; 'auto': the cluster `ray start` started here (an "
            "error if none); HOST:PORT: that cluster's head (install: pip install -r requirements-ray.txt)"))
    cpus: float = option(1.0, "--ray-cpus-per-trial", "CPUs each evaluation task reserves (default 1)", type=float)
    gpus: float = option(0.0, "--ray-gpus-per-trial", "GPUs each evaluation task reserves (default 0; fractions "
                                                      "share a GPU)", type=float)
    retries: int = option(2, "--ray-retries", "re-runs of a task after a system failure (its worker or node died) "
                                              "before the trial is recorded failed (default 2); an error of the "
                                              "evaluation itself is never re-run", type=int)

    def __post_init__(self):
        if not self.cpus >= 0 or not self.gpus >= 0 or self.cpus + self.gpus <= 0:
            raise HwnasError(f"--ray-cpus-per-trial and --ray-gpus-per-trial must be >= 0 and not both 0, got "
                             f"{self.cpus} and {self.gpus}")
        if self.retries < 0:
            raise HwnasError(f"--ray-retries must be >= 0, got {self.retries}")

    def to_dict(self) -> dict:
        """The task options (the address is where, not how, a trial runs)."""
        return {"cpus_per_trial": self.cpus, "gpus_per_trial": self.gpus, "retries": self.retries}


#: the name the task options had before they held the address too
RayTaskOptions = RayOptions


def task_slots(ray, options: RayOptions) -> int:
    """How many evaluation tasks the cluster runs at once: each node's CPUs (GPUs) over a task's share."""
    count = cluster_slots(ray, options.cpus, options.gpus)
    if count < 1:
        total = ray.cluster_resources()
        raise HwnasError(f"the Ray cluster ({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs) cannot fit one "
                         f"trial of {options.cpus:g} CPUs and {options.gpus:g} GPUs; lower --ray-cpus-per-trial / "
                         "--ray-gpus-per-trial or add nodes")
    return count


#: a worker process's evaluators, by object id: unpickled (and prepared) once per worker, not per task
_WORKER_EVALUATORS: dict[str, Evaluator] = {}


def _evaluate_on_worker(boxed_ref: list, request: EvalRequest) -> EvalOutcome:
    ray = import_ray()
    ref = boxed_ref[0]  # boxed so that Ray passes the reference, not the object, and the cache works
    key = ref.hex()
    evaluator = _WORKER_EVALUATORS.get(key)
    if evaluator is None:
        evaluator = _WORKER_EVALUATORS[key] = ray.get(ref)
        evaluator.prepare(False)
    return evaluate_request(evaluator, request)


class RayEvaluator(Evaluator):
    """`inner`'s scores, computed by Ray tasks; see the module doc. Needs Ray initialised
    (`hwnas.scaleout.ray_runtime.connected`) before `prepare`."""

    def __init__(self, inner: Evaluator, options: RayOptions = RayOptions()):
        self.inner, self.options = inner, options
        self.name = inner.name
        self.inherits = inner.inherits  # weights files travel by path: the workers must share the run folder
        self._ref = None
        self._task = None

    def prepare(self, progress: bool = False) -> None:
        ray = import_ray()
        if not ray.is_initialized():
            raise HwnasError("RayEvaluator needs a Ray connection: run it inside hwnas.scaleout.ray_runtime.connected()")
        self.inner.prepare(progress)  # e.g. the SPOS supernet: trained once, here, before it is shipped
        if self._ref is None:
            self._ref = ray.put(self.inner)
            self._task = ray.remote(_evaluate_on_worker).options(
                num_cpus=self.options.cpus, num_gpus=self.options.gpus, max_retries=self.options.retries,
                retry_exceptions=False)

    def score(self, arch, seed: int) -> float:
        outcome = next(iter(self.evaluate_batch([EvalRequest(0, arch, seed)])))
        if outcome.metrics is None:
            raise RuntimeError(outcome.error)
        return outcome.metrics["top1"]

    def evaluate_batch(self, requests: Iterable[EvalRequest]) -> Iterator[EvalOutcome]:
        """Every request as a task at once; outcomes in the order the tasks finish."""
        ray = import_ray()
        if self._task is None:
            self.prepare()
        pending = {self._task.remote([self._ref], request): request for request in requests}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield self._outcome(ray, ref, pending.pop(ref))
        finally:  # the caller stopped early (an error, a kill of the loop): no task is left running
            for ref in pending:
                ray.cancel(ref, force=True)

    def _outcome(self, ray, ref, request: EvalRequest) -> EvalOutcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised by the evaluation itself: not a system failure
            raise_hwnas_cause(exc)
            raise
        except ray.exceptions.RayError as exc:  # worker, node or object lost, after Ray's re-runs
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            return EvalOutcome(request.number, None, f"system failure after {self.options.retries} re-run(s): "
                               f"{type(exc).__name__}: {first_line}", 0.0)

    def describe(self) -> dict:
        """The inner evaluator's: where a candidate is evaluated does not change its score (a run
        started without Ray may be resumed with it, and the other way round)."""
        return self.inner.describe()

    def result_details(self, arch) -> dict:
        return self.inner.result_details(arch)
