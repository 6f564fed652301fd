"""`hwnas train`: from-scratch training of an architecture, its outputs, checkpoint and resume."""

import json

import pytest
import torch

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.train.data import load_data
from hwnas.runs import read_jsonl
from hwnas.core.spaces import get_space
from hwnas.train.loop import TrainConfig, train_arch
from hwnas.core.weights import load_weights

CHOICES = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "skip"}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=32, seed=0)


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    save_arch(Arch.create(get_space("tiny"), CHOICES), path)
    return path


def test_train_writes_exportable_weights_log_and_top1(tmp_path, arch_file, capsys):
    out = tmp_path / "run"
    argv = ["train", str(arch_file), "--data", "digits", "--epochs", "2", "--out", str(out), "--no-progress",
            "--max-batches", "3", "--seed", "1"]
    assert main(argv) == 0
    assert "top-1" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["top1"] <= 100.0 and result["finished"] and result["epochs_done"] == 2
    payload = load_weights(out / "model.pt")
    assert payload["arch"] == Arch.create(get_space("tiny"), CHOICES)
    assert payload["num_classes"] == 10 and payload["resolution"] == 32
    assert [r["epoch"] for r in read_jsonl(out / "log.jsonl")] == [1, 2]
    # a finished run directory is not overwritten without --resume
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_resume_continues_from_the_checkpoint(tmp_path, digits):
    arch = Arch.create(get_space("tiny"), CHOICES)
    cfg = TrainConfig(epochs=2, max_batches=3, seed=2)
    full = train_arch(arch, digits, cfg, run_dir=tmp_path / "full")
    part = train_arch(arch, digits, cfg, run_dir=tmp_path / "part", stop_after=1)
    assert not part.finished and not (tmp_path / "part" / "model.pt").exists()
    assert len(read_jsonl(tmp_path / "part" / "log.jsonl")) == 1
    resumed = train_arch(arch, digits, cfg, run_dir=tmp_path / "part", resume=True)
    assert resumed.finished and resumed.epochs_done == 2
    assert resumed.top1 == pytest.approx(full.top1)
    a = load_weights(tmp_path / "full" / "model.pt")["state_dict"]
    b = load_weights(tmp_path / "part" / "model.pt")["state_dict"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_resume_with_other_settings_is_refused(tmp_path, arch_file, capsys):
    out = tmp_path / "run"
    base = ["train", str(arch_file), "--data", "digits", "--epochs", "1", "--out", str(out), "--no-progress",
            "--max-batches", "2"]
    assert main(base) == 0
    assert main([*base, "--resume", "--lr", "0.5"]) == 2
    assert "lr was 0.025, now" in capsys.readouterr().err
