"""Edge layers against scikit-image, scipy and OpenCV on real images."""

import cv2
import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
import skimage.draw
import skimage.io
import tensorflow as tf
from skimage.color import rgb2gray
from skimage.feature import canny as sk_canny
from skimage.util import img_as_float

from kerasseg.classical.edges import (
    Canny,
    GradientMagnitude,
    LaplacianOfGaussian,
    canny,
    hysteresis,
    laplacian_of_gaussian,
    prewitt,
    scharr,
    sobel,
)

SK_GRADIENT = {
    "sobel": skimage.filters.sobel,
    "scharr": skimage.filters.scharr,
    "prewitt": skimage.filters.prewitt,
}


@pytest.fixture(scope="module")
def membranes(data_dir):
    paths = sorted((data_dir / "isbi2012-membrane" / "train" / "image").glob("*.png"))
    assert len(paths) == 25
    images = np.stack([skimage.io.imread(p) for p in paths])
    assert images.shape == (25, 512, 512) and images.dtype == np.uint8
    return images


def _run(layer, images):
    out = layer(images)
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)


# Gradient magnitude: Sobel, Scharr, Prewitt


@pytest.mark.parametrize("kernel", ["sobel", "scharr", "prewitt"])
def test_gradient_magnitude_matches_scikit_image_on_isbi(membranes, kernel):
    images = membranes[:8]
    out = _run(GradientMagnitude(kernel), images[..., None])
    assert out.shape == (8, 512, 512, 1) and out.dtype == np.float32
    expected = np.stack([SK_GRADIENT[kernel](i) for i in images])
    np.testing.assert_allclose(out[..., 0], expected, rtol=0, atol=1e-6)
    if kernel == "sobel":  # the reference statistics of slice 0
        assert abs(out[0].mean() - 0.09120271538671025) < 1e-6
        assert abs(out[0].max() - 0.4382276176017572) < 1e-6


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_sobel_matches_scikit_image_on_sample_images_per_dtype(dtype):
    for image in (skimage.data.camera(), skimage.data.coins()):
        if dtype == "uint16":
            image = image.astype(np.uint16) * 257
        elif dtype.startswith("float"):
            image = img_as_float(image).astype(dtype)
        out = _run(GradientMagnitude(), image[None, ..., None])
        assert out.dtype == (np.float64 if dtype == "float64" else np.float32)
        atol = 1e-12 if dtype == "float64" else 1e-6
        np.testing.assert_allclose(out[0, ..., 0], skimage.filters.sobel(image), atol=atol, rtol=0)


def test_colour_goes_through_rgb2gray():
    rgb = skimage.data.astronaut()
    out = _run(GradientMagnitude("scharr"), rgb[None])
    np.testing.assert_allclose(out[0, ..., 0], skimage.filters.scharr(rgb2gray(rgb)), atol=1e-6)
    out = _run(Canny(sigma=2.0), rgb[None])[0, ..., 0]
    np.testing.assert_array_equal(out, sk_canny(rgb2gray(rgb), sigma=2.0))


def test_direction_is_arctan2_of_the_axis_gradients():
    image = skimage.data.camera()
    magnitude, direction = _run(GradientMagnitude(return_direction=True), image[None, ..., None])
    expected = np.arctan2(
        skimage.filters.sobel(image, axis=0), skimage.filters.sobel(image, axis=1)
    )
    moving = magnitude[0, ..., 0] > 1e-3  # the angle of a near-zero gradient is ill-posed
    error = np.abs(direction[0, ..., 0] - expected)[moving]
    assert np.minimum(error, 2 * np.pi - error).max() < 1e-4
    assert np.abs(direction).max() <= np.float32(np.pi)
    # Known directions on a ramp: increasing down the rows -> pi/2, along columns -> 0.
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    _, down = _run(GradientMagnitude(return_direction=True), ramp.T[None, ..., None])
    _, right = _run(GradientMagnitude(return_direction=True), ramp[None, ..., None])
    np.testing.assert_allclose(down[0, 2:-2, 2:-2], np.pi / 2, atol=1e-6)
    np.testing.assert_allclose(right[0, 2:-2, 2:-2], 0, atol=1e-6)


# Laplacian of Gaussian


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.5])
def test_log_matches_scipy_gaussian_laplace_on_isbi(membranes, sigma):
    images = membranes[:6]
    out = _run(LaplacianOfGaussian(sigma), images[..., None])
    expected = np.stack([ndi.gaussian_laplace(img_as_float(i), sigma) for i in images])
    np.testing.assert_allclose(out[..., 0], expected, rtol=0, atol=1e-6)


