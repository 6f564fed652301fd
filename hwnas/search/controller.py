"""The reinforcement-learning controller of the `mnas` and `enas` strategies: an LSTM policy over
the space's decisions in order (MnasNet, Tan et al. 2019; ENAS, Pham et al. 2018), and its policy
gradient updates (PPO's clipped objective or REINFORCE with a moving-average baseline).

Each step feeds the embedding of the previous step's choice (a learned start token first) to the
LSTM and samples the decision from softmax(c * tanh(logits / temperature)) (ENAS's logit
clipping). Everything random draws from the controller's own `torch.Generator`, seeded once: the
same seed and the same rewards in the same order give the same weights, optimiser state and
samples (that is how a search resumes: its tells are replayed into a fresh controller).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import HwnasError
from ..options import Options, option

UPDATES = ("ppo", "reinforce")


@dataclass(frozen=True)
class ControllerConfig(Options):
    """Controller size and training. MnasNet's paper gives no size; NNI's PPO and ENAS's CIFAR
    controller use 64 hidden units, 1 layer; ENAS clips logits with tanh at 1.5 to 2.5 and adds
    an entropy bonus of 1e-4. `batch`: sampled architectures per policy update. `lr` is higher
    than ENAS's 3.5e-4 because a hardware-aware search here runs tens, not thousands, of updates."""

    title = "RL controller (mnas, enas)"
    hidden: int = option(64, "--controller-hidden", "LSTM hidden units (default 64)", type=int)
    layers: int = option(1, "--controller-layers", "LSTM layers (default 1)", type=int)
    temperature: float = option(1.0, "--controller-temperature", "softmax temperature (default 1)", type=float)
    tanh_constant: float | None = option(2.5, "--tanh-constant", "logit clipping c*tanh(l) (default 2.5)", type=float)
    entropy_weight: float = option(1e-4, "--entropy-weight", "entropy bonus (default 1e-4)", type=float)
    update: str = option("ppo", "--policy-update", "mnas, enas: ppo (clipped objective, --ppo-epochs per batch; "
                                                   "default) or reinforce (moving-average baseline)", choices=UPDATES)
    batch: int = option(8, "--controller-batch", "architectures per policy update (default 8)", type=int)
    lr: float = option(5e-3, "--controller-lr", "Adam learning rate (default 5e-3)", type=float)
    ppo_epochs: int = option(4, "--ppo-epochs", "ppo: epochs over each batch (default 4)", type=int)
    ppo_clip: float = option(0.2, "--ppo-clip", "ppo: ratio clipping epsilon (default 0.2)", type=float)
    baseline_decay: float = option(0.99, "--baseline-decay", "moving-average baseline decay (default 0.99)",
                                   type=float)

    def __post_init__(self):
        if self.update not in UPDATES:
            raise HwnasError(f"--policy-update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.hidden < 1 or self.layers < 1 or self.batch < 1 or self.ppo_epochs < 1:
            raise HwnasError("--controller-hidden, --controller-layers, --controller-batch and --ppo-epochs "
                             "must be >= 1")
        if not self.temperature > 0 or not self.lr > 0 or not 0 < self.ppo_clip < 1 or not 0 <= self.baseline_decay < 1:
            raise HwnasError("--controller-temperature and --controller-lr must be > 0, --ppo-clip in (0, 1) and "
                             "--baseline-decay in [0, 1)")
        if self.tanh_constant is not None and not self.tanh_constant > 0:
            raise HwnasError(f"--tanh-constant must be > 0, got {self.tanh_constant}")


class Controller(nn.Module):
    """LSTM policy: `sizes[i]` choices for decision i, sampled in order."""

    def __init__(self, sizes: list[int], config: ControllerConfig, seed: int):
        super().__init__()
        self.sizes, self.config = list(sizes), config
        h = config.hidden
        self.start = nn.Parameter(torch.zeros(1, h))
        self.lstm = nn.LSTM(h, h, config.layers)
        self.heads = nn.ModuleList(nn.Linear(h, n) for n in sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(n, h) for n in sizes)
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # ENAS: uniform(-0.1, 0.1), from the controller's own generator
            for p in self.parameters():
                p.copy_(torch.rand(p.shape, generator=self.generator) * 0.2 - 0.1)

    def _logits(self, out: torch.Tensor, step: int) -> torch.Tensor:
        logits = self.heads[step](out) / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def forward(self, actions: torch.Tensor | None = None, n: int = 1):
        """Run the policy on `n` sequences, sampling them (`actions` None) or scoring the given
        ones ([n, decisions] long). Returns (actions, log-prob [n], entropy [n]) of each whole
        sequence (sums over decisions)."""
        if actions is not None:
            n = actions.shape[0]
        x = self.start.expand(n, -1)
        state, taken, log_prob, entropy = None, [], torch.zeros(n), torch.zeros(n)
        for step, size in enumerate(self.sizes):
            out, state = self.lstm(x.unsqueeze(0), state)
            logp = torch.log_softmax(self._logits(out[0], step), dim=-1)
            if actions is None:
                a = torch.multinomial(logp.detach().exp(), 1, generator=self.generator).squeeze(1)
            else:
                a = actions[:, step]
            taken.append(a)
            log_prob = log_prob + logp.gather(1, a.unsqueeze(1)).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            x = self.embeddings[step](a)
        return torch.stack(taken, 1), log_prob, entropy

    @torch.no_grad()
    def sample(self) -> tuple[list[int], float]:
        """One sequence of choice indices and its log-probability."""
        actions, log_prob, _ = self(n=1)
        return actions[0].tolist(), float(log_prob[0])

    @torch.no_grad()
    def path_log_probs(self, indices: list[int]) -> list[list[float]]:
        """Each decision's log-distribution along the path `indices` (given the choices before it)."""
        x, state, rows = self.start, None, []
        for step, index in enumerate(indices):
            out, state = self.lstm(x.unsqueeze(0), state)
            rows.append(torch.log_softmax(self._logits(out[0], step), -1)[0].tolist())
            x = self.embeddings[step](torch.tensor([index]))
        return rows

    def choice_probs(self, step: int, prefix: list[int]) -> torch.Tensor:
        """The distribution of decision `step` after the choices `prefix` (for tests and reports)."""
        return torch.tensor(self.path_log_probs(list(prefix[:step]) + [0])[step]).exp()


def ppo_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
             clip: float) -> torch.Tensor:
    """PPO's clipped surrogate, negated for minimisation: -mean(min(r A, clip(r, 1-e, 1+e) A))."""
    ratio = torch.exp(new_log_prob - old_log_prob)
    return -torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage).mean()


