"""Calibration: per-node statistics of the float graph over a few batches, and the optimizors that turn
them into the range a quantizer uses.

Only statistics are kept (running extrema, moments, per-channel extrema, a bounded random sample for
histograms), never the activations of every batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, MRTError
from .float_exec import run_float
from .graph import Graph

SAMPLE_SIZE = 8192


@dataclass
class Features:
    """What calibration knows about one node's output."""
    absmax: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0
    batch_absmax: list = field(default_factory=list)
    batch_min: list = field(default_factory=list)
    batch_max: list = field(default_factory=list)
    channel_absmax: np.ndarray | None = None  # along axis 1, when the output has one
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def mean(self) -> float:
        return self.sum / max(self.count, 1)

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.sum_sq / max(self.count, 1) - self.mean ** 2, 0.0)))

    def update(self, x: np.ndarray, rng: np.random.RandomState) -> None:
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.absmax = max(abs(self.min), abs(self.max))
        self.batch_absmax.append(max(abs(lo), abs(hi)))
        self.batch_min.append(lo)
        self.batch_max.append(hi)
        x64 = x.astype(np.float64)
        self.count += x.size
        self.sum += float(x64.sum())
        self.sum_sq += float((x64 * x64).sum())
        if x.ndim >= 2:
            axes = tuple(i for i in range(x.ndim) if i != 1)
            cmin, cmax = x.min(axis=axes), x.max(axis=axes)
            if self.channel_min is None:
                self.channel_min, self.channel_max = cmin, cmax
            else:
                self.channel_min = np.minimum(self.channel_min, cmin)
                self.channel_max = np.maximum(self.channel_max, cmax)
            self.channel_absmax = np.maximum(np.abs(self.channel_min), np.abs(self.channel_max))
        # a uniform random sample over all batches seen (drawing indices is cheap; a permutation is not)
        flat = x.reshape(-1)
        take = flat[rng.randint(0, flat.size, size=min(flat.size, SAMPLE_SIZE))]
        batches = len(self.batch_absmax)
        if self.sample.size == 0:
            self.sample = take.astype(np.float32)
        else:  # keep old values with weight (batches-1)/batches so every batch counts the same
            keep = rng.rand(self.sample.size) < (batches - 1) / batches
            self.sample = np.where(keep, self.sample, take[:self.sample.size]).astype(np.float32)


def batches(x: np.ndarray, batch: int, count: int | None):
    n = x.shape[0]
    starts = list(range(0, n, batch))
    if count is not None:
        if count * batch > n:
            raise ConfigError(f"Calibrate_num={count} batches of Batch={batch} need {count * batch} samples, "
                              f"the calibration set has {n}")
        starts = starts[:count]
    for s in starts:
        yield x[s:s + batch]


def calibrate(graph: Graph, x_calib: np.ndarray, batch: int, num_batches: int | None,
              progress=None) -> dict[str, Features]:
    """Features for every node (inputs, params and ops) of `graph` over the calibration batches."""
    if not np.isfinite(x_calib).all():
        raise MRTError("calibration data contains NaN or inf")
    (input_name,) = graph.input_names
    features = {name: Features() for name in graph.nodes}
    rng = np.random.RandomState(0)
    chunks = list(batches(x_calib, batch, num_batches))
    for k, chunk in enumerate(chunks):
        def observe(name, value, k=k):
            arr = value.asnumpy()
            if not np.isfinite(arr).all():
                node = graph.nodes[name]
                user = graph.origin.get(name, name)
                raise MRTError(f"{node.describe()}, made from your node '{user}', produced NaN or inf on "
                               f"calibration batch {k} (check its weights and inputs)")
            features[name].update(arr, rng)
        # statistics as each value is made: no batch's activations are kept beyond their last use
        run_float(graph, {input_name: chunk}, keep="outputs", visit=observe)
        if progress:
            progress((k + 1) / len(chunks))
    return features


# ---- optimizors: Features -> the (lo, hi) range a quantizer should cover

OPTIMIZORS = {}


def optimizor(name):
    def register(fn):
        OPTIMIZORS[name] = fn
        return fn
    return register


@optimizor("HistoricalValue")
def historical_value(f: Features, **attrs) -> tuple[float, float]:
    """Max over batches; with `lambda`, clip at |mean| + lambda*std when that is below 95% of absmax."""
    lo, hi = f.min, f.max
    lam = attrs.get("lambda")
    if lam is not None:
        bound = abs(f.mean) + float(lam) * f.std
        if bound < 0.95 * f.absmax:
            lo, hi = max(lo, -bound), min(hi, bound)
    return lo, hi


@optimizor("MovingAverage")
def moving_average(f: Features, **attrs) -> tuple[float, float]:
    """Exponential moving average of the batch extrema with weight c on the newest batch."""
    c = float(attrs.get("c", 0.01))
    lo, hi = f.batch_min[0], f.batch_max[0]
    for bl, bh in zip(f.batch_min[1:], f.batch_max[1:]):
        lo, hi = (1 - c) * lo + c * bl, (1 - c) * hi + c * bh
    return lo, hi


@optimizor("OutlierRemoval")
def outlier_removal(f: Features, **attrs) -> tuple[float, float]:
    """Clip to the [p, 100-p] percentiles of the calibration sample."""
    p = float(attrs.get("percentile", 0.01))
    if f.sample.size == 0:
        return f.min, f.max
    lo, hi = np.percentile(f.sample, [p, 100 - p])
    return float(min(lo, 0.0)), float(max(hi, 0.0))


@optimizor("KLDivergence")
def kl_divergence(f: Features, **attrs) -> tuple[float, float]:
    """Threshold minimizing KL(P || Q) between the |x| histogram and its quantized version."""
    bins = 1 << int(attrs.get("bucket_bits", 11))
    qbins = 1 << (int(attrs.get("quant_bits", 8)) - 1)
    data = np.abs(f.sample.astype(np.float64))
    top = float(data.max()) if data.size else 0.0
    if top == 0.0:
        return f.min, f.max
    hist, edges = np.histogram(data, bins=bins, range=(0.0, top))
    best, best_t = np.inf, top
    for i in range(qbins, bins + 1, max(1, (bins - qbins) // 128)):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()  # mass beyond the window is clipped into the last bin
        if p.sum() == 0:
            continue
        q = np.zeros(i)
        for chunk in np.array_split(np.arange(i), qbins):
            nz = p[chunk] > 0
            if nz.any():
                q[chunk[nz]] = p[chunk].sum() / nz.sum()
        mask = p > 0
        pn, qn = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_t = kl, edges[i]
    return max(f.min, -best_t), min(f.max, best_t)


def optimized_range(f: Features, spec: dict | None) -> tuple[float, float]:
    spec = dict(spec or {"name": "HistoricalValue"})
    name = spec.pop("name", "HistoricalValue")
    if name not in OPTIMIZORS:
        raise ConfigError(f"unknown optimizor '{name}' (known: {', '.join(OPTIMIZORS)})")
    if f.count == 0:
        return 0.0, 0.0
    lo, hi = OPTIMIZORS[name](f, **spec)
    return float(min(lo, 0.0) if np.isfinite(lo) else 0.0), float(max(hi, 0.0) if np.isfinite(hi) else 0.0)
