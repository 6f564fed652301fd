"""`hwnas fewshot plan|fit`: a latency table of a new device from N measured architectures and the
known devices (hwnas.latency_tables.fewshot).

The new device is one of HELP's 19 measured columns, held out: the other 18 columns are the
known devices, 10 of its architectures its measurements, and the fitted table is scored on the
other 4,990 (measured, never seen by the fit)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from hwnas.core.arch import Arch, load_arch, save_arch
from hwnas.cli import main
from hwnas.latency_tables import fewshot as fs
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.profilers.table import LatencyTable
from hwnas.core.spaces import get_space
from hwnas.core.spaces.fbnet_cifar import FBNET_ABC

HELD_OUT = "pixel3"
N = 10


def _space():
    return get_space("fbnet_cifar100")


def _arch(indices) -> Arch:
    space = _space()
    return Arch.create(space, space.choices_from_indices([int(i) for i in indices]))


HELP_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nasbench" / "help_fbnet" / \
    "fbnet_cifar_5000archs_latency.csv"


@pytest.fixture(scope="module")
def help_rows() -> list[dict]:
    """HELP's 5,000 measured architectures (shared data beside the repository; skip without it)."""
    path = HELP_CSV
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (it lies beside the repository on project machines)")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def fitted(help_rows, tmp_path_factory):
    """HELP's CSV without the held-out column as the known devices; 10 of the held-out device's
    architectures as the plan's filled measured.csv; the fitted table."""
    root = tmp_path_factory.mktemp("fewshot")
    columns = [c for c in help_rows[0] if c not in ("arch_idx", "op_idx_list", HELD_OUT)]
    known = root / "known_18_devices.csv"
    with known.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["op_idx_list", *columns])
        writer.writerows([row["op_idx_list"], *(row[c] for c in columns)] for row in help_rows)
    picked = np.random.default_rng(7).choice(len(help_rows), N, replace=False)
    plan = root / "phone"
    lines = ["arch,latency_ms"]
    for i, row in enumerate(help_rows[j] for j in picked):
        save_arch(_arch(row["op_idx_list"].split()), plan / "archs" / f"arch_{i}.json")
        lines.append(f"archs/arch_{i}.json,{row[HELD_OUT]}")
    (plan / "measured.csv").write_text("\n".join(lines) + "\n")
    out = root / "phone.json"
    assert main(["fewshot", "fit", "--space", "fbnet_cifar100", "--measured", str(plan / "measured.csv"),
                 "--known", str(known), "--out", str(out)]) == 0
    rest = [row for j, row in enumerate(help_rows) if j not in set(picked.tolist())]
    return {"root": root, "known": known, "plan": plan, "out": out, "rest": rest}


