"""Search configuration as data: each strategy and evaluator declares its options once (a frozen
dataclass, hwnas/options.py); the flags, `from_args` and the refusal of a flag the chosen strategy
does not use all follow from those declarations, and the registries are the one place either is
listed."""

import argparse
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from hwnas.cli import build_parser, main
from hwnas.errors import HwnasError
from hwnas.options import Options, add_flags, option
from hwnas.search.ray_evaluator import RayOptions, RayTaskOptions
from hwnas.search import EVALUATORS, STRATEGIES, TrialStrategy
from hwnas.search.config import (TRIAL_RECORDS, SearchConfig, TrialOptions, declared_flags, declared_records,
                                 ray_options, refuse_unused)
from hwnas.search.controller import ControllerConfig
from hwnas.search.evolution import EvolutionOptions
from hwnas.search.fbnet import FBNetConfig
from hwnas.search.mnas import MnasOptions

ROOT = Path(__file__).resolve().parents[1]
BASE = ["search", "--space", "tiny", "--out", "unused-run-dir"]


def parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args([*BASE, *flags])


def to_argv(record: Options) -> list[str]:
    """The flags that give `record` (those of its fields that differ from the default)."""
    argv = []
    defaults = type(record)()
    for flag in type(record).flags():
        value = getattr(record, flag.field)
        if value == getattr(defaults, flag.field):
            continue
        argv += [flag.flag] if flag.kwargs.get("action") == "store_false" else [flag.flag, str(value)]
    return argv


def sample_value(flag) -> list[str]:
    kwargs = flag.kwargs
    if kwargs.get("action") == "store_false" or kwargs.get("nargs") == "?":
        return [flag.flag]
    if "choices" in kwargs:
        return [flag.flag, list(kwargs["choices"])[-1]]
    return [flag.flag, {int: "3", float: "0.5"}.get(kwargs.get("type"), "x")]


# --- the generated flags --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategys_declared_flags_are_on_the_search_parser(name):
    cls = STRATEGIES[name]
    for record in cls.records:
        assert dataclasses.is_dataclass(record) and issubclass(record, Options)
        assert record.__dataclass_params__.frozen
        for flag in record.flags():
            args = parse(*sample_value(flag))
            assert flag.dest in vars(args), flag.flag
            assert flag in record.given(args)


def test_a_flag_not_given_leaves_no_attribute_and_the_record_fills_its_default():
    args = parse()
    assert not set(vars(args)) & set(declared_flags())
    for record in declared_records():
        assert record.from_args(args) == record(**{f.name: vars(args)[f.metadata["reads"]]
                                                   for f in dataclasses.fields(record) if "reads" in f.metadata})


@pytest.mark.parametrize("record, extra", [
    (EvolutionOptions(population=12, sample_size=3), []),
    (ControllerConfig(hidden=16, update="reinforce", tanh_constant=1.5, batch=3), []),
    (MnasOptions(reward="hard", w=-0.2), []),
    (FBNetConfig(epochs=3, top_k=1, fill_budget=False, mixed_op="hard", warmup_epochs=0), ["--epochs", "3"]),
    (TrialOptions(trials=7, evaluator="shared", objectives="acc,latency", budget_mode="penalise", penalty=2.0,
                  batch=2), []),
    (RayOptions(address="auto", cpus=2.0, retries=0), []),
])
def test_from_args_round_trip(record, extra):
    assert type(record).from_args(parse(*to_argv(record), *extra)) == record


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_from_no_flags_has_its_defaults(name):
    cls = STRATEGIES[name]
    assert cls.from_args(argparse.Namespace()).settings() == cls().settings()


def test_a_flag_declared_twice_must_agree():
    @dataclass(frozen=True)
    class A(Options):
        title = "a"
        n: int = option(1, "--n", "n", type=int)

    @dataclass(frozen=True)
    class B(Options):
        title = "b"
        n: float = option(1.0, "--n", "n", type=float)

    with pytest.raises(TypeError, match="--n is declared differently"):
        add_flags(argparse.ArgumentParser(), [A, B])


