"""`hwnas profile` (measure a space's ops into a LUT) and `hwnas backends` (what runs here)."""

from __future__ import annotations

import json
import sys

from ..errors import ProfileError
from ..profilers import PROFILERS, available_backends, backend_options
from ..profilers.session import ProfileSettings, profile_to
from ..profilers.interleaved import RoundsConfig
from ..profilers.statistics import StatsConfig
from ..runtimes.remote import MODEL_FORMATS
from ..scaleout.ray_runtime import LOCAL
from ..core.spaces import get_space
from .common import SEED

# CLI flag -> profiler keyword; a flag given to a backend that does not take it is an error
_BACKEND_FLAGS = {
    "threads": "--threads",
    "opt_level": "--opt-level",
    "exporter": "--exporter",
    "precision": "--precision",
    "channels_last": "--channels-last",
    "device": "--device",
    "flush_denormal": "--keep-denormals",
    "clock": "--clock",
    "remote_command": "--remote-command", "remote_setup": "--remote-setup", "remote_format": "--remote-format",
    "time_pattern": "--time-pattern", "time_unit": "--time-unit", "device_name": "--device-name",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure every unique op of a space on a backend into a latency table",
        description="Measure every unique op (stem, blocks, heads) of a space into a latency table, in interleaved "
                    "rounds against a reference network so that the machine's drift cancels out. The table is "
                    "checkpointed as rounds finish; --resume continues an interrupted run.",
    )
    p.add_argument("--space", required=True)
    p.add_argument("--backend", required=True, help=f"one of: {', '.join(PROFILERS)} (see `hwnas backends`)")
    p.add_argument("--out", required=True,
                   help="table file (.json); an existing folder, or a path ending in '/', gets <device>_<backend>_t<threads>.json")
    p.add_argument("--resume", action="store_true", help="continue the table at --out: measure only missing ops")
    p.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the head to measure (default: the space's, 1000 for the ImageNet spaces); "
                        "add the head of your data's class count to an existing table with --resume")
    backend = p.add_argument_group("backend options (each backend takes some; see `hwnas backends`)")
    backend.add_argument("--threads", type=int, default=None, help="intra-op threads (default 1)")
    backend.add_argument("--opt-level", choices=("disable", "basic", "extended", "layout", "all"), default=None,
                         help="ONNX Runtime graph optimisation level (default all)")
    backend.add_argument("--exporter", choices=("torchscript", "dynamo"), default=None,
                         help="ONNX exporter for ort-* (default torchscript: 10-70 ms per op against ~2 s)")
    backend.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default=None)
    backend.add_argument("--channels-last", action="store_true", default=None, help="torch-*: NHWC memory format")
    backend.add_argument("--device", type=int, default=None, help="CUDA device index (GPU backends)")
    backend.add_argument("--clock", choices=("thread", "wall"), default=None,
                         help="CPU backends: time a call by the calling thread's CPU time (default with 1 thread: "
                              "single-threaded inference runs in that thread, and the time other processes take the "
                              "core from it is left out) or by the wall clock (default with more threads)")
    backend.add_argument("--keep-denormals", dest="flush_denormal", action="store_false", default=None,
                         help="torch-cpu: do not flush denormal floats to zero while measuring (they make eager "
                              "timings depend on the random weights, up to 4x)")
    remote = p.add_argument_group("remote backend: time on another device by a command (see docs/profiling.md)")
    remote.add_argument("--remote-command", default=None, metavar="TEMPLATE",
                        help="run for every timed call, printing the time: placeholders {model} {name} {dir} {shape} "
                             "{batch} {resolution}, e.g. 'adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/{name}'")
    remote.add_argument("--remote-setup", default=None, metavar="TEMPLATE",
                        help="run once per model before timing, e.g. 'adb push {model} /data/local/tmp/'")
    remote.add_argument("--remote-format", choices=tuple(MODEL_FORMATS), default=None,
                        help="the model file the command takes (default onnx)")
    remote.add_argument("--time-pattern", default=None, metavar="REGEX",
                        help="regular expression of the printed time, the number in its first group; the last match "
                             "counts (default: the last number followed by 'ms')")
    remote.add_argument("--time-unit", choices=("ms", "us", "s"), default=None, help="unit of the printed time (default ms)")
    remote.add_argument("--device-name", default=None, help="the remote device's name, recorded in the table")
    timing = p.add_argument_group("timing (interleaved rounds; see hwnas/profilers/interleaved.py)")
    timing.add_argument("--quick", action="store_true",
                        help="2 short rounds: smoke runs and tests, not a table to ship")
    timing.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per op, each in a new random order (default 5)")
    timing.add_argument("--max-calls", type=int, default=None, help="timed calls per op and round at most (default 25)")
    timing.add_argument("--drift-limit", type=float, default=None,
                        help="re-time a segment when the reference network changed by more than this fraction "
                             "around it (default 0.10)")
    timing.add_argument("--chunk-size", type=int, default=None,
                        help="ops prepared (sessions open) at a time (default 64; fewer use less memory)")
    timing.add_argument("--seed", type=SEED, default=0, help="seed of the round orders")
    scale = p.add_argument_group("scale-out on Ray (optional: pip install -r requirements-ray.txt)")
    scale.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                       help="profile on Ray actors, one per device, one table per device kind: a bare --ray starts "
                            "Ray on this machine (or joins RAY_ADDRESS), `auto` joins the cluster `ray start` "
                            "runs here, HOST:PORT a remote one; --out a folder gets one table per device kind")
    scale.add_argument("--ray-actors", type=int, default=None, metavar="N",
                       help="profiling actors (default: as many as the cluster holds, each taking --threads CPUs, "
                            "or a GPU for GPU backends)")
    scale.add_argument("--ray-resource", default=None, metavar="NAME",
                       help="place actors only on nodes with this custom resource (a host tag: "
                            "`ray start --resources '{\"NAME\": 1}'`), one unit each")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_profile)

    b = subparsers.add_parser("backends", help="list profiling backends, whether each runs here, and their options")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backends)


