"""`hwnas lut show FILE`, `hwnas lut merge A B ... --out C` and `hwnas lut import FILE... --format F --out T`."""

from __future__ import annotations

import json

from ..latency_tables.files import merge_files, write_imported
from ..latency_tables.published import FORMATS, import_published
from ..profilers.table import LatencyTable


def register(subparsers) -> None:
    lut = subparsers.add_parser("lut", help="inspect and merge latency tables")
    sub = lut.add_subparsers(dest="lut_command", metavar="SUBCOMMAND", required=True)

    show = sub.add_parser("show", help="device, backend, entry count and slowest ops of a table")
    show.add_argument("table", metavar="FILE")
    show.add_argument("--top", type=int, default=10, help="how many of the slowest ops to list (default 10)")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.set_defaults(func=cmd_show)

    merge = sub.add_parser("merge", help="merge tables of one device, backend and options into one")
    merge.add_argument("tables", metavar="FILE", nargs="+", help="two or more tables; later ones win on overlap")
    merge.add_argument("--out", required=True)
    merge.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    merge.set_defaults(func=cmd_merge)

    imp = sub.add_parser("import", help="convert published latency tables (Once-for-All, ProxylessNAS, HW-NAS-Bench) "
                                        "into hwnas tables")
    imp.add_argument("files", metavar="FILE", nargs="+",
                     help="the published tables: YAML, one per resolution (ofa, proxylessnas), or HW-NAS-Bench's "
                          "fbnet_lut_<device>_cifar100_wide.csv with base_all_k3_e1.csv beside it (hwnasbench)")
    imp.add_argument("--format", required=True, choices=sorted(FORMATS),
                     help="ofa: Once-for-All's MobileNetV3 w1.2 tables (space mobilenetv3_w12); proxylessnas: "
                          "ProxylessNAS's mobile_trim.yaml (space proxylessnas); hwnasbench: HW-NAS-Bench's FBNet "
                          "CIFAR-100 per-layer tables of raspi4, pixel3 or eyeriss (space fbnet_cifar100)")
    imp.add_argument("--out", required=True,
                     help="TABLE.json for one table, or a directory (existing, or ending in /) for one table per file")
    imp.add_argument("--device", default=None,
                     help="the device the tables were measured on (default: known from the file's name or folder, "
                          "e.g. note10/ -> Samsung Galaxy Note10, mobile_trim.yaml -> Google Pixel 1, "
                          "fbnet_lut_raspi4_cifar100_wide.csv -> Raspberry Pi 4)")
    imp.add_argument("--force", action="store_true", help="overwrite existing output tables")
    imp.set_defaults(func=cmd_import)


