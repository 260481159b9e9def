import cv2
import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import tensorflow as tf
from skimage.color import rgb2gray
from skimage.filters import threshold_niblack, threshold_sauvola

from kerasseg.classical.local_threshold import (
    AdaptiveThreshold,
    NiblackThreshold,
    SauvolaThreshold,
    adaptive_threshold,
    local_sum,
    niblack,
    pad_axis,
    sauvola,
    window_sum,
)

CV_METHOD = {"mean": cv2.ADAPTIVE_THRESH_MEAN_C, "gaussian": cv2.ADAPTIVE_THRESH_GAUSSIAN_C}


@pytest.fixture(scope="module")
def membranes(data_dir):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "image").glob("*.png"))
    assert len(paths) == 25
    return np.stack([skimage.io.imread(p) for p in paths[:4]])


def _opencv(image, method, block_size, c, inverse=False):
    kind = cv2.THRESH_BINARY_INV if inverse else cv2.THRESH_BINARY
    return cv2.adaptiveThreshold(image, 255, CV_METHOD[method], kind, block_size, c) > 0


def _masks(layer, images):
    return np.asarray(layer(images[..., None]))[..., 0].astype(bool)


# ----------------------------------------------------------------------------- helpers

NUMPY_MODE = {"replicate": "edge", "reflect": "reflect"}


@pytest.mark.parametrize("mode", ["replicate", "reflect"])
def test_pad_axis_and_window_sums_match_numpy(mode):
    rng = np.random.default_rng(0)
    for length in (1, 2, 5, 9):  # pads wider than the axis: reflect goes back and forth
        x = rng.integers(0, 256, (2, length, 3)).astype(np.uint8)
        for before, after in ((0, 0), (3, 0), (0, 4), (7, 7)):
            got = np.asarray(pad_axis(x, before, after, mode, 1))
            expected = np.pad(x, ((0, 0), (before, after), (0, 0)), NUMPY_MODE[mode])
            np.testing.assert_array_equal(got, expected)
    x = rng.integers(0, 256, (2, 23, 17)).astype(np.int32)
    for window in (1, 2, 3, 7, 8, 15, 17):
        for axis in (1, 2):
            got = np.asarray(window_sum(x, window, axis))
            windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=axis)
            np.testing.assert_array_equal(got, windows.sum(axis=-1))


