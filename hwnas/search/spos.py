"""The `shared` evaluator: single-path one-shot weight sharing (SPOS, Guo et al. 2020).

A supernet holding every candidate of every layer is trained once, each batch along one path
drawn uniformly at random; a candidate is then scored with the weights it inherits, after its
batch-norm statistics are recalibrated on `calib_batches` training batches of `calib_batch_size`
(SPOS: 200 of 128). The supernet is checkpointed every epoch (resumable) and reused by any search
that gives the same file and settings; scores are cached by architecture hash beside it.

Layer-wise spaces use FBNet's supernet (hwnas.search.supernet); cell spaces (nb201, darts) a
single-path cell supernet (hwnas.search.cell_supernet), optionally a proxy of fewer, narrower cells
(`supernet_channels`, `supernet_cells`). `recalibrate=False` scores with the running batch-norm
statistics of the supernet's training instead (cheaper, usually a worse ranking).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.arch import Arch
from ..train.data import ImageData, make_loader
from ..errors import HwnasError
from ..options import Options, option, reads
from ..jsonio import atomic_write_json, read_json
from ..runs import RunError, load_checkpoint, restore_training, rng_state, save_checkpoint
from ..train import ddp
from ..core.spaces import LayerwiseSpace, SearchSpace, get_space
from ..core.spaces.darts import DartsSpace
from ..core.spaces.nb201 import NB201Space
from ..train.loop import evaluate, sgd_epoch, steps_per_epoch
from .cell_supernet import CellSupernet
from .evaluators import HOLDOUT_HELP, TITLE, Evaluator, check_holdout, holdout_data
from .supernet import Supernet

CHECKPOINT_FORMAT = "hwnas.spos-supernet"


@dataclass(frozen=True)
class SPOSConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 4e-5
    max_batches: int | None = None
    holdout: float = 0.2  # the share of the training set candidates are scored on
    split_seed: int = 0  # fixed, so the held-out part is the same for every search sharing the supernet
    calib_batches: int = 200
    calib_batch_size: int = 128
    score_batches: int | None = None  # cap on held-out batches (of 256) a score reads
    supernet_channels: int | None = None  # cell spaces: a proxy supernet's first-stage width (None: the space's)
    supernet_cells: int | None = None  # cell spaces: its cells (nb201: per stage; darts: in all) (None: the space's)
    recalibrate: bool = True  # False: score with the training's running BN statistics

    def __post_init__(self):
        if self.epochs < 1 or self.calib_batches < 1 or self.calib_batch_size < 2:
            raise HwnasError("--epochs and --calib-batches must be >= 1 and --calib-batch-size >= 2")
        if any(v is not None and v < 1 for v in (self.supernet_channels, self.supernet_cells)):
            raise HwnasError("--supernet-channels and --supernet-cells must be >= 1 (or left out: the space's own)")


def is_cell_space(space: SearchSpace) -> bool:
    return isinstance(space, (NB201Space, DartsSpace))


def make_supernet(space: SearchSpace, config: SPOSConfig) -> Supernet | CellSupernet:
    """The single-path supernet of a space: FBNet's for a layer-wise space, a cell supernet for nb201, darts."""
    if is_cell_space(space):
        return CellSupernet(space, config.supernet_channels, config.supernet_cells)
    return Supernet(space, "hard")


def path_indices(space: SearchSpace, arch: Arch) -> list[int]:
    """`arch` as a path through the space's supernet: its choice's index per decision."""
    choices = arch.choice_map
    return [d.choices.index(choices[d.name]) for d in space.decisions]


@dataclass(frozen=True)
class SharedOptions(Options):
    """`shared`: the SPOS supernet (trained `epochs` once, file `supernet`, default
    RUN_DIR/spos_supernet.pt) and how a candidate is scored with its weights."""

    title = TITLE
    epochs: int = reads("epochs", 10)
    batch_size: int = reads("batch_size", 64)
    max_batches: int | None = reads("max_batches", None)
    holdout: float = option(0.2, "--holdout", HOLDOUT_HELP, type=float)
    supernet: str | None = option(None, "--supernet", "shared: the SPOS supernet checkpoint; trained there when "
                                                      "absent, reused (and resumed) when present with the same "
                                                      "settings (default RUN_DIR/spos_supernet.pt)", metavar="FILE")
    calib_batches: int = option(200, "--calib-batches", "shared: batches that recalibrate batch norm per candidate "
                                                        "(SPOS: 200, the default)", type=int)
    calib_batch_size: int = option(128, "--calib-batch-size", "shared: their size (SPOS: 128, the default)", type=int)
    score_batches: int | None = option(None, "--score-batches", "shared: cap on held-out batches of 256 per score",
                                       type=int)
    supernet_channels: int | None = option(None, "--supernet-channels", "shared, cell spaces: train a proxy supernet "
                                           "this wide in its first stage (default: the space's width)", type=int)
    supernet_cells: int | None = option(None, "--supernet-cells", "shared, cell spaces: with this many cells "
                                        "(nb201: per stage; darts: in all; default: the space's)", type=int)

    def __post_init__(self):
        check_holdout(self.holdout)

    def spos(self) -> SPOSConfig:
        return SPOSConfig(epochs=self.epochs, batch_size=self.batch_size, max_batches=self.max_batches,
                          holdout=self.holdout, calib_batches=self.calib_batches,
                          calib_batch_size=self.calib_batch_size, score_batches=self.score_batches,
                          supernet_channels=self.supernet_channels, supernet_cells=self.supernet_cells)


