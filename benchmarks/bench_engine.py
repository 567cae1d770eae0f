"""Speed and memory of the engine on each sample model (prints figures; not a test).

For each model: prepare + calibrate + quantize seconds, exact integer evaluation of the test set against
MXNet's float inference of the same set (bound symbol executor, the way MXNet serves a model, and our
node-by-node float executor), the size of what calibration keeps, peak resident memory, and the time to
requantize + re-evaluate after one toggle (the app's Rerun) for layer-wise and channel-wise on every conv.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import mxnet as mx


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrt_core.float_exec import run_float  # noqa: E402
from mrt_core.int_exec import run_int  # noqa: E402
from mrt_core.mxnet_io import graph_to_json  # noqa: E402
from mrt_core.qconfig import QuantConfig  # noqa: E402
from mrt_core.session import Session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["lenet", "resnet", "digits_mlp"]


def best_of(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def mxnet_float_seconds(session: Session, batch: int) -> float:
    g = session.original
    sym = mx.sym.load_json(graph_to_json(g))
    args = {k: mx.nd.array(v) for k, v in g.params.items()}
    x = session.dataset.x_test
    ex = sym.bind(mx.cpu(), {**{k: args[k] for k in sym.list_arguments() if k in args},
                             session.input_name: mx.nd.array(x[:batch])},
                  aux_states={k: args[k] for k in sym.list_auxiliary_states()}, grad_req="null")

    def go():
        for i in range(0, len(x) - batch + 1, batch):
            ex.forward(is_train=False, **{session.input_name: mx.nd.array(x[i:i + batch])})
            ex.outputs[0].asnumpy()
    go()
    return best_of(go)


def features_bytes(features) -> int:
    total = 0
    for f in features.values():
        total += f.sample.nbytes + 8 * (len(f.batch_absmax) * 3 + 8)
        for arr in (f.channel_min, f.channel_max, f.channel_absmax):
            total += arr.nbytes if arr is not None else 0
    return total


def toggle_seconds(session: Session, base: QuantConfig, node: str, **change) -> float:
    session.evaluate(session.quantize(base))  # warm: the cache holds the base run
    t = time.perf_counter()
    session.evaluate(session.quantize(base.with_node(node, **change)))
    return time.perf_counter() - t


def main():
    rows = []
    for name in MODELS:
        t = time.perf_counter()
        session, run = Session.from_ini(os.path.join(ROOT, "sample_models", name, f"{name}.ini"))
        t_prep = session.seconds["prepare"]
        session.features()
        t_cal = session.seconds["calibrate"]
        t = time.perf_counter()
        model = session.quantize(run.quant_config)
        t_q = time.perf_counter() - t
        x = session.dataset.x_test
        batch = 100
        run_int(model, {session.input_name: x[:batch]})

        def int_eval():
            for i in range(0, len(x) - batch + 1, batch):
                run_int(model, {session.input_name: x[i:i + batch]}, keep="outputs")

        def float_nodewise():
            for i in range(0, len(x) - batch + 1, batch):
                run_float(session.prepared, {session.input_name: x[i:i + batch]})
        t_int = best_of(int_eval)
        t_mx = mxnet_float_seconds(session, batch)
        t_fl = best_of(float_nodewise)
        convs = [n.name for n in session.original.op_nodes() if n.op in ("Convolution", "FullyConnected")]
        last = session.original.op_nodes()[-1].name
        t_toggle = toggle_seconds(session, QuantConfig(), last, restore=True)
        all_cw = QuantConfig()
        for c in convs:
            all_cw = all_cw.with_node(c, granularity="channel-wise", step=4)
        t_toggle_cw = toggle_seconds(session, all_cw, last, restore=True)
        first_conv = convs[0]
        t_first = toggle_seconds(session, QuantConfig(), first_conv, granularity="output-channel-wise")
        rows.append((name, len(x), t_prep + t_cal + t_q, t_prep, t_cal, t_q, t_int, t_mx, t_fl,
                     features_bytes(session.features()) / 1e6, t_toggle, t_toggle_cw, t_first))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'model':11s} {'N':>5s} {'prep+cal+q s':>12s} {'prep':>6s} {'calib':>6s} {'quant':>6s} "
          f"{'int eval s':>10s} {'mx float s':>10s} {'ratio':>6s} {'nodewise fl':>11s} {'calib MB':>8s} "
          f"{'toggle last':>11s} {'.. all cw':>9s} {'toggle first':>12s}")
    for r in rows:
        print(f"{r[0]:11s} {r[1]:5d} {r[2]:12.2f} {r[3]:6.2f} {r[4]:6.2f} {r[5]:6.3f} {r[6]:10.3f} {r[7]:10.3f} "
              f"{r[6] / r[7]:6.1f} {r[8]:11.3f} {r[9]:8.2f} {r[10]:11.3f} {r[11]:9.3f} {r[12]:12.3f}")
    print(f"peak resident memory of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
