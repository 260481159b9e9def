import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import tensorflow as tf
from sklearn.cluster import MeanShift, get_bin_seeds
from sklearn.metrics import adjusted_rand_score

import kerasseg  # noqa: F401  (registers the layers for load_model)
from kerasseg.classical.meanshift import MeanShiftSegmentation, mean_shift


def _resize(image, size):
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def _camvid(data_dir, count, size=(45, 60)):
    paths = sorted((data_dir / "camvid" / "train").glob("*.png"))[:count]
    assert len(paths) == count
    return np.stack([_resize(skimage.io.imread(p), size) for p in paths])


def _membranes(data_dir, count, size=(64, 64)):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "image").glob("*.png"))[:count]
    return np.stack([_resize(skimage.io.imread(p), size) for p in paths])[..., None]


def _run(images, **kwargs):
    labels, modes, count = MeanShiftSegmentation(**kwargs)(images)
    return np.asarray(labels)[..., 0], np.asarray(modes), np.asarray(count)


def _assert_matches_sklearn(features, labels, modes, count, bandwidth, **kwargs):
    reference = MeanShift(bandwidth=bandwidth, bin_seeding=True, **kwargs).fit(features)
    centres = reference.cluster_centers_
    assert count == len(centres)
    assert adjusted_rand_score(reference.labels_, labels.ravel()) >= 0.9
    # Same modes in the same order (by decreasing support), so the same label numbers.
    channels = modes.shape[-1]
    np.testing.assert_allclose(modes[:count], centres[:, :channels], atol=1e-5)
    assert np.isnan(modes[count:]).all()
    assert np.mean(reference.labels_ == labels.ravel()) >= 0.95


def test_matches_scikit_learn_on_camvid(data_dir):
    images = _camvid(data_dir, 4)
    bandwidth = 0.15
    labels, modes, count = _run(images, bandwidth=bandwidth)
    assert count.min() >= 2
    for image, lab, mode, n in zip(images, labels, modes, count, strict=True):
        _assert_matches_sklearn(image.reshape(-1, 3) / 255.0, lab, mode, n, bandwidth)


@pytest.mark.parametrize("bandwidth", [0.05, 0.1])
def test_matches_scikit_learn_on_isbi(data_dir, bandwidth):
    # Grey uint8 values make many pixels lie exactly one bandwidth from a seed: this is
    # where float32 arithmetic used to disagree with scikit-learn.
    images = _membranes(data_dir, 3)
    labels, modes, count = _run(images, bandwidth=bandwidth)
    for image, lab, mode, n in zip(images, labels, modes, count, strict=True):
        _assert_matches_sklearn(image.reshape(-1, 1) / 255.0, lab, mode, n, bandwidth)


def test_spatial_features_match_scikit_learn():
    image = _resize(skimage.data.astronaut(), (48, 48))
    weight, bandwidth = 0.5, 0.15
    rows, cols = np.mgrid[:48, :48] * weight / 48
    features = np.concatenate([image / 255.0, rows[..., None], cols[..., None]], -1)
    labels, modes, count = _run(
        image[None], bandwidth=bandwidth, spatial_weight=weight, max_seeds=512
    )
    assert count[0] > 20  # position splits the colour modes
    _assert_matches_sklearn(features.reshape(-1, 5), labels[0], modes[0], count[0], bandwidth)


def test_min_bin_freq_and_max_seeds(data_dir):
    image = _camvid(data_dir, 1)
    features = image.reshape(-1, 3) / 255.0
    labels, modes, count = _run(image, bandwidth=0.1, min_bin_freq=20)
    _assert_matches_sklearn(features, labels[0], modes[0], count[0], 0.1, min_bin_freq=20)
    # Fewer seeds than occupied cells: the most populated cells are kept.
    assert len(get_bin_seeds(features, 0.1, 1)) > 3
    labels, modes, count = _run(image, bandwidth=0.1, max_seeds=3)
    assert modes.shape == (1, 3, 3) and 1 <= count[0] <= 3
    assert labels.max() < count[0]