@pytest.mark.parametrize("mode", ["replicate", "reflect"])
def test_local_sum_matches_numpy(mode):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (2, 19, 26)).astype(np.uint8)
    for size in (1, 3, 15, 41):  # 41: wider than the image
        padded = np.pad(
            image.astype(np.int64), ((0, 0),) + ((size // 2,) * 2,) * 2, NUMPY_MODE[mode]
        )
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
        got = np.asarray(local_sum(image, size, mode, ("uint16", "int32")))
        np.testing.assert_array_equal(got, windows.sum(axis=(-1, -2)))
        squares = np.asarray(local_sum(image, size, mode, ("int32", "int32"), squared=True))
        np.testing.assert_array_equal(squares, (windows**2).sum(axis=(-1, -2)))


# ----------------------------------------------------------------------------- OpenCV parity


@pytest.mark.parametrize("method", ["mean", "gaussian"])
@pytest.mark.parametrize(
    "block_size, c, inverse", [(15, 2, False), (9, -3.5, True), (31, 0.5, False), (3, 7, True)]
)
def test_adaptive_is_pixel_exact_against_opencv(membranes, method, block_size, c, inverse):
    layer = AdaptiveThreshold(block_size, c, method, inverse)
    masks = _masks(layer, membranes)
    for image, mask in zip(membranes, masks, strict=True):
        np.testing.assert_array_equal(mask, _opencv(image, method, block_size, c, inverse))
    for image in (skimage.data.camera(), skimage.data.coins()):  # 512x512 and 303x384
        mask = _masks(layer, image[None])[0]
        np.testing.assert_array_equal(mask, _opencv(image, method, block_size, c, inverse))


@pytest.mark.parametrize("block_size", [5, 9, 15, 31])
def test_local_means_are_opencvs_to_the_grey_level(membranes, block_size):
    # The mask rarely shows a wrong rounding of the mean; the threshold image does:
    # t + ceil(c) is the uint8 mean, which must equal OpenCV's box / Gaussian filter.
    border = cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED
    images = np.concatenate([membranes, skimage.data.camera()[None]])
    for method in ("mean", "gaussian"):
        layer = AdaptiveThreshold(block_size, 2, method, return_threshold=True)
        _, threshold = layer(images[..., None])
        means = np.asarray(threshold)[..., 0] + 2
        for image, mean in zip(images, means, strict=True):
            if method == "mean":
                expected = cv2.blur(image, (block_size, block_size), borderType=border)
            else:
                blurred = cv2.GaussianBlur(
                    image.astype(np.float32), (block_size, block_size), 0, 0, borderType=border
                )
                expected = np.rint(blurred)
            np.testing.assert_array_equal(mean, expected)


def _box_means(image, block_size):
    """round(window sum / count), replicated borders: exactly, and as float32 SIMD lanes."""
    padded = np.pad(image.astype(np.int64), block_size // 2, mode="edge")
    total = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    b, count = block_size, block_size * block_size
    total = total[b:, b:] - total[:-b, b:] - total[b:, :-b] + total[:-b, :-b]
    lanes = np.rint(total.astype(np.float32) * np.float32(1 / count))
    return (2 * total + count) // (2 * count), lanes.astype(np.int64)


def test_adaptive_large_blocks_match_opencvs_float32_rounding(membranes):
    # Above 256 pixels OpenCV's box filter rounds float(total) * float(1 / count) in its SIMD
    # lanes (not total / count exactly), but exactly in the scalar tail (the last W % 8
    # columns). Column sums switch from uint16 to int32 above block 257 (255 * 257 = 65535).
    border = cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED
    crop = np.ascontiguousarray(membranes[1, 100:400, 50:370])
    rng = np.random.default_rng(286)  # a 100x21 image with a tail pixel where the two differ
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (100, 21)).astype(np.uint8), (0, 0), 3)
    for image, block_size in [(crop, b) for b in (255, 257, 259, 801)] + [(smooth, 255)]:
        layer = AdaptiveThreshold(block_size, 2, "mean", return_threshold=True)
        mask, threshold = (np.asarray(t)[0, ..., 0] for t in layer(image[None, ..., None]))
        np.testing.assert_array_equal(mask.astype(bool), _opencv(image, "mean", block_size, 2))
        expected = cv2.blur(image, (block_size, block_size), borderType=border)
        np.testing.assert_array_equal(threshold + 2, expected)
    # the cases above do tell the two roundings apart, in the lanes and in the tail
    exact, lanes = _box_means(crop, 255)
    assert np.argwhere(exact != lanes).tolist() == [[5, 44]]
    exact, lanes = _box_means(smooth, 255)
    assert np.argwhere(exact != lanes).tolist() == [[38, 19]]  # column 19 >= 21 - 21 % 8


def test_adaptive_saturated_c_matches_opencv(membranes):
    # a |c| past the grey range saturates (mask all 1 or all 0), as OpenCV's lookup table does
    small = np.ascontiguousarray(membranes[1, :40, :50])
    for c in (-600, -300, -254.5, 254.5, 255, 300, 600):
        for method in ("mean", "gaussian"):
            for inverse in (False, True):
                got = _masks(AdaptiveThreshold(7, c, method, inverse), small[None])[0]
                np.testing.assert_array_equal(got, _opencv(small, method, 7, c, inverse))


def test_adaptive_reference_counts(membranes):
    # classical.md 2.3: number of 255 pixels of adaptiveThreshold(..., BINARY, 15, 2)
    camera = skimage.data.camera()[None]
    expected = {"gaussian": (188754, 143946), "mean": (182737, 143509)}
    for method, (on_camera, on_membrane) in expected.items():
        layer = AdaptiveThreshold(15, 2, method)
        assert _masks(layer, camera).sum() == on_camera
        assert _masks(layer, membranes[:1]).sum() == on_membrane


@pytest.mark.parametrize("method, block_size", [("mean", 15), ("mean", 17), ("gaussian", 15)])
def test_adaptive_same_in_graph_xla_and_tf_data(membranes, method, block_size):
    # mean 17: OpenCV's float32 rounding of the mean (windows of more than 256 pixels)
    layer = AdaptiveThreshold(block_size, 2, method, return_threshold=True)
    images = tf.constant(membranes[..., None])
    eager_mask, eager_threshold = (np.asarray(t) for t in layer(images))
    for jit in (False, True):
        mask, threshold = tf.function(lambda x: layer(x), jit_compile=jit)(images)
        np.testing.assert_array_equal(mask.numpy(), eager_mask)
        np.testing.assert_array_equal(threshold.numpy(), eager_threshold)
    alone = AdaptiveThreshold(block_size, 2, method)  # mean 15: the division-free mask
    xla_mask = tf.function(lambda x: alone(x), jit_compile=True)(images)
    np.testing.assert_array_equal(xla_mask.numpy(), eager_mask)
    dataset = tf.data.Dataset.from_tensor_slices(membranes[..., None]).batch(2).map(layer)
    mapped = np.concatenate([m.numpy() for m, _ in dataset])
    np.testing.assert_array_equal(mapped, eager_mask)
    # the threshold image reproduces the mask: src > t
    np.testing.assert_array_equal(eager_mask[..., 0], membranes > eager_threshold[..., 0])
    assert eager_mask.dtype == np.uint8 and eager_threshold.dtype == np.float32


def test_adaptive_threshold_image_for_inverse():
    image = skimage.data.coins()
    mask, threshold = AdaptiveThreshold(11, 2.5, "mean", True, True)(image[None, ..., None])
    mask, threshold = np.asarray(mask)[0, ..., 0], np.asarray(threshold)[0, ..., 0]
    np.testing.assert_array_equal(mask.astype(bool), image <= threshold)
    np.testing.assert_array_equal(mask.astype(bool), _opencv(image, "mean", 11, 2.5, True))


def test_adaptive_edge_cases():
    layer = AdaptiveThreshold(15, 2, "gaussian")
    constant = np.full((1, 20, 20, 1), 7, np.uint8)
    for c in (2, 0, -2):
        got = _masks(AdaptiveThreshold(3, c, "mean"), constant[..., 0])[0]
        np.testing.assert_array_equal(got, _opencv(constant[0, ..., 0], "mean", 3, c))
    pixel = np.array([[[[200]]]], np.uint8)  # one pixel: the block is its replicated border
    assert _masks(layer, pixel[..., 0])[0, 0, 0] == _opencv(pixel[0, ..., 0], "gaussian", 15, 2)
    empty = layer(np.zeros((0, 8, 8, 1), np.uint8))
    assert tuple(empty.shape) == (0, 8, 8, 1)
    xla_empty = tf.function(lambda x: layer(x), jit_compile=True)(np.zeros((0, 8, 8, 1), np.uint8))
    assert tuple(xla_empty.shape) == (0, 8, 8, 1)


def test_adaptive_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"`block_size` must be an odd integer in \[3, 2895\]"):
        AdaptiveThreshold(block_size=4)
    with pytest.raises(ValueError, match=r"in \[3, 2895\]; got 2897"):  # int32 sums overflow
        AdaptiveThreshold(block_size=2897)
    with pytest.raises(ValueError, match="`block_size`"):
        AdaptiveThreshold(block_size=1)
    with pytest.raises(TypeError, match="`block_size` must be an integer"):
        AdaptiveThreshold(block_size=True)
    with pytest.raises(TypeError, match="`c` must be a finite real"):
        AdaptiveThreshold(c=float("nan"))
    with pytest.raises(ValueError, match="`method`"):
        AdaptiveThreshold(method="median")
    with pytest.raises(TypeError, match="dtype must be one of \\('uint8',\\)"):
        AdaptiveThreshold()(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="1 channel"):
        AdaptiveThreshold()(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="rank 4"):
        AdaptiveThreshold()(np.zeros((8, 8), np.uint8))


