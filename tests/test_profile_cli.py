"""`hwnas profile`, `hwnas lut show|merge` and the profiling session: keys, dedup, checkpoints,
resume after Ctrl-C and kill -9, refusals. Tiny space, quick statistics."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.latency_tables import LatencyTable, OpKey
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.profilers import session as session_mod
from hwnas.profilers.torch_backend import TorchCPUProfiler
from hwnas.core.spaces import OpInstance, get_space

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--quick", "--no-progress"]
TINY_OPS = len(get_space("tiny").all_ops())


def profile(out, *extra, backend="torch-cpu"):
    return main(["profile", "--space", "tiny", "--backend", backend, "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lut") / "tiny.json"
    assert profile(out) == 0
    return out


@pytest.fixture
def table_copy(tiny_table, tmp_path) -> Path:
    path = tmp_path / "t.json"
    shutil.copy(tiny_table, path)
    return path


def count_measures(monkeypatch) -> list:
    """Shapes of the ops prepared for timing (the reference network excluded)."""
    calls = []
    original = TorchCPUProfiler.prepare

    def prepare(self, module, shape):
        if not hasattr(module, "conv_head") or not hasattr(module, "blocks"):
            calls.append(tuple(shape))
        return original(self, module, shape)

    monkeypatch.setattr(TorchCPUProfiler, "prepare", prepare)
    return calls


# --- keys and dedup ---------------------------------------------------------------------------
def test_space_keys_cover_stem_blocks_and_head_once():
    space = get_space("fbnet")
    keys = session_mod.space_keys(space)
    assert len(keys) == len(space.all_ops()) == len({k.text for k, _ in keys})
    kinds = {k.kind for k, _ in keys}
    assert kinds == {"stem", "block", "head"}
    assert keys[0][0].text == "stem:c16_k3_s2|relu-sigmoid-sin|1x3x224x224|float32"


def test_space_keys_deduplicate_spellings_of_one_op(monkeypatch):
    space = get_space("tiny")
    ops = space.all_ops()
    twin = OpInstance("block", "ir_k3_r1_s1_e1.0_c8", 8, 16, 16)  # ir_r1_k3_s1_e1_c8 spelled differently
    monkeypatch.setattr(space, "all_ops", lambda: [*ops, twin, ops[1]])
    keys = session_mod.space_keys(space, batch=2)
    assert len(keys) == len(ops)
    assert all(k.shape[0] == 2 for k, _ in keys)


def test_profile_fills_a_complete_valid_table(tiny_table, capsys):
    table = LatencyTable.load(tiny_table)
    space = get_space("tiny")
    assert len(table) == TINY_OPS
    assert table.backend == "torch-cpu" and table.backend_options["threads"] == 1
    assert table.spaces == ["tiny"] and table.resolutions == [32] and table.overhead_ms > 0
    assert table.rounds["rounds"] == 2 and table.reference["ms"] > 0
    assert table.device["cpu"]["threads_used"] == 1
    LatencyPredictor(table, space)  # every op of the space is there
    head = table.get(OpKey.for_op(space.head_op(16, 8, 8), space.build_config.name))
    assert head.param_bytes == (16 * 16 + 2 * 16 + 16 * 10 + 10) * 4  # conv_head (no bias), bn2, classifier


def test_lut_show_text_and_json(tiny_table, capsys):
    assert main(["lut", "show", str(tiny_table), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "torch-cpu" in text and f"entries     {TINY_OPS}" in text and "slowest 3" in text
    assert main(["lut", "show", str(tiny_table), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == TINY_OPS and len(doc["slowest"]) == 10 and doc["spaces"] == ["tiny"]
    p50s = [row["p50_ms"] for row in doc["slowest"]]
    assert p50s == sorted(p50s, reverse=True)


def test_ort_cpu_profile_smoke(tmp_path):
    out = tmp_path / "ort.json"
    assert profile(out, "--opt-level", "extended", backend="ort-cpu") == 0
    table = LatencyTable.load(out)
    assert len(table) == TINY_OPS and table.backend_options["graph_optimization_level"] == "extended"


def test_out_folder_gets_a_name_from_device_and_backend(tmp_path, capsys):
    assert profile(str(tmp_path) + "/", "--threads", "1") == 0
    (made,) = tmp_path.iterdir()
    assert made.name.endswith("_torch-cpu_t1.json")
    assert profile(str(tmp_path) + "/", "--threads", "1", "--channels-last", "--keep-denormals") == 0
    assert sorted(p.name.split("_torch-cpu_")[1] for p in tmp_path.iterdir()) == ["t1.json", "t1_cl_denormals.json"]


# --- never overwrite, never re-measure ----------------------------------------------------------
def test_existing_out_without_resume_is_refused_untouched(table_copy, capsys):
    before = table_copy.read_bytes()
    assert profile(table_copy) == 2
    err = capsys.readouterr().err.strip()
    assert "exists; pass --resume to continue it or choose another --out" in err and "\n" not in err
    assert table_copy.read_bytes() == before


def test_resume_of_a_complete_table_measures_nothing(table_copy, monkeypatch, capsys):
    before = LatencyTable.load(table_copy).entries
    calls = count_measures(monkeypatch)
    assert profile(table_copy, "--resume") == 0
    assert calls == [] and LatencyTable.load(table_copy).entries == before
    assert f"0 ops measured, {TINY_OPS} already there" in capsys.readouterr().out


def test_resume_measures_only_the_missing_entries(table_copy, monkeypatch):
    doc = json.loads(table_copy.read_text())
    dropped = sorted(doc["entries"])[:4]
    for key in dropped:
        del doc["entries"][key]
    table_copy.write_text(json.dumps(doc))
    kept = LatencyTable.load(table_copy).entries
    calls = count_measures(monkeypatch)
    assert profile(table_copy, "--resume") == 0
    after = LatencyTable.load(table_copy)
    assert len(calls) == 4 and len(after) == TINY_OPS
    assert all(after.entries[k] == m for k, m in kept.items())


def test_resume_with_other_options_is_refused(table_copy, capsys):
    before = table_copy.read_bytes()
    assert profile(table_copy, "--resume", "--threads", "2") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "backend_options" in err
    assert table_copy.read_bytes() == before


def test_ctrl_c_saves_what_was_finished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.json"
    original = TorchCPUProfiler.prepare
    calls = []

    def prepare(self, module, shape):
        calls.append(shape)
        if len(calls) == 9:  # the second chunk of 4 ops (after the reference network)
            raise KeyboardInterrupt
        return original(self, module, shape)

    monkeypatch.setattr(TorchCPUProfiler, "prepare", prepare)
    assert profile(out, "--chunk-size", "4") == 130
    assert "finished work is saved" in capsys.readouterr().err
    assert len(LatencyTable.load(out)) == 4
    monkeypatch.setattr(TorchCPUProfiler, "prepare", original)
    assert profile(out, "--resume") == 0
    assert len(LatencyTable.load(out)) == TINY_OPS


def test_kill_9_then_resume_loses_no_finished_round(tmp_path):
    out = tmp_path / "t.json"
    # many rounds, so that the kill lands mid-run with rounds finished but ops unfinished
    cmd = [sys.executable, "-m", "hwnas.cli", "profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(out),
           "--no-progress", "--rounds", "200", "--max-calls", "3", "--chunk-size", "7"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reads, deadline = 0, time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists():
                doc = json.loads(out.read_text())  # valid JSON at every moment
                reads += 1
                if len(doc["entries"]) >= 7 and doc["pending"]:
                    break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-500:]
    finished = LatencyTable.load(out)
    pending = {k: len(v) for k, v in finished.pending.items()}
    assert 7 <= len(finished) < TINY_OPS and pending and reads >= 1
    seen = []
    original = session_mod.time_rounds

    def spy(items, reference, config, **kw):
        seen.append({k: len(v) for k, v in (kw.get("records") or {}).items() if v})
        return original(items, reference, config, **kw)

    session_mod.time_rounds = spy
    try:
        assert profile(out, "--resume", "--rounds", "200", "--max-calls", "3", "--chunk-size", "7") == 0
    finally:
        session_mod.time_rounds = original
    resumed = LatencyTable.load(out)
    assert len(resumed) == TINY_OPS and not resumed.pending
    assert all(resumed.entries[k] == m for k, m in finished.entries.items())
    assert seen[0] == pending  # the resumed run started from every finished round
    assert resumed.reference["ms"] == finished.reference["ms"]


def test_every_entry_is_the_median_of_its_interleaved_rounds(tiny_table):
    table = LatencyTable.load(tiny_table)
    assert table.rounds["rounds"] == 2 and table.reference["ms"] > 0
    assert table.reference["space"] == "tiny" and len(table.reference["choices"]) == 3
    for m in table.entries.values():
        assert m.p10_ms <= m.p50_ms <= m.p90_ms and m.count >= 2 * 2


# --- merge --------------------------------------------------------------------------------------
def test_merge_two_halves_and_refuse_a_foreign_table(table_copy, tmp_path, capsys):
    doc = json.loads(table_copy.read_text())
    keys = sorted(doc["entries"])
    a, b = dict(doc), dict(doc)
    a["entries"] = {k: doc["entries"][k] for k in keys[:5]}
    b["entries"] = {k: doc["entries"][k] for k in keys[5:]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "c.json"
    assert main(["lut", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    assert LatencyTable.load(out).entries == LatencyTable.load(table_copy).entries
    assert main(["lut", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err

    b["backend_options"] = {**b["backend_options"], "threads": 4}
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["lut", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tables differ in backend_options" in err and "\n" not in err
    assert not (tmp_path / "d.json").exists()
    b["backend"] = "ort-cpu"
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["lut", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "d.json")]) == 2
    assert "tables differ in backend" in capsys.readouterr().err


# --- every bad input: one line, exit 2, nothing written ------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "tiny", "--backend", "torch-cpu", "--threads", "0"], "--threads must be >= 1"),
        (["--space", "tiny", "--backend", "torch-cpu", "--batch", "0"], "--batch must be >= 1"),
        (["--space", "nope", "--backend", "torch-cpu"], "unknown search space 'nope'"),
        (["--space", "tiny", "--backend", "nope"], "unknown backend 'nope'; available here: torch-cpu"),
        (["--space", "tiny", "--backend", "torch-cpu", "--opt-level", "basic"], "does not take --opt-level"),
        (["--space", "tiny", "--backend", "torch-cpu", "--resolution", "100"], "multiple of 32"),
        (["--space", "tiny", "--backend", "torch-cpu", "--rounds", "0"], "rounds must be >= 1"),
        (["--space", "tiny", "--backend", "torch-cpu", "--drift-limit", "0"], "drift_limit must be > 0"),
        (["--space", "tiny", "--backend", "torch-cpu", "--chunk-size", "0"], "chunk_size must be >= 1"),
    ],
)
def test_bad_profile_input(argv, message, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["profile", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("hwnas: error:")
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_dir(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert profile(locked / "sub" / "t.json") == 2
        assert "not a writable folder" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_out_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert profile(blocker / "t.json") == 2
    assert "not a writable folder" in capsys.readouterr().err


def test_resume_of_something_that_is_not_a_table(tmp_path, capsys):
    out = tmp_path / "t.json"
    out.write_text(json.dumps({"format": "other"}))
    assert profile(out, "--resume") == 2
    assert "not an hwnas latency table" in capsys.readouterr().err
    out.write_text("{not json")
    assert profile(out, "--resume") == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lut", "show", "missing.json"], "latency table not found"),
        (["lut", "merge", "a.json", "--out", "c.json"], "at least two tables"),
        (["lut", "merge", "a.json", "b.json", "--out", "c.json"], "latency table not found"),
    ],
)
def test_bad_lut_input(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "c.json").exists()


def test_backends_lists_every_backend(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["torch-cpu"]["available"] and "threads" in rows["ort-cpu"]["options"]
    assert set(rows) == {"torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt", "openvino", "executorch",
                         "litert", "remote"}
    # an optional runtime that is missing says why and how to install it
    assert rows["executorch"]["options"] == rows["litert"]["options"] == ["threads", "clock"]
    assert all(rows[n]["available"] or "requirements-mobile.txt" in rows[n]["reason"] for n in ("executorch", "litert"))


def test_one_table_holds_several_resolutions(table_copy):
    assert profile(table_copy, "--resume", "--resolution", "64") == 0
    table = LatencyTable.load(table_copy)
    assert table.resolutions == [32, 64] and len(table) == 2 * TINY_OPS
    LatencyPredictor(table, get_space("tiny", resolution=64))
    LatencyPredictor(table, get_space("tiny", resolution=32))


def test_a_failed_checkpoint_leaves_the_previous_file_intact(table_copy, monkeypatch):
    from hwnas import jsonio

    before = table_copy.read_bytes()
    table = LatencyTable.load(table_copy)
    table.entries.clear()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonio.os, "replace", crash)
    with pytest.raises(OSError):
        table.save(table_copy)
    assert table_copy.read_bytes() == before
    assert [p.name for p in table_copy.parent.iterdir()] == ["t.json"]  # no temp file left behind


def test_the_head_of_the_data_class_count_is_added_to_a_table_with_resume(table_copy, tmp_path, capsys):
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "tiny", "--seed", "3", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["predict", "--lut", str(table_copy), str(arch), "--num-classes", "3"]) == 2
    err = capsys.readouterr().err
    assert "head:f16_n3" in err and "--num-classes 3" in err and "--resume" in err

    assert profile(table_copy, "--num-classes", "3", "--resume") == 0
    assert "1 ops measured" in capsys.readouterr().out  # only the new head
    table = LatencyTable.load(table_copy)
    heads = {k.split("|")[0]: m.p50_ms for k, m in table.entries.items() if k.startswith("head:")}
    assert set(heads) == {"head:f16_n10", "head:f16_n3"}
    assert main(["predict", "--lut", str(table_copy), str(arch), "--num-classes", "3", "--json"]) == 0
    three = json.loads(capsys.readouterr().out)
    assert main(["predict", "--lut", str(table_copy), str(arch), "--json"]) == 0
    ten = json.loads(capsys.readouterr().out)
    assert (three["num_classes"], ten["num_classes"]) == (3, 10)
    assert three["raw_sum_ms"] - ten["raw_sum_ms"] == pytest.approx(heads["head:f16_n3"] - heads["head:f16_n10"])