def test_log_matches_scipy_on_sample_images_float64_and_small_sigma():
    image = img_as_float(skimage.data.coins())
    out = _run(LaplacianOfGaussian(1.5, truncate=3.0), image[None, ..., None])
    np.testing.assert_allclose(
        out[0, ..., 0], ndi.gaussian_laplace(image, 1.5, truncate=3.0), atol=1e-12, rtol=0
    )
    # sigma 0.5: a 5-tap kernel with responses up to ~5, float32 relative precision.
    camera = skimage.data.camera()
    out = _run(LaplacianOfGaussian(0.5), camera[None, ..., None])
    expected = ndi.gaussian_laplace(img_as_float(camera), 0.5)
    np.testing.assert_allclose(out[0, ..., 0], expected, atol=1e-6, rtol=1e-6)


def test_log_reflects_like_scipy_when_the_kernel_is_wider_than_the_image():
    rng = np.random.default_rng(0)
    signature = [tf.TensorSpec((None, None, None, 1), tf.float64)]
    layer = LaplacianOfGaussian(2.0)  # radius 8
    traced = tf.function(lambda x: layer(x), input_signature=signature)  # unknown sizes
    for shape in [(1, 1), (1, 5), (3, 2), (7, 12)]:
        image = rng.random(shape)
        expected = ndi.gaussian_laplace(image, 2.0)
        for out in (layer(image[None, ..., None]), traced(image[None, ..., None])):
            np.testing.assert_allclose(np.asarray(out)[0, ..., 0], expected, atol=1e-12)


# Canny


