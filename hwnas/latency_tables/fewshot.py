"""Few-shot latency on a new device: a table of a layer-wise space from N end-to-end measurements
of that device and what is known of other devices (`hwnas fewshot plan|fit`, docs/profiling.md).

Known devices come as latency tables of the space (`LatencyTable`, e.g. HW-NAS-Bench's imported
tables) or as CSVs of architectures measured end to end (HELP's layout: `op_idx_list`, then one
column of ms per device). Each known device becomes an additive model of the space,

    latency(arch) = base + sum over the arch's ops of cost[op]      (cost >= 0)

a table's own sums (with its calibration folded in), or, for a CSV column, a least-squares fit
of base and the per-op costs to that column's measurements (ops of identical layers share one
cost, as they share one table key; relative residuals; a small ridge; costs bounded >= 0). Its
fit on held-out architectures of that device is recorded (MAPE, Spearman). Four device-free
additive models join them (`PROXIES`: each op's multiply-adds, parameters, activation elements,
and 1 per op): a new device unlike every known one is often closer to one of those (on HELP's
data, a held-out server CPU ranks at 0.77 Spearman with N = 20 without them, 0.95 with them).

The new device is a non-negative mixture of the known devices' models, each scaled to a mean of
1 over a fixed pool of random architectures (`f_k`):

    latency(arch) = b + sum_k w_k f_k(arch),    w >= 0,

fitted on the N measurements by relative least squares with a ridge pulling w toward the
mean device's weights (w0 = s/K, s the scale that fits the mean device alone). The ridge
strength (and whether b is free) is chosen by leave-one-out over the N; the leave-one-out MAPE
and Spearman of the chosen setting are the table's stated error. The mixture is again additive,
so it is written as an ordinary table of the space: each op's entry is sum_k w_k cost_k / scale_k,
the stem entry holds the fixed part (b + the weighted bases) and the head entry 0, with a
calibration record carrying the cross-validated error. Nothing measured is looked up when the
table predicts: an architecture is predicted from its ops alone.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LutError
from ..core.spaces import LayerwiseSpace, SearchSpace
from .fitted import FEWSHOT_BACKEND
from ..profilers.table import LatencyTable, Measurement, OpKey

#: ridge strengths toward the mean device tried by leave-one-out (relative to N)
LAMBDAS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
MIN_MEASURED = 3
#: the pool of random architectures each known model is scaled on (mean 1), and its seed
POOL_SIZE, POOL_SEED = 2000, 0
#: ridge of a known device's fit (relative to the number of architectures), and its held-out share
KNOWN_RIDGE, KNOWN_HOLDOUT = 1e-4, 0.2


# --- the space as op counts ---------------------------------------------------------------------
@dataclass
class Encoding:
    """A layer-wise space as features: `index[layer][candidate]` is the column of that op's key
    (-1 for an identity skip: no op); an architecture is its count of each key."""

    space: SearchSpace
    keys: list[str]
    ops: list
    index: np.ndarray
    stem: tuple[str, object]
    head: tuple[str, object]

    @classmethod
    def of(cls, space: SearchSpace) -> "Encoding":
        if not isinstance(space, LayerwiseSpace):
            raise LutError(f"few-shot latency needs a layer-wise space (one op per layer, e.g. fbnet_cifar100); "
                           f"{space.name!r} is not one")
        build = space.build_config.name
        keys, ops, column = [], [], {}
        width = max(len(layer.candidates) for layer in space.layers)
        index = np.full((len(space.layers), width), -1, dtype=np.int64)
        for i, layer in enumerate(space.layers):
            for j, candidate in enumerate(layer.candidates):
                op = layer.op(candidate)
                if op is None:
                    continue
                key = str(OpKey.for_op(op, build))
                if key not in column:
                    column[key] = len(keys)
                    keys.append(key)
                    ops.append(op)
                index[i, j] = column[key]
        (final_shape,) = space.final_shapes()
        stem, head = space.stem_op(), space.head_op(*final_shape)
        return cls(space, keys, ops, index, (str(OpKey.for_op(stem, build)), stem), (str(OpKey.for_op(head, build)), head))

    def indices_of(self, arch) -> list[int]:
        choices = arch.choice_map
        return [layer.candidates.index(choices[layer.name]) for layer in self.space.layers]

    def features(self, indices) -> np.ndarray:
        """(architectures, keys) counts of each op key, from (architectures, layers) op indices."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(self.space.layers))
        cols = self.index[np.arange(indices.shape[1])[None, :], indices]
        out = np.zeros((indices.shape[0], len(self.keys)))
        rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
        flat = cols.ravel()
        keep = flat >= 0
        np.add.at(out, (rows[keep], flat[keep]), 1.0)
        return out

    def random_indices(self, n: int, seed: int) -> np.ndarray:
        rng = random.Random(seed)
        return np.array([[rng.randrange(len(layer.candidates)) for layer in self.space.layers] for _ in range(n)])


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def mape(pred, true) -> float:
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    return float(np.mean(np.abs(pred - true) / true) * 100.0)


