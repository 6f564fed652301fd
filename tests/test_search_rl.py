"""The reinforcement-learning strategies (mnas): MnasNet's reward, the PPO and REINFORCE updates
against hand-computed values, a controller that learns a synthetic reward, and a resumed search
whose controller ends exactly as an uninterrupted one."""

import json
import math

import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.search import LoopConfig, MnasStrategy, SyntheticEvaluator, run_search
from hwnas.search.controller import ControllerConfig, PolicyTrainer, moving_baseline, ppo_loss
from hwnas.search.mnas import mnas_reward
from search_contract_setup import make_problem, memory_table, tiny_setup


# --- MnasNet's reward ------------------------------------------------------------------------
def test_soft_reward_scales_accuracy_by_the_latency_ratio_to_the_power_w_on_both_sides():
    assert mnas_reward(0.8, {"latency": 2.0}) == pytest.approx(0.8 * 0.9526380, rel=1e-6)  # 2 ** -0.07
    assert mnas_reward(0.8, {"latency": 0.5}) == pytest.approx(0.8 * 1.0497166, rel=1e-6)  # 0.5 ** -0.07
    assert mnas_reward(0.8, {}) == 0.8  # no budget: the accuracy


def test_hard_reward_is_the_accuracy_below_the_target_and_divided_by_the_ratio_above():
    assert mnas_reward(0.8, {"latency": 0.5}, "hard") == 0.8
    assert mnas_reward(0.8, {"latency": 1.0}, "hard") == 0.8
    assert mnas_reward(0.8, {"latency": 2.0}, "hard") == pytest.approx(0.4)


def test_a_memory_budget_extends_the_reward_with_the_same_form():
    assert mnas_reward(0.5, {"latency": 1.25, "memory": 2.0}, "hard") == pytest.approx(0.5 / 1.25 / 2.0)
    assert mnas_reward(0.5, {"latency": 1.0, "memory": 4.0}, "soft") == pytest.approx(0.5 * 4 ** -0.07)
    with pytest.raises(HwnasError, match="--reward must be one of soft, hard"):
        mnas_reward(0.5, {}, "medium")


# --- the policy updates ----------------------------------------------------------------------
def test_ppo_clips_the_probability_ratio():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1])).requires_grad_()
    advantage = torch.tensor([1.0, -1.0, 1.0])
    loss = ppo_loss(new, old, advantage, clip=0.2)
    # min(r A, clip(r) A): 1.5 -> 1.2 (clipped), 0.5 with A<0 -> -0.8 (clipped), 1.1 -> 1.1 (inside)
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 1.1) / 3)
    loss.backward()  # a clipped sample gives no gradient; d/dlogp of -r A / 3 is -r / 3 inside the clip
    assert new.grad.tolist() == pytest.approx([0.0, 0.0, -1.1 / 3])


def test_moving_average_baseline():
    assert moving_baseline(None, [1.0], 0.99) == 1.0  # the first reward starts it
    assert moving_baseline(1.0, [0.0], 0.99) == pytest.approx(0.99)
    assert moving_baseline(1.0, [0.0, 0.5], 0.99) == pytest.approx(0.99 * 0.99 + 0.01 * 0.5)
    trainer = PolicyTrainer([3, 2], ControllerConfig(hidden=8, update="reinforce"), seed=0)
    trainer.update([[0, 1], [2, 0]], [0.0, 0.0], [1.0, 0.0])
    assert trainer.baseline == pytest.approx(0.99)
    trainer.update([[1, 1]], [0.0], [0.5])
    assert trainer.baseline == pytest.approx(0.99 * 0.99 + 0.01 * 0.5)


def test_the_controller_is_reproducible_from_its_seed_and_uses_no_global_rng():
    a, b = (PolicyTrainer([5, 4, 5], ControllerConfig(hidden=8), seed=3) for _ in range(2))
    torch.manual_seed(123)
    first = [a.controller.sample() for _ in range(5)]
    torch.manual_seed(999)
    assert [b.controller.sample() for _ in range(5)] == first
    c = PolicyTrainer([5, 4, 5], ControllerConfig(hidden=8), seed=4)
    assert [c.controller.sample() for _ in range(5)] != first


@pytest.mark.parametrize("update", ["ppo", "reinforce"])
def test_the_probability_of_the_best_choice_rises(update):
    """Synthetic reward: 1 for choice 2 of the first decision, 0.2 otherwise."""
    trainer = PolicyTrainer([4, 3], ControllerConfig(hidden=16, update=update, batch=8, lr=0.02), seed=0)
    before = trainer.controller.choice_probs(0, [])[2].item()
    for _ in range(25):
        samples = [trainer.controller.sample() for _ in range(8)]
        rewards = [1.0 if s[0] == 2 else 0.2 for s, _ in samples]
        point = trainer.update([s for s, _ in samples], [lp for _, lp in samples], rewards)
    after = trainer.controller.choice_probs(0, [])[2].item()
    assert before < 0.35 and after > 0.8
    assert trainer.curve[-1]["mean_reward"] > trainer.curve[0]["mean_reward"]
    assert point["entropy"] < trainer.curve[0]["entropy"]  # the policy concentrates