def test_plan_writes_n_architectures_their_onnx_and_a_template_to_fill(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["fewshot", "plan", "--space", "fbnet_cifar100", "--n", "3", "--out", str(out), "--seed", "1"]) == 0
    rows = list(csv.reader((out / "measured.csv").open()))
    assert rows[0] == ["arch", "latency_ms"] and len(rows) == 4
    assert all(latency == "" for _, latency in rows[1:])
    archs = [load_arch(out / ref) for ref, _ in rows[1:]]
    assert len({a.hash for a in archs}) == 3 and all(a.space == "fbnet_cifar100" for a in archs)
    for ref, _ in rows[1:]:
        model = onnx.load(out / "onnx" / (Path(ref).stem + ".onnx"))
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert "fill" in capsys.readouterr().out
    # a plan (perhaps filled in) is never overwritten silently
    assert main(["fewshot", "plan", "--space", "fbnet_cifar100", "--n", "3", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_plan_spreads_over_the_known_devices_latency_range():
    """The rule `plan` applies: picks span the range of the mean known prediction (here a stand-in
    known device whose every op costs its multiply-adds), not the middle random draws sit in."""
    enc = fs.Encoding.of(_space())
    costs = fs.macs(enc)
    model = fs.DeviceModel("macs", "test", 0.0, costs)
    model.scale = float(np.mean(model.predict(enc.features(enc.random_indices(500, 0)))))
    picked = fs.plan_indices(enc, 10, seed=3, models=[model])
    assert np.array_equal(picked, fs.plan_indices(enc, 10, seed=3, models=[model]))  # deterministic
    planned = enc.features(picked) @ costs
    uniform = enc.features(enc.random_indices(500, 1)) @ costs
    assert planned.max() - planned.min() > 2 * (np.percentile(uniform, 95) - np.percentile(uniform, 5))


def test_fit_on_a_held_out_device_ranks_its_other_architectures(fitted):
    space = _space()
    table = LatencyTable.load(fitted["out"])
    assert table.backend == "fewshot" and table.spaces == ["fbnet_cifar100"]
    assert min(m.p50_ms for m in table.entries.values()) >= 0.0
    predictor = LatencyPredictor(table, space)
    rest = fitted["rest"]
    predicted = [predictor.latency_ms(_arch(row["op_idx_list"].split())) for row in rest]
    measured = np.array([float(row[HELD_OUT]) for row in rest])
    # measured with this draw: Spearman 0.979, 99% within +-10%, MAPE 3.0% (stated: 5.0%)
    assert fs.spearman(predicted, measured) >= 0.93
    assert np.mean(np.abs(np.array(predicted) - measured) / measured <= 0.10) >= 0.85
    stats = table.statistics["fewshot"]
    assert stats["n_measured"] == N
    devices = [k for k in stats["known"] if not k["device"].startswith("proxy:")]
    assert len(devices) == 18 and all(k["holdout"]["spearman"] > 0.6 for k in devices)
    assert sorted(k["device"] for k in stats["known"] if k not in devices) == [f"proxy:{p}" for p in sorted(fs.PROXIES)]


def test_the_table_predicts_with_its_cross_validated_error(fitted, capsys):
    table = LatencyTable.load(fitted["out"])
    stated = table.statistics["fewshot"]["loo_mape_pct"]
    assert 0 < stated < 25
    arch = fitted["plan"] / "archs" / "arch_0.json"
    assert main(["predict", "--lut", str(fitted["out"]), str(arch), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["error_pct"] == pytest.approx(stated, abs=1e-3) and doc["latency_ms"] > 0
    assert main(["predict", "--lut", str(fitted["out"]), str(arch)]) == 0
    assert "cross-validated MAPE" in capsys.readouterr().out
    # this machine is not the device: measuring against the table is refused, saying why
    before = fitted["out"].read_bytes()
    assert main(["validate", "--lut", str(fitted["out"]), "--samples", "2", "--lopsided", "0", "--out",
                 str(fitted["root"] / "validation.json")]) == 2
    err = capsys.readouterr().err
    assert "fitted from measurements on phone" in err and err.count("\n") == 1
    assert fitted["out"].read_bytes() == before and not (fitted["root"] / "validation.json").exists()
    # the table holds the 100-class head its networks were measured with; another head is refused, saying so
    assert main(["predict", "--lut", str(fitted["out"]), str(arch), "--num-classes", "10"]) == 2
    err = capsys.readouterr().err
    assert "few-shot table of phone" in err and "10 classes" in err and "hwnas fewshot plan" in err


def test_an_architecture_no_data_holds_is_predicted_from_its_ops(fitted, help_rows):
    """FBNet-A and an all-k5_e6 network are in neither HELP's file nor the plan: the table's sum is
    the fitted mixture of the known devices' additive models, nothing looked up."""
    space = _space()
    table = LatencyTable.load(fitted["out"])
    predictor = LatencyPredictor(table, space)
    seen = {row["op_idx_list"] for row in help_rows}
    stats = table.statistics["fewshot"]
    enc = fs.Encoding.of(space)
    indices, columns = fs.read_measured_csv(fitted["known"], space)
    models = fs.known_models(enc, csvs=[(str(fitted["known"]), indices, columns)])
    weights = np.array([k["weight"] for k in stats["known"]])
    for unseen in (list(FBNET_ABC["fbnet_a"]), [7] * 22):
        assert " ".join(map(str, unseen)) not in seen
        mixture = stats["intercept_ms"] + fs.scaled_predictions(models, enc.features([unseen]))[0] @ weights
        assert predictor.latency_ms(_arch(unseen)) == pytest.approx(float(mixture), rel=1e-6)
    # slower ops, slower network
    assert predictor.latency_ms(_arch([7] * 22)) > predictor.latency_ms(_arch([0] * 22)) > predictor.latency_ms(_arch([8] * 22))


BAD = {
    "empty latency": ("archs/arch_0.json,\n", "latency_ms of archs/arch_0.json is empty"),
    "negative latency": ("archs/arch_0.json,-3\n", "is not a latency"),
    "non-numeric latency": ("archs/arch_0.json,12ms\n", "is not a number"),
    "unknown arch path": ("archs/nope.json,12.5\n", "'archs/nope.json' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_measured_csv_is_one_line_and_writes_nothing(fitted, tmp_path, capsys, case):
    row, says = BAD[case]
    good = (fitted["plan"] / "measured.csv").read_text().splitlines(keepends=True)
    bad = fitted["plan"] / f"bad_{case.replace(' ', '_')}.csv"
    bad.write_text(good[0] + row + "".join(good[2:]))
    out = tmp_path / "new.json"
    assert main(["fewshot", "fit", "--space", "fbnet_cifar100", "--measured", str(bad), "--known",
                 str(fitted["known"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ") and err.count("\n") == 1 and "line 2" in err and says in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_too_few_measurements_and_a_known_csv_without_op_indices_are_refused(fitted, tmp_path, capsys):
    good = (fitted["plan"] / "measured.csv").read_text().splitlines(keepends=True)
    two = fitted["plan"] / "two.csv"
    two.write_text("".join(good[:3]))
    out = tmp_path / "new.json"
    assert main(["fewshot", "fit", "--space", "fbnet_cifar100", "--measured", str(two), "--known",
                 str(fitted["known"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 measured architectures" in err and "at least 3" in err and err.count("\n") == 1
    known = tmp_path / "known.csv"
    known.write_text("arch_idx,pixel3\n0,17.5\n")
    assert main(["fewshot", "fit", "--space", "fbnet_cifar100", "--measured", str(fitted["plan"] / "measured.csv"),
                 "--known", str(known), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no op_idx_list column" in err and "HELP's layout" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_known_latency_table_is_a_known_device_with_its_own_sums(fitted, tmp_path, capsys):
    """HW-NAS-Bench's Raspberry Pi 4 table as the known device: its model is the table's own
    prediction of every architecture, and the fit runs on it alone (plus the device-free ones)."""
    source = HELP_CSV.parents[1] / "fbnet_hwnasbench" / "fbnet_lut_raspi4_cifar100_wide.csv"
    raspi4 = tmp_path / "raspi4.json"
    assert main(["lut", "import", str(source), "--format", "hwnasbench", "--out", str(raspi4)]) == 0
    space = _space()
    enc = fs.Encoding.of(space)
    table = LatencyTable.load(raspi4)
    model = fs.model_from_table(table, enc, str(raspi4))
    predictor = LatencyPredictor(table, space)
    archs = enc.random_indices(20, 5)
    assert model.predict(enc.features(archs)) == pytest.approx(
        [predictor.latency_ms(_arch(a)) for a in archs], rel=1e-9)
    out = tmp_path / "phone.json"
    assert main(["fewshot", "fit", "--space", "fbnet_cifar100", "--measured", str(fitted["plan"] / "measured.csv"),
                 "--known", str(raspi4), "--out", str(out), "--device", "Pixel 3"]) == 0
    stats = LatencyTable.load(out).statistics["fewshot"]
    assert [k["device"] for k in stats["known"]][0] == "Raspberry Pi 4" and len(stats["known"]) == 1 + len(fs.PROXIES)
    assert "Pixel 3" in capsys.readouterr().out
