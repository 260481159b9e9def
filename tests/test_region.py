import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
import skimage.io
import tensorflow as tf
from skimage.measure import label
from skimage.morphology import flood

from kerasseg.classical.region import (
    ConnectedComponents,
    RegionGrowing,
    connected_components,
    region_growing,
)
from kerasseg.ops.labelling import component_roots, label_components


@pytest.fixture(scope="module")
def membrane(data_dir):
    return skimage.io.imread(data_dir / "isbi2012-membrane" / "train" / "image" / "00.png")


@pytest.fixture(scope="module")
def isbi_labels(data_dir):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "label").glob("*.png"))
    assert len(paths) == 25
    return np.stack([skimage.io.imread(p) for p in paths])


def _xla(layer):
    return tf.function(lambda *args: layer(*args), jit_compile=True)


def _expected_labels(image, seeds, **kwargs):
    """Seed i -> i + 1 by scikit-image's flood, the smallest seed index winning overlaps."""
    labels = np.zeros(image.shape, np.int32)
    for i, seed in reversed(list(enumerate(seeds))):
        if tuple(seed) != (-1, -1):
            labels[flood(image, tuple(seed), **kwargs)] = i + 1
    return labels


# ----------------------------------------------------------------------------- region growing


@pytest.mark.parametrize("connectivity, areas", [(2, (21452, 62332)), (1, (7831, 62236))])
def test_flood_equals_scikit_image_reference(membrane, connectivity, areas):
    # classical.md 2.3/3.3: seed (256, 256), tolerance 20, on membrane slice 0 and camera
    camera = skimage.data.camera()
    layer = RegionGrowing(tolerance=20, connectivity=connectivity, return_converged=True)
    seeds = np.array([[[256, 256]], [[256, 256]]], np.int32)
    labels, converged = _xla(layer)(np.stack([membrane, camera])[..., None], seeds)
    labels = labels.numpy()[..., 0]
    assert converged.numpy().all()
    for got, image, area in zip(labels, (membrane, camera), areas, strict=True):
        expected = flood(image, (256, 256), tolerance=20, connectivity=connectivity)
        np.testing.assert_array_equal(got == 1, expected)
        assert expected.sum() == area and got.max() == 1


def test_several_seeds_overlap_and_padding_on_coins():
    coins = skimage.data.coins()
    seeds = np.array([[[150, 200], [10, 10], [-1, -1], [160, 205], [290, 370], [100, 40]]])
    layer = RegionGrowing(tolerance=12)
    got = _xla(layer)(coins[None, ..., None], seeds.astype(np.int32)).numpy()[0, ..., 0]
    expected = _expected_labels(coins, seeds[0], tolerance=12)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got)) >= 4  # several regions really grew
    graph = tf.function(lambda x, s: layer(x, s))(coins[None, ..., None], seeds)
    np.testing.assert_array_equal(graph.numpy()[0, ..., 0], expected)


def test_flood_tolerance_rules_match_scikit_image():
    # uint8 bounds are truncated like scikit-image's Cython cast: seed 14, tol 0.5 -> 13..14
    row = np.array([[10, 11, 12, 13, 14, 15, 16, 17]], np.uint8)
    for tolerance in (0.5, 1.5, 1.99, 2.0, None, 300):
        got = RegionGrowing(tolerance=tolerance)(row[None, ..., None], np.array([[[0, 4]]]))
        expected = flood(row, (0, 4), tolerance=tolerance)
        np.testing.assert_array_equal(np.asarray(got)[0, ..., 0] == 1, expected)
    signed = np.array([[-10, -9, -8, -7, -6, -5, -4]], np.int16)  # truncation toward zero
    for tolerance in (0.5, 1.5):
        got = RegionGrowing(tolerance=tolerance)(signed[None, ..., None], np.array([[[0, 3]]]))
        expected = flood(signed, (0, 3), tolerance=tolerance)
        np.testing.assert_array_equal(np.asarray(got)[0, ..., 0] == 1, expected)
    floats = np.array([[0.1, 0.2, 0.3, 0.30000001, 0.31]], np.float32)  # bounds rounded to f32
    got = RegionGrowing(tolerance=0.1)(floats[None, ..., None], np.array([[[0, 1]]]))
    np.testing.assert_array_equal(
        np.asarray(got)[0, ..., 0] == 1, flood(floats, (0, 1), tolerance=0.1)
    )


