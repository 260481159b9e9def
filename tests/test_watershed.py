import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf
from PIL import Image
from skimage.measure import label
from skimage.metrics import adapted_rand_error
from skimage.segmentation import watershed

from kerasseg.classical.watershed import SeededWatershed
from kerasseg.ops.flooding import MAX_LEVELS, flood_from_seeds


def _graph(layer):
    return tf.function(lambda x: layer(x))


@pytest.fixture(scope="module")
def interior(data_dir):
    """The true cell interior of ISBI 2012 slice 20 (a U-Net's output is blurred from it)."""
    path = data_dir / "isbi2012-membrane" / "train" / "label" / "20.png"
    return np.asarray(Image.open(path)) == 255


def test_two_seeds_split_at_the_ridge():
    p = np.full((9, 12), 0.6, np.float32)
    p[:, 6] = 0.1  # low-probability ridge between two plateaus
    p[4, 2] = p[4, 9] = 0.95  # one seed on each side
    labels = np.asarray(SeededWatershed()(p[None, ..., None]))
    assert labels.shape == (1, 9, 12) and labels.dtype == np.int32
    assert np.all(labels[0, :, :6] == 1) and np.all(labels[0, :, 7:] == 2)
    assert set(np.unique(labels[0, :, 6])) <= {1, 2}  # the ridge is labelled too


@pytest.mark.parametrize("corner", [(0, 0), (100, 300)])
def test_matches_scikit_image_watershed(interior, corner):
    """A U-Net-like interior probability (the true interior blurred) on two 160 x 160 crops."""
    y, x = corner
    crop = interior[y : y + 160, x : x + 160].astype(np.float64)
    probability = ndi.gaussian_filter(crop, 1.5).astype(np.float32)
    markers = label(probability > 0.9, connectivity=1)
    expected = watershed(1 - probability, markers=markers, connectivity=1)
    layer = SeededWatershed(seed_threshold=0.9)
    got = _graph(layer)(probability[None, ..., None]).numpy()[0]
    assert markers.max() >= 10  # many cells compete
    assert np.all(got > 0)
    np.testing.assert_array_equal(got[markers > 0], markers[markers > 0])
    assert np.mean(got == expected) >= 0.99  # only the quantised ties differ
    error, _, _ = adapted_rand_error(expected, got)
    assert 1 - error >= 0.98


def test_no_seeds_gives_zeros():
    p = np.stack([np.full((6, 7), 0.5), np.eye(6, 7) * 0.95]).astype(np.float32)[..., None]
    labels = np.asarray(SeededWatershed()(p))
    assert labels[0].sum() == 0
    # diagonal seed pixels are not 4-connected: six seeds, each pixel labelled
    assert labels[1].min() == 1 and labels[1].max() == 6
    assert [labels[1, i, i] for i in range(6)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"seed_threshold": 0.0}, "seed_threshold"),
        ({"seed_threshold": 1.5}, "seed_threshold"),
        ({"seed_threshold": True}, "seed_threshold"),
        ({"levels": 0}, "levels"),
        ({"levels": 2.5}, "levels"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        SeededWatershed(**kwargs)


def test_bad_inputs_raise():
    layer = SeededWatershed()
    with pytest.raises(ValueError, match="NaN"):
        layer(np.full((1, 4, 4, 1), np.nan, np.float32))
    with pytest.raises(ValueError, match="channel"):
        layer(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        layer(np.zeros((1, 4, 4, 1), np.uint8))


def test_graph_mode_and_config_round_trip():
    rng = np.random.default_rng(0)
    p = ndi.gaussian_filter(rng.random((2, 24, 20)), (0, 2, 2))
    low, high = p.min(axis=(1, 2), keepdims=True), p.max(axis=(1, 2), keepdims=True)
    p = ((p - low) / (high - low)).astype(np.float32)[..., None]  # each image has seeds
    layer = SeededWatershed(seed_threshold=0.85, levels=16)
    eager = np.asarray(layer(p))
    np.testing.assert_array_equal(_graph(layer)(p).numpy(), eager)
    xla = tf.function(lambda x: layer(x), jit_compile=True)(p).numpy()
    np.testing.assert_array_equal(xla, eager)
    assert eager.min() >= 1
    clone = SeededWatershed.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.seed_threshold, clone.levels) == (0.85, 16)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, SeededWatershed) and restored.levels == 16
    inputs = keras.Input((None, None, 1))
    assert tuple(SeededWatershed()(inputs).shape) == (None, None, None)


def test_plateaus_flood_breadth_first_like_scikit_image():
    """On a flat landscape each pixel goes to the seed nearer along 4-connected paths, as
    scikit-image's first-in first-out queue gives (no ties: the seeds are 19 columns apart)."""
    p = np.full((15, 20), 0.5, np.float32)
    p[7, 0] = p[7, 19] = 0.95
    got = np.asarray(SeededWatershed()(p[None, ..., None]))[0]
    markers = label(p > 0.9, connectivity=1)
    np.testing.assert_array_equal(got, watershed(1 - p, markers=markers, connectivity=1))


def test_rounds_grow_with_the_log_of_the_size():
    """Borůvka rounds on a smooth random landscape with 12 seeds per image: at most
    log2(pixels) + 1, and the labels agree with scikit-image's priority flood."""
    rng = np.random.default_rng(0)
    landscape = np.stack([ndi.gaussian_filter(rng.random((96, 80)), 1) for _ in range(3)])
    landscape = (landscape - landscape.min()) / np.ptp(landscape)
    level = np.round(landscape * MAX_LEVELS).astype(np.int32)
    seeds = np.zeros(level.shape, np.int32)
    for image in seeds:
        rows, cols = rng.integers(0, 96, 12), rng.integers(0, 80, 12)
        image[rows, cols] = np.arange(1, 13)
    got, rounds = tf.function(flood_from_seeds, jit_compile=True)(level, seeds)
    pairs = zip(level, seeds, strict=True)
    expected = np.stack([watershed(x, markers=m, connectivity=1) for x, m in pairs])
    assert np.mean(got.numpy() == expected) >= 0.995
    assert int(rounds) <= np.log2(96 * 80) + 1


def test_tiny_and_empty_batches():
    """A 1 x 1 image that is one seed (label 1 = its pixel count), and an empty batch."""
    assert np.asarray(SeededWatershed()(np.full((1, 1, 1, 1), 0.95, np.float32))).tolist() == [
        [[1]]
    ]
    assert np.asarray(SeededWatershed()(np.zeros((0, 5, 7, 1), np.float32))).shape == (0, 5, 7)