def _gaussian_mean_shift(x, bandwidth, max_iter=300, tol=1e-3):
    """NumPy Gaussian-kernel mean shift from scikit-learn's bin seeds, merged like sklearn."""
    means = get_bin_seeds(x, bandwidth, 1).astype(np.float64)
    density = np.zeros(len(means))
    done = np.zeros(len(means), bool)
    for _ in range(max_iter + 1):
        weights = np.exp(-((means[:, None] - x[None]) ** 2).sum(-1) / (2 * bandwidth**2))
        new = weights @ x / weights.sum(1, keepdims=True)
        moved = np.linalg.norm(new - means, axis=1)
        density = np.where(done, density, weights.sum(1))
        means = np.where(done[:, None], means, new)
        done |= moved <= tol * bandwidth
        if done.all():
            break
    order = sorted(range(len(means)), key=lambda i: (density[i], tuple(means[i])), reverse=True)
    kept = []
    for i in order:
        if all(np.linalg.norm(means[i] - means[j]) > bandwidth for j in kept):
            kept.append(i)
    modes = means[kept]
    return ((x[:, None] - modes[None]) ** 2).sum(-1).argmin(1), modes


def test_gaussian_kernel_matches_a_numpy_reference(data_dir):
    image = _camvid(data_dir, 1, (30, 40))
    features = image.reshape(-1, 3) / 255.0
    labels, modes, count = _run(image, bandwidth=0.08, kernel="gaussian")
    expected_labels, expected_modes = _gaussian_mean_shift(features, 0.08)
    assert count[0] == len(expected_modes) >= 2
    np.testing.assert_allclose(modes[0, : count[0]], expected_modes, atol=1e-6)
    assert adjusted_rand_score(expected_labels, labels.ravel()) >= 0.99


@pytest.mark.parametrize("shape", [(2, 9, 7, 3), (2, 1, 1, 3), (1, 1, 1, 1)])
def test_constant_and_one_pixel_images(shape):
    labels, modes, count = _run(np.full(shape, 77, np.uint8), bandwidth=0.1)
    assert labels.shape == shape[:3] and not labels.any()
    assert count.tolist() == [1] * shape[0]
    np.testing.assert_allclose(modes[:, 0], 77 / 255, rtol=1e-6)
    assert np.isnan(modes[:, 1:]).all()


def test_empty_batch():
    labels, modes, count = MeanShiftSegmentation(bandwidth=0.1, max_seeds=8)(
        np.zeros((0, 5, 7, 3), np.uint8)
    )
    assert labels.shape == (0, 5, 7, 1) and modes.shape == (0, 8, 3) and count.shape == (0,)
    layer = MeanShiftSegmentation(bandwidth=0.1, max_seeds=8)
    labels, modes, count = tf.function(layer, jit_compile=True)(tf.zeros((0, 4, 4, 1)))
    assert labels.shape == (0, 4, 4, 1) and modes.shape == (0, 8, 1)