def test_flood_float_and_colour_images(membrane):
    crop = membrane[100:228, 50:210]  # eager on a small image (the loop runs op by op)
    as_float = (crop / 255.0).astype(np.float64)
    seeds = np.array([[[60, 80], [5, 5]]], np.int32)
    got = RegionGrowing(tolerance=0.08)(as_float[None, ..., None], seeds)
    np.testing.assert_array_equal(
        np.asarray(got)[0, ..., 0], _expected_labels(as_float, seeds[0], tolerance=0.08)
    )
    rgb = skimage.data.astronaut()[:96, :128]
    grey = skimage.color.rgb2gray(rgb)
    got = RegionGrowing(tolerance=0.05, connectivity=1)(rgb[None], np.array([[[50, 60]]]))
    expected = flood(grey, (50, 60), tolerance=0.05, connectivity=1)
    np.testing.assert_array_equal(np.asarray(got)[0, ..., 0] == 1, expected)


def test_flood_max_iter_caps_the_geodesic_radius(membrane):
    candidates = np.abs(membrane.astype(int) - int(membrane[256, 256])) <= 20
    start = np.zeros_like(candidates)
    start[256, 256] = True
    for steps in (5, 37):
        layer = RegionGrowing(tolerance=20, max_iter=steps, return_converged=True)
        labels, converged = _xla(layer)(membrane[None, ..., None], np.array([[[256, 256]]]))
        expected = ndi.binary_dilation(
            start, np.ones((3, 3), bool), iterations=steps, mask=candidates
        )
        np.testing.assert_array_equal(labels.numpy()[0, ..., 0] == 1, expected)
        assert not converged.numpy()[0]


def test_flood_edge_cases():
    layer = RegionGrowing(tolerance=0, return_converged=True)
    constant = np.full((2, 7, 9, 1), 3, np.uint8)  # scikit-image: the whole image
    labels, converged = layer(constant, np.array([[[0, 0]], [[6, 8]]]))
    assert np.all(np.asarray(labels) == 1) and np.asarray(converged).all()
    pixel = np.array([[[[5]]]], np.uint8)
    assert np.asarray(layer(pixel, np.array([[[0, 0]]]))[0]).tolist() == [[[[1]]]]
    none = np.asarray(layer(constant, np.full((2, 2, 2), -1))[0])  # only padding
    assert none.sum() == 0
    empty, flags = layer(np.zeros((0, 5, 5, 1), np.uint8), np.zeros((0, 1, 2), np.int32))
    assert tuple(empty.shape) == (0, 5, 5, 1) and tuple(flags.shape) == (0,)
    no_seeds = np.zeros((2, 0, 2), np.int32)
    labels, flags = _xla(layer)(constant, no_seeds)
    assert labels.numpy().sum() == 0 and tuple(labels.shape) == (2, 7, 9, 1)
    assert np.asarray(layer(constant, no_seeds)[0]).sum() == 0
    with_nan = np.ones((1, 6, 6, 1), np.float32)
    with_nan[0, 2, :, 0] = np.nan  # a NaN row cuts the image in two
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(with_nan, np.array([[[0, 0]]]))
    traced = tf.function(lambda x, s: layer(x, s)[0])(with_nan, np.array([[[0, 0], [2, 2]]]))
    traced = traced.numpy()[0, ..., 0]
    assert (traced[:2] == 1).all() and (traced[2:] == 0).all()  # NaN seed: empty region


