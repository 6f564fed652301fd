"""Candidate evaluators: how a strategy that samples architectures scores them."""

from __future__ import annotations

from dataclasses import replace

from ..arch import Arch
from ..data import ImageData
from ..training import TrainConfig, train_arch
from .base import Evaluator


class ShortTrainEvaluator(Evaluator):
    """Top-1 (%) on `data.val` after a short from-scratch training on `data.train`.

    Give it a held-out part of the training set as `data.val` when the score selects an
    architecture, so that the val split stays unseen by the search.
    """

    def __init__(self, data: ImageData, config: TrainConfig):
        self.data = data
        self.config = config
        self.calls = 0

    def evaluate(self, arch: Arch) -> float:
        # a different seed per call would make scores depend on call order; the same seed is fairer
        result = train_arch(arch, self.data, replace(self.config))
        self.calls += 1
        return result.top1
