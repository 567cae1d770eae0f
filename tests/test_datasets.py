"""Tests for mrt_core.datasets: splits, value ranges, npz loading and errors."""

import gzip

import numpy as np
import pytest

from mrt_core.datasets import (Dataset, DatasetError, load_dataset, mnist5k_csv_path)

SPLITS = {
    # name: (sample shape, n_test, n_calib, n_train)
    "mnist5k": ((1, 28, 28), 1000, 500, 3500),
    "digits": ((1, 8, 8), 500, 200, 1097),
}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_split_sizes_and_shapes(name):
    shape, n_test, n_calib, n_train = SPLITS[name]
    ds = load_dataset(name)
    assert isinstance(ds, Dataset) and ds.name == name and ds.description
    assert ds.x_test.shape == (n_test,) + shape
    assert ds.x_calib.shape == (n_calib,) + shape
    assert ds.x_train.shape == (n_train,) + shape
    assert ds.y_test.shape == (n_test,) and ds.y_train.shape == (n_train,)
    for x in (ds.x_test, ds.x_calib, ds.x_train):
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.max() > 0.5  # really scaled to [0, 1], not divided twice
    for y in (ds.y_test, ds.y_train):
        assert y.dtype == np.int64
        assert y.min() >= 0 and y.max() <= 9
    assert set(ds.y_test.tolist()) == set(range(10))


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_cached_and_read_only(name):
    a, b = load_dataset(name), load_dataset(name)
    assert a is b
    for arr in (a.x_calib, a.x_test, a.y_test, a.x_train, a.y_train):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0


def test_name_is_case_insensitive():
    assert load_dataset(" MNIST5K ") is load_dataset("mnist5k")


def test_mnist5k_split_is_the_fixed_permutation():
    # Read the raw csv independently of the module and apply the documented split.
    with gzip.open(mnist5k_csv_path(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert raw.shape == (5000, 785)
    labels = raw[:, -1]
    assert np.array_equal(np.bincount(labels), [500] * 10)  # last column is the label
    perm = np.random.RandomState(0).permutation(5000)
    test_idx, calib_idx = perm[:1000], perm[1000:1500]

    ds = load_dataset("mnist5k")
    assert np.array_equal(np.bincount(ds.y_test, minlength=10),
                          np.bincount(labels[test_idx], minlength=10))
    assert np.array_equal(ds.y_test, labels[test_idx])
    assert np.array_equal(ds.y_train, labels[perm[1500:]])
    np.testing.assert_allclose(ds.x_calib.reshape(500, -1),
                               raw[calib_idx, :-1] / 255.0, rtol=0, atol=1e-6)


def test_digits_split_is_the_fixed_permutation():
    from sklearn.datasets import load_digits
    d = load_digits()
    perm = np.random.RandomState(0).permutation(len(d.target))
    ds = load_dataset("digits")
    assert np.array_equal(ds.y_test, d.target[perm[:500]])
    np.testing.assert_allclose(ds.x_calib.reshape(200, -1), d.data[perm[500:700]] / 16.0,
                               rtol=0, atol=1e-6)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _good_arrays(n_calib=6, n_test=8):
    rng = np.random.RandomState(1)
    return dict(x_calib=rng.rand(n_calib, 3, 4, 4).astype(np.float32),
                x_test=rng.rand(n_test, 3, 4, 4).astype(np.float32),
                y_test=rng.randint(0, 5, size=n_test))


def test_npz_round_trip(tmp_path):
    arrays = _good_arrays()
    path = _write_npz(tmp_path / "data.npz", **arrays)
    ds = load_dataset("npz", path)
    assert ds.name == "npz" and ds.x_train is None and ds.y_train is None
    for key in ("x_calib", "x_test", "y_test"):
        assert np.array_equal(getattr(ds, key), arrays[key])
        assert not getattr(ds, key).flags.writeable
    assert ds.x_test.dtype == np.float32 and ds.y_test.dtype == np.int64
    assert load_dataset("npz", path) is ds


def test_npz_float_labels_with_whole_values_are_accepted(tmp_path):
    arrays = _good_arrays()
    arrays["y_test"] = arrays["y_test"].astype(np.float32)
    ds = load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))
    assert ds.y_test.dtype == np.int64


def test_npz_rewritten_file_is_reloaded(tmp_path):
    path = _write_npz(tmp_path / "d.npz", **_good_arrays(n_test=8))
    assert len(load_dataset("npz", path).y_test) == 8
    _write_npz(tmp_path / "d.npz", **_good_arrays(n_test=5))
    assert len(load_dataset("npz", path).y_test) == 5


def test_unknown_name_lists_known():
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert "cifar10" in msg
    for known in ("mnist5k", "digits", "npz"):
        assert known in msg


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("npz", str(tmp_path / "nope.npz"))


def test_npz_without_path():
    with pytest.raises(DatasetError, match="Dataset_dir"):
        load_dataset("npz", None)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset("npz", str(path))


@pytest.mark.parametrize("key", ["x_calib", "x_test", "y_test"])
def test_npz_missing_key(tmp_path, key):
    arrays = _good_arrays()
    del arrays[key]
    with pytest.raises(DatasetError, match=f"missing key '{key}'"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))


def test_npz_length_mismatch(tmp_path):
    arrays = _good_arrays()
    arrays["y_test"] = arrays["y_test"][:-1]
    with pytest.raises(DatasetError, match="x_test has 8 samples but y_test has 7"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))


def test_npz_sample_shape_mismatch(tmp_path):
    arrays = _good_arrays()
    arrays["x_calib"] = arrays["x_calib"][:, :1]
    with pytest.raises(DatasetError, match="x_calib sample shape"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))


@pytest.mark.parametrize("key", ["x_calib", "x_test", "y_test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npz_nan_or_inf(tmp_path, key, bad):
    arrays = _good_arrays()
    arrays[key] = arrays[key].astype(np.float32)
    arrays[key].flat[2] = bad
    with pytest.raises(DatasetError, match=f"{key} contains NaN or inf"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))


@pytest.mark.parametrize("labels", [np.array([0.5, 1, 2, 3, 4, 0, 1, 2]),
                                    np.array(list("abcdefgh"))])
def test_npz_non_integer_labels(tmp_path, labels):
    arrays = _good_arrays()
    arrays["y_test"] = labels
    with pytest.raises(DatasetError, match="y_test has non-integer labels"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))


def test_npz_negative_labels(tmp_path):
    arrays = _good_arrays()
    arrays["y_test"][0] = -1
    with pytest.raises(DatasetError, match="negative"):
        load_dataset("npz", _write_npz(tmp_path / "d.npz", **arrays))
