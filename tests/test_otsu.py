import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import tifffile
from skimage.filters import threshold_otsu

import kerasseg
from kerasseg.layers import OtsuThreshold


def _thresholds(images, **kwargs):
    mask, threshold = OtsuThreshold(return_threshold=True, **kwargs)(images)
    return np.asarray(mask), np.asarray(threshold)


def _membranes(data_dir):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "image").glob("*.png"))
    assert len(paths) == 25
    return np.stack([skimage.io.imread(p) for p in paths])[..., None]


def test_uint8_equals_scikit_image_on_isbi(data_dir):
    images = _membranes(data_dir)
    mask, threshold = _thresholds(images)
    expected = np.array([threshold_otsu(i[..., 0]) for i in images])
    np.testing.assert_array_equal(threshold, expected)
    np.testing.assert_array_equal(mask[..., 0], images[..., 0] > expected[:, None, None])
    assert threshold[0] == 133  # the reference value for slice 0


def test_uint8_equals_scikit_image_on_its_sample_images():
    for image in (skimage.data.camera(), skimage.data.coins()):
        _, threshold = _thresholds(image[None, ..., None])
        assert threshold[0] == threshold_otsu(image)


def test_uint16_equals_scikit_image_on_dsb2018(data_dir):
    image = tifffile.imread(data_dir / "dsb2018-sample" / "image.tif")
    assert image.dtype == np.uint16
    mask, threshold = _thresholds(image[None, ..., None])
    assert threshold[0] == threshold_otsu(image)
    np.testing.assert_array_equal(mask[0, ..., 0], image > threshold_otsu(image))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_images_within_one_bin(data_dir, dtype):
    images = (_membranes(data_dir)[:6] / 255.0).astype(dtype)
    _, threshold = _thresholds(images)
    for image, t in zip(images, threshold, strict=True):
        width = (image.max() - image.min()) / 256
        assert abs(t - threshold_otsu(image[..., 0])) <= width


def test_constant_image_has_its_value_and_empty_mask():
    mask, threshold = _thresholds(np.full((2, 5, 5, 1), 7, np.uint8))
    assert threshold.tolist() == [7, 7] and mask.sum() == 0


def test_bad_input():
    with pytest.raises(ValueError, match=r"`images` must have shape \(batch, height, width, 1\)"):
        OtsuThreshold()(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        OtsuThreshold()(np.full((1, 4, 4, 1), np.nan, np.float32))
    with pytest.raises(TypeError, match="dtype must be one of"):
        OtsuThreshold()(np.zeros((1, 4, 4, 1), np.int8))
    with pytest.raises(ValueError, match="must not be empty"):
        OtsuThreshold()(np.zeros((1, 0, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="`nbins`"):
        OtsuThreshold(nbins=1)


def test_loaded_model_saves_and_reloads(tmp_path):
    model = kerasseg.load("otsu")
    image = skimage.data.camera()[None, ..., None]
    out = model.predict(image, verbose=0)
    assert out["threshold"][0] == threshold_otsu(image[0, ..., 0])
    model.save(tmp_path / "otsu.keras")
    restored = keras.saving.load_model(tmp_path / "otsu.keras")
    np.testing.assert_array_equal(restored.predict(image, verbose=0)["mask"], out["mask"])
    with pytest.raises(TypeError, match="`images` must be uint8 for this model"):
        model.predict(image.astype("float32"), verbose=0)  # never silently cast to uint8
    with pytest.raises(ValueError, match="`input_dtype`"):
        kerasseg.load("otsu", input_dtype="int8")
