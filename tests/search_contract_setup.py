"""The contract suite's set-up, shared by the tests and by the process they kill -9: every strategy
on the tiny space (darts, which searches cell spaces, on nb201 with a 4-channel supernet), budgets on latency, peak activation memory and parameters, a cheap evaluator
(deterministic synthetic scores for trial strategies; fbnet trains its own tiny supernet).

Run as a script (`python search_contract_setup.py NAME RUN_DIR DELAY_S`) it runs one search.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402
from hwnas.latency_tables.predictor import LatencyPredictor  # noqa: E402
from hwnas.search import (BananasStrategy, DARTSConfig, DARTSStrategy, ENASConfig, ENASStrategy,  # noqa: E402
                          EvolutionStrategy, FBNetConfig, FBNetStrategy, LemonadeStrategy, LocalSearchStrategy,
                          LoopConfig, MnasStrategy, NashStrategy, NSGA2Strategy,
                          RandomStrategy, SearchProblem, SyntheticEvaluator, TPEStrategy, run_search)
from hwnas.search.bananas import MLPEnsemble  # noqa: E402
from hwnas.search.budget import latency_range_ms  # noqa: E402
from hwnas.search.controller import ControllerConfig  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from lut_fixtures import mac_table  # noqa: E402

NAMES = ("fbnet", "random", "evolution", "tpe", "nsga2", "mnas", "enas", "bananas", "local", "darts", "nash",
         "lemonade")
SUPERNET = ("fbnet", "enas", "darts")  # strategies that train their own supernet (no evaluator, latency budget only)
TRIALS = 12


def make_strategy(name: str):
    return {"fbnet": lambda: FBNetStrategy(FBNetConfig(epochs=3, batch_size=32, max_batches=3, top_k=1,
                                                       warmup_epochs=0)),
            "random": RandomStrategy, "evolution": lambda: EvolutionStrategy(population=4, sample_size=2),
            "tpe": lambda: TPEStrategy(startup_trials=4), "nsga2": lambda: NSGA2Strategy(population=4),
            "mnas": lambda: MnasStrategy(ControllerConfig(batch=3, hidden=16)),
            "bananas": lambda: BananasStrategy(init=4, candidates=20, per_round=3, ensemble=MLPEnsemble(epochs=20)),
            "local": lambda: LocalSearchStrategy(init=3),
            "darts": lambda: DARTSStrategy(DARTSConfig(epochs=3, batch_size=16, max_batches=2, channels=4, cells=1)),
            "nash": lambda: NashStrategy(children=3, morphisms=2),
            "lemonade": lambda: LemonadeStrategy(init=2, children=12, accept=3),
            "enas": lambda: ENASStrategy(ENASConfig(epochs=6, batch_size=32, max_batches=3, controller_steps=2,
                                                    final_samples=4, score_batches=1),
                                         ControllerConfig(batch=3, hidden=16))}[name]()


def memory_table(space):
    """mac_table (latency proportional to MACs) plus each op's parameter and activation bytes (fp32)."""
    import dataclasses
    import math

    from hwnas.latency_tables import OpKey
    from hwnas.profilers.session import op_module

    table = mac_table(space)
    for op in space.all_ops():
        key = OpKey.for_op(op, space.build_config.name)
        params = sum(p.numel() for p in op_module(op, space.build_config).parameters())
        out_h, out_w = op.out_hw()
        table.put(key, dataclasses.replace(table.get(key), param_bytes=4 * params,
                                           input_bytes=4 * math.prod(op.input_shape()),
                                           output_bytes=4 * op.out_chs() * out_h * out_w))
    return table


def tiny_setup(space_name: str = "tiny"):
    space = get_space(space_name)
    predictor = LatencyPredictor(memory_table(space), space)
    return space, predictor, load_data("digits", resolution=32, seed=0)


def setup_for(name: str):
    """The space, latency model and data strategy `name` is tested on (nb201 for darts)."""
    return tiny_setup("nb201" if name == "darts" else "tiny")


def quantile_budgets(space, predictor, q: float = 0.75) -> tuple[int, int]:
    """Peak activation bytes and parameters that a share `q` of random architectures meets."""
    rng = random.Random(0)
    preds = [predictor.predict(Arch.create(space, space.sample(rng))) for _ in range(200)]
    peaks = sorted(p.peak_activation_bytes for p in preds)
    params = sorted(p.params for p in preds)
    return peaks[int(q * (len(preds) - 1))], params[int(q * (len(preds) - 1))]


def make_problem(name, space, predictor, data, run_dir, resume=False, objectives=("acc",), seed=0):
    low, high = latency_range_ms(predictor)
    latency = low + 0.5 * (high - low)
    memory, params = quantile_budgets(space, predictor) if name not in SUPERNET else (None, None)
    return SearchProblem(space, predictor, latency, data, Path(run_dir), seed=seed, resume=resume, progress=False,
                         memory_budget=memory, params_budget=params, objectives=objectives)


def run(name, run_dir, resume=False, delay_s=0.0, objectives=("acc",), fail_fraction=0.15, stop_after=None):
    space, predictor, data = setup_for(name)
    problem = make_problem(name, space, predictor, data, run_dir, resume, objectives)
    evaluator = None if name in SUPERNET else SyntheticEvaluator(fail_fraction=fail_fraction, delay_s=delay_s)
    return run_search(problem, make_strategy(name), evaluator, LoopConfig(trials=TRIALS), stop_after=stop_after)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    run(sys.argv[1], sys.argv[2], delay_s=float(sys.argv[3]))
