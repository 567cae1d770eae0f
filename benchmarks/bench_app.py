"""Time from pressing Rerun on the Tune page to the updated accuracy, for each sample model.

Two numbers per model:
  engine  - the calls the Rerun button makes (session.quantize + session.evaluate) after one node toggle,
            on an already calibrated session (the first Rerun of a toggle; the second one repeats it);
  app     - the same through the app with streamlit's AppTest: click Rerun -> script run -> metric shown.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/bench_app.py [--models lenet,resnet] [--no-app]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mrt_core.errors import MRTError  # noqa: E402
from mrt_core.session import Session  # noqa: E402

SAMPLES = ("digits_mlp", "lenet", "resnet")


def ini(name: str) -> str:
    return os.path.join(ROOT, "sample_models", name, f"{name}.ini")


def bench_engine(name: str) -> dict:
    t = time.perf_counter()
    session, run = Session.from_ini(ini(name))
    session.features()
    base = session.evaluate(session.quantize(run.quant_config))
    load = time.perf_counter() - t
    last = [n.name for n in session.original.op_nodes()][-2]
    cfg = run.quant_config.with_node(last, restore=True)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        ev = session.evaluate(session.quantize(cfg))
        times.append(time.perf_counter() - t)
    return {"load+calibrate+baseline": load, "rerun": times[0], "rerun again": times[1],
            "top1": f"{base.quant_top1:.2f}% -> {ev.quant_top1:.2f}%"}


def bench_app(name: str) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=600)
    at.run()
    at.selectbox(key="sample_choice").set_value(name)
    t = time.perf_counter()
    at.button(key="load_sample").click().run()
    load = time.perf_counter() - t
    if at.error:
        raise MRTError(at.error[0].value)
    at.switch_page("pages/tune.py").run()
    ops = [n.name for n in at.session_state["mrt_loaded"].session.original.op_nodes()]
    node = ops[-2]
    at.selectbox(key="tune_node").set_value(node).run()
    ver = at.session_state["mrt_editor_version"]
    at.checkbox(key=f"t_restore_{node}_{ver}").check()
    at.button(key="apply_node").click().run()
    before = {m.label: m.value for m in at.metric}["Quant top-1"]
    t = time.perf_counter()
    at.button(key="rerun").click().run()
    rerun = time.perf_counter() - t
    if at.exception or at.error:
        raise MRTError(str([e.value for e in list(at.exception) + list(at.error)]))
    after = {m.label: m.value for m in at.metric}["Quant top-1"]
    return {"load (page)": load, "rerun (page)": rerun, "top1": f"{before} -> {after}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(SAMPLES))
    ap.add_argument("--no-app", action="store_true", help="only time the engine calls")
    args = ap.parse_args()
    os.environ.setdefault("MRT_STUDIO_HOME", tempfile.mkdtemp(prefix="mrt_bench_"))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for kind, fn in (("engine", bench_engine), ("app", bench_app)):
            if kind == "app" and args.no_app:
                continue
            try:
                res = fn(name)
            except MRTError as exc:
                print(f"{name:11s} {kind:6s} ERROR: {exc}", flush=True)
                continue
            parts = [f"{k} {v:.3f}s" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()]
            print(f"{name:11s} {kind:6s} " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