# --- known devices --------------------------------------------------------------------------------
@dataclass
class DeviceModel:
    """base + features @ costs (ms), of one known device; `scale` its mean over the pool."""

    name: str
    source: str
    base: float
    costs: np.ndarray
    scale: float = 1.0
    holdout: dict = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.base + features @ self.costs


def _ridge_bounded(design: np.ndarray, target: np.ndarray, weight: np.ndarray, ridge: np.ndarray, prior: np.ndarray,
                   lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """argmin sum(weight * (design @ x - target)^2) + sum(ridge * (x - prior)^2), lower <= x <= upper."""
    from scipy.optimize import lsq_linear

    sw = np.sqrt(weight)[:, None]
    a = np.vstack([design * sw, np.diag(np.sqrt(ridge))])
    t = np.concatenate([target * sw[:, 0], np.sqrt(ridge) * prior])
    if a.shape[0] > 2 * a.shape[1]:  # the same problem on the Cholesky factor of the normal equations: k x k
        from scipy.linalg import cholesky, solve_triangular

        gram = a.T @ a
        upper_factor = cholesky(gram + 1e-10 * np.trace(gram) / len(gram) * np.eye(len(gram)), lower=False)
        a, t = upper_factor, solve_triangular(upper_factor, a.T @ t, trans="T")
    return lsq_linear(a, t, bounds=(lower, upper), method="bvls").x


def fit_device(name: str, source: str, features: np.ndarray, latency: np.ndarray, seed: int = 0) -> DeviceModel:
    """The additive model of one device's end-to-end measurements (see the module docstring),
    its held-out fit first (KNOWN_HOLDOUT of the architectures), then refitted on all."""
    n, k = features.shape
    design = np.hstack([np.ones((n, 1)), features])
    lower = np.zeros(k + 1)
    upper = np.full(k + 1, np.inf)

    def solve(rows):
        y = latency[rows]
        ridge = np.full(k + 1, KNOWN_RIDGE * len(rows))
        ridge[0] = 0.0
        return _ridge_bounded(design[rows], y, 1.0 / y ** 2, ridge, np.zeros(k + 1), lower, upper)

    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - KNOWN_HOLDOUT)))
    holdout = {}
    if n >= 20:
        x = solve(order[:cut])
        test = order[cut:]
        pred = design[test] @ x
        holdout = {"n_archs": int(test.size), "mape_pct": mape(pred, latency[test]),
                   "spearman": spearman(pred, latency[test])}
    x = solve(np.arange(n))
    return DeviceModel(name, source, float(x[0]), x[1:], holdout=holdout)


def model_from_table(table: LatencyTable, encoding: Encoding, source: str) -> DeviceModel:
    """A table's own additive model: each op's cost as its predictions weigh it (calibration
    folded in: a per-type scale, a per-op term); the stem, head and intercept as the base."""
    from .predictor import LatencyPredictor

    space = encoding.space
    if space.name not in table.spaces:
        raise LutError(f"{source} is a table of space {', '.join(map(repr, table.spaces)) or 'none'}, not "
                       f"{space.name!r}; name tables of {space.name!r} (e.g. `hwnas lut import ... --format hwnasbench`)")
    predictor = LatencyPredictor(table, space)
    cal = predictor.calibration
    c = cal.c if cal else 0.0
    costs = np.array([predictor.op_cost_ms(op) + c for op in encoding.ops])
    base = predictor.op_cost_ms(encoding.stem[1]) + predictor.op_cost_ms(encoding.head[1]) + 2 * c + (cal.b if cal else 0.0)
    return DeviceModel(table.device.get("name", source), source, float(base), costs)


