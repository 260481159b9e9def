import keras
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.io
import tensorflow as tf
import tifffile
from skimage import filters

import kerasseg
from kerasseg.classical import threshold as th

SINGLE = {
    th.OtsuThreshold: filters.threshold_otsu,
    th.YenThreshold: filters.threshold_yen,
    th.IsodataThreshold: filters.threshold_isodata,
    th.TriangleThreshold: filters.threshold_triangle,
    th.MeanThreshold: filters.threshold_mean,
    th.LiThreshold: filters.threshold_li,
    th.MinimumThreshold: filters.threshold_minimum,
}
SAMPLES = ("camera", "coins", "moon", "page", "text")


def _reference(fn, image):
    """scikit-image's threshold, or None where it raises."""
    try:
        return fn(image)
    except (ValueError, RuntimeError):
        return None


def _ours(layer, image):
    """Our threshold(s) of one image, or None where the layer has none (NaN when traced)."""
    result = np.asarray(tf.function(layer)(tf.constant(image[None, ..., None]))[1])[0]
    return None if np.isnan(result).any() else result


@pytest.fixture(scope="module")
def membranes(data_dir):
    folder = data_dir / "isbi2012-membrane"
    paths = sorted(folder.glob("train/image/*.png")) + sorted(folder.glob("test/*.png"))
    assert len(paths) == 55
    return np.stack([skimage.io.imread(p) for p in paths])


@pytest.mark.parametrize("layer_class", list(SINGLE), ids=lambda c: c.__name__)
def test_uint8_thresholds_equal_scikit_image_on_isbi(layer_class, membranes):
    fn = SINGLE[layer_class]
    # Traced, so that images scikit-image has no threshold for give NaN instead of raising.
    layer = tf.function(layer_class(return_threshold=True))
    mask, threshold = layer(tf.constant(membranes[..., None]))
    expected = [_reference(fn, image) for image in membranes]
    expected = np.array([np.nan if e is None else e for e in expected], dtype=np.float64)
    if layer_class is th.LiThreshold:  # an iteration in floats (the mean is bit-identical)
        np.testing.assert_allclose(threshold, expected, rtol=1e-12)
    else:
        np.testing.assert_array_equal(threshold, expected)
    np.testing.assert_array_equal(mask[..., 0], membranes > expected[:, None, None])
    assert np.isfinite(expected).sum() >= 40  # most slices have a threshold


