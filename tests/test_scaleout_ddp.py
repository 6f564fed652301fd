"""torchrun / DDP supernet training: 2 gloo processes on the CPU against one process.

Both processes load every global batch (same seed, same global RNG: the same images, the same
augmentation, the same Gumbel noise and SPOS path) and train on their half of it, DDP averaging
the gradients. That is the one-process step on the whole batch except for batch norm, whose
statistics are each half's: the only source of the gaps the tolerances below allow for.

One spawn of 2 processes (module fixture `ranks`) runs every distributed job once: the ddp
helpers, FBNet's supernet training (uninterrupted, and stopped after an epoch then resumed) and
the SPOS supernet of the shared evaluator; each process leaves its state in OUT/rankR.pt.
"""

import json
import os
import shutil
import socket
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from hwnas.train.data import load_data
from hwnas.errors import HwnasError
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.train import ddp
from hwnas.search import FBNetConfig, LoopConfig, RandomStrategy, SearchProblem, read_history, run_search
from hwnas.search.fbnet_train import SupernetTraining
from hwnas.search.spos import SharedEvaluator, SPOSConfig
from hwnas.core.spaces import get_space
from lut_fixtures import mac_table

pytestmark = pytest.mark.ddp
ROOT = Path(__file__).resolve().parents[1]
FBNET = FBNetConfig(epochs=2, batch_size=32, max_batches=4, warmup_epochs=0, weight_lr=0.1, arch_lr=0.05, top_k=1)
SPOS = SPOSConfig(epochs=1, batch_size=32, max_batches=4, lr=0.1)


def _setup():
    space = get_space("tiny")
    return space, LatencyPredictor(mac_table(space), space), load_data("digits", resolution=32, seed=0)


def _fbnet(run_dir: Path, resume: bool = False, stop_after: int | None = None) -> SupernetTraining:
    space, predictor, data = _setup()
    problem = SearchProblem(space, predictor, None, data, run_dir, seed=0, resume=resume, progress=False)
    training = SupernetTraining(problem, FBNET, {"test": "ddp"})
    training.train(stop_after)
    return training


def _spos(checkpoint: Path):
    space, _, data = _setup()
    evaluator = SharedEvaluator(space, data, SPOS, checkpoint)
    evaluator.prepare()
    return evaluator


def _helpers(rank: int) -> dict:
    """What each ddp helper gives in this process (checked by the test against both ranks)."""
    def fail():
        raise HwnasError("refused in process 0")

    try:
        ddp.on_main(fail)
        error = ""
    except HwnasError as exc:
        error = str(exc)
    return {"world": ddp.world(), "shard": ddp.shard((torch.arange(8), torch.arange(8) * 10)),
            "mean": ddp.all_reduce_mean(float(rank), 10.0 * rank), "broadcast": ddp.broadcast_object(f"from {rank}"),
            "on_main": ddp.on_main(lambda: f"ran in {rank}"), "error": error}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    out = Path(out)
    with ddp.session():
        found = {"helpers": _helpers(rank)}
        # each process is given its own run directory: only process 0's may ever appear
        full = _fbnet(out / f"fbnet_full_{rank}")
        found["fbnet"], found["fbnet_log"] = full.net.state_dict(), full.log
        _fbnet(out / f"fbnet_part_{rank}", stop_after=1)
        resumed = _fbnet(out / f"fbnet_part_{rank}", resume=True)
        found["fbnet_resumed"], found["fbnet_resumed_epochs"] = resumed.net.state_dict(), resumed.start
        spos = _spos(out / f"spos_{rank}.pt")
        found["spos"] = spos._net.state_dict()
        torch.save(found, out / f"rank{rank}.pt")
        # a trial search scored by that supernet: process 1 leaves run_search once it is loaded
        _trials(out / f"trials_{rank}", out / f"spos_{rank}.pt")
        (out / f"after_search_{rank}").touch()


