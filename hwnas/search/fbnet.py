"""The `fbnet` strategy: differentiable supernet search (Wu et al., FBNet, CVPR 2019).

Each epoch trains the supernet's weights on one split of the training data (80%), then, after
`warmup_epochs`, the architecture parameters on the other (20%) with a latency-aware loss fed by
the LUT; the Gumbel-softmax temperature is annealed per epoch (5.0 * 0.956^epoch). The result is
the argmax of the learned distribution (fitted to the budget: repaired if over it, filled if well
under it) and the k most probable architectures, scored one-shot on the architecture split with the
supernet's shared weights. With `finalists` N > 0 the search ends as FBNet's does: the argmax and
N - 1 samples of the learned distribution (each fitted to the budget) are trained from scratch for a
few epochs, and the best on held-out data is the result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..arch import Arch
from ..data import ImageData, make_loader, split_train
from ..errors import HwnasError
from ..jsonio import atomic_write_json, read_json
from ..runs import (check_same_config, load_checkpoint, prepare_run_dir, rng_state, save_checkpoint, set_rng_state,
                    write_jsonl)
from ..spaces import LayerwiseSpace, get_space
from ..training import TrainConfig, evaluate, sgd_epoch, steps_per_epoch
from .base import Candidate, Evaluator, SearchProblem, SearchResult, SearchStrategy, write_result
from .budget import BudgetStep, fit_to_budget, top_k_choices
from .evaluators import holdout_evaluator
from .latency_loss import LATENCY_LOSSES, latency_aware_loss
from .supernet import MIXED_OPS, Supernet

CHECKPOINT = "supernet.pt"
LAT_WEIGHTS = ("sample", "probs")
CHECKPOINT_FORMAT = "hwnas.fbnet-checkpoint"
FINALISTS = "finalists.json"


@dataclass(frozen=True)
class FBNetConfig:
    epochs: int = 10
    batch_size: int = 64
    weight_lr: float = 0.025
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = 0.01
    arch_weight_decay: float = 5e-4
    temperature: float = 5.0
    temperature_decay: float = 0.956
    warmup_epochs: int | None = None  # None: epochs // 5, at least 1 when epochs > 1 (FBNet: 10 of 90)
    arch_split: float = 0.2
    mixed_op: str = "soft"
    latency_loss: str | None = None  # None: "budget" with a budget, "fbnet" without
    lat_alpha: float = 0.2
    lat_beta: float = 0.6
    penalty_weight: float = 5.0
    lat_weights: str = "sample"
    lat_temperature: float = 1.0
    under_weight: float = 0.5
    top_k: int = 5
    fill_budget: bool = True
    max_batches: int | None = None  # weight batches per epoch (a random subset each epoch)
    finalists: int = 0  # 0: the result is the fitted argmax; N: best of the argmax + N-1 samples, short-trained
    finalist_epochs: int = 3

    def __post_init__(self):
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise HwnasError(f"--batch-size must be >= 2 (batch norm), got {self.batch_size}")
        if not self.temperature > 0 or not 0 < self.temperature_decay <= 1:
            raise HwnasError("--temperature must be > 0 and --temperature-decay in (0, 1]")
        if self.mixed_op not in MIXED_OPS:
            raise HwnasError(f"--mixed-op must be one of {', '.join(MIXED_OPS)}")
        if self.latency_loss is not None and self.latency_loss not in LATENCY_LOSSES:
            raise HwnasError(f"--latency-loss must be one of {', '.join(LATENCY_LOSSES)}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise HwnasError(f"--warmup-epochs must be in 0..{self.epochs - 1} (the arch must train at least one epoch)")
        if self.lat_weights not in LAT_WEIGHTS:
            raise HwnasError(f"--lat-weights must be one of {', '.join(LAT_WEIGHTS)}, got {self.lat_weights!r}")
        if not self.lat_temperature > 0:
            raise HwnasError(f"--lat-temperature must be > 0, got {self.lat_temperature}")
        if not 0.0 <= self.under_weight <= 1.0:
            raise HwnasError(f"--under-weight must be in 0..1, got {self.under_weight}")
        if self.top_k < 0:
            raise HwnasError("--top-k must be >= 0")
        if self.finalists < 0:
            raise HwnasError(f"--finalists must be >= 0, got {self.finalists}")
        if self.finalist_epochs < 1:
            raise HwnasError(f"--finalist-epochs must be >= 1, got {self.finalist_epochs}")

    @property
    def warmup(self) -> int:
        """Weight-only epochs first: architecture steps on an untrained supernet follow noise."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return max(1, self.epochs // 5) if self.epochs > 1 else 0

    def loss_kind(self, budget_ms: float | None) -> str:
        if self.latency_loss is not None:
            return self.latency_loss
        return "budget" if budget_ms is not None else "fbnet"


