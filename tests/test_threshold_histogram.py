"""The one-pass histograms, exact means and uint8 masks of the global threshold layers."""

import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import tensorflow as tf
from skimage import filters
from skimage.exposure import histogram as skimage_histogram

import kerasseg
from kerasseg.classical import threshold as th
from kerasseg.classical.histogram import float_histogram, integer_histogram

LAYERS = [
    th.OtsuThreshold,
    th.YenThreshold,
    th.IsodataThreshold,
    th.TriangleThreshold,
    th.MeanThreshold,
    th.LiThreshold,
    th.MinimumThreshold,
    th.MultiOtsuThreshold,
]


def _random_integer_images(dtype, rng):
    """A full-range image, a narrow one near the dtype's bottom and one near its top."""
    info = np.iinfo(dtype)
    full = rng.integers(info.min, info.max, (37, 41), endpoint=True)
    full.flat[:2] = info.min, info.max  # both extremes present
    low = rng.integers(info.min, info.min + 20, (37, 41))
    high = rng.integers(info.max - 5, info.max, (37, 41), endpoint=True)
    return [image.astype(dtype) for image in (full, low, high)]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
def test_integer_histograms_equal_scikit_image(dtype):
    rng = np.random.default_rng(3)
    images = _random_integer_images(dtype, rng)
    result = integer_histogram(np.stack([i.ravel() for i in images]), dtype)
    assert keras.backend.standardize_dtype(result.counts.dtype) == "int32"
    for i, image in enumerate(images):
        counts, centres = skimage_histogram(image, source_range="image")
        length = int(result.length[i])
        assert length == len(counts)
        np.testing.assert_array_equal(np.asarray(result.counts)[i, :length], counts)
        assert not np.asarray(result.counts)[i, length:].any()  # padding is empty
        np.testing.assert_array_equal(np.asarray(result.centres)[i, :length], centres)
        assert float(result.low[i]) == image.min() and float(result.high[i]) == image.max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_histograms_count_like_numpy(dtype):
    rng = np.random.default_rng(4)
    images = [
        (rng.normal(size=(40, 30)) * scale + shift).astype(dtype)
        for scale, shift in ((1.0, 0.0), (1e-3, 7.0), (250.0, -40.0))
    ]
    result = float_histogram(np.stack([i.ravel() for i in images]), 256)
    for i, image in enumerate(images):
        counts, _ = np.histogram(image, bins=256, range=(image.min(), image.max()))
        np.testing.assert_array_equal(np.asarray(result.counts)[i], counts)
        assert float(result.low[i]) == image.min() and float(result.high[i]) == image.max()


def _mean_cases(data_dir):
    rng = np.random.default_rng(5)
    folder = data_dir / "isbi2012-membrane"
    isbi = np.stack([skimage.io.imread(p) for p in sorted(folder.glob("train/image/*.png"))[:6]])
    cases = [isbi]
    for dtype in ("int8", "uint16", "int16"):
        cases.append(np.stack(_random_integer_images(dtype, rng)))
    return cases


def test_integer_mean_threshold_is_bit_identical_to_numpy(data_dir):
    # scikit-image's threshold_mean is numpy.mean: the exact sum rounded once. Eager, XLA, a
    # graph of unknown width (the float64 sum) and a loaded model (models take uint8 and
    # uint16 only) must give those very bits.
    layer = th.MeanThreshold(return_threshold=True)
    for images in _mean_cases(data_dir):
        expected = np.array([filters.threshold_mean(image) for image in images])
        batch = images[..., None]
        unknown = tf.TensorSpec([None, None, None, 1], dtype=batch.dtype)
        graph = tf.function(layer, input_signature=[unknown])
        results = [
            layer(batch),
            tf.function(layer, jit_compile=True)(tf.constant(batch)),
            graph(tf.constant(batch)),
        ]
        if images.dtype in (np.uint8, np.uint16):
            model = kerasseg.load("mean_threshold", input_dtype=str(images.dtype))
            outputs = model.predict(batch, verbose=0)
            results.append((outputs["mask"], outputs["threshold"]))
        for mask, threshold in results:
            np.testing.assert_array_equal(np.asarray(threshold), expected)
            np.testing.assert_array_equal(
                np.asarray(mask)[..., 0], images > expected[:, None, None]
            )