def test_tanh_clipping_bounds_the_logits():
    trainer = PolicyTrainer([3], ControllerConfig(hidden=8, tanh_constant=0.5), seed=0)
    with torch.no_grad():
        trainer.controller.heads[0].bias.copy_(torch.tensor([100.0, 0.0, 0.0]))
    probs = trainer.controller.choice_probs(0, [])
    assert probs[0].item() <= math.exp(0.5) / (math.exp(0.5) + 2 * math.exp(-0.5)) + 1e-6


# --- the mnas strategy in a search -----------------------------------------------------------
def _search(tmp_path, name, stop_after=None, resume=False, update="ppo"):
    space, predictor, data = tiny_setup()
    problem = make_problem("mnas", space, predictor, data, tmp_path / name, resume=resume)
    strategy = MnasStrategy(ControllerConfig(hidden=16, batch=3, update=update), reward="hard")
    run_search(problem, strategy, SyntheticEvaluator(fail_fraction=0.1), LoopConfig(trials=10), stop_after=stop_after)
    return strategy


@pytest.mark.parametrize("update", ["ppo", "reinforce"])
def test_resume_reaches_the_same_controller_and_optimiser_state(tmp_path, update):
    full = _search(tmp_path, "full", update=update)
    _search(tmp_path, "cut", stop_after=4, update=update)
    resumed = _search(tmp_path, "cut", resume=True, update=update)
    a, b = full.trainer, resumed.trainer
    assert a.curve and a.curve == b.curve and a.baseline == b.baseline
    assert all(torch.equal(x, y) for x, y in zip(a.controller.state_dict().values(),
                                                   b.controller.state_dict().values()))
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert torch.equal(a.controller.generator.get_state(), b.controller.generator.get_state())
    doc = json.loads((tmp_path / "cut" / "controller.json").read_text())
    assert doc["curve"] == a.curve and doc["settings"]["reward"] == "hard"


def _cli_search(tmp_path, strategy, *flags):
    """`hwnas search --strategy STRATEGY` on the tiny space and digits into tmp_path/run."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    lut = tmp_path / "lut.json"
    memory_table(tiny_setup()[0]).save(lut)
    return main(["search", "--strategy", strategy, "--space", "tiny", "--lut", str(lut), "--data", "digits",
                 "--out", str(tmp_path / "run"), "--no-progress", "--no-verify", *flags])


def test_cli_mnas_search_with_short_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_search(tmp_path, "mnas", "--trials", "4", "--controller-batch", "2", "--policy-update", "reinforce",
                       "--reward", "soft", "--epochs", "1", "--max-batches", "2", "--batch-size", "32",
                       "--latency-budget", "60%") == 0
    assert "best of 4 evaluated trials" in capsys.readouterr().out
    doc = json.loads((out / "controller.json").read_text())
    assert len(doc["curve"]) >= 2 and doc["settings"]["controller"]["update"] == "reinforce"
    assert _cli_search(tmp_path / "r", "random", "--policy-update", "ppo") == 2
    assert "--policy-update is not used by --strategy random" in capsys.readouterr().err


# --- the enas strategy ------------------------------------------------------------------------
def test_cli_enas_search_trains_the_controller_on_the_shared_supernet(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_search(tmp_path, "enas", "--epochs", "2", "--max-batches", "3", "--batch-size", "32",
                       "--controller-steps", "2", "--controller-batch", "4", "--final-samples", "3", "--reward", "hard",
                       "--latency-budget", "40%") == 0
    assert "controller: 4 policy updates, mean reward" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["meets_budget"] and 1 <= len(result["candidates"]) <= 3
    assert result["arch_hash"] == max(result["candidates"], key=lambda c: c["score"])["hash"]
    curve = json.loads((out / "controller.json").read_text())["curve"]
    assert len(curve) == 4 and [p["epoch"] for p in curve] == [1, 1, 2, 2]
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 16 and all(0.0 <= t["metrics"]["top1"] <= 100.0 for t in trials)
    for t in trials:  # each sample's reward is MnasNet's hard reward of its held-out top-1 and latency
        ratio = 1.0 + t["violations"]["latency"]
        assert t["objective"] == pytest.approx(mnas_reward(t["metrics"]["top1"] / 100, {"latency": ratio}, "hard"))
