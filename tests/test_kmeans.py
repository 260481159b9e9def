import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import kerasseg  # noqa: F401  (registers the layers for load_model)
from kerasseg.classical.kmeans import KMeansSegmentation, kmeans

# CamVid train frame 0001TP_006690.png, downscaled to 90 x 120 with cv2.INTER_AREA:
# scikit-learn KMeans(4, n_init=10, random_state=0) on its 0..255 RGB values
# (shared/reference/classical.md, section 2.2).
SKLEARN_INERTIA_255 = 5113418.5741481045
SKLEARN_CENTRES_255 = [
    [14.1289, 16.2267, 18.1612],
    [40.8939, 50.2029, 52.5608],
    [111.0796, 129.7301, 134.4767],
    [182.8258, 206.0883, 209.784],
]


def _camvid(data_dir, count, size=None):
    paths = sorted((data_dir / "camvid" / "train").glob("*.png"))[:count]
    assert len(paths) == count
    images = [skimage.io.imread(p) for p in paths]
    if size is not None:
        images = [cv2.resize(i, size[::-1], interpolation=cv2.INTER_AREA) for i in images]
    return np.stack(images)


def _membranes(data_dir, count):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "image").glob("*.png"))[:count]
    return np.stack([skimage.io.imread(p) for p in paths])[..., None]


def _run(images, **kwargs):
    labels, centres, inertia = KMeansSegmentation(return_inertia=True, **kwargs)(images)
    return np.asarray(labels)[..., 0], np.asarray(centres), np.asarray(inertia)


def _sklearn_inertia(features, k, n_init):
    return KMeans(k, n_init=n_init, random_state=0).fit(features).inertia_


def test_reference_frame_matches_scikit_learn(data_dir):
    image = _camvid(data_dir, 1, (90, 120))
    assert image.sum() == 1485783  # the reference pixels
    labels, centres, inertia = _run(image, k=4, n_init=10)
    assert inertia[0] * 255**2 <= 1.001 * SKLEARN_INERTIA_255
    np.testing.assert_allclose(centres[0] * 255, SKLEARN_CENTRES_255, atol=1.0)
    reference = KMeans(4, n_init=10, random_state=0).fit(image.reshape(-1, 3) / 255.0)
    assert adjusted_rand_score(reference.labels_, labels.ravel()) >= 0.98


def test_inertia_within_one_percent_of_scikit_learn_on_camvid(data_dir):
    images = _camvid(data_dir, 3)  # full 360 x 480 frames
    _, _, inertia = _run(images, k=4, n_init=1)
    expected = [_sklearn_inertia(i.reshape(-1, 3) / 255.0, 4, 1) for i in images]
    assert np.mean(inertia) <= 1.01 * np.mean(expected)
    assert np.all(inertia <= 1.02 * np.array(expected))


def test_inertia_within_one_percent_of_scikit_learn_on_isbi(data_dir):
    images = _membranes(data_dir, 3)  # 512 x 512 grey
    _, centres, inertia = _run(images, k=3, n_init=2)
    expected = [_sklearn_inertia(i.reshape(-1, 1) / 255.0, 3, 2) for i in images]
    assert np.mean(inertia) <= 1.01 * np.mean(expected)
    assert centres.shape == (3, 3, 1)


def test_labels_are_nearest_centres_ordered_by_intensity(data_dir):
    images = _camvid(data_dir, 2, (90, 120))
    labels, centres, inertia = _run(images, k=5, n_init=2)
    features = images.reshape(2, -1, 3) / 255.0
    for x, lab, c, i in zip(features, labels, centres, inertia, strict=True):
        assert np.all(np.diff(c.sum(axis=1)) >= 0)  # label 0 = darkest centre
        distance = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        assert np.mean(distance.argmin(1) == lab.ravel()) > 0.999
        assert i == pytest.approx(distance.min(1).sum(), rel=1e-4)
        # Each centre is the mean of its pixels (Lloyd converged).
        for k in np.unique(lab):
            np.testing.assert_allclose(x[lab.ravel() == k].mean(0), c[k], atol=2e-3)


