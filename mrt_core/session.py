"""The engine API the CLI and the app call: load -> prepare -> calibrate (once) -> quantize/evaluate (often).

A Session caches everything that does not depend on the quantization config: the prepared graph, the
calibration features, and the float activations of the evaluation set. Integer activations are cached by
content fingerprint, so a rerun after one node's toggle recomputes only what changed downstream.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import ops  # noqa: F401  (registers the op rules)
from .calibrate import Features, calibrate
from .config import RunConfig, load_run_config
from .datasets import Dataset, load_dataset
from .errors import ModelError
from .float_exec import infer_shapes, run_float
from .graph import Graph
from .int_exec import checkpoints as _checkpoints, fingerprints, run_int
from .int_kernels import error_sums
from .mxnet_io import load_mxnet
from .prepare import prepare
from .qconfig import QuantConfig, Settings
from .quantize import QuantizedModel, quantize


@dataclass
class LayerError:
    name: str            # the user's node
    op: str
    node: str            # the prepared node holding its value
    precision: int
    sqnr_db: float
    cosine: float
    max_abs: float
    restored: bool = False


@dataclass
class Evaluation:
    float_top1: float
    float_top5: float
    quant_top1: float
    quant_top5: float
    num_samples: int
    max_precision: int
    layers: list[LayerError]
    seconds: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)  # label-free agreement with the float model


# what reruns may keep: float activations of every user's node, and int32 values beyond the checkpoints
FLOAT_CACHE_BYTES = int(os.environ.get("MRT_FLOAT_CACHE_MB", 1024)) << 20
INT_CACHE_BYTES = int(os.environ.get("MRT_INT_CACHE_MB", 1024)) << 20


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps freed activation-sized arrays in its
    heap, where a later step's peak would stack on them). Costs a few milliseconds; elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fidelity(float_logits: np.ndarray, quant_logits: np.ndarray) -> dict:
    """Agreement of the quantized model with the float one, needing no labels: top-1 agreement (%),
    mean top-5 overlap (%), mean cosine similarity of the logits."""
    k = min(5, float_logits.shape[1])
    f5 = np.argsort(-float_logits, axis=1, kind="stable")[:, :k]
    q5 = np.argsort(-quant_logits, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(f5, q5)])
    f, q = float_logits.astype(np.float64), quant_logits.astype(np.float64)
    denom = np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1)
    cos = np.where(denom > 0, (f * q).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return {"top1_agreement": float(np.mean(f5[:, 0] == q5[:, 0]) * 100), "top5_overlap": float(overlap * 100),
            "logit_cosine": float(cos.mean()), "num_samples": int(len(f))}


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100.0)


class ErrorStats:
    """Streaming SQNR / cosine / max-abs error between a float reference and a dequantized value."""

    def __init__(self):
        self.signal = self.noise = self.dot = self.got_sq = self.max_abs = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> "ErrorStats":
        """One more batch: `ref` against got / scale + offset (a quantized value, dequantized on the fly)."""
        signal, noise, dot, got_sq, worst = error_sums(ref, got, scale, offset)
        self.signal += signal
        self.noise += noise
        self.dot += dot
        self.got_sq += got_sq
        self.max_abs = max(self.max_abs, worst)
        return self

    def merge(self, other: "ErrorStats") -> "ErrorStats":
        self.signal += other.signal
        self.noise += other.noise
        self.dot += other.dot
        self.got_sq += other.got_sq
        self.max_abs = max(self.max_abs, other.max_abs)
        return self

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return float("inf")
        return 10 * float(np.log10(self.signal / self.noise)) if self.signal > 0 else -float("inf")

    @property
    def cosine(self) -> float:
        denom = np.sqrt(self.signal * self.got_sq)
        return float(self.dot / denom) if denom > 0 else (1.0 if self.noise == 0 else 0.0)


class Session:
    def __init__(self, graph: Graph, dataset: Dataset, calib_batch: int = 16, calib_num: int | None = 1,
                 eval_batch: int = 500, eval_num: int | None = None, settings: Settings | None = None):
        if len(graph.input_names) != 1:
            raise ModelError(f"the model must have exactly one data input, it has {graph.input_names}")
        self.original = graph
        self.input_name = graph.input_names[0]
        want = tuple(graph.input_shapes.get(self.input_name, (-1,) + dataset.x_test.shape[1:]))[1:]
        if tuple(dataset.x_test.shape[1:]) != want:
            raise ModelError(f"dataset '{dataset.name}' has samples of shape {dataset.x_test.shape[1:]}, "
                             f"the input '{self.input_name}' is declared as {want} (Input_shape)")
        self.dataset = dataset
        self.calib_batch, self.calib_num = calib_batch, calib_num
        self.eval_batch, self.eval_num = eval_batch, eval_num
        self.settings = settings or Settings()
        self.seconds: dict[str, float] = {}
        t = time.perf_counter()
        self.prepared = prepare(graph)
        self.shapes = infer_shapes(self.prepared)
        classes = self.shapes[self.prepared.outputs[0]][-1]
        labels = dataset.y_test
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ModelError(f"dataset '{dataset.name}' has labels in [{labels.min()}, {labels.max()}], the model "
                             f"has {classes} outputs")
        self.seconds["prepare"] = time.perf_counter() - t
        self._features: dict[str, Features] | None = None
        self._float_cache: dict[int, dict[str, np.ndarray]] = {}
        self._float_logits: dict[int, np.ndarray] = {}
        self._int_cache: dict = {}
        self._stats_cache: dict = {}  # (batch, fingerprint, scale, offset) -> that batch's ErrorStats

    @classmethod
    def from_config(cls, run: RunConfig) -> "Session":
        try:
            graph = load_mxnet(run.model_dir, run.model_name)
        except ModelError:
            build = os.path.join(os.path.dirname(run.path), "build.py")
            if not os.path.exists(build):
                raise
            # a sample whose weights come from a package is built into the cache on first use
            proc = subprocess.run([sys.executable, build], capture_output=True, text=True)
            if proc.returncode != 0:
                raise ModelError(f"building {run.model_name} with {build} failed: "
                                 f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}") from None
            graph = load_mxnet(run.model_dir, run.model_name)
        if len(graph.input_names) == 1:
            graph.input_shapes = {graph.input_names[0]: run.input_shape}
        dataset = load_dataset(run.dataset, run.dataset_dir)
        return cls(graph, dataset, run.calib_batch, run.calib_num, run.eval_batch, run.eval_num, run.settings)

    @classmethod
    def from_ini(cls, path: str) -> tuple["Session", RunConfig]:
        run = load_run_config(path)
        return cls.from_config(run), run

    # ---- the slow, config-independent steps, done once
    def features(self, progress=None) -> dict[str, Features]:
        if self._features is None:
            t = time.perf_counter()
            self._features = calibrate(self.prepared, self.dataset.x_calib, self.calib_batch, self.calib_num,
                                       progress)
            self.seconds["calibrate"] = time.perf_counter() - t
        return self._features

    def eval_batches(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        x, y = self.dataset.x_test, self.dataset.y_test
        starts = list(range(0, len(x), self.eval_batch))
        if self.eval_num:
            starts = starts[:self.eval_num]
        return [(k, x[s:s + self.eval_batch], y[s:s + self.eval_batch]) for k, s in enumerate(starts)]

    def float_values(self, k: int, x: np.ndarray, nodes: set[str] | None = None) -> dict[str, np.ndarray]:
        """Float activations for evaluation batch k: of `nodes`, or of every node users see (and then kept
        for later runs while all batches' fit in FLOAT_CACHE_BYTES; a large model's are recomputed when a
        rerun needs them instead of holding gigabytes)."""
        if k in self._float_cache:
            return self._float_cache[k]
        keep = set(nodes) if nodes is not None else set(self.prepared.value_of.values()) | set(self.prepared.outputs)
        vals = run_float(self.prepared, {self.input_name: x}, keep=keep)
        # one value at a time, each MXNet array freed as its copy is made: not both sets at once
        values = {n: vals.pop(n).asnumpy() for n in list(vals)}
        out = self.prepared.outputs[0]
        self._float_logits[k] = values[out]
        if nodes is None and self._layer_bytes(keep) <= FLOAT_CACHE_BYTES:
            self._float_cache[k] = values
        return values

    # ---- the fast, config-dependent steps
    def quantize(self, config: QuantConfig | None = None, settings: Settings | None = None) -> QuantizedModel:
        return quantize(self.prepared, self.features(), config or QuantConfig(), settings or self.settings,
                        self.shapes)

    def evaluate(self, model: QuantizedModel, check: bool = False, progress=None) -> Evaluation:
        """Accuracy, fidelity and per-layer error of `model` on the evaluation set.

        A rerun computes only what changed: a layer whose integer value has the fingerprint of one in the
        previous run keeps its error statistics, and the integer run starts from the previous run's
        checkpoints (int_exec.checkpoints, stored in as few bytes as their precision allows; every layer's
        value too while the model's fit INT_CACHE_BYTES) instead of from the input."""
        t0 = time.perf_counter()
        prep = self.prepared
        layer_nodes = {orig: p for orig, p in prep.value_of.items() if prep.nodes[p].op != "null"}
        out = prep.outputs[0]
        out_name = model.values[out].name
        checkpoints = _checkpoints(model)
        if self._layer_bytes(layer_nodes.values()) <= INT_CACHE_BYTES:  # small model: every layer's value too
            checkpoints |= {model.values[p].name for p in layer_nodes.values() if not model.values[p].is_float}
        fps = fingerprints(model)
        # what a layer's statistics depend on besides the batch: its integer value and how it dequantizes
        layer_keys = {orig: (fps[model.values[p].name], np.asarray(model.values[p].scale).tobytes(),
                             model.values[p].offset) for orig, p in layer_nodes.items()}
        qo = model.values[out]
        logits_id = (fps[out_name], np.asarray(qo.scale).tobytes(), qo.offset)
        new_cache: dict = {}
        new_stats: dict = {}
        stats = {orig: ErrorStats() for orig in layer_nodes}
        float_logits, quant_logits, labels = [], [], []
        batches = self.eval_batches()
        for i, (k, x, y) in enumerate(batches):
            keys = {orig: (k, *lk) for orig, lk in layer_keys.items()}
            logits_key = ("logits", k, *logits_id)
            missing = {o for o, key in keys.items() if key not in self._stats_cache}
            fvals = None  # needed only where statistics are missing
            if missing or k not in self._float_logits:
                first = k not in self._float_logits  # every node, kept if the cache has room
                fvals = self.float_values(k, x, None if first else {layer_nodes[o] for o in missing} | {out})
            keep = {model.values[layer_nodes[o]].name for o in missing}
            if logits_key not in self._stats_cache:
                keep.add(out_name)
            fresh = {n for n in checkpoints if (k, fps[n]) not in self._int_cache}  # the rest carry over
            # kept compact: a batch's values are held once, by the statistics below and the new cache alike
            ivals = run_int(model, {self.input_name: x}, keep=keep | fresh, cache=self._int_cache, cache_tag=k,
                            fingerprints_=fps, strict=check, compact_kept=True) if keep or fresh or check else {}
            for n in checkpoints:
                ck = (k, fps[n])
                new_cache[ck] = ivals[n] if n in ivals else self._int_cache.get(ck)
            for ck in [ck for ck in self._int_cache if ck[0] == k]:  # batch k is done: the old values go now
                del self._int_cache[ck]
            for orig, p in layer_nodes.items():
                key = keys[orig]
                part = self._stats_cache.get(key) or self._layer_stats(model, p, fvals[p], ivals)
                new_stats[key] = part  # an unchanged integer value has unchanged error: not recomputed
                stats[orig].merge(part)
            logits = self._stats_cache.get(logits_key)
            if logits is None:
                logits = self.dequantized(model, out, ivals)
            new_stats[logits_key] = logits
            float_logits.append(self._float_logits[k])
            quant_logits.append(logits)
            labels.append(y)
            del ivals, fvals  # this batch's values are summarized: free them before the next batch's
            if progress:
                progress((i + 1) / len(batches))
        self._int_cache = {ck: v for ck, v in new_cache.items() if v is not None}  # the next toggle starts here
        self._stats_cache = new_stats
        release_free_memory()
        fl, ql, lab = np.concatenate(float_logits), np.concatenate(quant_logits), np.concatenate(labels)
        layers = []
        for orig, p in layer_nodes.items():
            st, rep = stats[orig], model.reports[p]
            layers.append(LayerError(orig, self.original.nodes[orig].op, p, rep.precision, st.sqnr_db, st.cosine,
                                     st.max_abs, rep.restored))
        return Evaluation(topk(fl, lab, 1), topk(fl, lab, 5), topk(ql, lab, 1), topk(ql, lab, 5), len(lab),
                          model.max_precision, layers, {"evaluate": time.perf_counter() - t0}, fidelity(fl, ql))

    def _layer_bytes(self, nodes) -> int:
        """Bytes of these prepared nodes' values over the evaluation set, as int32."""
        n = sum(len(x) for _, x, _ in self.eval_batches())
        return 4 * n * sum(int(np.prod(self.shapes[p])) for p in nodes if p in self.shapes)

    def view_inputs(self) -> tuple[np.ndarray, int]:
        """Every sample (test and calibration) and fixed augmented views of them: horizontal flip and, for
        images, two 1/8-width shifts with edge padding. Returns (samples, number of views)."""
        base = np.concatenate([self.dataset.x_test, self.dataset.x_calib])
        views = [base, base[..., ::-1]]
        if base.ndim == 4:
            d = max(1, base.shape[-1] // 8)
            padded = np.pad(base, [(0, 0), (0, 0), (d, d), (d, d)], mode="edge")
            h, w = base.shape[2:]
            views += [padded[:, :, :h, :w], padded[:, :, 2 * d:2 * d + h, 2 * d:2 * d + w]]
        return np.ascontiguousarray(np.concatenate(views)).astype(np.float32), len(views)

    def fidelity_on_views(self, model: QuantizedModel) -> dict:
        """Label-free fidelity over `view_inputs()`: more data than the labelled set."""
        x, n_views = self.view_inputs()
        fl, ql = [], []
        out = self.prepared.outputs[0]
        for s in range(0, len(x), self.eval_batch):
            chunk = x[s:s + self.eval_batch]
            fl.append(run_float(self.prepared, {self.input_name: chunk})[out].asnumpy())
            ivals = run_int(model, {self.input_name: chunk}, keep="outputs")
            ql.append(self.dequantized(model, out, ivals))
        result = fidelity(np.concatenate(fl), np.concatenate(ql))
        result["views"] = n_views
        return result

    @staticmethod
    def _layer_stats(model: QuantizedModel, prepared_node: str, ref: np.ndarray, ivals: dict) -> "ErrorStats":
        qt = model.values[prepared_node]
        if qt.is_float or np.ndim(qt.scale) or np.ndim(qt.offset):
            return ErrorStats().add(ref, Session.dequantized(model, prepared_node, ivals))
        return ErrorStats().add(ref, ivals[qt.name], float(qt.scale), float(qt.offset))

    @staticmethod
    def dequantized(model: QuantizedModel, prepared_node: str, ivals: dict) -> np.ndarray:
        qt = model.values[prepared_node]
        v = ivals[qt.name]
        if qt.is_float:
            return v
        out = np.multiply(v, np.float32(1.0 / qt.scale), dtype=np.float32)
        if np.any(qt.offset):
            out += np.float32(qt.offset)
        return out

    # ---- diagnosis (mrt_core.analysis), here so the app has one object to talk to
    def diagnose(self, model: QuantizedModel, max_samples: int = 256):
        """Per user node: local SQNR (fed with float inputs), saturation share, scale error, IOPs."""
        from .analysis import diagnose
        return diagnose(self, model, max_samples)

    def candidates(self, evaluation: Evaluation | None = None, diagnosis: dict | None = None):
        """Ranked zero-point / channel-wise / restore candidates with the figures behind each."""
        from .analysis import candidates
        return candidates(self, evaluation, diagnosis)

    def unsupported_nodes(self) -> dict[str, str]:
        """User nodes with no integer rule -> why. Restoring them keeps them in float (for diagnosis)."""
        from .ops import unsupported
        out = {}
        for node in self.prepared.op_nodes():
            reason = unsupported(node)
            if reason:
                out[self.prepared.origin.get(node.name, node.name)] = reason
        return out

    def recommended_config(self, evaluation: Evaluation | None = None) -> QuantConfig:
        """The `recommended` preset: the candidate discovery's suggestions (group-wise weights for depthwise
        convs, per-output-channel weights where channels' ranges spread, zero points where a range is
        one-sided). Restores are left to the user: they are for diagnosis, not a quantized model."""
        from .analysis import candidates
        config = QuantConfig()
        for cand in candidates(self, evaluation, None, top=len(self.prepared.nodes)):
            if cand.kind == "restore":
                continue
            if cand.kind == "channel-wise" and cand.suggestion.get("granularity") == "channel-wise":
                continue  # input-channel splitting costs IOPs and time; per-channel weight scales do not
            config = config.with_node(cand.name, **cand.suggestion)
        for node in self.original.op_nodes():  # depthwise / grouped convs: one weight scale per group
            if node.op == "Convolution" and int(node.attr("num_group", 1)) > 1:
                config = config.with_node(node.name, granularity="group-wise")
        return config

    def iops(self, model: QuantizedModel) -> int:
        from .analysis import total_iops
        return total_iops(self, model)
