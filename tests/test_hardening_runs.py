"""A search run survives a bad line: a torn last line of trials.jsonl is dropped with a warning and
the run resumes to the uninterrupted result; a garbage line elsewhere, a trial that is no trial and
a result.json of the wrong type are one line naming the file; a trial recorded complete without a
finite top-1 counts as failed; `runs show` on a file says it is not a directory."""

import json

import pytest

from hwnas.cli import main
from hwnas.runs import RunError
from hwnas.search import LoopConfig, read_history, run_search
from hwnas.search.evaluators import SyntheticEvaluator
from search_contract_setup import make_problem, make_strategy, tiny_setup


@pytest.fixture(scope="module")
def tiny():
    return tiny_setup()


def search(tiny, run_dir, resume=False, trials=8):
    problem = make_problem("random", *tiny, run_dir, resume=resume)
    return run_search(problem, make_strategy("random"), SyntheticEvaluator(), LoopConfig(trials=trials))


def lines_of(path):
    return path.read_text().splitlines()


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_run_resumes(tiny, tmp_path, capsys):
    full = search(tiny, tmp_path / "full")
    search(tiny, tmp_path / "run", trials=4)
    history = tmp_path / "run" / "trials.jsonl"
    history.write_text(history.read_text() + lines_of(history)[-1][:40])  # a kill in the middle of a write
    (tmp_path / "run" / "result.json").unlink()
    resumed = search(tiny, tmp_path / "run", resume=True)
    assert "is torn" in capsys.readouterr().err
    assert resumed.arch == full.arch
    assert [t.arch for t in read_history(history)] == [t.arch for t in read_history(tmp_path / "full" / "trials.jsonl")]


