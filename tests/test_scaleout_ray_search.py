"""Candidate evaluation on Ray (`hwnas search --ray`): the same search as on one machine, trials
taken as they finish, workers that die re-run a bounded number of times, and a run whose driver is
killed resumed without losing a finished trial. On the session's local Ray cluster (2 CPUs)."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.search import LoopConfig, SyntheticEvaluator, read_history, run_search
from search_contract_setup import make_problem, make_strategy, tiny_setup

TESTS = Path(__file__).resolve().parent
TRIALS = 10


def key(trial):
    return trial.number, trial.arch.hash, trial.state, trial.metrics


def search(tmp_path, name, evaluator, ray=None, batch=2, stop_after=None, resume=False, strategy="evolution",
           retries=2):
    space, predictor, data = tiny_setup()
    problem = make_problem(strategy, space, predictor, data, tmp_path / name, resume=resume)
    if ray is not None:
        from hwnas.search.ray_evaluator import RayEvaluator, RayTaskOptions

        evaluator = RayEvaluator(evaluator, RayTaskOptions(retries=retries))
    result = run_search(problem, make_strategy(strategy), evaluator, LoopConfig(trials=TRIALS, batch=batch),
                        stop_after=stop_after)
    return result, read_history(tmp_path / name / "trials.jsonl")


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["evolution", "tpe", "mnas"])
def test_a_ray_search_is_the_search_of_the_same_seed_and_batch_on_one_machine(ray_cluster, tmp_path, strategy):
    """Proposals are told in the order asked, whatever order the tasks finish in, so the
    parallel run's trials and result are exactly the local run's."""
    evaluator = SyntheticEvaluator(fail_fraction=0.15, delay_s=0.02)
    local, local_trials = search(tmp_path, "local", evaluator, strategy=strategy)
    distributed, ray_trials = search(tmp_path, "ray", evaluator, ray=ray_cluster, strategy=strategy)
    assert [key(t) for t in ray_trials] == [key(t) for t in local_trials]
    assert distributed.arch == local.arch
    assert sum(t.state == "complete" for t in ray_trials) >= TRIALS // 2


@pytest.mark.ray
def test_a_worker_killed_mid_evaluation_is_rerun_and_no_trial_is_lost(ray_cluster, tmp_path):
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    evaluator = SyntheticEvaluator(fail_fraction=0.15, crash_fraction=0.3, crash_times=1, crash_dir=str(crashes))
    _, ray_trials = search(tmp_path, "ray", evaluator, ray=ray_cluster)
    _, local_trials = search(tmp_path, "local", SyntheticEvaluator(fail_fraction=0.15))
    assert list(crashes.iterdir()), "no worker was killed: the test proves nothing"
    assert [key(t) for t in ray_trials] == [key(t) for t in local_trials]


@pytest.mark.ray
def test_a_trial_whose_worker_keeps_dying_is_failed_after_the_bounded_reruns(ray_cluster, tmp_path):
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    evaluator = SyntheticEvaluator(crash_fraction=0.3, crash_times=10, crash_dir=str(crashes))
    _, trials = search(tmp_path, "ray", evaluator, ray=ray_cluster, retries=1)
    failed = [t for t in trials if t.state == "failed"]
    assert failed and all("system failure after 1 re-run(s)" in t.note for t in failed)
    crashed = {p.name.split(".")[0] for p in crashes.iterdir()}
    assert crashed == {t.arch.hash for t in failed}
    for arch in crashed:  # the first run and exactly one re-run, no more
        assert sorted(p.suffix for p in crashes.glob(f"{arch}.*")) == [".0", ".1"]
    assert sum(t.state == "complete" for t in trials) == TRIALS - len(failed)


@pytest.mark.ray
def test_a_stopped_ray_search_resumes_to_the_uninterrupted_result(ray_cluster, tmp_path):
    evaluator = SyntheticEvaluator(fail_fraction=0.15, delay_s=0.02)
    search(tmp_path, "cut", evaluator, ray=ray_cluster, stop_after=5)
    assert len(read_history(tmp_path / "cut" / "trials.jsonl")) >= 5
    resumed, resumed_trials = search(tmp_path, "cut", evaluator, ray=ray_cluster, resume=True)
    full, full_trials = search(tmp_path, "full", evaluator, ray=ray_cluster)
    assert resumed.finished and resumed.arch == full.arch
    assert [key(t) for t in resumed_trials] == [key(t) for t in full_trials]


def cli_search(out, *extra):
    return [sys.executable, "-m", "hwnas.cli", "search", "--strategy", "random", "--space", "tiny", "--lut",
            str(out.parent / "tiny.json"), "--data", "digits", "--epochs", "1", "--max-batches", "2", "--trials", "6",
            "--batch-size", "32", "--no-verify", "--no-progress", "--out", str(out), *extra]


@pytest.fixture
def tiny_lut(tmp_path):
    from lut_fixtures import mac_table
    from hwnas.core.spaces import get_space

    mac_table(get_space("tiny")).save(tmp_path / "tiny.json")
    return tmp_path / "tiny.json"


@pytest.mark.ray
def test_cli_search_joins_a_running_cluster_and_resumes_after_kill_9(ray_cluster, tiny_lut, tmp_path, capsys):
    """`--ray HOST:PORT` joins an existing cluster (here the session's); the driver killed with -9
    mid-run leaves every finished trial in trials.jsonl, and --resume ends as an uninterrupted run."""
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    env.pop("RAY_ADDRESS", None)
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen(cli_search(killed, "--ray", address, "--batch", "2"), env=env, cwd=TESTS.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = killed / "trials.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    if proc.returncode == 0:
        pytest.fail("the search finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = {t.number: key(t) for t in read_history(history)}
    assert before
    # the resume and the reference run in this process: --ray ADDRESS then uses the session's connection
    assert main(cli_search(killed, "--ray", address, "--resume")[3:]) == 0
    assert "2 trials at a time" in capsys.readouterr().out  # the resumed run keeps its batch
    assert main(cli_search(full, "--batch", "2")[3:]) == 0
    after = [key(t) for t in read_history(history)]
    assert after == [key(t) for t in read_history(full / "trials.jsonl")]
    assert all(after[n] == k for n, k in before.items())  # nothing finished was lost or redone differently


def test_search_without_ray_never_imports_it(tiny_lut, tmp_path):
    code = ("import sys; from hwnas.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)")
    out = tmp_path / "local"
    done = subprocess.run([sys.executable, "-c", code, *cli_search(out)[3:]], cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "arch.json").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--ray-retries", "1"], "--ray-retries applies to Ray tasks only; add --ray"),
    (["--ray-cpus-per-trial", "0", "--ray", "--ray-gpus-per-trial", "0"], "must be >= 0 and not both 0"),
    (["--batch", "0"], "--batch must be >= 1"),
])
def test_bad_scale_out_flags_are_one_line_errors(tiny_lut, tmp_path, capsys, extra, message):
    assert main(cli_search(tmp_path / "run", *extra)[3:]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_ray_is_refused_for_a_supernet_strategy_with_the_torchrun_hint(tiny_lut, tmp_path, capsys):
    argv = cli_search(tmp_path / "run", "--ray")[3:]
    argv[argv.index("random")] = "fbnet"
    argv.remove("--trials"), argv.remove("6")
    assert main(argv) == 2
    assert "torchrun --nproc-per-node" in capsys.readouterr().err


@pytest.mark.ray
def test_the_shared_evaluator_ships_its_trained_supernet_to_the_workers(ray_cluster, tmp_path):
    """Workers score with the weights the driver trained (no checkpoint file needed where they run,
    no training of their own): the scores equal the in-process ones."""
    from hwnas.search.registry import make_evaluator

    space, predictor, data = tiny_setup()
    runs = {}
    for name, ray in (("local", None), ("ray", ray_cluster)):
        problem = make_problem("random", space, predictor, data, tmp_path / name)
        evaluator = make_evaluator("shared", problem, epochs=1, batch_size=32, max_batches=3, calib_batches=2,
                                   calib_batch_size=32, score_batches=1)
        runs[name] = search(tmp_path, name, evaluator, ray=ray, strategy="random")[1]
    assert [key(t) for t in runs["ray"]] == [key(t) for t in runs["local"]]
    shipped = pickle.loads(pickle.dumps(evaluator))  # what a worker receives
    (tmp_path / "ray" / "spos_supernet.pt").unlink()
    best = max((t for t in runs["local"] if t.state == "complete"), key=lambda t: t.top1)
    assert shipped.score(best.arch, best.seed) == best.top1
    assert not (tmp_path / "ray" / "spos_supernet.pt").exists()  # nothing trained again