def test_flood_rejects_bad_arguments():
    image = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match="`seeds` must be \\(row, col\\) inside the 8x8"):
        RegionGrowing()(image, np.array([[[3, 8]]]))
    with pytest.raises(ValueError, match="`seeds` must be"):
        RegionGrowing()(image, np.array([[[-1, 2]]]))
    with pytest.raises(ValueError, match="`seeds` must have shape \\(batch, num_seeds, 2\\)"):
        RegionGrowing()(image, np.array([[1, 2]]))
    with pytest.raises(TypeError, match="`seeds` must be integers"):
        RegionGrowing()(image, np.array([[[1.0, 2.0]]]))
    with pytest.raises(ValueError, match="`tolerance` must be >= 0"):
        RegionGrowing(tolerance=-1)
    with pytest.raises(TypeError, match="`tolerance`"):
        RegionGrowing(tolerance=float("inf"))
    with pytest.raises(ValueError, match="`connectivity` must be 1"):
        RegionGrowing(connectivity=3)
    with pytest.raises(ValueError, match="`max_iter`"):
        RegionGrowing(max_iter=0)
    with pytest.raises(ValueError, match="`channels`"):
        region_growing(channels=2)


# ----------------------------------------------------------------------------- labelling


@pytest.mark.parametrize("connectivity", [1, 2])
def test_labels_equal_scikit_image_on_isbi(isbi_labels, connectivity):
    layer = ConnectedComponents(connectivity=connectivity, return_num=True, return_converged=True)
    labels, num, converged = _xla(layer)(isbi_labels[..., None])
    expected = np.stack([label(m, connectivity=connectivity) for m in isbi_labels])
    np.testing.assert_array_equal(labels.numpy()[..., 0], expected)
    np.testing.assert_array_equal(num.numpy(), expected.max(axis=(1, 2)))
    assert converged.numpy().all()
    if connectivity == 1:  # data README: about 130 instances per slice
        assert 100 <= np.median(num.numpy()) <= 160


def test_labels_eager_graph_and_binary_on_isbi(isbi_labels):
    masks = isbi_labels[:2, ..., None] > 127  # bool input
    expected = np.stack([label(m[..., 0], connectivity=1) for m in masks])
    eager = ConnectedComponents(connectivity=1)(masks)
    np.testing.assert_array_equal(np.asarray(eager)[..., 0], expected)
    graph = tf.function(ConnectedComponents(connectivity=1, binary=True))(
        isbi_labels[:2, ..., None]
    )
    np.testing.assert_array_equal(graph.numpy()[..., 0], expected)


def test_multi_valued_labels_equal_scikit_image(data_dir):
    # CamVid class maps: neighbours connect only with the same class; class 0 is background.
    paths = sorted((data_dir / "camvid" / "trainannot").glob("*.png"))[:2]
    annotations = np.stack([skimage.io.imread(p) for p in paths])
    for connectivity in (1, 2):
        layer = ConnectedComponents(connectivity=connectivity, return_num=True)
        labels, num = _xla(layer)(annotations[..., None])
        expected = np.stack([label(a, connectivity=connectivity) for a in annotations])
        np.testing.assert_array_equal(labels.numpy()[..., 0], expected)
        binary = ConnectedComponents(connectivity=connectivity, binary=True)
        got = _xla(binary)(annotations[..., None]).numpy()[..., 0]
        np.testing.assert_array_equal(
            got, np.stack([label(a != 0, connectivity=connectivity) for a in annotations])
        )
        assert num.numpy().min() > got.max(axis=(1, 2)).min()  # classes split components


def test_labels_worst_case_serpentine_and_checkerboard():
    serpentine = np.zeros((41, 41), np.uint8)  # one corridor about 840 pixels long
    serpentine[::2] = 1
    for row in range(1, 41, 2):
        serpentine[row, -1 if row % 4 == 1 else 0] = 1
    checker = (np.indices((9, 11)).sum(axis=0) % 2).astype(np.uint8)
    for image in (serpentine, checker):
        for connectivity in (1, 2):
            got = ConnectedComponents(connectivity=connectivity, return_converged=True)(
                image[None, ..., None]
            )
            np.testing.assert_array_equal(
                np.asarray(got[0])[0, ..., 0], label(image, connectivity=connectivity)
            )
            assert np.asarray(got[1]).all()