def read_measured_csv(path: str | Path, space: SearchSpace, value_columns: list[str] | None = None,
                      need_op_indices: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HELP's layout: `op_idx_list` (the layers' op indices, space-separated) and one column of
    ms per device -> ((architectures, layers) op indices, {device: ms}). Every value checked."""
    from ..core.spaces.fbnet_cifar import parse_op_indices
    from ..errors import ArchError

    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else None
    except UnicodeDecodeError:
        raise LutError(f"{path} is not UTF-8 text; a known-device file is a CSV") from None
    except (OSError, csv.Error) as exc:
        raise LutError(f"cannot read {path} as a CSV: {exc}".splitlines()[0]) from None
    if not rows:
        raise LutError(f"{path} holds no architecture; a known-device CSV has a header and one row per architecture")
    columns = [c for c in header if c is not None]
    if "op_idx_list" not in columns:
        raise LutError(f"{path} has no op_idx_list column (columns: {', '.join(columns[:6])}...); a known-device CSV "
                       "is HELP's layout: op_idx_list (22 op indices, space-separated) and one column of ms per device")
    devices = value_columns or [c for c in columns if c not in ("op_idx_list", "arch_idx", "")]
    if not devices:
        raise LutError(f"{path} has no device column besides op_idx_list; add one column of ms per device")
    indices, values = [], {d: [] for d in devices}
    for line, row in enumerate(rows, start=2):
        try:
            indices.append(parse_op_indices(row["op_idx_list"]))
        except ArchError as exc:
            raise LutError(f"{path} line {line}: {exc}") from None
        for d in devices:
            text = (row.get(d) or "").strip()
            try:
                value = float(text)
            except ValueError:
                raise LutError(f"{path} line {line}: {d} is {text!r}, not a latency in ms; fill or delete the row") from None
            if not math.isfinite(value) or value <= 0:
                raise LutError(f"{path} line {line}: {d} is {text}; a latency is a finite number > 0 ms: fix the row")
            values[d].append(value)
    return np.array(indices), {d: np.array(v) for d, v in values.items()}


def known_models(encoding: Encoding, tables: list[tuple[str, LatencyTable]] = (),
                 csvs: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = (), exclude: set[str] = frozenset(),
                 proxies: bool = True) -> list[DeviceModel]:
    """One model per known table and per device column of the known CSVs (not those in
    `exclude`), each scaled to mean 1 over the pool."""
    models = [model_from_table(table, encoding, source) for source, table in tables]
    for source, indices, columns in csvs:
        feats = encoding.features(indices)
        for device, latency in columns.items():
            if device not in exclude:
                models.append(fit_device(device, source, feats, latency))
    if not models:
        raise LutError("no known device: name latency tables or HELP-layout CSVs with --known")
    if proxies:
        models += proxy_models(encoding)
    pool = encoding.features(encoding.random_indices(POOL_SIZE, POOL_SEED))
    for m in models:
        m.scale = float(np.mean(m.predict(pool)))
    return models


# --- the new device ------------------------------------------------------------------------------
@dataclass
class FewshotFit:
    weights: np.ndarray
    intercept: float
    ridge: float
    free_intercept: bool
    loo_mape_pct: float
    loo_spearman: float
    loo_pred: np.ndarray
    n: int

    def predict(self, scaled: np.ndarray) -> np.ndarray:
        return self.intercept + scaled @ self.weights


def scaled_predictions(models: list[DeviceModel], features: np.ndarray) -> np.ndarray:
    """(architectures, known devices): each known model's prediction over its pool mean."""
    return np.column_stack([m.predict(features) / m.scale for m in models])