def _trials(run_dir: Path, supernet: Path) -> None:
    space, predictor, data = _setup()
    problem = SearchProblem(space, predictor, None, data, run_dir, seed=0, progress=False)
    evaluator = SharedEvaluator(space, data, replace(SPOS, calib_batches=2, score_batches=1), supernet)
    run_search(problem, RandomStrategy(), evaluator, LoopConfig(trials=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def ranks(out):
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def single(out):
    """The same trainings in this one process."""
    fbnet = _fbnet(out / "fbnet_single")
    spos = _spos(out / "spos_single.pt")
    return {"fbnet": fbnet.net.state_dict(), "fbnet_log": fbnet.log, "fbnet_start": fbnet.start,
            "spos": spos._net.state_dict(), "spos_log": torch.load(out / "spos_single.pt", weights_only=True)["log"],
            "init": _fbnet_init_state()}


def _fbnet_init_state() -> dict:
    from hwnas.search.supernet import Supernet

    torch.manual_seed(0)
    return Supernet(get_space("tiny", num_classes=10), FBNET.mixed_op).state_dict()


def _params(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}


def test_helpers_slice_average_broadcast_and_share_errors(ranks):
    first, second = ranks[0]["helpers"], ranks[1]["helpers"]
    assert first["world"] == ddp.World(0, 2, 0, "gloo") and second["world"] == ddp.World(1, 2, 1, "gloo")
    assert first["world"].is_main and not second["world"].is_main
    assert [s.tolist() for s in first["shard"]] == [[0, 1, 2, 3], [0, 10, 20, 30]]
    assert [s.tolist() for s in second["shard"]] == [[4, 5, 6, 7], [40, 50, 60, 70]]
    assert first["mean"] == second["mean"] == (0.5, 5.0)
    assert first["broadcast"] == second["broadcast"] == "from 0"
    assert first["on_main"] == second["on_main"] == "ran in 0"
    assert first["error"] == second["error"] == "refused in process 0"  # no process is left waiting


def test_single_process_helpers_are_plain():
    assert ddp.world() == ddp.World() and ddp.is_main()
    batch = (torch.arange(4), torch.arange(4))
    assert ddp.shard(batch) is batch and ddp.all_reduce_mean(1, 2) == (1.0, 2.0)
    ddp.check_batch(3)  # any batch is one slice
    ddp.leave_unless_main()  # process 0 stays


def test_torchrun_environment_is_checked():
    assert ddp.from_env({}) == ddp.World()
    assert ddp.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
                         "MASTER_PORT": "1"}) == ddp.World(2, 4, 0)
    with pytest.raises(HwnasError, match="MASTER_ADDR"):
        ddp.from_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(HwnasError, match="RANK=3"):
        ddp.from_env({"WORLD_SIZE": "2", "RANK": "3", "MASTER_ADDR": "h", "MASTER_PORT": "1"})


def test_both_processes_end_with_the_same_supernet(ranks):
    """Weights and architecture parameters (FBNet's alphas too, trained in the architecture
    steps) are averaged, not trained apart: the two processes hold identical supernets."""
    for key in ("fbnet", "spos"):
        a, b = _params(ranks[0][key]), _params(ranks[1][key])
        assert a.keys() == b.keys() and any(k.startswith("alphas") for k in _params(ranks[0]["fbnet"]))
        for name in a:
            assert torch.equal(a[name], b[name]), (key, name)


def test_fbnet_two_processes_match_one_process(ranks, single):
    """Per-epoch losses and the trained supernet match the one-process run on the same global
    batches (2 epochs of 4 weight + 1 architecture batches of 32). Measured: loss gaps <= 1.5e-4
    and the parameters 2.3% apart, relative to how far training moved them; a process that
    trained on its half alone (no gradient averaging) ends 46% apart with loss gaps up to 1.3e-2.
    Tolerances: 2e-3 on the losses, 10% on the parameters."""
    for two, one in zip(ranks[0]["fbnet_log"], single["fbnet_log"]):
        assert two["weight_loss"] == pytest.approx(one["weight_loss"], abs=2e-3)
        assert two["arch_loss"] == pytest.approx(one["arch_loss"], abs=2e-3)
        assert two["expected_latency_ms"] == pytest.approx(one["expected_latency_ms"], rel=1e-3)
    two, one, init = _params(ranks[0]["fbnet"]), _params(single["fbnet"]), _params(single["init"])
    moved = sum(float((one[k] - init[k]).norm() ** 2) for k in one) ** 0.5
    gap = sum(float((two[k] - one[k]).norm() ** 2) for k in one) ** 0.5
    print(f"fbnet: parameters moved {moved:.4g}, two processes differ by {gap:.4g} ({100 * gap / moved:.2f}%)")
    assert moved > 0 and gap < 0.1 * moved