# ----------------------------------------------------------------------------- scikit-image


def _niblack_sauvola(layer, reference, image, **kwargs):
    mask, threshold = layer(image[None, ..., None])
    mask = np.asarray(mask)[0, ..., 0].astype(bool)
    threshold = np.asarray(threshold)[0, ..., 0]
    expected = reference(image, **kwargs)
    assert threshold.dtype == expected.dtype
    return mask, threshold, expected


@pytest.mark.parametrize(
    "layer_class, reference",
    [(NiblackThreshold, threshold_niblack), (SauvolaThreshold, threshold_sauvola)],
)
@pytest.mark.parametrize("window_size, k", [(15, 0.2), (25, 0.5), (3, -0.2)])
def test_uint8_equals_scikit_image(membranes, layer_class, reference, window_size, k):
    layer = layer_class(window_size=window_size, k=k, return_threshold=True)
    for image in (membranes[0], membranes[3], skimage.data.camera(), skimage.data.coins()):
        mask, threshold, expected = _niblack_sauvola(
            layer, reference, image, window_size=window_size, k=k
        )
        np.testing.assert_allclose(threshold, expected, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(mask, image > expected)


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int16"])
@pytest.mark.parametrize(
    "layer_class, reference",
    [(NiblackThreshold, threshold_niblack), (SauvolaThreshold, threshold_sauvola)],
)
def test_other_integer_dtypes_equal_scikit_image(membranes, dtype, layer_class, reference):
    # int8 sums in int32 like uint8; 16-bit images sum in float64 (x^2 overflows int32)
    scale = {"int8": (1, -128), "uint16": (257, 0), "int16": (257, -32768)}[dtype]
    image = (membranes[2].astype(np.int64) * scale[0] + scale[1]).astype(dtype)
    layer = layer_class(window_size=15, return_threshold=True)
    mask, threshold, expected = _niblack_sauvola(layer, reference, image, window_size=15)
    np.testing.assert_allclose(threshold, expected, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(mask, image > expected)


def test_uint8_window_sizes_around_the_int32_limit_equal_scikit_image():
    # 8-bit images sum x^2 in int32 up to window 181 (181^2 * 255^2 < 2^31), in float64 above;
    # windows far wider than the 40x50 image reflect back and forth.
    image = np.ascontiguousarray(skimage.data.camera()[200:240, 100:150])
    for window_size in (181, 183):
        layer = NiblackThreshold(window_size=window_size, k=0.3, return_threshold=True)
        mask, threshold, expected = _niblack_sauvola(
            layer, threshold_niblack, image, window_size=window_size, k=0.3
        )
        np.testing.assert_allclose(threshold, expected, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(mask, image > expected)


def test_sauvola_reference_counts(membranes):
    # classical.md 2.3: #(img > threshold_sauvola(img, 15))
    layer = SauvolaThreshold(window_size=15)
    assert _masks(layer, skimage.data.camera()[None]).sum() == 229472
    assert _masks(layer, membranes[:1]).sum() == 196083


@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-5), ("float64", 1e-6)])
@pytest.mark.parametrize(
    "layer_class, reference",
    [(NiblackThreshold, threshold_niblack), (SauvolaThreshold, threshold_sauvola)],
)
def test_float_images_within_tolerance(membranes, dtype, tolerance, layer_class, reference):
    # scikit-image's float64 integral image over the whole image carries rounding noise of
    # about 1e-7 in flat windows; ours sums per row and column. Masks may only differ where
    # the pixel is that close to scikit-image's threshold.
    layer = layer_class(window_size=15, return_threshold=True)
    for image in (membranes[1], skimage.data.coins()):
        image = (image / 255.0).astype(dtype)
        mask, threshold, expected = _niblack_sauvola(layer, reference, image, window_size=15)
        np.testing.assert_allclose(threshold, expected, rtol=0, atol=tolerance)
        differ = mask != (image > expected)
        assert np.all(np.abs(image - expected)[differ] <= tolerance)
        assert differ.mean() < 1e-3


