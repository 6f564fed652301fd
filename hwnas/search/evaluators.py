"""Candidate evaluators: how a strategy that samples architectures scores them."""

from __future__ import annotations

from ..arch import Arch
from ..data import ImageData, split_train
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
        # every candidate gets the same seed: scores then do not depend on the order of the calls
        result = train_arch(arch, self.data, self.config)
        self.calls += 1
        return result.top1


def holdout_evaluator(data: ImageData, holdout: float, seed: int, config: TrainConfig) -> ShortTrainEvaluator:
    """A ShortTrainEvaluator that trains on `1 - holdout` of `data.train` and scores on the rest
    (split by `seed`), so that selecting an architecture never sees `data.val`."""
    fit, held_out = split_train(data.train, holdout, seed)
    return ShortTrainEvaluator(ImageData(f"{data.name}-holdout", fit, held_out, data.classes, data.resolution), config)