@pytest.mark.parametrize(
    "low, high, l2", [(50, 150, False), (50, 150, True), (150, 80, False), (20.5, 60.7, True)]
)
def test_canny_opencv_is_pixel_exact_on_isbi(membranes, low, high, l2):
    images = membranes[::3]
    out = _run(Canny(low, high, compat="opencv", l2_gradient=l2), images[..., None])
    assert out.shape == (9, 512, 512, 1) and out.dtype == np.int32
    expected = np.stack([cv2.Canny(i, low, high, L2gradient=l2) // 255 for i in images])
    np.testing.assert_array_equal(out[..., 0], expected)
    if (low, high) == (50, 150):  # reference counts for slice 0
        assert out[0].sum() == (89787 if l2 else 92508)


def test_canny_opencv_is_pixel_exact_on_sample_images():
    for image, low, high in [
        (skimage.data.camera(), 50, 150),
        (skimage.data.coins(), 10, 40),
        (skimage.data.moon(), 30, 60),
    ]:
        out = _run(Canny(low, high, compat="opencv"), image[None, ..., None])
        np.testing.assert_array_equal(out[0, ..., 0], cv2.Canny(image, low, high) // 255)
        if low == 50:
            assert out.sum() == 30980  # the reference count for camera


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_canny_skimage_is_pixel_exact_on_isbi(membranes, sigma):
    images = membranes[:6]
    out = _run(Canny(sigma=sigma), images[..., None])
    assert out.dtype == np.int32
    expected = np.stack([sk_canny(image, sigma=sigma) for image in images])
    np.testing.assert_array_equal(out[..., 0], expected)  # the target was F1 >= 0.95
    assert out[0].sum() == (73125 if sigma == 1 else 40528)


def test_canny_breaks_exact_ties_like_the_references():
    """Synthetic shapes have exactly tied gradient magnitudes on both sides of an edge."""
    step = np.zeros((32, 40), np.uint8)
    step[:, 20:] = 200
    square = np.zeros((40, 40), np.uint8)
    square[10:30, 12:28] = 180
    disk = np.zeros((48, 48), np.uint8)
    disk[skimage.draw.disk((24, 23), 12)] = 150
    for image in (step, square, disk):
        out = _run(Canny(50, 150, compat="opencv"), image[None, ..., None])[0, ..., 0]
        np.testing.assert_array_equal(out, cv2.Canny(image, 50, 150) // 255)
        for x in (image, (image / 255).astype(np.float32), image / 255):
            out = _run(Canny(), x[None, ..., None])[0, ..., 0]
            np.testing.assert_array_equal(out, sk_canny(x))


def test_canny_skimage_thresholds_and_dtypes():
    camera = skimage.data.camera()
    out = _run(Canny(low_threshold=20, high_threshold=60, sigma=1.5), camera[None, ..., None])
    expected = sk_canny(camera, sigma=1.5, low_threshold=20, high_threshold=60)
    np.testing.assert_array_equal(out[0, ..., 0], expected)
    for dtype in ("float32", "float64"):
        image = img_as_float(skimage.data.coins()).astype(dtype)
        out = _run(Canny(0.05, 0.15), image[None, ..., None])
        np.testing.assert_array_equal(out[0, ..., 0], sk_canny(image, 1.0, 0.05, 0.15))
    wide = skimage.data.coins().astype(np.uint16) * 257
    out = _run(Canny(), wide[None, ..., None])
    np.testing.assert_array_equal(out[0, ..., 0], sk_canny(wide))
    assert out[0, 0].sum() == out[0, -1].sum() == out[0, :, 0].sum() == out[0, :, -1].sum() == 0


def test_hysteresis_is_8_connected_and_bounded():
    line = np.zeros((1, 40, 150), bool)
    rows = 10 + (np.arange(120) // 4) % 2  # a staircase: diagonal steps need 8-connectivity
    line[0, rows, 10 + np.arange(120)] = True
    strong = np.zeros_like(line)
    strong[0, rows[0], 10] = True
    grown = np.asarray(hysteresis(strong, line))
    np.testing.assert_array_equal(grown, line)
    short = np.asarray(hysteresis(strong, line, max_iterations=10))  # 10 steps: 11 pixels
    assert short.sum() == 11 and (short <= line).all()
    isolated = line.copy()
    isolated[0, 30, 30] = True  # not connected to a strong pixel
    assert not np.asarray(hysteresis(strong, isolated))[0, 30, 30]


def test_canny_max_iterations_only_drops_weak_edges(membranes):
    image = membranes[:1, ..., None]
    full = _run(Canny(50, 150, compat="opencv"), image)
    capped = _run(Canny(50, 150, compat="opencv", max_iterations=1), image)
    assert (capped <= full).all() and capped.sum() < full.sum()


# Edge cases


@pytest.mark.parametrize(
    "layer",
    [
        GradientMagnitude(),
        GradientMagnitude("prewitt", return_direction=True),
        LaplacianOfGaussian(2.0),
        Canny(),
        Canny(50, 150, compat="opencv"),
    ],
    ids=["sobel", "prewitt_direction", "log", "canny", "canny_opencv"],
)
def test_edge_cases(layer):
    def outputs(images):
        out = layer(images)
        return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]

    for shape in [(2, 17, 9, 1), (1, 1, 1, 1), (0, 6, 5, 1), (1, 1, 6, 1)]:
        result = outputs(np.full(shape, 7, np.uint8))
        for o in result:
            assert o.shape == shape
        if isinstance(layer, LaplacianOfGaussian):  # scipy's kernel sum times the value
            expected = ndi.gaussian_laplace(np.full(shape[1:3], 7 / 255), 2.0)
            expected = np.broadcast_to(expected, shape[:3])
            np.testing.assert_allclose(result[0][..., 0], expected, rtol=1e-3, atol=1e-9)
        else:
            assert all(np.all(o == 0) for o in result)


def test_nan_raises_eagerly_and_stays_local_when_traced():
    image = np.full((1, 40, 40, 1), 0.25, np.float32)
    image[:, :, 30:] = 0.75  # a vertical step edge at column 30
    image[0, 12, 12] = np.nan
    for layer in (GradientMagnitude(), LaplacianOfGaussian(2.0), Canny()):
        with pytest.raises(ValueError, match="NaN or infinite"):
            layer(image)

    def traced(layer):
        return np.asarray(tf.function(lambda x: layer(x))(tf.constant(image)))[0, ..., 0]

    sobel_out = traced(GradientMagnitude())
    # The 8 neighbours read the NaN (the 3x3 derivative kernels have a zero centre).
    assert np.isnan(sobel_out).sum() == 8 and not np.isnan(sobel_out[12, 12])
    log_out = traced(LaplacianOfGaussian(2.0))
    assert np.isnan(log_out).sum() == 17 * 17  # the kernel's support, radius 8
    edges = traced(Canny())
    assert edges[:, 29:31].sum() >= 38 - 2  # the step is found ...
    assert edges[:, :25].sum() == 0  # ... and NaN makes no edges


def test_bad_input_raises_clear_errors():
    grey = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match="rank 4"):
        GradientMagnitude()(grey[0])
    with pytest.raises(ValueError, match="1 or 3 channel"):
        LaplacianOfGaussian()(np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(TypeError, match="dtype must be one of"):
        Canny()(grey.astype(bool))
    with pytest.raises(ValueError, match="must not be empty"):
        Canny()(np.zeros((1, 0, 8, 1), np.uint8))
    with pytest.raises(TypeError, match=r"cv2.Canny, takes uint8 grey .*got float32"):
        Canny(50, 150, compat="opencv")(grey.astype(np.float32))
    with pytest.raises(ValueError, match="cv2.Canny, takes uint8 grey .*1 channel"):
        Canny(50, 150, compat="opencv")(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="`kernel`"):
        GradientMagnitude("roberts")
    with pytest.raises(ValueError, match="`sigma`"):
        LaplacianOfGaussian(sigma=0)
    with pytest.raises(TypeError, match="`sigma`"):
        Canny(sigma="2")
    with pytest.raises(ValueError, match="`compat`"):
        Canny(compat="matlab")
    with pytest.raises(ValueError, match="needs `low_threshold` and `high_threshold`"):
        Canny(compat="opencv")
    with pytest.raises(ValueError, match="`sigma` applies to compat='skimage'"):
        Canny(50, 150, sigma=1.0, compat="opencv")
    with pytest.raises(ValueError, match="`l2_gradient` applies to compat='opencv'"):
        Canny(l2_gradient=True)
    with pytest.raises(ValueError, match="must not exceed"):
        Canny(0.3, 0.1)
    with pytest.raises(ValueError, match="must not exceed"):
        Canny(low_threshold=100)(grey)  # 100 / 255 above the default high 0.2
    with pytest.raises(ValueError, match="`max_iterations`"):
        Canny(max_iterations=0)
    with pytest.raises(ValueError, match="`input_dtype`"):
        sobel(input_dtype="bool")
    with pytest.raises(ValueError, match="`channels`"):
        canny(channels=4)
    with pytest.raises(ValueError, match="compat='opencv' takes uint8 grey"):
        canny("opencv", 50, 150, channels=3)


# Graph modes, tf.data, serialization


@pytest.mark.parametrize(
    "layer",
    [
        GradientMagnitude("scharr", return_direction=True),
        LaplacianOfGaussian(1.5),
        Canny(sigma=1.5),
        Canny(30, 90, compat="opencv", l2_gradient=True),
    ],
    ids=["scharr", "log", "canny", "canny_opencv"],
)
def test_tf_function_jit_and_tf_data_agree_with_eager(layer):
    images = skimage.data.coins()[None, :96, :128, None]
    eager = [np.asarray(o) for o in tf.nest.flatten(layer(images))]
    direction = eager[1] if len(eager) == 2 else None
    moving = eager[0] > 1e-3  # directions of a near-zero gradient are ill-posed
    assert layer.supports_jit
    unknown = [tf.TensorSpec((None, None, None, 1), tf.uint8)]  # sizes unknown when traced
    dynamic = tf.function(lambda x: layer(x), input_signature=unknown)
    xla = tf.function(lambda x: layer(x), jit_compile=True)
    data = tf.data.Dataset.from_tensor_slices(images).batch(1).map(lambda x: layer(x))
    for other in (dynamic(images), xla(images), next(iter(data))):
        for a, b in zip(eager, tf.nest.flatten(other), strict=True):
            b = np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape
            if a.dtype == np.int32:  # edge maps: identical (XLA could fuse a multiply-add
                # into an FMA and flip a rare tie in skimage's interpolation; not seen here)
                np.testing.assert_array_equal(a, b)
            elif a is not direction:
                np.testing.assert_allclose(a, b, atol=1e-6)
            else:  # XLA's atan2 is accurate to ~1e-5 rad; directions wrap at +-pi
                error = np.abs(a - b)[moving]
                assert np.minimum(error, 2 * np.pi - error).max() < 2e-5


@pytest.mark.parametrize(
    "builder, kwargs, outputs",
    [
        (sobel, {"return_direction": True}, {"magnitude", "direction"}),
        (scharr, {"channels": 3}, {"magnitude"}),
        (prewitt, {"input_dtype": "float32"}, {"magnitude"}),
        (laplacian_of_gaussian, {"sigma": 2.0}, {"response"}),
        (canny, {"compat": "opencv", "low_threshold": 50, "high_threshold": 150}, {"edges"}),
        (canny, {"sigma": 2.0, "channels": 3}, {"edges"}),
    ],
)
def test_builders_save_and_reload(tmp_path, builder, kwargs, outputs):
    model = builder(**kwargs)
    assert model.inputs[0].name == "images"
    channels = kwargs.get("channels", 1)
    image = skimage.data.astronaut() if channels == 3 else skimage.data.camera()[..., None]
    image = image[None, :64, :80].astype(kwargs.get("input_dtype", "uint8"))
    out = model.predict(image, verbose=0)
    assert set(out) == outputs
    path = tmp_path / "edges.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects: registered by kerasseg
    again = restored.predict(image, verbose=0)
    for name in outputs:
        np.testing.assert_array_equal(again[name], out[name])
    if builder is canny and kwargs.get("compat") == "opencv":
        np.testing.assert_array_equal(out["edges"][0, ..., 0], cv2.Canny(image[0], 50, 150) // 255)
