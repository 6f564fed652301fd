"""Can a latency prediction be trusted on a fresh profile, at the corners a search ends on?

One session, per backend (ort-cpu, torch-cpu, executorch, litert), from scratch and through the
CLI a user runs: `hwnas profile` (fbnet at 224, 1 thread) -> `hwnas calibrate` (40 architectures, half lopsided) -> `hwnas validate`
(50 uniform + 20 lopsided architectures from seeds the calibration did not use). Then, side by
side on the same held-out measurements: the raw LUT sum, a FLOPs proxy (a linear fit of
measured latency on MACs made on the held-out measurements themselves: favourable to it),
every calibration model fitted on the calibration samples, and the one `calibrate` chose.
Figures are at the table's speed (every measurement rescaled by the reference network timed
around it), and as measured now; the machine's drift is printed beside them.

    python benchmarks/lut_fidelity.py --out benchmarks/results/lut_fidelity/S1   # one session
    python benchmarks/lut_fidelity.py --summarize benchmarks/results/lut_fidelity/S*  # worst of them
    python benchmarks/lut_fidelity.py --backend executorch --revalidate S1 --out S2   # S1's table, validated now
    python benchmarks/lut_fidelity.py --timing --out DIR   # profile + calibrate wall time per space
    python benchmarks/lut_fidelity.py --backend openvino --out DIR   # one backend (ort-cpu, torch-cpu, openvino,
                                                                    # executorch, litert)
    python benchmarks/lut_fidelity.py --backends executorch --space tiny --quick --calib 6 --uniform 4 \
        --lopsided 2 --out /tmp/fidelity-smoke   # a smoke run of a mobile backend: does it work, no figures

Targets (issue 11), in the worst session: ort-cpu >= 90% within ±10% on the uniform and on the
lopsided set, Kendall tau >= 0.9, stated error >= measured MAPE; torch-cpu: better than the raw
sum and the FLOPs proxy, its true error stated. Profile + calibrate under 5 minutes per space.
The mobile runtimes (openvino, executorch, litert; issue 25) are held to ort-cpu's targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hwnas.core.arch import Arch
from hwnas.core.build import build_model
from hwnas.cli import main as hwnas_main
from hwnas.jsonio import atomic_write_json
from hwnas.latency_tables.calibration import MODELS, CalibrationData, fit_model
from hwnas.latency_tables.loading import space_for_table
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.profilers.table import LatencyTable
from hwnas.latency_tables.validation import prediction_errors
from hwnas.core.summary import count_macs

BACKENDS = {"ort-cpu": ["--backend", "ort-cpu", "--threads", "1"],
            "torch-cpu": ["--backend", "torch-cpu", "--threads", "1", "--channels-last"],
            "openvino": ["--backend", "openvino", "--threads", "1"],
            "executorch": ["--backend", "executorch", "--threads", "1"],  # per-op table, XNNPACK
            "litert": ["--backend", "litert", "--threads", "1"]}


def cli(argv: list[str]) -> float:
    start = time.perf_counter()
    if hwnas_main(argv) != 0:
        raise SystemExit(f"`hwnas {' '.join(argv)}` failed")
    return time.perf_counter() - start


def macs_of(space, arch: Arch) -> int:
    model = build_model(arch.arch_def(space), space.build_config, space.num_classes)
    return count_macs(model, (1, 3, space.resolution, space.resolution))[0]


def side_by_side(table: LatencyTable, report: dict) -> dict:
    """Raw, FLOPs proxy, each calibration model and the chosen one on the held-out rows."""
    space = space_for_table(table, report["summary"]["space"], report["summary"]["resolution"],
                            report["summary"]["num_classes"])
    record = table.calibration[str(space.resolution)]
    predictor = LatencyPredictor(table, space)
    calib = [Arch.create(space, s["choices"]) for s in record["samples"]]
    data = CalibrationData.create(
        [predictor.raw_sum_ms(a) for a in calib], [s["measured_ms"] for s in record["samples"]],
        [predictor.n_ops(a) for a in calib], [predictor.type_sums(a) for a in calib],
        ["uniform" if s["family"] == "uniform" else "lopsided" for s in record["samples"]])
    rows = [r for r in report["archs"] if r["group"] in ("uniform", "lopsided")]
    held = [Arch.create(space, r["choices"]) for r in rows]
    measured = np.array([r["measured_ms"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    columns: dict[str, np.ndarray] = {"raw": np.array([r["raw_sum_ms"] for r in rows])}
    macs = np.array([macs_of(space, a) for a in held], dtype=np.float64)
    slope, intercept = np.polyfit(macs, measured, 1)
    columns["flops_proxy"] = slope * macs + intercept
    for model in MODELS[1:]:
        if len(calib) < data.min_samples(model):  # a smoke run's few samples do not fit every model
            print(f"  ({model}: needs {data.min_samples(model)} calibration samples, got {len(calib)}; left out)")
            continue
        cal = fit_model(data, model, space.resolution)
        doc = {**record, **cal.to_dict()}
        copy = LatencyTable.from_dict(table.to_dict())
        copy.calibration = {str(space.resolution): doc}
        fitted = LatencyPredictor(copy, space)
        columns[model] = np.array([fitted.latency_ms(a) for a in held])
    columns["chosen"] = np.array([r["calibrated_ms"] for r in rows])
    out = {}
    for name, predicted in columns.items():
        out[name] = {"all": prediction_errors(predicted, measured)}
        for group in ("uniform", "lopsided"):
            mask = groups == group
            out[name][group] = prediction_errors(predicted[mask], measured[mask])
    return out


def self_consistency(report: dict) -> float:
    """Kendall tau between the medians of a validation's odd and even rounds: how well the
    measurements order the held-out architectures at all (a predictor's tau cannot be told apart
    from a perfect one's above this)."""
    from scipy.stats import kendalltau

    odd, even = [], []
    for row in report["archs"]:
        rounds = np.array(row["round_ms"]) / np.array(row["reference_ms"])
        odd.append(np.median(rounds[0::2]))
        even.append(np.median(rounds[1::2]))
    return float(kendalltau(odd, even).statistic)


def session(backend: str, args, out: Path) -> dict:
    work = out / backend
    work.mkdir(parents=True, exist_ok=True)
    lut = work / "lut.json"
    for path in (lut, Path(str(lut) + ".calibrate-progress.json")):
        path.unlink(missing_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    quick = ["--quick"] if args.quick else []
    if args.revalidate:  # an earlier session's calibrated table, checked again now
        earlier = Path(args.revalidate) / backend / "lut.json"
        if not earlier.is_file():
            raise SystemExit(f"--revalidate {args.revalidate}: no {earlier}; give a session folder of this backend")
        atomic_write_json(lut, json.loads(earlier.read_text()))
        profile_s = calibrate_s = 0.0
    else:
        profile_s = cli(["profile", "--space", args.space, *BACKENDS[backend], "--out", str(lut), "--no-progress",
                         *quick])
        calibrate_s = cli(["calibrate", "--lut", str(lut), "--samples", str(args.calib), "--seed", str(args.seed),
                           *(["--rounds", "2"] if args.quick else [])])
    validate_s = cli(["validate", "--lut", str(lut), "--samples", str(args.uniform), "--lopsided", str(args.lopsided),
                      "--seed", str(args.seed + 1), "--out", str(work / "validation"), "--force",
                      *(["--rounds", str(args.validate_rounds or 2)] if args.validate_rounds or args.quick else [])])
    report = json.loads((work / "validation" / "report.json").read_text())
    table = LatencyTable.load(lut)
    record = table.calibration[str(report["summary"]["resolution"])]
    s = report["summary"]
    result = {
        "backend": backend, "space": args.space, "started": started, "profile_s": profile_s, "calibrate_s": calibrate_s,
        "validate_s": validate_s, "table_from": str(args.revalidate) if args.revalidate else None,
        "table_profiled": table.created,
        "chosen_model": record["model"], "stated_error_pct": s.get("stated_error_pct"),
        "calibration_speed_vs_table": record["speed_vs_table"], "validation_speed_vs_table": s["speed_vs_table"],
        "validation_speed_range": s["speed_range"], "noise_cv_median": s["noise_cv_median"],
        "calibration_noise_cv_median": record["noise_cv_median"], "as_measured": s["as_measured"],
        "within_stated": s.get("within_stated"), "widened": s.get("widened"),
        "models": side_by_side(table, report),
        "self_consistency_tau": self_consistency(report),
    }
    atomic_write_json(work / "session.json", result)
    return result


def check(r: dict) -> list[tuple[str, bool]]:
    """Issue 11's targets for one backend's session."""
    m = r["models"]
    chosen = m["chosen"]
    if r["backend"] in ("ort-cpu", "openvino", "executorch", "litert"):  # issue 11's; issue 25's for the mobile ones
        return [("uniform >= 90% within ±10%", chosen["uniform"]["within_10pct"] >= 0.9),
                ("lopsided >= 90% within ±10%", chosen["lopsided"]["within_10pct"] >= 0.9),
                ("Kendall tau >= 0.9", chosen["all"]["kendall_tau"] >= 0.9),
                ("stated error >= measured MAPE", r["stated_error_pct"] >= chosen["all"]["mape_pct"])]
    return [("beats the raw sum", chosen["all"]["mape_pct"] < m["raw"]["all"]["mape_pct"]),
            ("beats the FLOPs proxy", chosen["all"]["mape_pct"] < m["flops_proxy"]["all"]["mape_pct"]),
            ("stated error >= measured MAPE", r["stated_error_pct"] >= chosen["all"]["mape_pct"])]


def print_session(r: dict, label: str = "") -> None:
    print(f"\n{label}{r['backend']} (started {r['started']}): profile {r['profile_s']:.0f} s + calibrate "
          f"{r['calibrate_s']:.0f} s = {r['profile_s'] + r['calibrate_s']:.0f} s; validate {r['validate_s']:.0f} s")
    print(f"  noise (median CV of rounds) {r['noise_cv_median'] * 100:.1f}%; machine speed vs profile: calibration "
          f"{r['calibration_speed_vs_table']:.3f}x, validation {r['validation_speed_vs_table']:.3f}x "
          f"(range {r['validation_speed_range'][0]:.2f}-{r['validation_speed_range'][1]:.2f})")
    print(f"  {'predictor':<12} {'MAPE':>6} {'±10%':>5} {'tau':>6} | {'unif MAPE':>9} {'±10%':>5} | "
          f"{'lops MAPE':>9} {'±10%':>5}")
    for name, e in r["models"].items():
        tag = f" <- chosen ({r['chosen_model']})" if name == "chosen" else ""
        print(f"  {name:<12} {e['all']['mape_pct']:5.1f}% {e['all']['within_10pct'] * 100:4.0f}% "
              f"{e['all']['kendall_tau']:6.3f} | {e['uniform']['mape_pct']:8.1f}% {e['uniform']['within_10pct'] * 100:4.0f}% | "
              f"{e['lopsided']['mape_pct']:8.1f}% {e['lopsided']['within_10pct'] * 100:4.0f}%{tag}")
    if "self_consistency_tau" in r:
        print(f"  the measurements' own Kendall tau, odd rounds against even rounds: {r['self_consistency_tau']:.3f}")
    am = r["as_measured"]
    print(f"  stated ±{r['stated_error_pct']:.1f}%, {r['within_stated'] * 100:.0f}% of archs within their stated error "
          f"({r['widened']} widened); as measured now (prediction x machine speed): MAPE {am['mape_pct']:.1f}%, "
          f"±10% {am['within_10pct'] * 100:.0f}%")
    for name, ok in check(r):
        print(f"  target {name}: {'met' if ok else 'NOT met'}")


def summarize(dirs: list[Path]) -> int:
    sessions: dict[str, list[dict]] = {}
    for d in dirs:
        for path in sorted(d.glob("*/session.json")):
            r = json.loads(path.read_text())
            sessions.setdefault(r["backend"], []).append(r)
    ok = True
    for backend, runs in sessions.items():
        print(f"\n=== {backend}: {len(runs)} sessions; the worst one by the chosen model's MAPE:")
        worst = max(runs, key=lambda r: r["models"]["chosen"]["all"]["mape_pct"])
        for r in runs:
            c = r["models"]["chosen"]["all"]
            source = f" (table of {r['table_profiled']})" if r.get("table_from") else ""
            print(f"  {r['started']}{source}: chosen {r['chosen_model']:<9} MAPE {c['mape_pct']:5.1f}% ±10% "
                  f"{c['within_10pct'] * 100:3.0f}% tau {c['kendall_tau']:.3f}; raw {r['models']['raw']['all']['mape_pct']:.1f}%, "
                  f"FLOPs {r['models']['flops_proxy']['all']['mape_pct']:.1f}%; noise {r['noise_cv_median'] * 100:.1f}%; "
                  f"stated ±{r['stated_error_pct']:.1f}%; profile+calibrate {r['profile_s'] + r['calibrate_s']:.0f} s")
        print_session(worst, "worst session: ")
        ok &= all(met for _, met in check(worst))
    return 0 if ok else 1


def timing(args, out: Path) -> int:
    """Wall time of profile + calibrate per space on ort-cpu."""
    rows = []
    for space in args.spaces.split(","):
        lut = out / f"timing_{space}.json"
        for path in (lut, Path(str(lut) + ".calibrate-progress.json")):
            path.unlink(missing_ok=True)
        profile_s = cli(["profile", "--space", space, *BACKENDS["ort-cpu"], "--out", str(lut), "--no-progress"])
        calibrate_s = cli(["calibrate", "--lut", str(lut), "--samples", str(args.calib)])
        rows.append({"space": space, "ops": len(LatencyTable.load(lut)), "profile_s": profile_s,
                     "calibrate_s": calibrate_s})
        print(f"{space}: {rows[-1]['ops']} ops, profile {profile_s:.0f} s + calibrate {calibrate_s:.0f} s = "
              f"{profile_s + calibrate_s:.0f} s")
    atomic_write_json(out / "timing.json", rows)
    return 0 if all(r["profile_s"] + r["calibrate_s"] < 300 for r in rows) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/lut_fidelity/session")
    parser.add_argument("--backends", "--backend", default="ort-cpu,torch-cpu",
                        help=f"comma-separated, of: {', '.join(BACKENDS)}")
    parser.add_argument("--space", default="fbnet", help="space of the sessions (default fbnet; tiny for a smoke run)")
    parser.add_argument("--quick", action="store_true", help="profile with --quick (a smoke run, not figures)")
    parser.add_argument("--calib", type=int, default=40)
    parser.add_argument("--uniform", type=int, default=50)
    parser.add_argument("--lopsided", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="calibration seed; validation uses seed + 1")
    parser.add_argument("--validate-rounds", type=int, default=None,
                        help="rounds of the held-out measurements (default: validate's); more make the check itself "
                             "more precise (see the self-consistency figure)")
    parser.add_argument("--revalidate", metavar="SESSION_DIR", default=None, help=(
        "skip profile and calibrate: validate the calibrated table of an earlier session now (a later session "
        "of a backend whose profile is long; what it checks is the table against the machine as it is now)"))
    parser.add_argument("--summarize", nargs="*", default=None, metavar="SESSION_DIR")
    parser.add_argument("--timing", action="store_true", help="profile + calibrate wall time per space instead")
    parser.add_argument("--spaces", default="fbnet,mnasnet,mobilenetv3")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        return summarize([Path(d) for d in args.summarize])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.timing:
        return timing(args, out)
    ok = True
    for backend in args.backends.split(","):
        r = session(backend, args, out)
        print_session(r)
        ok &= all(met for _, met in check(r))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