def test_nan():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    images[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        MeanShiftSegmentation(bandwidth=0.3)(images)
    layer = MeanShiftSegmentation(bandwidth=0.3)
    labels, modes, count = (np.asarray(o) for o in tf.function(layer)(images))
    # Traced: that image gets labels 0, NaN modes and 0 modes; the other is unaffected.
    assert not labels[1].any() and np.isnan(modes[1]).all() and count[1] == 0
    good = _run(images[:1], bandwidth=0.3)
    np.testing.assert_array_equal(labels[0, ..., 0], good[0][0])
    assert count[0] == good[2][0] >= 1


def test_bad_arguments_and_inputs():
    for kwargs, name in [
        ({"bandwidth": 0}, "`bandwidth`"),
        ({"bandwidth": -0.1}, "`bandwidth`"),
        ({"bandwidth": None}, "`bandwidth`"),
        ({"bandwidth": float("inf")}, "`bandwidth`"),
        ({"bandwidth": 0.1, "kernel": "epanechnikov"}, "`kernel`"),
        ({"bandwidth": 0.1, "max_seeds": 0}, "`max_seeds`"),
        ({"bandwidth": 0.1, "min_bin_freq": 0}, "`min_bin_freq`"),
        ({"bandwidth": 0.1, "max_iter": 1.5}, "`max_iter`"),
        ({"bandwidth": 0.1, "tol": -1}, "`tol`"),
        ({"bandwidth": 0.1, "spatial_weight": -1}, "`spatial_weight`"),
    ]:
        with pytest.raises(ValueError, match=name):
            MeanShiftSegmentation(**kwargs)
    with pytest.raises(ValueError, match="rank 4"):
        MeanShiftSegmentation(0.1)(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        MeanShiftSegmentation(1e-30)(np.eye(4, dtype=np.float32)[None, ..., None].repeat(3, -1))
    with pytest.raises(ValueError, match="`input_dtype`"):
        mean_shift(input_dtype="bool")


def test_graph_jit_and_tf_data_agree_with_eager(data_dir):
    images = _camvid(data_dir, 2, (30, 40))
    layer = MeanShiftSegmentation(bandwidth=0.12, max_seeds=64)
    assert layer.supports_jit
    labels, modes, count = (np.asarray(o) for o in layer(images))
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2).map(layer)
    runs = {
        "graph": tf.function(layer)(images),
        "jit": tf.function(layer, jit_compile=True)(images),
        "tf.data": next(iter(dataset)),
    }
    for name, (lab, mod, cnt) in runs.items():
        np.testing.assert_array_equal(cnt, count, err_msg=name)
        assert np.mean(np.asarray(lab) == labels) > 0.999, name
        np.testing.assert_allclose(mod, modes, atol=1e-5, err_msg=name)


def test_unknown_sizes_in_a_graph(data_dir):
    images = _camvid(data_dir, 2, (30, 40))
    layer = MeanShiftSegmentation(bandwidth=0.2, spatial_weight=0.5, max_seeds=64)
    spec = tf.TensorSpec((None, None, None, 3), tf.uint8)
    labels, modes, count = tf.function(layer, input_signature=[spec])(images)
    eager = layer(images)
    np.testing.assert_array_equal(labels, eager[0])
    np.testing.assert_array_equal(count, eager[2])


def test_builder_saves_and_reloads(tmp_path, data_dir):
    model = mean_shift(bandwidth=0.12, max_seeds=32)
    images = _camvid(data_dir, 2, (30, 40))
    out = model.predict(images, verbose=0)
    assert set(out) == {"labels", "modes", "num_modes"}
    assert out["labels"].shape == (2, 30, 40, 1) and out["modes"].shape == (2, 32, 3)
    model.save(tmp_path / "mean_shift.keras")
    restored = keras.saving.load_model(tmp_path / "mean_shift.keras")
    again = restored.predict(images, verbose=0)
    np.testing.assert_array_equal(again["labels"], out["labels"])
    np.testing.assert_array_equal(again["num_modes"], out["num_modes"])
    layer = restored.get_layer("mean_shift")
    assert (layer.bandwidth, layer.max_seeds, layer.kernel) == (0.12, 32, "flat")


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    # `import kerasseg` alone must register the layer (no custom_objects).
    mean_shift(bandwidth=0.2).save(tmp_path / "mean_shift.keras")
    code = (
        "import sys, numpy as np, keras, kerasseg\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "image = np.zeros((1, 4, 4, 3), np.uint8); image[:, :, 3:] = 200\n"
        "print(model.predict(image, verbose=0)['labels'][0, 0, :, 0].tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "mean_shift.keras")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[0, 0, 0, 1]"
