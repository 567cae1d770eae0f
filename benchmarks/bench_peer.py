"""This product against MXNet 1.9.1's own post-training int8 quantization (prints figures; not a test).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_peer.py [model ...] [--no-targets]

For each sample model, in one process:
  float      MXNet's float inference (a bound symbol executor on the original graph)
  mrt-def    this product, MRT's default config (QuantConfig())
  mrt-rec    this product, the recommended preset (session.recommended_config())
  mx-naive   mxnet.contrib.quantization.quantize_model_mkldnn (oneDNN), calib_mode='naive'
  mx-entropy the same with calib_mode='entropy'
The peer quantizes the unprepared float graph (session.original) with quantize_mode='full',
quantized_dtype='auto', nothing excluded, calibrated on the very samples our calibration uses
(the first Batch * Calibrate_num of session.dataset.x_calib).

Columns: labelled top-1 / top-5 of float and quantized; top-1 agreement with float on the labelled set and
over all views (test + calibration samples under the 4 views of Session.fidelity_on_views, rebuilt here with
the same construction for the peer); mean logit cosine on the views; calibration + quantization seconds;
evaluation seconds per 100 labelled images (ours: exact integer inference, outputs only); peak resident
memory of the step (the kernel's high-water mark, reset before each step via /proc/self/clear_refs; the
process-wide peak is printed at the end; "base MB" is the resident memory the step started from —
the session and caches of the model stay alive across its rows, earlier models are freed). A peer method that fails shows its error in its row.
For EfficientNet-Lite0 the targets of the recommended preset are checked after the table.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import sys
import time
import traceback

import mxnet as mx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mrt_core.int_exec import run_int  # noqa: E402
from mrt_core.mxnet_io import graph_to_json  # noqa: E402
from mrt_core.qconfig import QuantConfig  # noqa: E402
from mrt_core.session import Session, fidelity, topk  # noqa: E402

MODELS = ["digits_mlp", "lenet", "resnet", "efficientnet_lite0"]
PEER_MODES = ["naive", "entropy"]


# ---------------------------------------------------------------- memory

def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark of this process (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_PROCESS_PEAK = [0.0]


def peak_mb() -> float:
    """The high-water mark since the last reset_peak (MB); the process-wide maximum is kept aside."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        if m:
            value = int(m.group(1)) / 1024
    except OSError:
        pass
    _PROCESS_PEAK[0] = max(_PROCESS_PEAK[0], value)
    return value