def test_colour_images_use_rgb2gray():
    image = skimage.data.astronaut()  # 512x512x3 uint8
    mask, threshold = SauvolaThreshold(window_size=15, return_threshold=True)(image[None])
    expected = threshold_sauvola(rgb2gray(image), window_size=15)
    np.testing.assert_allclose(np.asarray(threshold)[0, ..., 0], expected, rtol=0, atol=1e-6)
    assert np.mean(np.asarray(mask)[0, ..., 0] != (rgb2gray(image) > expected)) < 1e-3


def test_niblack_sauvola_xla_graph_and_tf_data(membranes):
    # XLA's CPU compiler contracts multiply-adds into FMAs and turns x / n into x * (1 / n),
    # so thresholds move by a few ulps: masks may only differ at pixels equal to T up to that.
    for layer_class, reference in (
        (NiblackThreshold, threshold_niblack),
        (SauvolaThreshold, threshold_sauvola),
    ):
        layer = layer_class(window_size=15, return_threshold=True)
        images = tf.constant(membranes[..., None])
        expected = np.stack([reference(im, window_size=15) for im in membranes])
        graph_mask, graph_threshold = tf.function(lambda x, layer=layer: layer(x))(images)
        np.testing.assert_array_equal(graph_mask.numpy()[..., 0], membranes > expected)
        np.testing.assert_allclose(graph_threshold.numpy()[..., 0], expected, atol=1e-9)
        mask, threshold = tf.function(lambda x, layer=layer: layer(x), jit_compile=True)(images)
        np.testing.assert_allclose(threshold.numpy()[..., 0], expected, rtol=0, atol=1e-9)
        differ = mask.numpy()[..., 0].astype(bool) != (membranes > expected)
        assert np.all(np.abs(membranes - expected)[differ] < 1e-9)
        dataset = tf.data.Dataset.from_tensor_slices(membranes[..., None]).batch(3).map(layer)
        mapped = np.concatenate([m.numpy() for m, _ in dataset])
        np.testing.assert_array_equal(mapped, graph_mask.numpy())