@pytest.mark.parametrize("layer_class", list(SINGLE), ids=lambda c: c.__name__)
def test_uint8_thresholds_equal_scikit_image_on_its_samples(layer_class):
    layer = layer_class(return_threshold=True)
    for name in SAMPLES:
        image = getattr(skimage.data, name)()
        expected = _reference(SINGLE[layer_class], image)
        ours = _ours(layer, image)
        assert (ours is None) == (expected is None), name  # both fail or both succeed
        if expected is not None:
            np.testing.assert_allclose(ours, expected, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_multiotsu_equals_scikit_image(classes, membranes):
    images = np.concatenate([membranes[::5], np.stack([skimage.data.camera()] * 1)[:, :512]])
    labels, thresholds = th.MultiOtsuThreshold(classes=classes, return_threshold=True)(
        images[..., None]
    )
    for image, ours, label_map in zip(
        images, np.asarray(thresholds), np.asarray(labels), strict=True
    ):
        expected = filters.threshold_multiotsu(image, classes=classes)
        np.testing.assert_array_equal(ours, expected)
        np.testing.assert_array_equal(label_map[..., 0], np.digitize(image, bins=expected))
    for name in SAMPLES:
        image = getattr(skimage.data, name)()
        assert _ours(
            th.MultiOtsuThreshold(classes=classes, return_threshold=True), image
        ).tolist() == (filters.threshold_multiotsu(image, classes=classes).tolist())


def test_multiotsu_five_classes(membranes):
    image = membranes[0]
    ours = _ours(th.MultiOtsuThreshold(classes=5, return_threshold=True), image)
    np.testing.assert_array_equal(ours, filters.threshold_multiotsu(image, classes=5))


def test_uint16_equals_scikit_image_on_dsb2018(data_dir):
    image = tifffile.imread(data_dir / "dsb2018-sample" / "image.tif")
    assert image.dtype == np.uint16
    for layer_class, fn in SINGLE.items():
        if layer_class is th.MinimumThreshold:
            continue  # 65,536 bins smoothed thousands of times: correct but slow
        ours = _ours(layer_class(return_threshold=True), image)
        np.testing.assert_allclose(ours, fn(image), rtol=1e-12, err_msg=layer_class.__name__)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_images_within_one_bin(dtype, membranes):
    images = (membranes[:2] / 255.0).astype(dtype)
    for layer_class, fn in SINGLE.items():
        layer = layer_class(return_threshold=True)
        for image in images:
            expected = _reference(fn, image)
            ours = _ours(layer, image)
            assert (ours is None) == (expected is None)
            width = (image.max() - image.min()) / 256
            assert abs(ours - expected) <= width, layer_class.__name__
    layer = th.MultiOtsuThreshold(return_threshold=True)
    for image in images:
        width = (image.max() - image.min()) / 256
        expected = filters.threshold_multiotsu(image)
        assert np.abs(_ours(layer, image) - expected).max() <= width


def test_colour_images_use_rgb2gray():
    image = skimage.data.astronaut()
    grey = skimage.color.rgb2gray(image)
    for layer_class in (th.OtsuThreshold, th.YenThreshold, th.LiThreshold):
        _, threshold = layer_class(return_threshold=True)(image[None])
        width = (grey.max() - grey.min()) / 256
        assert abs(np.asarray(threshold)[0] - SINGLE[layer_class](grey)) <= width


@pytest.mark.parametrize("layer_class", list(SINGLE), ids=lambda c: c.__name__)
def test_constant_one_pixel_and_empty_batches(layer_class):
    layer = layer_class(return_threshold=True)
    mask, threshold = layer(np.full((2, 5, 5, 1), 7, np.uint8))
    assert np.asarray(threshold).tolist() == [7, 7] and np.asarray(mask).sum() == 0
    mask, threshold = layer(np.full((1, 1, 1, 1), 0.25, np.float32))
    assert np.asarray(threshold).tolist() == [0.25] and np.asarray(mask).sum() == 0
    mask, threshold = layer(np.zeros((0, 6, 6, 1), np.uint8))
    assert mask.shape == (0, 6, 6, 1) and threshold.shape == (0,)


def test_multiotsu_needs_as_many_values_as_classes():
    layer = th.MultiOtsuThreshold(classes=3, return_threshold=True)
    with pytest.raises(ValueError, match="fewer than 3 distinct values"):
        layer(np.full((1, 4, 4, 1), 7, np.uint8))
    # Traced, the image gets NaN thresholds and label 0 instead.
    labels, thresholds = tf.function(layer)(tf.constant(np.full((1, 4, 4, 1), 7, np.uint8)))
    assert np.isnan(thresholds).all() and np.asarray(labels).sum() == 0
    # Exactly `classes` values: thresholds are all but the last value, like scikit-image.
    image = np.array([[10, 20, 30, 30]], np.uint8)
    assert _ours(layer, image).tolist() == filters.threshold_multiotsu(image).tolist()


def test_bad_input():
    layer = th.OtsuThreshold()
    with pytest.raises(ValueError, match=r"`images` must have 1 or 3 channel"):
        layer(np.zeros((1, 4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="`images` must have rank 4"):
        layer(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(np.full((1, 4, 4, 1), np.nan, np.float32))
    with pytest.raises(TypeError, match="dtype must be one of"):
        layer(np.zeros((1, 4, 4, 1), np.int32))
    with pytest.raises(ValueError, match="must not be empty"):
        layer(np.zeros((1, 0, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="`nbins`"):
        th.OtsuThreshold(nbins=1)
    with pytest.raises(ValueError, match="`classes` must be an integer from 2 to 5"):
        th.MultiOtsuThreshold(classes=6)
    with pytest.raises(TypeError, match="16-bit"):
        th.MultiOtsuThreshold()(np.zeros((1, 4, 4, 1), np.uint16))


@pytest.mark.parametrize("name", sorted(th.BUILDERS))
def test_graph_modes_and_saved_models_agree_with_eager(name, tmp_path):
    image = skimage.data.camera()[None, ..., None]
    model = kerasseg.load(name)
    key = "labels" if name == "multiotsu" else "mask"
    eager = model(image)
    layer = model.get_layer(name)
    jit = tf.function(layer, jit_compile=True)(tf.constant(image))
    data = next(iter(tf.data.Dataset.from_tensor_slices(image).batch(1).map(layer)))
    for mask, threshold in (jit, data):
        np.testing.assert_array_equal(threshold, eager["threshold"])
        np.testing.assert_array_equal(mask, eager[key])
    model.save(tmp_path / f"{name}.keras")
    restored = keras.saving.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_array_equal(restored.predict(image, verbose=0)[key], eager[key])


def test_loaded_models_check_their_input():
    model = kerasseg.load("otsu")
    image = skimage.data.camera()[None, ..., None]
    with pytest.raises(TypeError, match="`images` must be uint8 for this model"):
        model.predict(image.astype("float32"), verbose=0)  # never silently cast to uint8
    with pytest.raises(ValueError, match="`input_dtype`"):
        kerasseg.load("otsu", input_dtype="int32")
    with pytest.raises(TypeError, match=r"\['bins'\]"):
        kerasseg.load("li", bins=3)
    assert kerasseg.load("multiotsu", classes=4).output["threshold"].shape == (None, 3)