def rss_mb() -> float:
    """The resident memory now (MB): what a step's peak starts from."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmRSS:\s+(\d+)\s+kB", f.read())
        return int(m.group(1)) / 1024 if m else float("nan")
    except OSError:
        return float("nan")


def start_step() -> float:
    gc.collect()
    reset_peak()
    return rss_mb()


# ---------------------------------------------------------------- data

def view_inputs(session: Session) -> np.ndarray:
    """The same samples Session.fidelity_on_views runs, so both sides see the same arrays."""
    return session.view_inputs()[0]


def calib_samples(session: Session) -> np.ndarray:
    x = session.dataset.x_calib
    if session.calib_num is not None:
        x = x[:session.calib_batch * session.calib_num]
    return np.ascontiguousarray(x).astype(np.float32)


# ---------------------------------------------------------------- MXNet executors

class Runner:
    """A bound symbol executor of a fixed batch; runs any number of samples (the tail padded)."""

    def __init__(self, sym, arg_params: dict, aux_params: dict, input_name: str, sample_shape, batch: int):
        self.input_name, self.batch = input_name, batch
        shapes = {input_name: (batch,) + tuple(sample_shape)}
        args = {}
        arg_shapes, _, _ = sym.infer_shape(**shapes)
        for name, shape in zip(sym.list_arguments(), arg_shapes):
            if name == input_name:
                args[name] = mx.nd.zeros(shape)
            elif name in arg_params:
                args[name] = arg_params[name]
            else:
                raise RuntimeError(f"no value for argument '{name}'")
        aux = {name: aux_params[name] for name in sym.list_auxiliary_states()}
        self.ex = sym.bind(mx.cpu(), args, aux_states=aux, grad_req="null")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(x), self.batch):
            chunk = x[s:s + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            self.ex.forward(is_train=False, **{self.input_name: mx.nd.array(chunk)})
            out.append(self.ex.outputs[0].asnumpy()[:n].astype(np.float32))
        return np.concatenate(out)


def float_symbol(session: Session):
    g = session.original
    sym = mx.sym.load_json(graph_to_json(g))
    aux_names = set(g.aux_names)
    arg_params = {k: mx.nd.array(v) for k, v in g.params.items() if k not in aux_names}
    aux_params = {k: mx.nd.array(v) for k, v in g.params.items() if k in aux_names}
    return sym, arg_params, aux_params


def peer_quantize(session: Session, sym, arg_params, aux_params, calib_mode: str):
    from mxnet.contrib.quantization import quantize_model_mkldnn
    xc = calib_samples(session)
    it = mx.io.NDArrayIter(data={session.input_name: xc}, batch_size=min(session.calib_batch, len(xc)))
    qsym, qargs, qaux = quantize_model_mkldnn(
        sym, arg_params, aux_params, data_names=(session.input_name,), label_names=(), ctx=mx.cpu(),
        excluded_sym_names=[], excluded_op_names=[], calib_mode=calib_mode, calib_data=it,
        num_calib_examples=len(xc), quantized_dtype="auto", quantize_mode="full")
    return qsym, qargs, qaux


# ---------------------------------------------------------------- rows

COLS = [("model", 25, "s"), ("method", 10, "s"), ("fl top1", 7, ".1f"), ("fl top5", 7, ".1f"),
        ("q top1", 6, ".1f"), ("q top5", 6, ".1f"), ("agr lab", 7, ".1f"), ("agr view", 8, ".1f"),
        ("n view", 6, "d"), ("cos view", 8, ".4f"), ("cal+q s", 7, ".2f"), ("s/100img", 8, ".3f"),
        ("base MB", 7, ".0f"), ("peak MB", 7, ".0f")]


def fmt_row(values: dict) -> str:
    parts = []
    for key, width, spec in COLS:
        v = values.get(key)
        parts.append(f"{'-':>{width}s}" if v is None else (f"{v:<{width}{spec}}" if spec == "s" else
                                                         f"{v:>{width}{spec}}"))
    line = " ".join(parts)
    if values.get("note"):
        line += "  " + values["note"]
    return line


def per100(seconds: float, n: int) -> float:
    return seconds / max(n, 1) * 100


def bench_model(name: str, results: list, details: dict):
    ini = os.path.join(ROOT, "sample_models", name, f"{name}.ini")
    base = start_step()
    session, run = Session.from_ini(ini)
    session.features()
    t_cal = session.seconds["prepare"] + session.seconds["calibrate"]
    ds = session.dataset
    x, y = np.ascontiguousarray(ds.x_test).astype(np.float32), ds.y_test
    xv = view_inputs(session)
    label = f"{name} (N={len(x)})"
    sample_shape = x.shape[1:]
    batch = session.eval_batch

    # (a) MXNet float
    sym, arg_params, aux_params = float_symbol(session)
    fl_runner = Runner(sym, arg_params, aux_params, session.input_name, sample_shape, batch)
    fl_runner(x[:batch])  # warm up
    t = time.perf_counter()
    fl = fl_runner(x)
    t_float = time.perf_counter() - t
    fl_views = fl_runner(xv)
    f1, f5 = topk(fl, y, 1), topk(fl, y, 5)
    results.append({"model": label, "method": "float", "fl top1": f1, "fl top5": f5, "q top1": f1, "q top5": f5,
                    "agr lab": 100.0, "agr view": 100.0, "n view": len(xv), "cos view": 1.0,
                    "s/100img": per100(t_float, len(x)), "base MB": base, "peak MB": peak_mb(),
                    "note": "includes loading, preparing and calibrating the session"})
    details[name] = {"float_s": t_float, "session": session, "n": len(x)}

    # (b), (c) this product
    for method, make in (("mrt-def", lambda: QuantConfig()), ("mrt-rec", session.recommended_config)):
        row = {"model": label, "method": method}
        try:
            row["base MB"] = start_step()
            t = time.perf_counter()
            cfg = make()
            model = session.quantize(cfg)
            t_q = time.perf_counter() - t
            run_int(model, {session.input_name: x[:batch]}, keep="outputs")  # warm up, as the float runner is
            t = time.perf_counter()
            for s in range(0, len(x), batch):  # exact integer inference of the labelled set, outputs only
                run_int(model, {session.input_name: x[s:s + batch]}, keep="outputs")
            t_int = time.perf_counter() - t
            t = time.perf_counter()
            ev = session.evaluate(model, check=True)
            t_ev = time.perf_counter() - t
            fv = session.fidelity_on_views(model)
            row.update({"fl top1": ev.float_top1, "fl top5": ev.float_top5, "q top1": ev.quant_top1,
                        "q top5": ev.quant_top5, "agr lab": ev.fidelity["top1_agreement"],
                        "agr view": fv["top1_agreement"], "n view": fv["num_samples"],
                        "cos view": fv["logit_cosine"], "cal+q s": t_cal + t_q,
                        "s/100img": per100(t_int, len(x)), "peak MB": peak_mb(),
                        "note": f"max prec {ev.max_precision}, checker ok, evaluate(check) {t_ev:.1f}s, "
                                f"quantize {t_q:.2f}s (config {len(cfg)} nodes)"})
            details[name][method] = {"ev": ev, "views": fv, "config": cfg, "int_s": t_int, "quant_s": t_q,
                                     "peak": row["peak MB"]}
        except Exception as exc:  # noqa: BLE001  (a failure is a result here)
            row["note"] = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            traceback.print_exc(file=sys.stderr)
        results.append(row)

    # (d) the peer: MXNet's post-training int8 quantization with oneDNN
    for mode in PEER_MODES:
        row = {"model": label, "method": f"mx-{mode}"}
        try:
            row["base MB"] = start_step()
            t = time.perf_counter()
            qsym, qargs, qaux = peer_quantize(session, sym, arg_params, aux_params, mode)
            runner = Runner(qsym, qargs, qaux, session.input_name, sample_shape, batch)
            t_q = time.perf_counter() - t
            runner(x[:batch])  # warm up (oneDNN primitive creation)
            t = time.perf_counter()
            ql = runner(x)
            t_run = time.perf_counter() - t
            ql_views = runner(xv)
            fid_lab, fid_views = fidelity(fl, ql), fidelity(fl_views, ql_views)
            nq = sum(1 for n in qsym.get_internals().list_outputs() if "quantized" in n and n.endswith("_output"))
            row.update({"fl top1": f1, "fl top5": f5, "q top1": topk(ql, y, 1), "q top5": topk(ql, y, 5),
                        "agr lab": fid_lab["top1_agreement"], "agr view": fid_views["top1_agreement"],
                        "n view": fid_views["num_samples"], "cos view": fid_views["logit_cosine"],
                        "cal+q s": t_q, "s/100img": per100(t_run, len(x)), "peak MB": peak_mb(),
                        "note": f"oneDNN int8, {nq} quantized op outputs, nothing excluded"})
            details[name][f"mx-{mode}"] = {"views": fid_views, "lab": fid_lab, "top1": row["q top1"]}
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()
            row["note"] = f"FAILED: {type(exc).__name__}: {(msg[0] if msg else '')[:200]}"
            traceback.print_exc(file=sys.stderr)
        results.append(row)


# ---------------------------------------------------------------- EfficientNet-Lite0 targets

def check_targets(details: dict) -> list[tuple[str, bool, str]]:
    d = details.get("efficientnet_lite0")
    if not d or "mrt-rec" not in d:
        return []
    session: Session = d["session"]
    rec = d["mrt-rec"]
    ev, fv, cfg = rec["ev"], rec["views"], rec["config"]
    peers = [d[k] for k in d if k.startswith("mx-")]
    best_agree = max((p["views"]["top1_agreement"] for p in peers), default=0.0)
    best_cos = max((p["views"]["logit_cosine"] for p in peers), default=-1.0)
    n = ev.num_samples
    out = [
        ("top-1 agreement over all views >= 90%", fv["top1_agreement"] >= 90, f"{fv['top1_agreement']:.1f}%"),
        ("top-1 agreement over views >= best peer", fv["top1_agreement"] >= best_agree,
         f"{fv['top1_agreement']:.1f}% vs {best_agree:.1f}%"),
        ("mean logit cosine (views) >= best peer", fv["logit_cosine"] >= best_cos,
         f"{fv['logit_cosine']:.4f} vs {best_cos:.4f}"),
        ("labelled top-1 >= 16/20", round(ev.quant_top1 * n / 100) >= 16,
         f"{round(ev.quant_top1 * n / 100)}/{n}"),
        ("max precision <= 32", ev.max_precision <= 32, str(ev.max_precision)),
        ("integer checker passes", True, "evaluate(check=True) raised nothing"),
    ]
    node = session.original.op_nodes()[-1].name
    session.evaluate(session.quantize(cfg))  # warm: the cache holds the preset's run
    t = time.perf_counter()
    session.evaluate(session.quantize(cfg.with_node(node, restore=True)))
    t_toggle = time.perf_counter() - t
    out.append((f"requantize + re-evaluate after one toggle ({node} restore) < 5 s", t_toggle < 5,
                f"{t_toggle:.2f}s"))
    dws = [n.name for n in session.original.op_nodes()
           if n.op == "Convolution" and int(n.attr("num_group", 1)) > 1]
    gw = QuantConfig()
    for name in dws:
        gw = gw.with_node(name, granularity="group-wise")
    t = time.perf_counter()
    session.quantize(gw)
    t_gw = time.perf_counter() - t
    out.append((f"group-wise weights on all {len(dws)} depthwise convs quantize < 5 s", t_gw < 5, f"{t_gw:.2f}s"))
    out.append(("peak memory of the preset's step < 4 GB", rec["peak"] < 4096, f"{rec['peak']:.0f} MB"))
    return out


def main(argv: list[str]):
    names = [a for a in argv if not a.startswith("--")] or MODELS
    results: list[dict] = []
    details: dict = {}
    for name in names:
        try:
            bench_model(name, results, details)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            results.append({"model": name, "method": "-", "note": f"FAILED: {type(exc).__name__}: {exc}"})
        if name != "efficientnet_lite0" and name in details:  # free the model before the next one
            details[name].pop("session", None)
            for method in ("mrt-def", "mrt-rec"):
                details[name].get(method, {}).pop("ev", None)
        print(f"[{name} done]", file=sys.stderr, flush=True)
    print(" ".join(f"{k:<{w}s}" if s == "s" else f"{k:>{w}s}" for k, w, s in COLS))
    for r in results:
        print(fmt_row(r))
    print()
    for name in names:
        d = details.get(name, {})
        for method in ("mrt-def", "mrt-rec"):
            if method in d and d.get("float_s"):
                print(f"{name:18s} {method}: exact-integer eval {d[method]['int_s']:.3f}s vs MXNet float "
                      f"{d['float_s']:.3f}s on {d['n']} images: ratio {d[method]['int_s'] / d['float_s']:.1f}x")
    if "--no-targets" not in argv:
        targets = check_targets(details)
        if targets:
            print("\nEfficientNet-Lite0, 8 bits, recommended preset:")
            for what, ok, value in targets:
                print(f"  [{'PASS' if ok else 'MISS'}] {what}: {value}")
    print(f"\npeak resident memory of this process: {max(_PROCESS_PEAK[0], peak_mb()):.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