@pytest.mark.parametrize("garbage, message", [
    ("{not json", "line 2 is not JSON"),
    ("[1, 2]", "line 2 is not a trial record"),
    ('{"number": 1}', "line 2 is not a trial record"),
])
def test_a_bad_line_inside_the_history_is_one_line_naming_it(tiny, tmp_path, capsys, garbage, message):
    search(tiny, tmp_path / "run", trials=4)
    history = tmp_path / "run" / "trials.jsonl"
    lines = lines_of(history)
    history.write_text("\n".join([lines[0], garbage, *lines[1:]]) + "\n")
    with pytest.raises(RunError, match=message):
        read_history(history)
    assert main(["runs", "show", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(history) in err and len(err.splitlines()) == 1


def test_trial_states_are_one_enum_and_a_history_holds_finished_trials_only(tiny, tmp_path):
    from hwnas.search.trials import FINISHED, TrialState

    assert {s.value for s in TrialState} == {"pending", "complete", "failed", "infeasible"}
    assert TrialState.PENDING not in FINISHED
    search(tiny, tmp_path / "run", trials=4)
    history = tmp_path / "run" / "trials.jsonl"
    docs = [json.loads(line) for line in lines_of(history)]
    assert {d["state"] for d in docs} <= {s.value for s in FINISHED} and "measured_ms" not in docs[0]
    trials = read_history(history)
    assert all(isinstance(t.state, TrialState) for t in trials)
    older = dict(docs[0], measured_ms=None)  # histories of older versions carry an unused slot
    pending = dict(docs[0], state="pending")
    history.write_text("\n".join(json.dumps(d) for d in (older, pending, *docs[1:])) + "\n")
    with pytest.raises(RunError, match="line 2 is not a trial record .*'pending' is not one a history holds"):
        read_history(history)


def test_a_trial_recorded_complete_without_a_finite_top1_counts_as_failed(tiny, tmp_path):
    search(tiny, tmp_path / "run", trials=4)
    history = tmp_path / "run" / "trials.jsonl"
    docs = [json.loads(line) for line in lines_of(history)]
    complete = [d for d in docs if d["state"] == "complete"]
    complete[0]["metrics"] = {"top1": float("nan")}
    complete[1]["metrics"] = {}
    history.write_text("".join(json.dumps(d) + "\n" for d in docs))
    trials = {t.number: t for t in read_history(history)}
    for doc in complete[:2]:
        trial = trials[doc["number"]]
        assert trial.state == "failed" and trial.objective is None and "without a finite top-1" in trial.note


def test_runs_show_refuses_a_file_and_a_result_of_the_wrong_type(tiny, tmp_path, capsys):
    a_file = tmp_path / "trials.txt"
    a_file.write_text("x")
    assert main(["runs", "show", str(a_file)]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    search(tiny, tmp_path / "run", trials=2)
    (tmp_path / "run" / "result.json").write_text("[1, 2, 3]")
    assert main(["runs", "show", str(tmp_path / "run")]) == 2
    assert "is not a search result" in capsys.readouterr().err
    assert main(["runs", "show", str(tmp_path / "run"), "--failures", "-1"]) == 2
    assert "--failures must be >= 0" in capsys.readouterr().err


def test_a_resume_that_changes_the_strategy_or_the_task_model_is_refused_naming_the_flag(tiny, tmp_path):
    import dataclasses

    search(tiny, tmp_path / "run", trials=3)
    problem = make_problem("random", *tiny, tmp_path / "run", resume=True)
    with pytest.raises(RunError, match="--strategy was random, now evolution"):
        run_search(problem, make_strategy("evolution"), SyntheticEvaluator(), LoopConfig(trials=3))
    with_head = dataclasses.replace(problem, task_head="fasterrcnn, 2 classes")
    with pytest.raises(RunError, match="--task-head/--task-classes was none, now fasterrcnn, 2 classes"):
        run_search(with_head, make_strategy("random"), SyntheticEvaluator(), LoopConfig(trials=3))


def test_task_classes_without_a_task_head_is_refused(tmp_path, capsys):
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", "x.json", "--data", "digits",
                 "--task-classes", "3", "--out", str(tmp_path / "run")]) == 2
    assert "--task-classes is used with --task-head only" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_smallest_network_is_exact_on_a_layerwise_space(tiny):
    import itertools

    from hwnas.core.arch import Arch

    space, predictor, _ = tiny
    predictions = [predictor.predict(Arch.create(space, dict(zip(space.decision_names, combo))))
                   for combo in itertools.product(*[d.choices for d in space.decisions])]
    assert predictor.smallest_memory() == (min(p.params for p in predictions),
                                           min(p.peak_activation_bytes for p in predictions))


@pytest.mark.parametrize("flag", ["--params-budget", "--memory-budget"])
def test_a_budget_below_the_smallest_network_is_refused_at_once(tiny, tmp_path, capsys, flag):
    from search_contract_setup import memory_table

    lut = tmp_path / "lut.json"
    memory_table(tiny[0]).save(lut)
    fewest, lowest = tiny[1].smallest_memory()
    value = fewest - 1 if flag == "--params-budget" else lowest - 1
    out = tmp_path / "run"
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", str(lut), "--data", "digits",
                 flag, str(value), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is infeasible" in err and f"at least {fewest if flag == '--params-budget' else lowest:,}" in err
    assert not out.exists()


def test_an_unreadable_supernet_file_is_refused_before_any_run_folder(tiny, tmp_path, capsys):
    from search_contract_setup import memory_table

    lut = tmp_path / "lut.json"
    memory_table(tiny[0]).save(lut)
    supernet = tmp_path / "spos.pt"
    supernet.write_bytes(b"not a checkpoint")
    out = tmp_path / "run"
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", str(lut), "--data", "digits",
                 "--evaluator", "shared", "--supernet", str(supernet), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(supernet) in err and "remove it (it is trained again) or give another --supernet FILE" in err
    assert not out.exists()


def test_a_ray_address_nothing_answers_on_is_one_line_at_once():
    import socket
    import time

    from hwnas.errors import HwnasError
    from hwnas.scaleout.ray_runtime import probe_head

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(HwnasError, match=f"no Ray cluster answers at 127.0.0.1:{port} .*ray start --head"):
        probe_head(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 10
    probe_head("auto")  # left to Ray