class SharedEvaluator(Evaluator):
    """Scores with inherited supernet weights; `prepare` trains (or loads) the supernet."""

    name = "shared"

    def __init__(self, space: SearchSpace, data: ImageData, config: SPOSConfig, checkpoint: Path):
        if not isinstance(space, LayerwiseSpace) and not is_cell_space(space):
            raise HwnasError(f"space {space.name!r} is neither layer-wise nor a cell space; the shared evaluator needs "
                             f"one (e.g. fbnet, tiny, nb201, darts_small); use --evaluator scratch")
        if not is_cell_space(space) and (config.supernet_channels is not None or config.supernet_cells is not None):
            raise HwnasError("--supernet-channels/--supernet-cells shrink a cell space's supernet (nb201, darts); "
                             f"drop them for space {space.name!r}")
        self.space_name, self.resolution = space.name, space.resolution
        self.data = holdout_data(data, config.holdout, config.split_seed)
        self.config = config
        self.checkpoint = Path(checkpoint)
        self._net: Supernet | None = None
        self._scores: dict[str, float] | None = None
        self._shipped = False  # a pickled copy (a worker's): scores are not written to the cache file
        self._weights: dict | None = None  # the trained weights a pickled copy carries until it is prepared

    @classmethod
    def from_options(cls, options: SharedOptions, problem) -> "SharedEvaluator":
        path = Path(options.supernet) if options.supernet else Path(problem.run_dir) / "spos_supernet.pt"
        return cls(problem.space, problem.data, options.spos(), path)

    def __getstate__(self):
        """Picklable for workers (Ray tasks): a prepared evaluator travels with its trained weights,
        so a worker on another machine needs neither the checkpoint file nor a training of its own;
        a worker's scores are not written to the cache file (the run's history keeps them)."""
        return {**self.__dict__, "_net": None, "_scores": None, "_shipped": True,
                "_weights": self._net.state_dict() if self._net is not None else self._weights}

    @property
    def identity(self) -> dict:
        """What makes two supernets the same: space, data, training settings, held-out split."""
        cfg = asdict(self.config)
        for key in ("calib_batches", "calib_batch_size", "score_batches", "recalibrate"):
            cfg.pop(key)
        return {"space": self.space_name, "data": self.data.name, "num_classes": self.data.num_classes,
                "train_resolution": self.data.resolution, **cfg}

    @property
    def scores_path(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.stem + ".scores.json")

    def prepare(self, progress: bool = False) -> None:
        if self._net is None and self._weights is not None:  # shipped to a worker
            self._net = make_supernet(get_space(self.space_name, resolution=self.resolution,
                                                num_classes=self.data.num_classes), self.config)
            self._net.load_state_dict(self._weights)
            self._weights, self._scores = None, {}  # the net holds the weights now
            return
        if self._net is None:
            self._net = self._train_or_load(progress)
            stored = read_json(self.scores_path, "spos score cache") if self.scores_path.is_file() else {}
            self._scores = stored.get("scores", {}) if stored.get("settings") == self._score_settings() else {}

    def _train_or_load(self, progress: bool) -> Supernet:
        cfg = self.config
        torch.manual_seed(cfg.split_seed)
        space = get_space(self.space_name, resolution=self.resolution, num_classes=self.data.num_classes)
        net = make_supernet(space, self.config)
        opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay, nesterov=True)
        log, start, wall = [], 0, 0.0
        ddp.check_batch(cfg.batch_size)
        state = ddp.on_main(self._load_checkpoint)  # under torchrun: process 0's, broadcast
        if state is not None:
            log, start, wall = restore_training(state, {"supernet": net, "optimizer": opt})
        model = ddp.distributed(net, "forward_path")  # one path per batch, gradients averaged over processes
        steps = steps_per_epoch(len(self.data.train), cfg.batch_size, cfg.max_batches, drop_last=True)
        bar = tqdm(range(start, cfg.epochs), desc="spos supernet", unit="epoch", initial=start, total=cfg.epochs,
                   disable=not progress)
        for epoch in bar:
            t0 = time.perf_counter()
            rng = random.Random(cfg.split_seed * 1_000_003 + epoch)  # one uniform path per batch
            net.train()
            loader = make_loader(self.data.train, cfg.batch_size, shuffle=True, seed=cfg.split_seed, epoch=epoch,
                                 drop_last=True)
            loss, top1 = ddp.all_reduce_mean(*sgd_epoch(
                lambda x: model(x, self._random_path(net, rng)), F.cross_entropy, opt, ddp.shard_batches(loader), steps,
                cfg.lr, epoch, steps * cfg.epochs, f"spos {epoch + 1}", progress))
            wall += time.perf_counter() - t0
            log.append({"epoch": epoch + 1, "loss": loss, "train_top1": top1, "wall_s": round(wall, 3)})
            bar.set_postfix(loss=f"{loss:.3f}")
            if ddp.is_main():
                save_checkpoint(self.checkpoint, {"format": CHECKPOINT_FORMAT, "config": self.identity,
                                                  "epoch": epoch + 1, "supernet": net.state_dict(),
                                                  "optimizer": opt.state_dict(), "rng": rng_state(), "log": log,
                                                  "wall_s": wall})
        bar.close()
        self.train_wall_s = wall
        return net

    def check_supernet(self) -> None:
        """Refuse an unreadable or otherwise-trained --supernet file now, before a run folder is
        made (the search would stop on it only after setting the run up)."""
        if self.checkpoint.is_file():
            self._load_checkpoint()

    def _load_checkpoint(self) -> dict | None:
        """The supernet checkpoint to resume (None when absent), refused if trained otherwise."""
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if not self.checkpoint.is_file():
            return None
        state = load_checkpoint(self.checkpoint, CHECKPOINT_FORMAT,
                                fix="remove it (it is trained again) or give another --supernet FILE")
        saved, wanted = state["config"], self.identity
        differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if differ:
            key = differ[0]
            raise RunError(f"supernet {self.checkpoint} was trained with {key}={saved.get(key)!r}, not "
                           f"{wanted.get(key)!r}; give another --supernet file (or the same settings)")
        return state

    def _score_settings(self) -> dict:
        """A cached score is valid for the same supernet (epochs trained included) and calibration."""
        settings = {**self.identity, "calib_batches": self.config.calib_batches,
                    "calib_batch_size": self.config.calib_batch_size, "score_batches": self.config.score_batches}
        return settings if self.config.recalibrate else {**settings, "recalibrate": False}

    @staticmethod
    def _random_path(net: Supernet | CellSupernet, rng: random.Random) -> list[int]:
        return [rng.randrange(len(c)) for c in net.candidates]

    @torch.no_grad()
    def _recalibrate(self, net: Supernet | CellSupernet, indices: list[int]) -> None:
        """Batch-norm statistics of this path alone: reset, then a cumulative average over the
        calibration batches (the same images for every candidate)."""
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
        net.train()
        loader = make_loader(self.data.train, self.config.calib_batch_size, shuffle=True, seed=self.config.split_seed,
                             epoch=10_000)
        # the augmentation draws from torch's global generator: seeded here, the calibration images are
        # the same for every candidate, whatever was evaluated before it in this process (or worker)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.split_seed)
            for i, (x, _) in enumerate(loader):
                if i >= self.config.calib_batches:
                    break
                net.forward_path(x, indices)

    def score(self, arch: Arch, seed: int) -> float:
        self.prepare()
        if arch.hash in self._scores:
            return self._scores[arch.hash]
        net = self._net
        space = get_space(self.space_name, resolution=self.resolution, num_classes=self.data.num_classes)
        indices = path_indices(space, arch)
        if self.config.recalibrate:
            self._recalibrate(net, indices)
        else:
            net.eval()
        top1, _ = evaluate(net, self.data.val, max_batches=self.config.score_batches,
                           forward=lambda x: net.forward_path(x, indices))
        self._scores[arch.hash] = top1
        if not self._shipped:
            atomic_write_json(self.scores_path, {"settings": self._score_settings(), "scores": self._scores})
        return top1

    def describe(self) -> dict:
        return {"evaluator": self.name, "supernet": str(self.checkpoint), **asdict(self.config)}