def _fit_mixture(f: np.ndarray, y: np.ndarray, ridge: float, free_intercept: bool) -> tuple[np.ndarray, float]:
    n, k = f.shape
    mean = f.mean(axis=1)
    wt = 1.0 / y ** 2
    s = float(np.sum(wt * mean * y) / np.sum(wt * mean * mean))
    prior = np.concatenate([[0.0], np.full(k, s / k)])
    design = np.hstack([np.ones((n, 1)), f])
    # the penalty is on relative residuals: its scale is N * (w / s)^2
    pen = np.full(k + 1, ridge * n / s ** 2)
    pen[0] = 0.0
    bound = 0.5 * float(y.min()) if free_intercept else 0.0
    lower = np.concatenate([[-bound], np.zeros(k)])
    upper = np.concatenate([[bound + 1e-12], np.full(k, np.inf)])
    if not free_intercept:
        lower[0], upper[0] = -1e-12, 1e-12
    x = _ridge_bounded(design, y, wt, pen, prior, lower, upper)
    return x[1:], float(x[0])


def fit_new_device(scaled: np.ndarray, y: np.ndarray) -> FewshotFit:
    """The mixture of known devices that fits the N measurements `y` (see the module docstring),
    its ridge and intercept chosen by leave-one-out MAPE."""
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < MIN_MEASURED:
        raise LutError(f"{n} measured architectures; a few-shot fit needs at least {MIN_MEASURED} (10 or more "
                       "recommended): measure more with `hwnas fewshot plan --n 10`")
    best = None
    for free in ((False, True) if n >= 5 else (False,)):
        for ridge in LAMBDAS:
            loo = np.empty(n)
            for i in range(n):
                keep = np.arange(n) != i
                w, b = _fit_mixture(scaled[keep], y[keep], ridge, free)
                loo[i] = b + scaled[i] @ w
            score = mape(loo, y)
            if best is None or score < best[0] - 1e-9:
                best = (score, ridge, free, loo)
    score, ridge, free, loo = best
    w, b = _fit_mixture(scaled, y, ridge, free)
    return FewshotFit(w, b, ridge, free, score, spearman(loo, y), loo, n)


def fewshot_table(fit: FewshotFit, models: list[DeviceModel], encoding: Encoding, device: str,
                  measured: dict) -> LatencyTable:
    """The fitted mixture as an ordinary table of the space (see the module docstring)."""
    from .published import _one_thread, op_memory

    space = encoding.space
    costs = sum(w / m.scale * m.costs for w, m in zip(fit.weights, models))
    fixed = fit.intercept + sum(w / m.scale * m.base for w, m in zip(fit.weights, models))
    entries: dict[str, Measurement] = {}

    def put(key, op, value):
        value = float(max(value, 0.0))
        entries[key] = Measurement(p10_ms=value, p50_ms=value, p90_ms=value, mean_ms=value, std_ms=0.0, count=1,
                                   **op_memory(op, space))

    with _one_thread():
        for key, op, value in zip(encoding.keys, encoding.ops, costs):
            put(key, op, value)
        put(*encoding.stem, fixed)
        put(*encoding.head, 0.0)
    calibration = {
        "model": "linear", "a": 1.0, "b": float(min(fixed, 0.0)), "c": 0.0,
        "error_pct": round(fit.loo_mape_pct, 4), "n_samples": fit.n, "resolution": space.resolution,
        "shrinkage": float(fit.ridge), "coverage": None, "noise_pct": 0.0,
    }
    used = [{"device": m.name, "source": m.source, "weight": float(w), "scale_ms": m.scale,
             **({"holdout": m.holdout} if m.holdout else {})} for w, m in zip(fit.weights, models)]
    return LatencyTable(
        backend=FEWSHOT_BACKEND,
        backend_options={"method": "nonnegative mixture of known devices' additive models"},
        device={"name": device, "fewshot": True},
        batch=1, dtype="float32", spaces=[space.name], resolutions=[space.resolution], entries=entries,
        calibration={str(space.resolution): calibration},
        statistics={
            "fewshot": {
                "n_measured": fit.n, "loo_mape_pct": fit.loo_mape_pct, "loo_spearman": fit.loo_spearman,
                "ridge": fit.ridge, "free_intercept": fit.free_intercept, "intercept_ms": fit.intercept,
                "known": used, "measured": measured,
            },
            "note": ("a few-shot table (hwnas fewshot fit): each op's entry is the weighted sum of the known devices' "
                     "per-op costs, the stem entry the fixed part, the head 0; error_pct is the leave-one-out MAPE "
                     "on the measured architectures; memory is computed from each op at fp32"),
        },
    )