def test_niblack_sauvola_edge_cases():
    constant = np.full((2, 9, 9, 1), 100, np.uint8)
    mask, threshold = NiblackThreshold(window_size=5, return_threshold=True)(constant)
    assert np.asarray(mask).sum() == 0 and np.all(np.asarray(threshold) == 100)
    mask = SauvolaThreshold(window_size=5)(constant)  # T = 100 * (1 - k) < 100
    assert np.asarray(mask).all()
    pixel = np.array([[[[200]]]], np.uint8)
    _, threshold = SauvolaThreshold(window_size=15, return_threshold=True)(pixel)
    assert float(np.asarray(threshold)[0, 0, 0, 0]) == threshold_sauvola(pixel[0, ..., 0], 15)[0, 0]
    small = skimage.data.coins()[:5, :7]  # windows far wider than the image: multiple reflections
    mask, threshold, expected = _niblack_sauvola(
        NiblackThreshold(window_size=21, return_threshold=True),
        threshold_niblack,
        small,
        window_size=21,
    )
    np.testing.assert_allclose(threshold, expected, atol=1e-9)
    empty = NiblackThreshold()(np.zeros((0, 6, 6, 1), np.float32))
    assert tuple(empty.shape) == (0, 6, 6, 1)
    with_nan = np.ones((1, 12, 12, 1), np.float32)
    with_nan[0, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        SauvolaThreshold()(with_nan)
    # traced: NaN thresholds (mask 0) in every window holding the NaN, the rest untouched
    with_nan[0, :, 6:, 0] = 2.0
    layer = SauvolaThreshold(window_size=3, return_threshold=True)
    mask, threshold = tf.function(layer)(with_nan)
    mask, threshold = mask.numpy()[0, ..., 0], threshold.numpy()[0, ..., 0]
    assert np.isnan(threshold[1:4, 1:4]).all() and np.isfinite(threshold).sum() == 144 - 9
    assert mask[1:4, 1:4].sum() == 0
    clean = np.asarray(layer(np.where(np.isnan(with_nan), 1.0, with_nan).astype(np.float32))[1])
    finite = np.isfinite(threshold)
    np.testing.assert_array_equal(threshold[finite], clean[0, ..., 0][finite])


def test_niblack_sauvola_reject_bad_arguments():
    with pytest.raises(ValueError, match="`window_size` must be an odd integer >= 1"):
        NiblackThreshold(window_size=16)
    with pytest.raises(TypeError, match="`window_size` must be an integer"):
        SauvolaThreshold(window_size=15.0)
    with pytest.raises(TypeError, match="`k`"):
        NiblackThreshold(k="0.2")
    with pytest.raises(ValueError, match="`r` must be > 0"):
        SauvolaThreshold(r=0)
    with pytest.raises(ValueError, match="1 or 3 channel"):
        SauvolaThreshold()(np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="`input_dtype`"):
        sauvola(input_dtype="complex64")
    with pytest.raises(ValueError, match="`channels`"):
        niblack(channels=2)


# ----------------------------------------------------------------------------- models


def test_configs_round_trip():
    for layer in (
        AdaptiveThreshold(21, -1.5, "mean", True, True, name="a"),
        NiblackThreshold(window_size=7, k=-0.3, return_threshold=True),
        SauvolaThreshold(window_size=9, k=0.4, r=64.0),
    ):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_builders_save_and_reload(tmp_path, membranes):
    image = membranes[:2, ..., None]
    cases = {
        "adaptive": adaptive_threshold(block_size=15, c=2, method="mean", return_threshold=True),
        "niblack": niblack(window_size=15, k=0.2),
        "sauvola": sauvola(window_size=15, k=0.2),
    }
    for name, model in cases.items():
        assert [t.name for t in model.inputs] == ["images"]
        out = model.predict(image, verbose=0)
        assert set(out) == {"mask", "threshold"}
        path = tmp_path / f"{name}.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        again = restored.predict(image, verbose=0)
        np.testing.assert_array_equal(again["mask"], out["mask"])
        np.testing.assert_array_equal(again["threshold"], out["threshold"])
    expected = np.stack([threshold_sauvola(im, 15) for im in membranes[:2]])
    np.testing.assert_allclose(out["threshold"][..., 0], expected, atol=1e-9)
    mask_only = adaptive_threshold(block_size=15, c=2, method="gaussian", return_threshold=False)
    masks = mask_only.predict(image, verbose=0)
    np.testing.assert_array_equal(masks[0, ..., 0] > 0, _opencv(membranes[0], "gaussian", 15, 2))