@pytest.mark.parametrize("connectivity", [1, 2])
def test_labels_random_masks_of_odd_and_unknown_shapes(connectivity):
    """Blocks of pixels are padded at odd sizes; shapes may be known only at run time."""
    rng = np.random.default_rng(7)
    layer = ConnectedComponents(connectivity=connectivity, return_num=True)
    unknown = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 1), tf.bool)])
    for shape in [(1, 1), (9, 1), (37, 53)]:
        density = np.array([0.3, 0.6, 0.9])[:, None, None]
        masks = rng.random((3,) + shape) < density
        expected = np.stack([label(m, connectivity=connectivity) for m in masks])
        for run in (_xla(layer), unknown):
            labels, num = run(masks[..., None])
            np.testing.assert_array_equal(labels.numpy()[..., 0], expected)
            np.testing.assert_array_equal(num.numpy(), expected.max(axis=(1, 2)))


def test_label_images_by_pairs_and_pixel_by_pixel():
    """Values that change only between horizontal pairs of pixels are labelled by pairs,
    values that change inside pairs pixel by pixel; both equal scikit-image."""
    rng = np.random.default_rng(3)
    paired = np.repeat(rng.integers(0, 4, (2, 30, 20)), 2, axis=2).astype(np.uint8)
    unpaired = rng.integers(0, 4, (2, 30, 41)).astype(np.uint8)
    for image in (paired, unpaired):
        for connectivity in (1, 2):
            got = _xla(ConnectedComponents(connectivity=connectivity))(image[..., None])
            expected = np.stack([label(m, connectivity=connectivity) for m in image])
            np.testing.assert_array_equal(got.numpy()[..., 0], expected)


def test_passes_grow_with_the_log_of_the_path_length():
    """A serpentine corridor of about 16 600 pixels settles in a few label-equivalence
    iterations (one pass each), not one per pixel of its length; a flood fill along it too."""
    corridor = np.zeros((257, 257), bool)
    corridor[::2] = True
    corridor[1::4, -1] = corridor[3::4, 0] = True
    for connectivity in (1, 2):
        labels, count, converged, iterations = label_components(
            tf.constant(corridor[None]), connectivity
        )
        np.testing.assert_array_equal(labels[0], label(corridor, connectivity=connectivity))
        assert int(count[0]) == 1 and bool(converged[0]) and int(iterations) <= 12
        roots, converged, iterations = component_roots(tf.constant(corridor[None]), connectivity)
        assert len(np.unique(roots)) == 2 and int(iterations) <= 12  # -1 and one component
    image = corridor[None, ..., None].astype(np.uint8)
    filled = RegionGrowing(tolerance=0)(image, np.array([[[256, 256]]]))
    np.testing.assert_array_equal(np.asarray(filled)[0, ..., 0] == 1, corridor)


def test_labels_float_input_truncates_like_scikit_image():
    image = np.array([[1.7, 1.2, -0.5, -1.5, -1.2, 0.0, 2.0]], np.float32)
    got = ConnectedComponents()(image[None, ..., None])
    np.testing.assert_array_equal(np.asarray(got)[0, ..., 0], label(image))


