"""The `nb201` evaluator: a candidate's score is looked up in NAS-Bench-201, not trained.

One query is one trial. The score a strategy sees is the benchmark's search signal (CIFAR-10: the
12-epoch validation accuracy on the train/valid split, as in the NB201 paper's simulations); the
figure a search reports is the result's 200-epoch test accuracy, which the strategy never sees and
which `result_details` adds to result.json under `benchmark`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.arch import Arch
from ..errors import HwnasError
from ..options import Options, option
from ..tabular.nb201 import CSV, ENV, SIGNALS, NB201Table
from .evaluators import TITLE, Evaluator

#: NB201's class count per dataset (the space's classifier)
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}
#: and its input resolution
RESOLUTION = {"cifar10": 32, "cifar100": 32, "imagenet16-120": 16}


@dataclass(frozen=True)
class TabularOptions(Options):
    """`nb201`: which of NAS-Bench-201's datasets is looked up, and where its table is."""

    title = TITLE
    dataset: str = option("cifar10", "--benchmark-dataset", "nb201: the dataset whose accuracies are looked up "
                                                            "(default cifar10): the search sees the 12-epoch "
                                                            "validation accuracy, the result reports the 200-epoch "
                                                            "test accuracy", choices=sorted(SIGNALS))
    root: str | None = option(None, "--benchmark-data", f"nb201: the folder holding {CSV} (default ${ENV}, else "
                                                        "../shared/data/nasbench)", metavar="DIR")


class TabularEvaluator(Evaluator):
    """Scores an NB201 architecture by the benchmark's search signal on `dataset`."""

    name = "nb201"

    def __init__(self, dataset: str = "cifar10", root=None):
        if dataset not in SIGNALS:
            raise HwnasError(f"--benchmark-dataset {dataset!r} is not in NAS-Bench-201; choose one of "
                             f"{', '.join(SIGNALS)}")
        self.signal = SIGNALS[dataset]
        self.root = root
        self.table = NB201Table.load(root)  # refuses a missing table before the search starts

    @classmethod
    def from_options(cls, options: TabularOptions, problem=None) -> "TabularEvaluator":
        """`problem` is not needed: the benchmark fixes the space (and is looked up before it is made)."""
        return cls(options.dataset, options.root)

    def __getstate__(self):  # a Ray worker loads the table where it runs
        return {"signal": self.signal, "root": self.root}

    def __setstate__(self, state):
        self.signal, self.root = state["signal"], state["root"]
        self.table = NB201Table.load(self.root)

    def score(self, arch: Arch, seed: int) -> float:
        return self.table.value(arch, self.signal.search)

    def result_details(self, arch: Arch) -> dict:
        return {"benchmark": self.table.record(arch, self.signal)}

    def describe(self) -> dict:
        return {"evaluator": self.name, "dataset": self.signal.dataset, "signal": self.signal.search,
                "final": self.signal.final}