def summarize(table: LatencyTable, top: int = 10) -> dict:
    """What `lut show` prints: where and how the table was measured, and its slowest ops."""
    entries = table.entries
    slowest = sorted(entries.items(), key=lambda kv: kv[1].p50_ms, reverse=True)[:max(top, 0)]
    cpu = table.device.get("cpu", {})
    gpu = table.device.get("gpu") or None
    spread = sorted(m.rel_ci for m in entries.values() if m.rel_ci is not None)
    return {
        "backend": table.backend,
        "backend_options": table.backend_options,
        "device": {
            "name": table.device.get("name"),
            "source": table.device.get("source"),
            "cpu": cpu.get("model"),
            "cpus": cpu.get("cpus_available"),
            "threads_used": cpu.get("threads_used"),
            "gpu": gpu.get("name") if gpu else None,
            "driver": gpu.get("driver") if gpu else None,
            "libraries": table.device.get("libraries", {}),
            "hostname": table.device.get("hostname"),
        },
        "batch": table.batch,
        "dtype": table.dtype,
        "spaces": table.spaces,
        "resolutions": table.resolutions,
        "entries": len(entries),
        "overhead_ms": table.overhead_ms,
        "created": table.created,
        "calibration": sorted(table.calibration) if table.calibration else None,
        "reference": table.reference,
        "rounds": (table.rounds or {}).get("rounds"),
        "pending": len(table.pending),
        "quality": {
            "median_round_spread": spread[len(spread) // 2] if spread else None,
            "retimed_segments": sum(m.remeasured for m in entries.values()),
        },
        "total_p50_ms": sum(m.p50_ms for m in entries.values()),
        "slowest": [{"key": k, "p50_ms": m.p50_ms, "p90_ms": m.p90_ms, "count": m.count, "peak_bytes": m.peak_bytes}
                    for k, m in slowest],
    }


def cmd_show(args) -> int:
    table = LatencyTable.load(args.table)
    doc = summarize(table, args.top)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    dev = doc["device"]
    options = ", ".join(f"{k}={v}" for k, v in sorted(doc["backend_options"].items()))
    print(f"{args.table}")
    if table.device.get("published"):
        print(f"  device      {dev['name']} (published: {dev['source']})")
    elif (table.device.get("runtime") or {}).get("name") == "remote":  # a device reached from this host
        print(f"  device      {table.device['name']} (remote, reached from {dev['cpu']})")
    else:
        print(f"  device      {dev['cpu']} ({dev['cpus']} cpus available, {dev['threads_used']} threads used)"
              + (f"; GPU {dev['gpu']} driver {dev['driver']}" if dev["gpu"] else ""))
        libs = ", ".join(f"{k} {v}" for k, v in dev["libraries"].items() if v)
        print(f"  libraries   {libs}")
    print(f"  backend     {doc['backend']} ({options})")
    print(f"  inputs      batch {doc['batch']}, {doc['dtype']}")
    print(f"  spaces      {', '.join(doc['spaces']) or '-'} at {', '.join(map(str, doc['resolutions'])) or '-'} px")
    overhead = f"{doc['overhead_ms']:.4f} ms per call" if doc["overhead_ms"] is not None else "not measured"
    print(f"  entries     {doc['entries']} (overhead {overhead}; created {doc['created']})")
    q = doc["quality"]
    if table.device.get("published"):
        heads = ("a head of another class count is derived from the published classifier row"
                 if (table.statistics or {}).get("classifiers") else
                 "no classifier row was published: the published head's class count only")
        print("  statistic   published mean: p10/p50/p90 all hold it (no quantiles were published); memory computed "
              f"here from each op (fp32); {heads}")
        if (table.statistics or {}).get("hwnasbench"):
            print("  mapping     HW-NAS-Bench's base + per-layer deltas: each layer's ops over its skip, the stem holding "
                  "the all-skip network, the head 0 (docs/profiling.md)")
    else:
        ref = doc["reference"] or {}
        if ref.get("ms"):
            print(f"  timing      {doc['rounds']} interleaved rounds per op against {ref['space']}'s reference network "
                  f"({ref['ms']:.3f} ms at profiling); {q['retimed_segments']} round(s) re-timed for drift"
                  + (f"; median relative spread of an op's rounds {q['median_round_spread']:.1%}"
                     if q["median_round_spread"] is not None else "")
                  + (f"; {doc['pending']} op(s) unfinished (--resume)" if doc["pending"] else ""))
        else:
            print("  timing      no reference network (made by an older hwnas): profile the device again")
    if doc["calibration"]:
        print(f"  calibrated  at {', '.join(doc['calibration'])} px")
    if doc["slowest"]:
        print(f"  slowest {len(doc['slowest'])}:")
        for row in doc["slowest"]:
            print(f"    {row['p50_ms']:9.4f} ms (p90 {row['p90_ms']:.4f}, n={row['count']:>3})  {row['key']}")
    return 0


def cmd_merge(args) -> int:
    done = merge_files(args.tables, args.out, args.force)
    print(f"wrote {args.out}: {len(done.table)} entries from {done.sources} tables ({', '.join(done.table.spaces)})"
          + (f"; replaced a file of sha256 {done.replaced}" if done.replaced else ""))
    return 0


def cmd_import(args) -> int:
    results = import_published(args.files, args.format, args.device)
    for table, report in results:
        print(f"{report.file}: {report.resolution}px, {report.rows} rows, {report.mapped} mapped onto the "
              f"{report.ops} ops of {table.spaces[0]}, {len(report.unmapped)} unmapped")
        for key, why in report.unmapped:
            print(f"  unmapped {key}: {why}")
    for path, table in write_imported([table for table, _ in results], args.out, args.force):
        print(f"wrote {path}: {len(table)} entries, {table.spaces[0]} at {', '.join(map(str, table.resolutions))} px, "
              f"measured on {table.device['name']} (backend {table.backend})")
    return 0