def rounds_config(args) -> RoundsConfig:
    """RoundsConfig from --quick and the explicit overrides."""
    base = RoundsConfig.quick() if args.quick else RoundsConfig()
    overrides = {"rounds": args.rounds, "max_calls": args.max_calls, "drift_limit": args.drift_limit,
                 "chunk_size": args.chunk_size}
    values = {**base.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
    if args.max_calls is not None:
        values["min_calls"] = min(values["min_calls"], args.max_calls)
    return RoundsConfig(**values)


def _options(args) -> dict:
    given = vars(args)
    options = {key: given[key] for key in _BACKEND_FLAGS if given[key] is not None}
    if args.backend in PROFILERS:
        accepted = backend_options(args.backend)
        for key in options:
            if key not in accepted:
                takes = ", ".join(_BACKEND_FLAGS[k] for k in accepted if k in _BACKEND_FLAGS) or "none"
                raise ProfileError(f"backend {args.backend} does not take {_BACKEND_FLAGS[key]}; its flags: {takes}")
    return options


def cmd_profile(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise ProfileError(f"--threads must be >= 1, got {args.threads}")
    if args.batch < 1:
        raise ProfileError(f"--batch must be >= 1, got {args.batch}")
    space = get_space(args.space, resolution=args.resolution, num_classes=args.num_classes)
    settings = ProfileSettings(batch=args.batch, resume=args.resume, rounds=rounds_config(args), seed=args.seed,
                               progress=not args.no_progress)
    stats = StatsConfig.quick() if args.quick else StatsConfig()  # the backend's per-call overhead
    options = _options(args)
    if args.ray is not None:
        return _profile_on_ray(args, space, settings, stats, options)
    if args.ray_actors is not None or args.ray_resource is not None:
        flag = "--ray-actors" if args.ray_actors is not None else "--ray-resource"
        raise ProfileError(f"{flag} places Ray actors; add --ray (or --ray ADDRESS) to profile on Ray, or drop {flag}")
    report = profile_to(space, args.backend, options, args.out, settings, stats=stats)
    print(f"wrote {report.path}: {report.measured} ops measured, {report.skipped} already there, "
          f"{report.total} in {space.name}@{space.resolution} ({report.elapsed_s:.1f} s{_remeasured(report)})")
    _print_drift(report, "the machine's speed moved")
    return 0


def _remeasured(report) -> str:
    return f", {report.remeasured} re-timed for drift" if report.remeasured else ""


def _print_drift(report, what: str) -> None:
    if report.drift is not None:
        print(f"  reference network {report.reference_ms:.3f} ms at the table's speed; {what} "
              f"{(report.drift - 1) * 100:.0f}% (slowest/fastest) during this run, cancelled round by round")


def _profile_on_ray(args, space, settings, stats, options) -> int:
    """`profile --ray`: Ray is imported here only."""
    from ..scaleout.ray_profile import profile_space_ray
    from ..scaleout.ray_runtime import connected

    if args.ray_actors is not None and args.ray_actors < 1:
        raise ProfileError(f"--ray-actors must be >= 1, got {args.ray_actors}")
    with connected(args.ray):
        report = profile_space_ray(space, args.backend, options, args.out, settings, stats=stats,
                                   actors=args.ray_actors, resource=args.ray_resource)
    measured = sum(t.measured for t in report.tables)
    requeued = f", {report.requeued} chunks re-queued after an actor died" if report.requeued else ""
    print(f"profiled {space.name}@{space.resolution} on {report.actors} Ray actors into {len(report.tables)} "
          f"table(s): {measured} ops measured ({report.elapsed_s:.1f} s{requeued})")
    for t in report.tables:
        print(f"wrote {t.path}: {t.measured} ops measured by {t.actors} actors on {', '.join(t.hosts) or '-'}, "
              f"{t.skipped} already there, {t.total} in {space.name}@{space.resolution}{_remeasured(t)}")
        _print_drift(t, "an actor's machine speed moved up to")
    return 0


def cmd_backends(args) -> int:
    reasons = available_backends()
    rows = [
        {"name": name, "available": reason is None, "reason": reason, "options": list(backend_options(name)),
         "description": (PROFILERS[name].__doc__ or "").strip().splitlines()[0].rstrip(".")}
        for name, reason in reasons.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "yes" if r["available"] else f"no: {r['reason']}"
        print(f"{r['name']:<11} {state}", file=sys.stdout)
        print(f"{'':<11} {r['description']}; options: {', '.join(r['options'])}")
    return 0
