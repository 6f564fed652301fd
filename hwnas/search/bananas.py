"""The `bananas` strategy: Bayesian optimisation with a neural predictor (White, Neiswanger & Savani,
"BANANAS", AAAI 2021), on the ask/tell seam.

The first `init` proposals are uniform samples. After that, each round fits an ensemble of small
MLPs on every evaluated trial (architecture encoded by encodings.py: the path encoding on a cell,
one-hot per decision on a chain), makes `candidates` new architectures by mutating the best
trials so far (one or two decisions changed; a few uniform samples keep it exploring), and
proposes the `per_round` candidates that rank highest by independent Thompson sampling: one draw
per candidate from a normal with the ensemble's mean and spread. No architecture is proposed
twice (nor the same network under another name, see encodings.canonical); under budgets in reject
mode, only candidates within them are made and ranked (the loop's `feasible`), so the acquisition
is maximised over the feasible set and no round is spent on proposals the loop would reject. The
state is a function of the seed and the tells (a resumed run replays them).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..core.arch import Arch
from ..errors import HwnasError
from ..options import Options, option
from .base import TrialStrategy
from .encodings import Encoder, canonical
from .evolution import mutate


class MLPEnsemble:
    """`members` MLPs trained at once as batched matrices (one set of weights per member, each
    from its own initialisation and its own shuffled bootstrap of the data)."""

    def __init__(self, members: int = 5, hidden: int = 32, layers: int = 3, epochs: int = 100, lr: float = 0.01):
        self.members, self.hidden, self.layers, self.epochs, self.lr = members, hidden, layers, epochs, lr

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int):
        """Train on (x, y); returns `predict(queries) -> (mean, std)` of the ensemble."""
        generator = torch.Generator().manual_seed(seed)
        mean, scale = float(y.mean()), float(y.std()) or 1.0
        xt = torch.from_numpy(x).float()
        yt = torch.from_numpy((y - mean) / scale).float()
        sizes = [x.shape[1]] + [self.hidden] * self.layers + [1]
        shapes = [shape for n_in, n_out in zip(sizes, sizes[1:])
                  for shape in ((self.members, n_in, n_out), (self.members, 1, n_out))]
        numels = [math.prod(s) for s in shapes]

        def views(tensor):  # every weight of every member, as a view of one flat tensor
            return [w.view(shape) for w, shape in zip(tensor.split(numels), shapes)]

        # one flat tensor: one Adam update per step, not one per layer
        flat = torch.zeros(sum(numels))
        weights = flat.split(numels)
        for i in range(0, len(shapes), 2):  # Glorot-uniform weights, zero biases
            n_in, n_out = shapes[i][1:]
            bound = (6.0 / (n_in + n_out)) ** 0.5
            weights[i].copy_((torch.rand(numels[i], generator=generator) * 2 - 1) * bound)
        flat.requires_grad_()
        optimiser = torch.optim.Adam([flat], lr=self.lr)
        # each member sees its own bootstrap sample of the trials
        boot = torch.randint(0, len(x), (self.members, len(x)), generator=generator)
        xb, yb = xt[boot], yt[boot]
        for _ in range(self.epochs):
            optimiser.zero_grad()
            loss = ((self._forward(views(flat), xb).squeeze(-1) - yb) ** 2).mean()
            loss.backward()
            optimiser.step()
        weights = views(flat.detach())

        def predict(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                q = torch.from_numpy(queries).float().expand(self.members, -1, -1)
                out = self._forward(weights, q).squeeze(-1).numpy() * scale + mean
            return out.mean(axis=0), out.std(axis=0)

        return predict

    @staticmethod
    def _forward(weights, x):
        for i in range(0, len(weights), 2):
            x = torch.baddbmm(weights[i + 1], x, weights[i])
            if i + 2 < len(weights):
                x = torch.relu(x)
        return x


@dataclass(frozen=True)
class BananasOptions(Options):
    title = "bananas strategy"
    init: int = option(10, "--bananas-init", "bananas: uniform samples before the predictor is used (default 10)",
                       type=int)
    candidates: int = option(100, "--bananas-candidates", "bananas: mutated candidates ranked per round (default 100)",
                             type=int)
    per_round: int = option(10, "--bananas-per-round", "bananas: proposals per round, i.e. per predictor fit "
                                                       "(default 10)", type=int)

    def __post_init__(self):
        if self.init < 2 or self.candidates < 1 or not 1 <= self.per_round <= self.candidates:
            raise HwnasError(f"bananas needs --bananas-init >= 2, --bananas-candidates >= 1 and --bananas-per-round "
                             f"in 1..candidates, got {self.init}, {self.candidates} and {self.per_round}")


class BananasStrategy(TrialStrategy):
    name = "bananas"

    records = (BananasOptions,)

    def __init__(self, options: BananasOptions = BananasOptions(), ensemble: MLPEnsemble | None = None,
                 mutate_top: int = 3, explore: float = 0.1, **changes):
        """`changes`: fields of `options` to replace (`BananasStrategy(init=4, candidates=20)`)."""
        self.options = dataclasses.replace(options, **changes)
        self.init, self.candidates, self.per_round = self.options.init, self.options.candidates, self.options.per_round
        self.ensemble = ensemble or MLPEnsemble()
        self.mutate_top, self.explore = mutate_top, explore

    def settings(self) -> dict:
        e = self.ensemble
        return {"init": self.init, "candidates": self.candidates, "per_round": self.per_round,
                "mutate_top": self.mutate_top, "explore": self.explore,
                "ensemble": {"members": e.members, "hidden": e.hidden, "layers": e.layers, "epochs": e.epochs,
                             "lr": e.lr}}

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.rng = random.Random(seed)
        self.encoder = Encoder(space)
        self.proposed: set[str] = set()
        self.queue: list[Arch] = []
        self.scored: list[tuple[Arch, float]] = []
        self.rounds = 0
        self.model = None  # (trials it was fitted on, its predict function)

    def ask(self) -> Arch:
        if not self.queue:
            self.queue = self._round() if len(self.scored) >= self.init and self.proposed else []
        arch = self.queue.pop(0) if self.queue else self._fresh_uniform()
        self.proposed.add(self._key(arch))
        return arch

    def tell(self, trial) -> None:
        if trial.state == "complete" and trial.objective is not None:
            self.scored.append((trial.arch, float(trial.objective)))

    # --- a round: fit, make candidates, rank them -------------------------------------------
    def _round(self) -> list[Arch]:
        """The next proposals; the ensemble is refitted only when a trial was scored since the last
        fit (proposals rejected over a budget are not evaluated: they bring nothing to learn)."""
        self.rounds += 1
        pool = self._candidates()
        if not pool:
            return []
        if self.model is None or self.model[0] != len(self.scored):
            x = self.encoder.encode_many([a for a, _ in self.scored])
            y = np.array([s for _, s in self.scored], dtype=np.float64)
            self.model = (len(self.scored), self.ensemble.fit(x, y, seed=self.seed * 1_000_003 + self.rounds))
        mean, std = self.model[1](self.encoder.encode_many(pool))
        draws = np.random.default_rng([self.seed, self.rounds]).normal(mean, std)  # independent Thompson sampling
        order = np.argsort(-draws, kind="stable")
        return [pool[i] for i in order[:self.per_round]]

    def _candidates(self) -> list[Arch]:
        """Mutations (1 or 2 decisions changed) of the best trials so far, and a share of uniform
        samples; none proposed before, none twice, none over a budget (when the loop says)."""
        best = [a for a, _ in sorted(self.scored, key=lambda t: -t[1])[:self.mutate_top]]
        pool: dict[str, Arch] = {}
        n_uniform = int(round(self.explore * self.candidates))
        for attempt in range(20 * self.candidates):
            if len(pool) >= self.candidates:
                break
            if len(pool) < self.candidates - n_uniform:
                parent = best[attempt % len(best)]
                arch = mutate(self.space, parent, self.rng, 1 if self.rng.random() < 0.5 else 2)
            else:
                arch = self._uniform()
            key = self._key(arch)
            if key not in self.proposed and key not in pool and (self.feasible is None or self.feasible(arch)):
                pool[key] = arch
        return list(pool.values())

    def _key(self, arch: Arch) -> str:
        """Architectures that are the same network (a cell's dead edges aside) share a key."""
        return canonical(arch, self.space).hash

    def _uniform(self) -> Arch:
        """A uniform sample; within the budgets when the loop says which are (at most 1,000 draws)."""
        return self.sample_feasible(self.rng)

    def _fresh_uniform(self) -> Arch:
        """A uniform sample not proposed before (a repeat only once the space is nearly exhausted)."""
        arch = self._uniform()
        for _ in range(100):
            if self._key(arch) not in self.proposed:
                break
            arch = self._uniform()
        return arch