def test_labels_edge_cases_and_max_iter(isbi_labels):
    layer = ConnectedComponents(return_num=True, return_converged=True)
    labels, num, converged = layer(np.zeros((2, 5, 6, 1), np.uint8))
    assert np.asarray(labels).sum() == 0 and np.asarray(num).tolist() == [0, 0]
    labels, num, _ = layer(np.full((1, 5, 6, 1), 9, np.int16))
    assert np.all(np.asarray(labels) == 1) and np.asarray(num).tolist() == [1]
    labels, num, _ = layer(np.ones((1, 1, 1, 1), np.uint8))
    assert np.asarray(labels).tolist() == [[[[1]]]] and np.asarray(num).tolist() == [1]
    labels, num, converged = layer(np.zeros((0, 4, 4, 1), np.uint8))
    assert tuple(labels.shape) == (0, 4, 4, 1) and tuple(num.shape) == (0,)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(np.full((1, 3, 3, 1), np.nan, np.float32))
    capped = ConnectedComponents(connectivity=1, max_iter=1, return_converged=True)
    labels, converged = _xla(capped)(isbi_labels[:1, ..., None])
    assert not converged.numpy()[0]  # stopped early, labels not final
    assert not np.array_equal(labels.numpy()[0, ..., 0], label(isbi_labels[0], connectivity=1))


def test_labels_reject_bad_arguments():
    with pytest.raises(ValueError, match="`connectivity` must be 1"):
        ConnectedComponents(connectivity=3)
    with pytest.raises(TypeError, match="`background` must be an integer"):
        ConnectedComponents(background=0.5)
    with pytest.raises(ValueError, match="`max_iter`"):
        ConnectedComponents(max_iter=-2)
    with pytest.raises(ValueError, match="1 channel"):
        ConnectedComponents()(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="`input_dtype`"):
        connected_components(input_dtype="string")


# ----------------------------------------------------------------------------- models


def test_tf_data_map(isbi_labels, membrane):
    layer = ConnectedComponents(connectivity=1)
    dataset = tf.data.Dataset.from_tensor_slices(isbi_labels[:3, ..., None]).batch(2).map(layer)
    got = np.concatenate([b.numpy() for b in dataset])[..., 0]
    np.testing.assert_array_equal(
        got, np.stack([label(m, connectivity=1) for m in isbi_labels[:3]])
    )
    grow = RegionGrowing(tolerance=20)
    images = np.stack([membrane, membrane[::-1]])[..., None]
    seeds = np.array([[[256, 256]], [[100, 300]]], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).batch(2).map(grow)
    got = next(iter(dataset)).numpy()[..., 0]
    np.testing.assert_array_equal(got[1] == 1, flood(membrane[::-1], (100, 300), tolerance=20))


def test_configs_round_trip():
    for layer in (
        RegionGrowing(tolerance=3.5, connectivity=8, max_iter=50, return_converged=True),
        ConnectedComponents(
            connectivity=4,
            background=2,
            binary=True,
            max_iter=9,
            return_num=True,
            return_converged=True,
        ),
    ):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    assert RegionGrowing(connectivity=8).connectivity == 2


def test_builders_save_and_reload(tmp_path, membrane, isbi_labels):
    model = region_growing(tolerance=20)
    assert sorted(t.name for t in model.inputs) == ["images", "seeds"]
    inputs = {"images": membrane[None, ..., None], "seeds": np.array([[[256, 256], [-1, -1]]])}
    out = model.predict(inputs, verbose=0)
    assert set(out) == {"labels", "converged"}
    np.testing.assert_array_equal(
        out["labels"][0, ..., 0] == 1, flood(membrane, (256, 256), tolerance=20)
    )
    model.save(tmp_path / "grow.keras")
    restored = keras.saving.load_model(tmp_path / "grow.keras")
    np.testing.assert_array_equal(restored.predict(inputs, verbose=0)["labels"], out["labels"])

    model = connected_components(connectivity=1)
    out = model.predict(isbi_labels[:2, ..., None], verbose=0)
    assert set(out) == {"labels", "num_labels", "converged"}
    expected = np.stack([label(m, connectivity=1) for m in isbi_labels[:2]])
    np.testing.assert_array_equal(out["labels"][..., 0], expected)
    model.save(tmp_path / "cc.keras")
    restored = keras.saving.load_model(tmp_path / "cc.keras")
    again = restored.predict(isbi_labels[:2, ..., None], verbose=0)
    np.testing.assert_array_equal(again["labels"], out["labels"])
    np.testing.assert_array_equal(again["num_labels"], expected.max(axis=(1, 2)))