# --- which architectures to measure --------------------------------------------------------------
def plan_indices(encoding: Encoding, n: int, seed: int, models: list[DeviceModel] = ()) -> np.ndarray:
    """N architectures (op indices) spread over the latency range and over op mixes: a pool of
    architectures drawn with per-architecture op preferences (Dirichlet), scored by the known
    devices' mean scaled prediction (or, with none known, by a multiply-add count), and one taken
    near each of N evenly spaced quantiles, the one farthest (Hamming) from those taken."""
    rng = np.random.default_rng(seed)
    layers = encoding.space.layers
    width = encoding.index.shape[1]
    pool_n = max(40 * n, 2000)
    pool = np.empty((pool_n, len(layers)), dtype=np.int64)
    for a in range(pool_n):
        pref = rng.dirichlet(np.full(width, 0.7 if a % 2 else 5.0))
        for i, layer in enumerate(layers):
            p = pref[:len(layer.candidates)]
            pool[a, i] = rng.choice(len(layer.candidates), p=p / p.sum())
    score = (scaled_predictions(list(models), encoding.features(pool)).mean(axis=1) if models
             else encoding.features(pool) @ macs(encoding))
    return pool[spread_select(pool, score, n, rng)]


def spread_select(pool: np.ndarray, score: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of `pool` (op indices) near N evenly spaced quantiles of `score`, each the one among
    a window of random neighbours farthest (Hamming) from those already taken."""
    order = np.argsort(score, kind="stable")
    size = len(order)
    chosen: list[int] = []
    window = max(size // (4 * n), 1)
    for q in (np.linspace(0.0, 1.0, n) if n > 1 else [0.5]):
        centre = int(round(q * (size - 1)))
        near = [int(c) for c in order[max(centre - window, 0):centre + window + 1] if int(c) not in chosen]
        near = list(rng.permutation(near))[:64]
        if chosen:
            taken = pool[chosen]
            dist = [int(np.min(np.sum(taken != pool[c], axis=1))) for c in near]
            pick = near[int(np.argmax(dist))]
        else:
            pick = near[0]
        chosen.append(int(pick))
    return np.array(chosen)


def op_proxies(encoding: Encoding) -> dict[str, np.ndarray]:
    """Per op key: multiply-adds (each weight times the output positions it is applied at),
    parameters, activation elements (input + output) and 1 (the op itself): device-free costs."""
    from ..profilers.session import op_module

    cached = encoding.__dict__.get("_proxies")
    if cached is not None:
        return cached
    rows = []
    for op in encoding.ops:
        module = op_module(op, encoding.space.build_config)
        h, w = op.out_hw()
        weights = sum(p.numel() for p in module.parameters() if p.dim() > 1)
        params = sum(p.numel() for p in module.parameters())
        rows.append((weights * h * w, params, op.in_chs * op.in_h * op.in_w + op.out_chs() * h * w, 1.0))
    cached = encoding.__dict__["_proxies"] = dict(zip(PROXIES, np.asarray(rows, dtype=float).T))
    return cached


#: device-free additive models always among the known ones: what a compute-bound, weight-bound,
#: memory-bound or per-op-overhead-bound device spends time on (a new device unlike every known
#: one is often closer to one of these: HELP's server CPUs and phones)
PROXIES = ("macs", "params", "activations", "ops")


def proxy_models(encoding: Encoding) -> list[DeviceModel]:
    return [DeviceModel(f"proxy:{name}", "computed from the ops", 0.0, costs)
            for name, costs in op_proxies(encoding).items()]


def macs(encoding: Encoding) -> np.ndarray:
    """Multiply-adds of each op key: the latency proxy `plan_indices` spreads over when no known
    device is named."""
    return op_proxies(encoding)["macs"]