def test_more_restarts_are_never_worse_and_seed_is_deterministic(data_dir):
    images = _membranes(data_dir, 2)[:, ::4, ::4]
    _, _, one = _run(images, k=4, n_init=1, seed=3)
    labels, _, five = _run(images, k=4, n_init=5, seed=3)
    again, _, five_again = _run(images, k=4, n_init=5, seed=3)
    assert np.all(five <= one * (1 + 1e-6))
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(five, five_again)


def test_result_does_not_depend_on_the_rest_of_the_batch(data_dir):
    images = _camvid(data_dir, 3, (45, 60))
    batch, centres, _ = _run(images, k=4, n_init=2)
    alone, centre, _ = _run(images[2:], k=4, n_init=2)
    np.testing.assert_array_equal(batch[2], alone[0])
    np.testing.assert_allclose(centres[2], centre[0], atol=1e-6)


def test_spatial_features_match_scikit_learn():
    image = cv2.resize(skimage.data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    weight = 0.5
    rows, cols = np.mgrid[:64, :64] * weight / 64
    features = np.concatenate([image / 255.0, rows[..., None], cols[..., None]], -1)
    labels, centres, inertia = _run(image[None], k=6, n_init=4, spatial_weight=weight)
    assert centres.shape == (1, 6, 3)  # colours only
    assert inertia[0] <= 1.01 * _sklearn_inertia(features.reshape(-1, 5), 6, 4)
    # Position matters: a constant image is split into spatial blocks.
    flat, _, flat_inertia = _run(np.full((1, 32, 32, 1), 9, np.uint8), k=4, spatial_weight=1.0)
    assert len(np.unique(flat)) == 4 and flat_inertia[0] > 0
    assert len(np.unique(labels)) == 6


def test_more_clusters_than_values():
    image = np.zeros((1, 6, 8, 3), np.uint8)
    image[:, :, 4:] = (200, 10, 30)
    labels, centres, inertia = _run(image, k=5)
    assert inertia[0] == 0
    colours = {tuple(c) for c in np.round(centres[0] * 255).astype(int)}
    assert colours == {(0, 0, 0), (200, 10, 30)}  # duplicate centres
    dark = int((centres[0].sum(1) == 0).sum())
    # Each pixel takes the lowest label of its group of equal centres.
    np.testing.assert_array_equal(labels[0], np.where(np.arange(8) < 4, 0, dark)[None].repeat(6, 0))
    np.testing.assert_allclose(centres[0][labels[0]] * 255, image[0], atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 20, 30, 3), (2, 1, 1, 3), (1, 1, 1, 1)])
def test_constant_and_one_pixel_images(shape):
    labels, centres, inertia = _run(np.full(shape, 77, np.uint8), k=3)
    assert labels.shape == shape[:3] and not labels.any()
    np.testing.assert_allclose(centres, 77 / 255, rtol=1e-6)
    np.testing.assert_allclose(inertia, 0, atol=1e-9)


def test_empty_batch():
    labels, centres, inertia = KMeansSegmentation(k=3, return_inertia=True)(
        np.zeros((0, 5, 7, 3), np.uint8)
    )
    assert labels.shape == (0, 5, 7, 1) and centres.shape == (0, 3, 3) and inertia.shape == (0,)
    labels, centres = tf.function(KMeansSegmentation(k=2), jit_compile=True)(
        tf.zeros((0, 4, 4, 1), tf.float32)
    )
    assert labels.shape == (0, 4, 4, 1) and centres.shape == (0, 2, 1)