# --- refusal from the declarations ----------------------------------------------------------------
@dataclass(frozen=True)
class FakeOptions(Options):
    title = "fake strategy"
    knob: int = option(5, "--fake-knob", "fake: a knob", type=int)


class FakeStrategy(TrialStrategy):
    name = "fake"
    records = (FakeOptions,)

    def __init__(self, options: FakeOptions = FakeOptions()):
        self.options = options

    def ask(self):
        raise NotImplementedError

    def tell(self, trial):
        raise NotImplementedError


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "fake", FakeStrategy)


def test_a_new_strategys_option_is_refused_for_another_strategy(fake, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", "x.json", "--data", "digits",
                 "--out", str(out), "--fake-knob", "3"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("hwnas: error: --fake-knob is not used by --strategy random with --evaluator scratch "
                           "(it is for strategies fake); drop it")
    assert not out.exists()


def test_a_new_strategy_gets_its_own_option_and_the_trial_loops(fake):
    args = parse("--strategy", "fake", "--fake-knob", "3", "--trials", "4")
    config = SearchConfig.from_args(args)
    assert config.strategy_options == (FakeOptions(knob=3),) and config.trial.trials == 4
    assert config.make_strategy().options.knob == 3


@pytest.mark.parametrize("strategy, flags, message", [
    ("fbnet", ["--population", "4"], "--population is not used by --strategy fbnet (it is for strategies "
                                     "evolution, nsga2)"),
    ("tpe", ["--evaluator", "nb201", "--holdout", "0.3"], "--holdout is not used by --strategy tpe with "
                                                          "--evaluator nb201 (it is for strategies enas)"),
    ("random", ["--calib-batches", "3"], "(it is for --evaluator shared)"),
    ("random", ["--benchmark-data", "d"], "(it is for --evaluator nb201)"),
    ("enas", ["--ray"], "run it under torchrun"),
])
def test_refusal_names_who_declares_the_flag(strategy, flags, message):
    with pytest.raises(HwnasError) as caught:
        refuse_unused(parse("--strategy", strategy, *flags))
    assert message in str(caught.value)


def test_every_evaluators_and_strategys_own_flags_are_accepted_with_it():
    for name, cls in STRATEGIES.items():
        for record in cls.records:
            for flag in record.flags():
                refuse_unused(parse("--strategy", name, *sample_value(flag)))
    for name, kind in EVALUATORS.items():
        for flag in kind.options.flags():
            refuse_unused(parse("--strategy", "random", "--evaluator", name, *sample_value(flag)))


# --- one registry, one Ray record -------------------------------------------------------------------
def test_evaluators_are_registered_once_with_their_options():
    assert list(EVALUATORS) == ["scratch", "shared", "nb201"]
    assert TrialOptions.flags()[2].kwargs["choices"] == tuple(EVALUATORS)
    for kind in EVALUATORS.values():
        assert issubclass(kind.options, Options) and hasattr(kind.cls, "from_options")
    assert [k for k, kind in EVALUATORS.items() if kind.tabular] == ["nb201"]


def test_ray_flags_are_one_record():
    assert RayTaskOptions is RayOptions and RayOptions in TRIAL_RECORDS
    assert {f.flag for f in RayOptions.flags()} == {"--ray", "--ray-cpus-per-trial", "--ray-gpus-per-trial",
                                                   "--ray-retries"}
    assert ray_options(parse("--strategy", "random")) is None
    assert ray_options(parse("--strategy", "random", "--ray", "--ray-retries", "1")) == RayOptions("local", retries=1)
    with pytest.raises(HwnasError, match="--ray-gpus-per-trial applies to Ray tasks only"):
        ray_options(parse("--strategy", "random", "--ray-gpus-per-trial", "1"))


def test_no_argparse_internals_nor_getattr_defaults_in_the_package():
    offenders = []
    for path in (ROOT / "hwnas").rglob("*.py"):
        text = path.read_text()
        for pattern in (r"getattr\(args\b", r"\._group_actions", r"\._actions\b", r"_ArgumentGroup",
                        r"hasattr\(args\b"):
            offenders += [f"{path.relative_to(ROOT)}: {pattern}" for _ in re.finditer(pattern, text)]
    assert not offenders
