"""Nothing is overwritten without --force, two writers are refused at once, read-only outputs and
closed pipes end in one line, negative numbers reach their option's check (issue 16, defects 2-4, 6, 7)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.jsonio import sha256_file
from hwnas.locks import LockError, hold, lock_path
from hwnas.runs import RunError, check_writable
from hwnas.core.spaces import get_space
from lut_fixtures import mac_table

ROOT = Path(__file__).resolve().parents[1]
CHOICES = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "skip"}


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    save_arch(Arch.create(get_space("tiny"), CHOICES), path)
    return path


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --- overwrites -------------------------------------------------------------------------------
def test_export_refuses_an_existing_onnx_and_force_records_what_it_replaced(arch_file, tmp_path, capsys):
    onnx_path, report_path = tmp_path / "m.onnx", tmp_path / "m.export_report.json"
    args = ["export", str(arch_file), "--onnx", str(onnx_path), "--exporter", "torchscript", "--opset", "17"]
    onnx_path.write_bytes(b"a trained model")
    assert main(args) == 2
    one_line_error(capsys, "m.onnx exists", "--force")
    assert onnx_path.read_bytes() == b"a trained model" and not report_path.exists()

    old = sha256_file(onnx_path)
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    report = json.loads(report_path.read_text())
    assert report["replaced"] == {"onnx": {"path": str(onnx_path), "sha256": old}}
    assert onnx_path.read_bytes() != b"a trained model"
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.lock"))

    assert main(args) == 2  # now the report exists too
    one_line_error(capsys, "exists")


def test_lut_merge_and_arch_sample_refuse_to_overwrite(tmp_path, capsys):
    space = get_space("tiny")
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "out.json"
    mac_table(space).save(a)
    mac_table(space, ms_per_mmac=2.0).save(b)
    out.write_text("keep")
    assert main(["lut", "merge", str(a), str(b), "--out", str(out)]) == 2
    one_line_error(capsys, "exists", "--force")
    assert out.read_text() == "keep"
    assert main(["arch", "sample", "--space", "tiny", "--out", str(out)]) == 2
    one_line_error(capsys, "exists", "--force")
    assert main(["lut", "merge", str(a), str(b), "--out", str(out), "--force"]) == 0
    assert "replaced a file of sha256" in capsys.readouterr().out


# --- two writers --------------------------------------------------------------------------------
def test_a_second_writer_is_refused_at_once_with_the_holders_pid(tmp_path):
    target = tmp_path / "table.json"
    with hold(target, "latency table") as lock:
        assert lock == lock_path(target) and lock.read_text().strip() == str(os.getpid())
        start = time.perf_counter()
        with pytest.raises(LockError, match=f"being written by PID {os.getpid()}"):
            with hold(target, "latency table"):
                pass
        assert time.perf_counter() - start < 1
    assert not lock_path(target).exists()
    with hold(target):  # released: free again
        pass


HOLDER = "import sys, time; from hwnas.locks import hold\nwith hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"


@pytest.fixture
def held_elsewhere():
    """Hold a lock from another process (as a second `hwnas` would) for the test's duration."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_two_writers_of_one_table_run_directory_or_export(held_elsewhere, arch_file, tmp_path, capsys):
    table, run, onnx_path = tmp_path / "t.json", tmp_path / "run", tmp_path / "m.onnx"
    pids = [held_elsewhere(p) for p in (table, run, onnx_path)]
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(table), "--quick",
                 "--no-progress"]) == 2
    one_line_error(capsys, f"PID {pids[0]}", "latency table")
    assert main(["train", str(arch_file), "--data", "digits", "--epochs", "1", "--out", str(run), "--no-progress"]) == 2
    one_line_error(capsys, f"PID {pids[1]}", "run directory")
    assert main(["export", str(arch_file), "--onnx", str(onnx_path)]) == 2
    one_line_error(capsys, f"PID {pids[2]}")
    assert not table.exists() and not run.exists() and not onnx_path.exists()


def test_a_killed_writer_leaves_no_lock_behind(tmp_path):
    target = tmp_path / "t.json"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # kill -9: no clean-up runs, the kernel drops the lock
    proc.wait()
    with hold(target):
        pass


# --- read-only output ---------------------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    # root ignores permission bits; sysfs refuses new files even to root
    folder = Path("/sys")
    try:
        check_writable(folder)
    except RunError:
        yield folder
        return
    pytest.skip("no read-only folder available to this user")


def test_search_out_in_a_read_only_folder_is_one_line(read_only_dir, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    mac_table(get_space("tiny")).save(lut)
    out = read_only_dir / "hwnas-run"
    code = main(["search", "--space", "tiny", "--lut", str(lut), "--data", "digits", "--epochs", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 2
    one_line_error(capsys, "not writable", "choose another --out")


# --- closed pipes and negative numbers ----------------------------------------------------------
def test_output_into_a_closed_pipe_ends_quietly():
    script = f"{sys.executable} -c 'import sys; from hwnas.cli import main; sys.exit(main(sys.argv[1:]))' " \
             "space show fbnet | head -n 1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.stdout.startswith("fbnet")
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr


@pytest.mark.parametrize("argv, message", [
    (["search", "--space", "tiny", "--lut", "x.json", "--latency-budget", "-5ms", "--data", "digits",
      "--out", "r"], "latency budget '-5ms'"),
    (["export", "preset:mobilenetv2_100", "--onnx", "m.onnx", "--batch", "-2"], "batch must be >= 1, got -2"),
    (["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", "t.json", "--threads", "-1"],
     "--threads must be >= 1, got -1"),
])
def test_negative_numbers_reach_the_options_own_check(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = one_line_error(capsys, message)
    assert "expected one argument" not in err


def test_a_second_search_or_calibration_is_refused_with_the_holders_pid(held_elsewhere, tmp_path, capsys):
    table, run = tmp_path / "t.json", tmp_path / "search"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(table), "--quick",
                 "--no-progress"]) == 0
    capsys.readouterr()
    pids = [held_elsewhere(p) for p in (table, run)]
    before = table.read_bytes()
    assert main(["calibrate", "--lut", str(table), "--samples", "4"]) == 2
    one_line_error(capsys, f"PID {pids[0]}", "latency table")
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", str(table), "--data", "digits",
                 "--trials", "1", "--epochs", "1", "--out", str(run), "--no-progress"]) == 2
    one_line_error(capsys, f"PID {pids[1]}", "run directory")
    assert table.read_bytes() == before and not run.exists()


def test_two_models_exported_into_one_folder_keep_their_own_reports(arch_file, tmp_path):
    for name in ("a", "b"):
        assert main(["export", str(arch_file), "--onnx", str(tmp_path / f"{name}.onnx"), "--exporter", "torchscript",
                     "--opset", "17"]) == 0
    reports = {name: json.loads((tmp_path / f"{name}.export_report.json").read_text()) for name in ("a", "b")}
    assert all(Path(r["onnx"]["path"]).name == f"{n}.onnx" for n, r in reports.items())