def test_nan():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    images[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        KMeansSegmentation()(images)
    layer = KMeansSegmentation(k=3, return_inertia=True)
    labels, centres, inertia = (np.asarray(o) for o in tf.function(layer)(images))
    # Traced: that image gets labels 0 and NaN centres and inertia, the other is unaffected.
    assert not labels[1].any() and np.isnan(centres[1]).all() and np.isnan(inertia[1])
    good = _run(images[:1], k=3)
    np.testing.assert_array_equal(labels[0, ..., 0], good[0][0])
    np.testing.assert_allclose(inertia[0], good[2][0], rtol=1e-5)


def test_bad_arguments_and_inputs():
    for kwargs, name in [
        ({"k": 0}, "`k`"),
        ({"k": 2.0}, "`k`"),
        ({"k": True}, "`k`"),
        ({"n_init": 0}, "`n_init`"),
        ({"max_iter": 0}, "`max_iter`"),
        ({"tol": -1.0}, "`tol`"),
        ({"spatial_weight": float("nan")}, "`spatial_weight`"),
        ({"seed": -1}, "`seed`"),
        ({"seed": None}, "`seed`"),
        ({"init": "random"}, "`init`"),
    ]:
        with pytest.raises(ValueError, match=name):
            KMeansSegmentation(**kwargs)
    with pytest.raises(ValueError, match="rank 4"):
        KMeansSegmentation()(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="channel"):
        KMeansSegmentation()(np.zeros((1, 4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        KMeansSegmentation()(np.zeros((1, 4, 4, 3), bool))
    with pytest.raises(ValueError, match="`channels`"):
        kmeans(channels=2)


def test_float_images_are_used_as_they_are(data_dir):
    images = _camvid(data_dir, 1, (45, 60))
    labels, centres, inertia = _run(images, k=4)
    for dtype in ("float32", "float64"):
        fl, fc, fi = _run((images / 255.0).astype(dtype), k=4)
        assert fc.dtype == dtype and fi.dtype == dtype  # float64 is not cast down
        assert np.mean(fl == labels) > 0.999
        np.testing.assert_allclose(fi, inertia, rtol=1e-4)


def test_unknown_sizes_in_a_graph(data_dir):
    images = _camvid(data_dir, 2, (45, 60))
    layer = KMeansSegmentation(k=3, spatial_weight=0.3)
    spec = tf.TensorSpec((None, None, None, 3), tf.uint8)
    labels, centres = tf.function(layer, input_signature=[spec])(images)
    np.testing.assert_array_equal(labels, layer(images)[0])
    assert centres.shape == (2, 3, 3)


def test_graph_jit_and_tf_data_agree_with_eager(data_dir):
    images = _camvid(data_dir, 2, (45, 60))
    layer = KMeansSegmentation(k=4, n_init=2, return_inertia=True)
    assert layer.supports_jit
    eager = [np.asarray(o) for o in layer(images)]
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2).map(layer)
    runs = {
        "graph": tf.function(layer)(images),
        "jit": tf.function(layer, jit_compile=True)(images),
        "tf.data": next(iter(dataset)),
    }
    for name, (labels, centres, inertia) in runs.items():
        assert np.mean(np.asarray(labels) == eager[0]) > 0.999, name
        np.testing.assert_allclose(centres, eager[1], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(inertia, eager[2], rtol=1e-4, err_msg=name)


def test_builder_saves_and_reloads(tmp_path, data_dir):
    model = kmeans(k=3, n_init=2, seed=7)
    images = _camvid(data_dir, 2, (45, 60))
    out = model.predict(images, verbose=0)
    assert set(out) == {"labels", "centres", "inertia"}
    assert out["labels"].shape == (2, 45, 60, 1) and out["labels"].dtype == np.int32
    model.save(tmp_path / "kmeans.keras")
    restored = keras.saving.load_model(tmp_path / "kmeans.keras")
    again = restored.predict(images, verbose=0)
    np.testing.assert_array_equal(again["labels"], out["labels"])
    np.testing.assert_allclose(again["centres"], out["centres"], rtol=1e-6)
    layer = restored.get_layer("kmeans")
    assert (layer.k, layer.n_init, layer.seed) == (3, 2, 7)
    grey = kmeans(k=2, channels=1)
    assert grey(_membranes(data_dir, 1)[:, :64, :64])["centres"].shape == (1, 2, 1)


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    # `import kerasseg` alone must register the layer (no custom_objects).
    kmeans(k=2).save(tmp_path / "kmeans.keras")
    code = (
        "import sys, numpy as np, keras, kerasseg\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "image = np.zeros((1, 4, 4, 3), np.uint8); image[:, :, 2:] = 200\n"
        "print(model.predict(image, verbose=0)['labels'][0, 0, :, 0].tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "kmeans.keras")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[0, 0, 1, 1]"
