"""Where the app keeps things.

* `st.cache_resource`: the engine Session of a model (keyed by the sample's ini path, or by the uploaded
  bytes) with its calibration and the evaluation of the model's own config, computed once per process.
* `st.session_state`: what one browser tab is doing: the loaded model, the current QuantConfig, the undo
  stack, the last and previous evaluations.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from mrt_core.errors import MRTError
from mrt_core.qconfig import QuantConfig
from mrt_core.session import Evaluation, Session

from . import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = {name: os.path.join(ROOT, "sample_models", name, f"{name}.ini")
           for name in ("lenet", "resnet", "digits_mlp", "efficientnet_lite0")}
DEFAULT_SAMPLE = "lenet"


@dataclass(eq=False)
class Loaded:
    """A model ready to tune: its Session (calibrated) and the evaluation of its starting config."""
    key: str                      # "sample:lenet" or "upload:<hash>"
    label: str                    # what runs are saved under
    session: Session
    base_config: QuantConfig
    baseline: Evaluation
    source: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # a Session's caches are not thread-safe


def _finish(key: str, label: str, session: Session, config: QuantConfig, source: dict) -> Loaded:
    # ops without an integer rule start restored (float), so the model loads and the rest can be tuned
    for name, reason in session.unsupported_nodes().items():
        if not config.get_node(name).restore:
            config = config.with_node(name, restore=True)
            source.setdefault("restored_unsupported", {})[name] = reason
    session.features()
    baseline = session.evaluate(session.quantize(config))
    return Loaded(key, label, session, config, baseline, source)


@st.cache_resource(show_spinner=False, max_entries=6)
def load_sample(ini_path: str) -> Loaded:
    session, run = Session.from_ini(ini_path)
    name = os.path.splitext(os.path.basename(ini_path))[0]
    return _finish(f"sample:{name}", name, session, run.quant_config,
                   {"kind": "sample", "ini": ini_path, "dataset": run.dataset})


@st.cache_resource(show_spinner=False, max_entries=4)
def load_upload(symbol: bytes, params: bytes, npz: bytes, calib_batch: int, calib_num: int,
                eval_batch: int, name: str) -> Loaded:
    from mrt_core.datasets import load_dataset
    from mrt_core.mxnet_io import graph_from_json, load_params

    digest = hashlib.sha256(symbol + b"\0" + params + b"\0" + npz).hexdigest()[:12]
    folder = os.path.join(store.home(), "uploads", digest)
    os.makedirs(folder, exist_ok=True)
    params_path, npz_path = os.path.join(folder, "model.params"), os.path.join(folder, "data.npz")
    for path, data in ((params_path, params), (npz_path, npz)):
        with open(path, "wb") as f:
            f.write(data)
    try:
        text = symbol.decode("utf-8")
    except UnicodeDecodeError:
        raise MRTError("the symbol file is not UTF-8 text (expected MXNet symbol JSON)") from None
    arrays, aux = load_params(params_path)
    graph = graph_from_json(text, arrays, aux, source="uploaded symbol JSON")
    dataset = load_dataset("npz", npz_path)
    if len(graph.input_names) == 1:
        graph.input_shapes = {graph.input_names[0]: (-1,) + tuple(dataset.x_test.shape[1:])}
    if calib_batch * calib_num > len(dataset.x_calib):
        raise MRTError(f"calibration wants {calib_num} batch(es) of {calib_batch} samples, "
                       f"the npz has only {len(dataset.x_calib)} in x_calib")
    session = Session(graph, dataset, calib_batch, calib_num, eval_batch, None)
    return _finish(f"upload:{digest}", name or f"upload-{digest}", session, QuantConfig(),
                   {"kind": "upload", "folder": folder})


# ---------------------------------------------------------------- session_state

def _adopt(loaded: Loaded) -> None:
    ss = st.session_state
    ss.mrt_loaded = loaded
    ss.mrt_config = loaded.base_config
    ss.mrt_undo = []
    ss.mrt_last_eval = loaded.baseline
    ss.mrt_last_eval_config = loaded.base_config.to_json()
    ss.mrt_prev_eval = None
    ss.mrt_last_run_id = None
    ss.mrt_editor_version = ss.get("mrt_editor_version", 0) + 1
    ss.pop("mrt_model_cache", None)
    ss.mrt_diag = None
    ss.mrt_iops = {}


def ensure_state() -> None:
    """Load the default sample on the first run of a tab."""
    if "mrt_loaded" not in st.session_state:
        with st.spinner(f"Loading and calibrating {DEFAULT_SAMPLE}…"):
            _adopt(load_sample(SAMPLES[DEFAULT_SAMPLE]))


def use_sample(name: str) -> None:
    """Switch to a sample model; raises MRTError (the current model then stays)."""
    _adopt(load_sample(SAMPLES[name]))


def use_upload(symbol: bytes, params: bytes, npz: bytes, calib_batch: int, calib_num: int,
               eval_batch: int, name: str) -> None:
    """Switch to an uploaded model; raises on any problem, leaving the current model loaded."""
    _adopt(load_upload(symbol, params, npz, calib_batch, calib_num, eval_batch, name))


def loaded() -> Loaded:
    return st.session_state.mrt_loaded


def session() -> Session:
    return loaded().session


def config() -> QuantConfig:
    return st.session_state.mrt_config


def set_config(new: QuantConfig) -> bool:
    """Make `new` the current config (pushing the old one on the undo stack); False if nothing changed."""
    ss = st.session_state
    if new == ss.mrt_config:
        return False
    ss.mrt_undo.append(ss.mrt_config)
    ss.mrt_config = new
    ss.mrt_editor_version += 1
    return True


def undo() -> bool:
    ss = st.session_state
    if not ss.mrt_undo:
        return False
    ss.mrt_config = ss.mrt_undo.pop()
    ss.mrt_editor_version += 1
    return True


def current_model():
    """The quantized model of the current config (quantization takes milliseconds; kept per config)."""
    ss = st.session_state
    key = (loaded().key, config().to_json())
    cached = ss.get("mrt_model_cache")
    if cached is None or cached[0] != key:
        with loaded().lock:
            model = session().quantize(config())
        ss.mrt_model_cache = (key, model)
    return ss.mrt_model_cache[1]


def rerun() -> Evaluation:
    """Quantize + evaluate the current config (no recalibration), remember it and save it as a run."""
    ss = st.session_state
    lo = loaded()
    cfg = config()
    t = time.perf_counter()
    with lo.lock:
        model = lo.session.quantize(cfg)
        ev = lo.session.evaluate(model)
    seconds = time.perf_counter() - t
    ss.mrt_model_cache = ((lo.key, cfg.to_json()), model)
    ss.mrt_prev_eval = ss.mrt_last_eval
    ss.mrt_last_eval = ev
    ss.mrt_last_eval_config = cfg.to_json()
    ss.mrt_last_run_id = store.save_run(lo.label, cfg.to_json(), ev, seconds, iops_of(cfg, model))
    ss.mrt_last_seconds = seconds
    return ev


def iops_of(cfg: QuantConfig, model=None) -> int:
    """Integer ops per sample of the integer graph of `cfg` (engine's count; kept per config)."""
    ss = st.session_state
    cache = ss.setdefault("mrt_iops", {})
    key = (loaded().key, cfg.to_json())
    if key not in cache:
        with loaded().lock:
            if model is None:
                model = session().quantize(cfg)
            cache[key] = int(session().iops(model))
    return cache[key]


def diagnose() -> dict:
    """Run the engine's diagnosis of the current config (seconds on big models: only on demand)."""
    model = current_model()
    t = time.perf_counter()
    with loaded().lock:
        diag = session().diagnose(model)
    st.session_state.mrt_diag = {"key": (loaded().key, config().to_json()), "diag": diag,
                                 "seconds": time.perf_counter() - t}
    return diag


def diagnosis(config_json: str | None = None) -> dict | None:
    """The last diagnosis if it was made for `config_json` (default: the current config), else None."""
    d = st.session_state.get("mrt_diag")
    want = (loaded().key, config().to_json() if config_json is None else config_json)
    return d["diag"] if d and d["key"] == want else None


def candidates() -> list:
    """The engine's ranked candidates for the last evaluation (with local SQNR once it was diagnosed)."""
    ev = last_eval()
    with loaded().lock:
        return session().candidates(ev, diagnosis(st.session_state.mrt_last_eval_config))


def flash(message: str | None = None) -> str | None:
    """Set (with a message) or take (without) a one-shot message that survives st.rerun()."""
    ss = st.session_state
    if message is not None:
        ss.mrt_flash = message
        return None
    return ss.pop("mrt_flash", None)


def last_eval() -> Evaluation:
    return st.session_state.mrt_last_eval


def eval_is_stale() -> bool:
    return st.session_state.mrt_last_eval_config != config().to_json()


def weight_of(node_name: str) -> str | None:
    """The weight param name of a Convolution / FullyConnected node of the original graph."""
    g = session().original
    node = g.nodes[node_name]
    if node.op in ("Convolution", "FullyConnected", "Deconvolution") and len(node.inputs) > 1:
        w = node.inputs[1]
        if w in g.params:
            return w
    return None


def op_nodes() -> list[str]:
    return [n.name for n in session().original.op_nodes()]


def show_error(exc: Exception) -> None:
    st.error(str(exc) or exc.__class__.__name__)
