"""The `mnas` strategy: MnasNet's reinforcement-learning search (Tan et al., CVPR 2019) on the
ask/tell seam. The LSTM controller (controller.py) samples one decision at a time; each sampled
architecture is a trial scored by the chosen evaluator; its reward

    ACC(m) * (LAT(m) / T) ** w        (soft: w = -0.07 both sides; hard: w = 0 below T, -1 above)

times (MEM(m) / M) ** w likewise when a memory budget M is given, trains the controller every
`--controller-batch` trials (PPO or REINFORCE). ACC is top-1 / 100; a failed trial or one
rejected over a budget (never evaluated) earns 0. The state is a function of the tells: a resumed
run replays them into a fresh controller of the same seed and reaches the same weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from ..core.arch import Arch
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from .base import TrialStrategy
from ..options import Options, option
from .controller import ControllerConfig, PolicyTrainer

REWARDS = ("soft", "hard")
CURVE = "controller.json"
#: the reward's flags, declared by mnas and enas alike
REWARD_HELP = "mnas, enas: soft (ACC*(LAT/T)^w both sides; default) or hard (w=0 below T, -1 above)"
REWARD_EXPONENT_HELP = "mnas, enas: w of the soft reward (default -0.07)"


def mnas_reward(acc: float, ratios: dict[str, float], kind: str = "soft", w: float = -0.07) -> float:
    """MnasNet's reward of accuracy `acc` given each budgeted value / its budget in `ratios`."""
    if kind not in REWARDS:
        raise HwnasError(f"--reward must be one of {', '.join(REWARDS)}, got {kind!r}")
    reward = acc
    for ratio in ratios.values():
        exponent = w if kind == "soft" else (0.0 if ratio <= 1.0 else -1.0)
        reward *= ratio ** exponent
    return reward


def trial_reward(trial, kind: str, w: float) -> float:
    """A trial's reward: 0 unless evaluated; the latency and memory ratios come from its violations."""
    if trial.state != "complete" or trial.top1 is None:
        return 0.0
    ratios = {k: 1.0 + v for k, v in trial.violations.items() if k in ("latency", "memory")}
    return mnas_reward(trial.top1 / 100.0, ratios, kind, w)


class ControllerSearch:
    """What mnas and enas share: the controller's flags, config and the decisions it samples."""

    def make_trainer(self, space, seed: int) -> PolicyTrainer:
        self.decisions = list(space.decisions)
        return PolicyTrainer([len(d.choices) for d in self.decisions], self.controller_config, seed)

    def to_arch(self, space, indices: list[int]) -> Arch:
        return Arch.create(space, {d.name: d.choices[i] for d, i in zip(self.decisions, indices)})


@dataclass(frozen=True)
class MnasOptions(Options):
    title = "mnas strategy"
    reward: str = option("soft", "--reward", REWARD_HELP, choices=REWARDS)
    w: float = option(-0.07, "--reward-exponent", REWARD_EXPONENT_HELP, type=float)

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise HwnasError(f"--reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if not self.w < 0:
            raise HwnasError(f"--reward-exponent must be < 0 (MnasNet: -0.07), got {self.w}")


class MnasStrategy(ControllerSearch, TrialStrategy):
    name = "mnas"
    records = (ControllerConfig, MnasOptions)

    def __init__(self, controller: ControllerConfig = ControllerConfig(), options: MnasOptions = MnasOptions(),
                 **changes):
        """`changes`: fields of `options` to replace (`MnasStrategy(reward="hard")`)."""
        self.options = dataclasses.replace(options, **changes)
        self.controller_config, self.reward, self.w = controller, self.options.reward, self.options.w

    def settings(self) -> dict:
        return {"controller": asdict(self.controller_config), "reward": self.reward, "w": self.w}

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.trainer = self.make_trainer(space, seed)
        self.asked: list[tuple[str, list[int], float]] = []  # (hash, indices, log-prob) not yet told
        self.batch: list[tuple[list[int], float, float]] = []  # (indices, log-prob, reward) told

    def ask(self) -> Arch:
        indices, log_prob = self.trainer.controller.sample()
        arch = self.to_arch(self.space, indices)
        self.asked.append((arch.hash, indices, log_prob))
        return arch

    def tell(self, trial) -> None:
        position = next(i for i, (h, _, _) in enumerate(self.asked) if h == trial.arch.hash)
        _, indices, log_prob = self.asked.pop(position)
        self.batch.append((indices, log_prob, trial_reward(trial, self.reward, self.w)))
        if len(self.batch) >= self.controller_config.batch:
            actions, old, rewards = zip(*self.batch)
            point = self.trainer.update(list(actions), list(old), list(rewards))
            self.batch = []
            point["trials"] = trial.number + 1
            atomic_write_json(self.run_dir / CURVE, {"strategy": self.name, "settings": self.settings(),
                                                     "curve": self.trainer.curve})
