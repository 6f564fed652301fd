"""`hwnas profile --ray`: one actor per device on the session's local Ray cluster (2 CPUs) fills
the same table as a local profile, resumes under the local rules, survives a dead actor, and
leaves Ray unloaded without --ray. Tiny space, quick rounds."""

import json
import os
import sys
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.latency_tables import LatencyTable
from hwnas.profilers.interleaved import RoundsConfig
from hwnas.profilers.session import ProfileSettings, default_table_name, space_keys
from hwnas.profilers.torch_backend import TorchCPUProfiler
from hwnas.scaleout.ray_profile import ActorDevice, Placement, ProfileWorker, _Group, _table_paths, profile_space_ray
from hwnas.core.spaces import get_space

QUICK = ProfileSettings(progress=False, rounds=RoundsConfig.quick())

FAST = ["--quick", "--no-progress", "--max-calls", "3"]
TINY_KEYS = {k.text for k, _ in space_keys(get_space("tiny"))}


def profile(out, *extra):
    return main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def ray_table(ray_cluster, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray")
    assert profile(f"{folder}/", "--ray", "--ray-actors", "2") == 0
    [path] = folder.glob("*.json")
    return path


@pytest.mark.ray
def test_two_actors_fill_a_complete_valid_table_named_like_a_local_one(ray_table, capsys):
    table = LatencyTable.load(ray_table)
    assert set(table.entries) == TINY_KEYS and not table.pending
    assert all(0 < m.p10_ms <= m.p50_ms <= m.p90_ms for m in table.entries.values())
    assert table.reference["ms"] > 0 and table.rounds["rounds"] == 2 and table.overhead_ms is not None
    assert table.backend == "torch-cpu" and table.device["cpu"]["threads_used"] == 1
    assert ray_table.name.endswith("_torch-cpu_t1.json")


@pytest.mark.ray
def test_ray_resumes_a_local_table_measuring_only_its_missing_ops(ray_cluster, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert profile(out) == 0  # local: the same identity rules must let --ray continue it
    doc = json.loads(out.read_text())
    dropped = sorted(doc["entries"])[:5]
    kept = {k: v for k, v in doc["entries"].items() if k not in dropped}
    doc["entries"] = kept
    out.write_text(json.dumps(doc))
    capsys.readouterr()
    assert profile(out, "--resume", "--ray", "--ray-actors", "1") == 0
    assert "5 ops measured by 1 actors" in capsys.readouterr().out
    table = LatencyTable.load(out)
    assert set(table.entries) == TINY_KEYS
    assert {k: table.entries[k].to_dict() for k in kept} == kept  # finished entries untouched
    assert table.reference["ms"] == doc["reference"]["ms"]


@pytest.mark.ray
def test_ray_refuses_to_resume_a_table_of_other_options(ray_table, tmp_path, capsys):
    doc = json.loads(ray_table.read_text())
    doc["backend_options"]["channels_last"] = True
    out = tmp_path / "other.json"
    out.write_text(json.dumps(doc))
    assert profile(out, "--resume", "--ray", "--ray-actors", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot resume" in err and "backend_options" in err and len(err.splitlines()) == 1
    assert json.loads(out.read_text()) == doc


@pytest.mark.ray
def test_an_existing_table_without_resume_is_refused_before_actors_start(ray_table, capsys):
    before = ray_table.read_bytes()
    assert profile(ray_table, "--ray") == 2
    err = capsys.readouterr().err.strip()
    assert "exists; pass --resume" in err and len(err.splitlines()) == 1
    assert ray_table.read_bytes() == before


def crashing_worker(marker: Path) -> type:
    """A worker whose process exits in the middle of the first chunk any actor receives."""

    class CrashingWorker(ProfileWorker):
        def profile_chunk(self, job):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().profile_chunk(job)
            os._exit(1)

    return CrashingWorker


@pytest.mark.ray
def test_a_dead_actor_is_restarted_and_its_chunk_timed_again(ray_cluster, tmp_path):
    out = tmp_path / "t.json"
    saved = []

    def on_chunk(actor, keys):  # every chunk reported is on disk, and stays there
        saved.extend(k.text for k in keys)
        assert set(saved) <= set(LatencyTable.load(out).entries)

    report = profile_space_ray(get_space("tiny"), "torch-cpu", {}, out, QUICK, actors=1, ops_per_chunk=4,
                               worker=crashing_worker(tmp_path / "crashed"), on_chunk=on_chunk)
    assert (tmp_path / "crashed").exists() and report.requeued == 1
    [device] = report.tables
    assert device.measured == len(TINY_KEYS) == len(saved)
    table = LatencyTable.load(out)
    assert set(table.entries) == TINY_KEYS and set(saved) == TINY_KEYS and not table.pending


@pytest.mark.ray
def test_when_no_actor_comes_back_the_run_stops_with_its_entries_saved(ray_cluster, tmp_path):
    from hwnas.errors import ProfileError

    out = tmp_path / "t.json"
    with pytest.raises(ProfileError, match=r"every Ray actor of t.json died .* rerun with --resume$"):
        profile_space_ray(get_space("tiny"), "torch-cpu", {}, out, QUICK, actors=1, max_restarts=0,
                          worker=crashing_worker(tmp_path / "crashed"))
    table = LatencyTable.load(out)  # valid, with what was finished (nothing: the first chunk died)
    assert table.entries == {} and table.spaces == ["tiny"]


def failing_worker() -> type:
    """A worker whose profiler cannot be made on its node (a plain class: the driver only needs the
    worker's constructor signature, and this one starts without importing torch)."""

    class FailingWorker:
        def __init__(self, backend, options, stats=None):
            from hwnas.errors import BackendError

            raise BackendError(f"backend {backend!r} is not available here: test")

        def describe(self):  # what the driver asks first; never reached
            raise AssertionError("the constructor failed, so no call may run")

    return FailingWorker


@pytest.mark.ray
def test_an_actor_that_cannot_start_is_a_one_line_error(ray_cluster, tmp_path):
    from hwnas.errors import ProfileError

    with pytest.raises(ProfileError, match="could not start: .*not available here: test$") as info:
        profile_space_ray(get_space("tiny"), "torch-cpu", {}, tmp_path / "t.json", QUICK, actors=1, worker=failing_worker())
    assert "\n" not in str(info.value)


@pytest.mark.ray
@pytest.mark.parametrize("flags, message", [
    (["--ray", "--ray-actors", "3"], "holds 2 profiling actor(s) of 1 CPU each, 3 wanted"),
    (["--ray", "--ray-resource", "pixel7"], "holds 0 profiling actor(s) of 1 CPU + 1 pixel7 each"),
    (["--ray", "--ray-actors", "0"], "--ray-actors must be >= 1"),
])
def test_actors_the_cluster_cannot_hold_are_refused(ray_cluster, tmp_path, capsys, flags, message):
    assert profile(tmp_path / "t.json", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("flag", [["--ray-actors", "2"], ["--ray-resource", "pixel7"]])
def test_ray_placement_flags_need_ray(tmp_path, capsys, flag):
    assert profile(tmp_path / "t.json", *flag) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag[0]} places Ray actors; add --ray" in err and len(err.splitlines()) == 1


def test_placement_follows_the_backend():
    assert Placement.for_backend("torch-cpu", {"threads": 2}).actor_options() == {"num_cpus": 2.0, "num_gpus": 0.0}
    gpu = Placement.for_backend("torch-cuda", {}, "hostA")
    assert gpu.actor_options() == {"num_cpus": 1.0, "num_gpus": 1.0, "resources": {"hostA": 1}}
    assert gpu.fits({"CPU": 16, "GPU": 4, "hostA": 2}) == 2 and gpu.fits({"CPU": 16, "GPU": 4}) == 0


def test_one_table_per_device_kind(tmp_path):
    with TorchCPUProfiler() as profiler:
        mine, options = profiler.fingerprint(), profiler.options()
        local_name = default_table_name(profiler, mine)
    other = {**mine, "cpu": {**mine["cpu"], "model": "Other CPU"}}
    groups = [_Group(ActorDevice("torch-cpu", options, "float32", device), []) for device in (mine, other)]
    names = [p.name for p in _table_paths(groups, tmp_path, folder=True)]
    assert names[0] == local_name and names[1].startswith("other-cpu") and names[0] != names[1]
    from hwnas.errors import ProfileError

    with pytest.raises(ProfileError, match=r"2 device kinds .*give --out a folder"):
        _table_paths(groups, tmp_path / "one.json", folder=False)
    newer = {**mine, "libraries": {**mine["libraries"], "torch": "99.0"}}  # same name, another table
    groups[1] = _Group(ActorDevice("torch-cpu", options, "float32", newer), [])
    with pytest.raises(ProfileError, match=r"share the table name .* differ in device libraries"):
        _table_paths(groups, tmp_path, folder=True)


def test_without_ray_flag_profile_never_imports_ray(tmp_path, monkeypatch, capsys):
    for name in ["ray", *(m for m in sys.modules if m.startswith("ray."))]:
        monkeypatch.setitem(sys.modules, name, None)  # any `import ray...` now raises ImportError
    assert profile(tmp_path / "t.json") == 0
    assert set(LatencyTable.load(tmp_path / "t.json").entries) == TINY_KEYS
    assert profile(tmp_path / "u.json", "--ray") == 2  # while --ray without Ray says how to install it
    assert "pip install -r requirements-ray.txt" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_continues_the_pending_rounds_of_an_interrupted_local_profile(ray_cluster, tmp_path, monkeypatch):
    """Rounds a local profile finished before it stopped travel to the actor with their chunk:
    the actor times only the rounds still missing, and the table ends complete."""
    import argparse

    from hwnas.commands.profile import rounds_config
    from hwnas.profilers import get_profiler
    from hwnas.profilers import session as session_mod
    from hwnas.profilers.statistics import StatsConfig
    from hwnas.scaleout import ray_profile

    out = tmp_path / "t.json"
    rounds = rounds_config(argparse.Namespace(quick=True, rounds=None, max_calls=3, drift_limit=None, chunk_size=None))
    original = session_mod.time_rounds

    def stopped_after_one_segment(items, reference, config, *, on_segment, **kw):
        def checkpoint_then_stop(records):
            on_segment(records)
            raise KeyboardInterrupt  # as a Ctrl-C after the first segment's checkpoint
        return original(items, reference, config, on_segment=checkpoint_then_stop, **kw)

    monkeypatch.setattr(session_mod, "time_rounds", stopped_after_one_segment)
    with get_profiler("torch-cpu", stats=StatsConfig.quick()) as profiler, pytest.raises(KeyboardInterrupt):
        session_mod.profile_space(get_space("tiny"), profiler, out, ProfileSettings(progress=False, rounds=rounds),
                                  checkpoint_every_s=0.0)
    monkeypatch.setattr(session_mod, "time_rounds", original)
    interrupted = LatencyTable.load(out)
    assert interrupted.pending and not interrupted.entries
    sent = {}
    real_pending = ray_profile.pending_rounds

    def spy(table, chunk):
        found = real_pending(table, chunk)
        sent.update({k: len(v) for k, v in found.items() if v})
        return found

    monkeypatch.setattr(ray_profile, "pending_rounds", spy)
    assert profile(out, "--resume", "--ray", "--ray-actors", "1") == 0
    assert sent == {k: len(v) for k, v in interrupted.pending.items()}
    table = LatencyTable.load(out)
    assert set(table.entries) == TINY_KEYS and not table.pending