def temperature_at(cfg: FBNetConfig, epoch: int) -> float:
    return cfg.temperature * cfg.temperature_decay ** epoch


def lut_fingerprint(predictor) -> str:
    """Hash of everything of the LUT that the search sees (per-layer latencies, calibration)."""
    fixed, per_layer = predictor.layer_costs()
    doc = {"fixed": fixed, "layers": [t.tolist() for t in per_layer],
           "calibration": predictor.calibration.fit_dict() if predictor.calibration else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def path_indices(space: LayerwiseSpace, arch: Arch) -> list[int]:
    """The candidate index of `arch` in each searchable layer."""
    return [layer.candidates.index(arch.choice_map[layer.name]) for layer in space.layers]


def _finite_or_lowest(score: float | None) -> float:
    """A diverged training (NaN top-1) or a missing score never wins."""
    return score if score is not None and math.isfinite(score) else -math.inf


def sample_finalists(space: LayerwiseSpace, probs, first: Arch, count: int, fit, seed: int,
                     max_draws: int = 2000) -> list[tuple[Arch, list[BudgetStep]]]:
    """Up to `count - 1` distinct samples of the per-layer distributions `probs`, each fitted to the
    budget by `fit(choices) -> (arch, steps)` and none equal to `first` (the fitted argmax, the
    first finalist). The draws depend only on `seed` and `probs`, so a resumed search draws the
    same finalists."""
    rng = random.Random(seed)
    picks, seen = [], {first.hash}
    for _ in range(max_draws):
        if len(picks) >= count - 1:
            break
        choices = {layer.name: layer.candidates[rng.choices(range(len(p)), weights=p)[0]]
                   for layer, p in zip(space.layers, probs)}
        arch, steps = fit(choices)
        if arch.hash not in seen:
            seen.add(arch.hash)
            picks.append((arch, steps))
    return picks


class FBNetStrategy(SearchStrategy):
    name = "fbnet"

    def __init__(self, config: FBNetConfig, evaluator: Evaluator | None = None):
        """`evaluator` scores the finalists (default: `finalist_epochs` of training on the weight
        split, top-1 on the architecture split)."""
        self.config = config
        self.evaluator = evaluator

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--mixed-op", choices=MIXED_OPS, default="soft",
                           help="soft: FBNet's Gumbel-softmax-weighted sum of all candidates (default); hard: only the "
                                "sampled candidate runs (GDAS-style straight-through): ~7x cheaper per step, but a "
                                "supernet whose path switches every batch learns far more slowly (see supernet.py)")
        group.add_argument("--temperature", type=float, default=5.0, help="initial Gumbel-softmax temperature (FBNet: 5.0)")
        group.add_argument("--temperature-decay", type=float, default=0.956,
                           help="temperature factor per epoch (FBNet: 0.956). Annealing faster in a short run hurts: "
                                "a cold soft supernet behaves like the hard one and its weights stop learning")
        group.add_argument("--warmup-epochs", type=int, default=None,
                           help="epochs of weight training before the architecture trains (default: epochs // 5, "
                                "at least 1 when --epochs > 1)")
        group.add_argument("--arch-split", type=float, default=0.2,
                           help="fraction of the training set that trains the architecture parameters (FBNet: 0.2)")
        group.add_argument("--weight-lr", type=float, default=0.025,
                           help="SGD learning rate of the supernet weights, cosine (0.1 per 256 images)")
        group.add_argument("--arch-lr", type=float, default=0.01, help="Adam learning rate of the architecture parameters")
        group.add_argument("--latency-loss", choices=LATENCY_LOSSES, default=None,
                           help="fbnet: CE*a*log(1+LAT)^b; budget: CE + w*(max(0, LAT/budget-1) + u*max(0, 1-LAT/budget)); "
                                "default: budget when --latency-budget is given, fbnet otherwise")
        group.add_argument("--lat-alpha", type=float, default=0.2, help="alpha of the fbnet latency loss (FBNet: 0.2)")
        group.add_argument("--lat-beta", type=float, default=0.6, help="beta of the fbnet latency loss (FBNet: 0.6)")
        group.add_argument("--penalty-weight", type=float, default=5.0, help="weight w of the budget hinge")
        group.add_argument("--lat-weights", choices=LAT_WEIGHTS, default="sample",
                           help="what the latency term weighs each candidate's latency by: sample (FBNet): the "
                                "Gumbel-softmax weights of the same forward pass, so its gradient is damped by the "
                                "temperature as the cross-entropy's is; probs: P_theta (at --lat-temperature), "
                                "whose gradient is ~temperature times stronger and drowns the accuracy signal")
        group.add_argument("--lat-temperature", type=float, default=1.0,
                           help="with --lat-weights probs: the temperature of P_theta for the latency term; 1 is "
                                "P_theta itself, below 1 sharpens it toward the argmax")
        group.add_argument("--under-weight", type=float, default=0.5,
                           help="fraction of the hinge weight that pulls the expected latency up toward the budget "
                                "from below (0: none, 1: TuNAS's absolute reward)")
        group.add_argument("--top-k", type=int, default=5, help="also report the k most probable architectures")
        group.add_argument("--finalists", type=int, default=0,
                           help="train the argmax and N-1 samples of the learned distribution from scratch for "
                                "--finalist-epochs (on the weight split, scored on the architecture split) and return "
                                "the best, as FBNet does; 0 (default) returns the argmax. Resuming a finished search "
                                "with a larger N trains only the new finalists")
        group.add_argument("--finalist-epochs", type=int, default=3, help="training epochs of each finalist")
        group.add_argument("--no-fill-budget", dest="fill_budget", action="store_false",
                           help="keep the argmax when it is under the budget (default: fill it toward the budget with "
                                "the LUT-guided upgrades the distribution finds cheapest, see budget.fill_budget)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FBNetStrategy":
        return cls(FBNetConfig(
            epochs=args.epochs, batch_size=args.batch_size, weight_lr=args.weight_lr, arch_lr=args.arch_lr,
            temperature=args.temperature, temperature_decay=args.temperature_decay,
            warmup_epochs=args.warmup_epochs, arch_split=args.arch_split, mixed_op=args.mixed_op,
            latency_loss=args.latency_loss, lat_alpha=args.lat_alpha, lat_beta=args.lat_beta,
            penalty_weight=args.penalty_weight, under_weight=args.under_weight, lat_weights=args.lat_weights,
            lat_temperature=args.lat_temperature, top_k=args.top_k, fill_budget=args.fill_budget,
            max_batches=args.max_batches, finalists=args.finalists, finalist_epochs=args.finalist_epochs,
        ))

    # --- the search ---------------------------------------------------------------------------
    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        cfg = self.config
        space = problem.space
        if not isinstance(space, LayerwiseSpace):
            raise HwnasError(f"space {space.name!r} is not layer-wise; the fbnet strategy needs one (e.g. fbnet, tiny)")
        data, predictor, budget = problem.data, problem.predictor, problem.budget_ms
        loss_kind = cfg.loss_kind(budget)
        run_config = {"strategy": self.name, "space": space.name, "resolution": space.resolution,
                      "lut": lut_fingerprint(predictor), "budget_ms": budget, "data": data.name,
                      "num_classes": data.num_classes, "train_resolution": data.resolution, "seed": problem.seed,
                      "loss_kind": loss_kind, **asdict(cfg)}
        run_dir, has_checkpoint = prepare_run_dir(problem.run_dir, problem.resume, CHECKPOINT)

        torch.manual_seed(problem.seed)
        train_space = get_space(space.name, resolution=space.resolution, num_classes=data.num_classes)
        net = Supernet(train_space, cfg.mixed_op)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                weight_decay=cfg.weight_decay, nesterov=True)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.arch_weight_decay)
        w_split, a_split = split_train(data.train, cfg.arch_split, problem.seed)
        log: list[dict] = []
        start, wall_before = 0, 0.0
        if has_checkpoint:
            state = load_checkpoint(run_dir / CHECKPOINT, CHECKPOINT_FORMAT)
            check_same_config(state["config"], run_config, run_dir,
                              ignore=("top_k", "fill_budget", "finalists", "finalist_epochs"))
            net.load_state_dict(state["supernet"])
            w_opt.load_state_dict(state["weight_optimizer"])
            a_opt.load_state_dict(state["arch_optimizer"])
            set_rng_state(state["rng"])
            log, start, wall_before = list(state["log"]), state["epoch"], state["wall_s"]

        w_steps = steps_per_epoch(len(w_split), cfg.batch_size, cfg.max_batches, drop_last=True)
        # a cap on weight batches caps architecture batches in proportion (FBNet's 80:20)
        a_cap = None if cfg.max_batches is None else max(1, math.ceil(w_steps * len(a_split) / len(w_split)))
        a_steps = steps_per_epoch(len(a_split), cfg.batch_size, a_cap, drop_last=True)
        t0 = time.perf_counter()
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        bar = tqdm(range(start, end), desc=f"fbnet search {space.name}", unit="epoch", initial=start,
                   total=cfg.epochs, disable=not problem.progress)
        for epoch in bar:
            tau = temperature_at(cfg, epoch)
            net.train()
            w_loss, w_top1 = self._weight_epoch(net, w_opt, w_split, epoch, w_steps, tau, problem)
            arch_stats = {"arch_loss": None, "arch_ce": None, "arch_top1": None}
            if epoch >= cfg.warmup:
                arch_stats = self._arch_epoch(net, a_opt, a_split, epoch, a_steps, tau, problem, loss_kind)
            with torch.no_grad():
                expected = float(predictor.expected_latency(net.probabilities()))
            argmax_arch = Arch.create(space, net.choices(net.argmax_indices()))
            record = {
                "epoch": epoch + 1, "temperature": tau, "weight_lr": w_opt.param_groups[0]["lr"],
                "weight_loss": w_loss, "weight_top1": w_top1, **arch_stats,
                "expected_latency_ms": expected, "argmax_latency_ms": predictor.latency_ms(argmax_arch),
                "budget_ms": budget, "argmax": argmax_arch.choice_map,
                "probs": [[round(v, 5) for v in p.tolist()] for p in net.probabilities()],
                "wall_s": round(wall_before + time.perf_counter() - t0, 3),
            }
            log.append(record)
            save_checkpoint(run_dir / CHECKPOINT, {
                "format": CHECKPOINT_FORMAT, "config": run_config, "epoch": epoch + 1,
                "supernet": net.state_dict(), "weight_optimizer": w_opt.state_dict(),
                "arch_optimizer": a_opt.state_dict(), "rng": rng_state(), "temperature": tau,
                "log": log, "wall_s": record["wall_s"],
            })
            write_jsonl(run_dir / "log.jsonl", log)
            summary = (f"epoch {epoch + 1}/{cfg.epochs} T={tau:.3f} w_loss={w_loss:.3f} w_top1={w_top1:.1f} "
                       f"E[lat]={expected:.3f}ms argmax={record['argmax_latency_ms']:.3f}ms"
                       + (f" budget={budget:.3f}ms" if budget is not None else ""))
            if problem.progress:
                bar.write(summary)
        bar.close()
        wall = wall_before + time.perf_counter() - t0
        finished = bool(log) and log[-1]["epoch"] >= cfg.epochs
        result = self._finalize(net, problem, log, wall, finished)
        if finished and cfg.finalists > 0:
            result = self._pick_finalist(net, problem, result, run_dir)
        write_result(run_dir, result)
        if log:
            from .plots import plot_distribution, plot_latency

            plot_distribution(net.layer_names, net.candidates, log[-1]["probs"], run_dir / "arch_distribution.png",
                              title=f"{space.name}: architecture distribution after epoch {log[-1]['epoch']}")
            plot_latency(log, budget, run_dir / "latency.png")
        return result

    def _weight_epoch(self, net, opt, dataset, epoch, steps, tau, problem) -> tuple[float, float]:
        cfg = self.config
        loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=problem.seed, epoch=2 * epoch, drop_last=True)
        return sgd_epoch(lambda x: net(x, tau, arch_grad=False), F.cross_entropy, opt, loader, steps, cfg.weight_lr,
                         epoch, steps * cfg.epochs, f"weights {epoch + 1}", problem.progress)

    def _arch_epoch(self, net, opt, dataset, epoch, steps, tau, problem, loss_kind) -> dict:
        weights = net.weight_parameters()
        for p in weights:  # gradients flow through the activations only: no weight gradients to compute
            p.requires_grad_(False)
        try:
            return self._arch_steps(net, opt, dataset, epoch, steps, tau, problem, loss_kind)
        finally:
            for p in weights:
                p.requires_grad_(True)

    def _arch_steps(self, net, opt, dataset, epoch, steps, tau, problem, loss_kind) -> dict:
        cfg = self.config
        loss_sum = ce_sum = correct = seen = 0
        loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=problem.seed, epoch=2 * epoch + 1, drop_last=True)
        for i, (x, y) in enumerate(tqdm(loader, total=steps, desc=f"arch {epoch + 1}", leave=False,
                                        disable=not problem.progress)):
            if i >= steps:
                break
            logits = net(x, tau, arch_grad=True)
            ce = F.cross_entropy(logits, y)
            weights = net.sampled_weights if cfg.lat_weights == "sample" else net.probabilities(cfg.lat_temperature)
            lat = problem.predictor.expected_latency(weights)
            loss = latency_aware_loss(ce, lat, loss_kind, problem.budget_ms, cfg.lat_alpha, cfg.lat_beta,
                                      cfg.penalty_weight, cfg.under_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            ce_sum += ce.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        n = max(seen, 1)
        return {"arch_loss": loss_sum / n, "arch_ce": ce_sum / n, "arch_top1": 100.0 * correct / n}

    def _fitter(self, problem: SearchProblem, log_probs):
        """choices -> (arch, budget steps): repaired if over the budget, filled if `fill_budget`."""
        space, predictor, budget = problem.space, problem.predictor, problem.budget_ms

        def fit(choices):
            if budget is None:
                return Arch.create(space, choices), []
            return fit_to_budget(space, predictor, choices, log_probs, budget, fill=self.config.fill_budget)
        return fit

    def _finalize(self, net: Supernet, problem: SearchProblem, log, wall: float, finished: bool) -> SearchResult:
        """The argmax fitted to the budget (repaired if over it, filled if `fill_budget` and under it),
        plus the top-k most probable architectures fitted the same way, each scored one-shot (its
        path through the shared weights) on the architecture split, never on val."""
        cfg = self.config
        space, predictor, budget = problem.space, problem.predictor, problem.budget_ms
        log_probs = net.log_probabilities()
        argmax_choices = net.choices(net.argmax_indices())
        argmax = Arch.create(space, argmax_choices)
        fit = self._fitter(problem, log_probs)
        arch, steps = fit(argmax_choices)
        if steps and problem.progress:
            verb = "exceeds" if steps[0].kind == "downgrade" else "leaves unused part of"
            tqdm.write(f"the argmax architecture, predicted at {predictor.latency_ms(argmax):.4g} ms, {verb} the budget "
                       f"{budget:.4g} ms: {'repaired' if verb == 'exceeds' else 'filled'} with {len(steps)} "
                       f"LUT-guided {steps[0].kind}(s):")
            for step in steps:
                tqdm.write(f"  {step.layer}: {step.before} -> {step.after} ({-step.saved_ms:+.4g} ms, "
                           f"log-prob cost {step.log_prob_cost:.3f}) -> {step.latency_ms:.4g} ms")
        _, score_split = split_train(problem.data.train, cfg.arch_split, problem.seed)
        candidates: list[Candidate] = []
        seen: set[str] = set()
        for choices, _ in [(argmax_choices, None)] + top_k_choices(space, log_probs, cfg.top_k):
            cand, cand_steps = (arch, steps) if choices is argmax_choices else fit(choices)
            if cand.hash in seen:
                continue
            seen.add(cand.hash)
            indices = path_indices(space, cand)
            joint = sum(lp[i] for lp, i in zip(log_probs, indices))
            score, _ = evaluate(net, score_split, forward=lambda x, idx=indices: net.forward_path(x, idx))
            candidates.append(Candidate(cand, predictor.latency_ms(cand), score, joint, tuple(cand_steps),
                                        note="argmax" if not candidates else ""))
            if len(candidates) >= max(1, cfg.top_k):
                break
        details = {
            "space": space.name, "resolution": space.resolution, "lut": problem.lut_source,
            "epochs_done": log[-1]["epoch"] if log else 0, "epochs": cfg.epochs,
            "argmax_arch": argmax.to_dict(), "argmax_latency_ms": predictor.latency_ms(argmax),
            "expected_latency_ms": log[-1]["expected_latency_ms"] if log else None,
            "fastest_latency_ms": predictor.fastest_latency_ms(), "train_resolution": problem.data.resolution,
            "data": problem.data.name, "oneshot_top1_arch_split": candidates[0].score if candidates else None,
            "loss_kind": cfg.loss_kind(budget), "mixed_op": cfg.mixed_op, "fill_budget": cfg.fill_budget,
        }
        return SearchResult(self.name, arch, predictor.latency_ms(arch), budget, tuple(steps), tuple(candidates),
                            wall, finished, details)

    def default_evaluator(self, data: ImageData, seed: int) -> Evaluator:
        """Short training on the weight split, top-1 on the architecture split (val stays unseen)."""
        return holdout_evaluator(data, self.config.arch_split, seed,
                                 TrainConfig(epochs=self.config.finalist_epochs, batch_size=self.config.batch_size,
                                             seed=seed))

    def _pick_finalist(self, net: Supernet, problem: SearchProblem, result: SearchResult, run_dir) -> SearchResult:
        """FBNet's last step: train the fitted argmax and samples of the learned distribution from
        scratch, return the best. Each finished training is kept in finalists.json (atomically), and
        a resumed search reuses it by architecture hash, so none is trained twice."""
        cfg = self.config
        space, predictor, budget = problem.space, problem.predictor, problem.budget_ms
        log_probs = net.log_probabilities()
        probs = [p.tolist() for p in net.probabilities()]
        picks = [(result.arch, list(result.budget_steps))]
        picks += sample_finalists(space, probs, result.arch, cfg.finalists, self._fitter(problem, log_probs),
                                  problem.seed)
        evaluator = self.evaluator or self.default_evaluator(problem.data, problem.seed)
        path = run_dir / FINALISTS
        custom = self.evaluator is not None
        stored = read_json(path, "fbnet finalists") if path.is_file() else {}
        reuse = stored.get("finalist_epochs") == cfg.finalist_epochs and stored.get("custom_evaluator") == custom
        done = {t["hash"]: t for t in stored.get("trials", [])} if reuse else {}
        trials = []
        for i, (arch, steps) in enumerate(tqdm(picks, desc="fbnet finalists", unit="arch",
                                               disable=not problem.progress)):
            if arch.hash not in done:
                t0 = time.perf_counter()
                score = evaluator.evaluate(arch)
                log_prob = sum(lp[i] for lp, i in zip(log_probs, path_indices(space, arch)))
                trial = Candidate(arch, predictor.latency_ms(arch), score, log_prob, tuple(steps),
                                  note="argmax" if i == 0 else "sample").to_dict()
                done[arch.hash] = {**trial, "wall_s": round(time.perf_counter() - t0, 3)}
                atomic_write_json(path, {"finalist_epochs": cfg.finalist_epochs, "custom_evaluator": custom,
                                         "trials": list(done.values())})
            trials.append(done[arch.hash])
        best_index = max(range(len(picks)), key=lambda i: _finite_or_lowest(trials[i]["score"]))
        best, best_steps = picks[best_index]
        if problem.progress:
            tqdm.write("finalists (short-training top-1 on held-out data): " + ", ".join(
                f"{t['hash']} {t['score']:.1f}%" + (" (argmax)" if t["note"] == "argmax" else "") for t in trials)
                + f"; picked {best.hash}")
        details = {**result.details, "finalists": trials, "picked": "argmax" if best_index == 0 else "sample",
                   "finalist_epochs": cfg.finalist_epochs}
        return SearchResult(self.name, best, predictor.latency_ms(best), budget, tuple(best_steps), result.candidates,
                            result.wall_s + sum(t["wall_s"] for t in trials), result.finished, details)
