"""The `remote` backend: a model timed on another device by a command template. The stand-in for
the device is deploy/benchmark.py (the script a user copies to a target machine): it loads the
ONNX file with ONNX Runtime and prints its latency, which the pattern reads."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hwnas.errors import BackendError
from hwnas.profilers import get_profiler
from hwnas.profilers.end_to_end import measure_end_to_end
from hwnas.profilers.interleaved import RoundsConfig
from hwnas.runtimes.remote import parse_time, run_command

BENCH = Path(__file__).resolve().parents[1] / "deploy" / "benchmark.py"
#: the device: deploy/benchmark.py on this machine, one thread, its median printed as "p50 X"
COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(BENCH))} {{model}} --threads 1 --warmup 3 --iters 15"
PATTERN = r"p50 ([0-9.]+)"
ONE_ROUND = RoundsConfig(rounds=1, min_calls=1, max_calls=1, warmup_calls=0, reference_calls=1)


SHAPE = (1, 8, 32, 32)


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(8, 8, 1).eval()


def big() -> nn.Module:
    """About 2,400 times the multiply-adds of `small`."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1)).eval()


def test_the_stated_convention_and_a_pattern_read_the_last_time_in_its_unit():
    assert parse_time("warm-up 9 ms\nmedian 1.25 ms\n", None, "ms", "c") == 1.25
    assert parse_time("took 3e-1ms", None, "ms", "c") == pytest.approx(0.3)
    tflite = "Inference timings in us: Init: 5120, First inference: 930, Warmup (avg): 870.5, Inference (avg): 851.25"
    assert parse_time(tflite, r"Inference \(avg\): ([0-9.]+)", "us", "c") == pytest.approx(0.85125)
    with pytest.raises(BackendError, match="printed no time"):
        parse_time("ready\n", None, "ms", "c")


def test_a_failing_command_names_itself_and_its_last_line():
    with pytest.raises(BackendError, match=r"exited 3: .*no device attached"):
        run_command("echo 'error: no device attached' >&2; exit 3", 10)


def test_templates_and_formats_are_checked_before_any_work():
    with pytest.raises(BackendError, match="--remote-command"):
        get_profiler("remote")
    with pytest.raises(BackendError, match="placeholders"):
        get_profiler("remote", remote_command="bench {graph}")
    with pytest.raises(BackendError, match="group"):
        get_profiler("remote", remote_command="bench {model}", time_pattern="p50 [0-9.]+")
    with pytest.raises(BackendError, match="onnx, openvino"):
        get_profiler("remote", remote_command="bench {model}", remote_format="pte")


def test_models_are_timed_on_the_stand_in_device_and_a_bigger_one_takes_longer(tmp_path):
    setup_log = tmp_path / "pushed.txt"
    options = {"remote_command": COMMAND, "time_pattern": PATTERN, "device_name": "stand-in",
               "remote_setup": f"echo {{name}} {{shape}} >> {shlex.quote(str(setup_log))}"}
    with get_profiler("remote", **options) as profiler:
        device = profiler.fingerprint()
        rounds = measure_end_to_end({"small": small, "big": big}, SHAPE, profiler, config=ONE_ROUND)
    small_ms, big_ms = rounds["small"][0].time_ms, rounds["big"][0].time_ms
    assert 0 < small_ms < big_ms
    assert device["name"] == "stand-in" and device["runtime"]["command"] == COMMAND
    pushed = setup_log.read_text().split("\n")
    assert pushed.count("model.onnx 1,8,32,32") == 2  # setup ran once per model


def test_profile_cli_takes_the_remote_flags(tmp_path, capsys):
    from hwnas.cli import main

    code = main(["profile", "--space", "tiny", "--backend", "ort-cpu", "--remote-command", "x {model}",
                 "--out", str(tmp_path / "t.json")])
    assert code == 2 and "does not take --remote-command" in capsys.readouterr().err