def test_spos_two_processes_match_one_process(ranks, single, out):
    """The SPOS supernet (one random path per batch, the same in both processes), 1 epoch of 4
    batches of 32: loss and parameters as one process's. Measured: loss gap 2e-5, parameters
    ~5% apart relative to their movement (one half alone: 91%). Tolerances: 2e-3 and 10%."""
    state = torch.load(out / "spos_0.pt", weights_only=True)
    for two, one in zip(state["log"], single["spos_log"]):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-3)
    two, one = _params(ranks[0]["spos"]), _params(single["spos"])
    torch.manual_seed(0)
    from hwnas.search.supernet import Supernet

    init = _params(Supernet(get_space("tiny", num_classes=10), "hard").state_dict())
    moved = sum(float((one[k] - init[k]).norm() ** 2) for k in one) ** 0.5
    gap = sum(float((two[k] - one[k]).norm() ** 2) for k in one) ** 0.5
    print(f"spos: parameters moved {moved:.4g}, two processes differ by {gap:.4g} ({100 * gap / moved:.2f}%)")
    assert moved > 0 and gap < 0.1 * moved


def test_only_process_0_writes_and_a_resumed_run_continues_its_checkpoint(ranks, out):
    assert (out / "fbnet_full_0" / "supernet.pt").is_file() and (out / "spos_0.pt").is_file()
    assert not any((out / name).exists() for name in ("fbnet_full_1", "fbnet_part_1", "spos_1.pt"))
    assert ranks[0]["fbnet_resumed_epochs"] == ranks[1]["fbnet_resumed_epochs"] == 1  # both restored epoch 1
    full, resumed = _params(ranks[0]["fbnet"]), _params(ranks[1]["fbnet_resumed"])
    for name in full:
        assert torch.allclose(full[name], resumed[name], atol=1e-5), name
    log = [json.loads(line) for line in (out / "fbnet_part_0" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_trial_search_runs_in_process_0_after_the_shared_supernet(ranks, out):
    """Process 1 helps with the supernet (here: loads it) and leaves run_search quietly (exit 0);
    process 0 alone runs the trials and writes the result."""
    assert len([t for t in read_history(out / "trials_0" / "trials.jsonl") if t.state == "complete"]) == 2
    assert (out / "trials_0" / "arch.json").is_file() and not (out / "trials_1").exists()
    assert (out / "after_search_0").exists() and not (out / "after_search_1").exists()


def test_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    monkeypatch.setattr(ddp, "world", lambda: ddp.World(0, 4, 0, "gloo"))
    with pytest.raises(HwnasError, match="multiple of 4"):
        ddp.check_batch(30)
    with pytest.raises(HwnasError, match="at least 8"):
        ddp.check_batch(4)
    ddp.check_batch(32)


def _torchrun(args: list[str], tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH (it comes with torch)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(port), "-m", "hwnas", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_fbnet_search_under_torchrun(tmp_path):
    """`torchrun --nproc-per-node 2 -m hwnas search --strategy fbnet`: one result, printed and
    written once, exit 0."""
    mac_table(get_space("tiny")).save(tmp_path / "lut.json")
    out = tmp_path / "run"
    done = _torchrun(["search", "--strategy", "fbnet", "--space", "tiny", "--lut", "lut.json", "--data", "digits",
                      "--out", "run", "--epochs", "1", "--max-batches", "2", "--batch-size", "32", "--top-k", "1",
                      "--latency-budget", "50%", "--no-progress", "--no-verify"], tmp_path, _free_port())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(ln.startswith("architecture ") for ln in lines) == sum(ln.startswith("wrote ") for ln in lines) == 1
    result = json.loads((out / "result.json").read_text())
    assert result["finished"] and result["meets_budget"] and result["epochs_done"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "arch_distribution.png", "latency.png",
                                                      "log.jsonl", "result.json", "supernet.pt"]


@pytest.mark.parametrize("argv", [["--strategy", "random"], ["--strategy", "enas"]])
def test_search_without_a_supernet_to_share_is_refused_under_torchrun(argv, tmp_path, monkeypatch, capsys):
    from hwnas.cli import main

    mac_table(get_space("tiny")).save(tmp_path / "lut.json")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    assert main(["search", "--space", "tiny", "--lut", str(tmp_path / "lut.json"), "--data", "digits",
                 "--out", str(tmp_path / "run"), *argv]) == 2
    assert "only --strategy fbnet and --evaluator shared" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