def moving_baseline(baseline: float | None, rewards: list[float], decay: float) -> float:
    """ENAS's baseline after `rewards` in order: b <- decay * b + (1 - decay) * r (the first
    reward ever starts it)."""
    for r in rewards:
        baseline = r if baseline is None else decay * baseline + (1 - decay) * r
    return baseline


class PolicyTrainer:
    """A controller, its Adam optimiser and baseline: `update(actions, old_log_probs, rewards)`
    takes one batch; the advantage of a sample is its reward minus the baseline before the batch."""

    def __init__(self, sizes: list[int], config: ControllerConfig, seed: int):
        self.config = config
        self.controller = Controller(sizes, config, seed)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=config.lr)
        self.baseline: float | None = None
        self.curve: list[dict] = []

    def update(self, actions: list[list[int]], old_log_probs: list[float], rewards: list[float]) -> dict:
        cfg = self.config
        acts = torch.tensor(actions, dtype=torch.long)
        old = torch.tensor(old_log_probs)
        before = rewards[0] if self.baseline is None else self.baseline
        advantage = torch.tensor(rewards) - before
        steps = cfg.ppo_epochs if cfg.update == "ppo" else 1
        for _ in range(steps):
            _, log_prob, entropy = self.controller(acts)
            if cfg.update == "ppo":
                loss = ppo_loss(log_prob, old, advantage, cfg.ppo_clip)
            else:
                loss = -(advantage * log_prob).mean()
            loss = loss - cfg.entropy_weight * entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.baseline = moving_baseline(self.baseline, rewards, cfg.baseline_decay)
        point = {"update": len(self.curve) + 1, "mean_reward": sum(rewards) / len(rewards),
                 "entropy": entropy.mean().item(), "baseline": self.baseline, "loss": loss.item()}
        self.curve.append(point)
        return point