def test_mean_of_rows_that_would_overflow_int32_stays_exact():
    # 70,000 pixels of 65,535 in one row: an int32 row sum would wrap around.
    image = np.full((1, 2, 70000, 1), 65535, np.uint16)
    image[0, 1, :3, 0] = (0, 1, 2)
    mask, threshold = th.MeanThreshold(return_threshold=True)(image)
    assert float(threshold[0]) == np.mean(image)
    np.testing.assert_array_equal(np.asarray(mask), image > np.mean(image))


def test_mean_of_wide_8bit_rows_stays_exact():
    # 70,000 pixels a row: past the float32 row sums' exact range (2**24 / 255 pixels).
    image = np.random.default_rng(7).integers(0, 256, (2, 2, 70000, 1)).astype(np.uint8)
    image[1] = 255
    image[1, 0, 0] = 254
    _, threshold = tf.function(th.MeanThreshold(return_threshold=True), jit_compile=True)(image)
    np.testing.assert_array_equal(np.asarray(threshold), [np.mean(i) for i in image])


def test_constant_float64_image_keeps_its_value_as_mean_threshold():
    # The float64 mean of 81 pixels of 0.1 is 0.09999999999999999: every pixel would be "above" it.
    image = np.full((1, 9, 9, 1), 0.1, np.float64)
    assert np.mean(image) < 0.1 and float(tf.reduce_mean(image)) < 0.1
    mask, threshold = th.MeanThreshold(return_threshold=True)(image)
    assert float(threshold[0]) == 0.1 and not np.asarray(mask).any()


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_masks_and_labels_are_uint8_in_every_mode(layer_class):
    image = skimage.data.camera()[None, ::4, ::4, None]
    layer = layer_class(return_threshold=True)
    spec = layer.compute_output_spec(keras.KerasTensor((None, None, None, 1), dtype="uint8"))
    assert spec[0].dtype == "uint8" and spec[1].dtype == "float64"
    calls = (
        layer(image),
        tf.function(layer)(tf.constant(image)),
        tf.function(layer, jit_compile=True)(tf.constant(image)),
        layer(image[:0]),  # an empty batch
    )
    for mask, _ in calls:
        assert keras.backend.standardize_dtype(mask.dtype) == "uint8"
    top = 2 if layer_class is th.MultiOtsuThreshold else 1  # 3 classes by default
    assert set(np.unique(np.asarray(calls[0][0]))) == set(range(top + 1))
    name = {th.MultiOtsuThreshold: "multiotsu", th.MeanThreshold: "mean_threshold"}.get(
        layer_class, layer_class.__name__.removesuffix("Threshold").lower()
    )
    model = kerasseg.load(name)
    key = "labels" if layer_class is th.MultiOtsuThreshold else "mask"
    assert model.output[key].dtype == "uint8"
    assert model.predict(image, verbose=0)[key].dtype == np.uint8


def test_minimum_threshold_on_histograms_with_plateaus():
    # Bimodal histograms with flat stretches and equal neighbours: the direction rule of
    # scikit-image's local-maximum walk decides; a few images need many smoothing passes.
    rng = np.random.default_rng(6)
    images = []
    for _ in range(8):
        counts = np.zeros(256, np.int64)
        a, b = sorted(rng.choice(np.arange(20, 236), 2, replace=False))
        counts[a - 10 : a + 10] = rng.integers(5, 9)  # a plateau
        counts[b - 6 : b + 6] = rng.integers(1, 30, 12)
        counts[rng.integers(0, 256, 5)] += rng.integers(1, 4, 5)  # stray values
        values = np.repeat(np.arange(256), counts)
        images.append(rng.permutation(np.resize(values, 40 * 40)).reshape(40, 40))
    batch = np.stack(images).astype(np.uint8)
    _, ours = tf.function(th.MinimumThreshold(return_threshold=True))(tf.constant(batch[..., None]))
    for image, threshold in zip(batch, np.asarray(ours), strict=True):
        try:
            expected = filters.threshold_minimum(image)
        except RuntimeError:
            expected = np.nan
        np.testing.assert_array_equal(threshold, expected)
