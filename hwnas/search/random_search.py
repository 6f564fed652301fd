"""The `random` strategy: uniform samples of the space, learning nothing from results. The
baseline every other strategy has to beat at equal cost (Li & Talwalkar, 2019)."""

from __future__ import annotations

import random

from ..core.arch import Arch
from .base import TrialStrategy


class RandomStrategy(TrialStrategy):
    name = "random"

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.rng = random.Random(seed)

    def ask(self) -> Arch:
        return Arch.create(self.space, self.space.sample(self.rng))

    def tell(self, trial) -> None:
        pass
