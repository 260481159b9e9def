"""Every classical layer on Keras's JAX backend, under `jax.jit`, against the references.

The layers are written with `keras.ops` only, so they must give on JAX what they give on
TensorFlow: the same comparisons with scikit-image, OpenCV and scikit-learn as
test_threshold.py, test_local_threshold.py, test_edges.py, test_kmeans.py,
test_meanshift.py, test_region.py and test_watershed.py, with their tolerances, on two
60x70 crops (batch 2) of ISBI 2012 slice 00 and its label image.

The backend is chosen before Keras is imported, so the checks run in subprocesses: this file
run as a script (`python tests/test_classical_jax.py DATA NAME ...`) runs the named checks
and prints one JSON line {name: {"ok", "detail", "seconds"}}. Two subprocesses run side by
side: the checks in `X64` with `JAX_ENABLE_X64=1` (without it JAX turns every float64 into
float32, and these layers' float64 thresholds and statistics lose the exactness their
references have), all others without it, as most JAX users run.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

THRESHOLDS = ("otsu", "yen", "isodata", "triangle", "mean", "li", "minimum")
CHECKS = (
    *(f"threshold_{name}" for name in THRESHOLDS),
    "multiotsu",
    "adaptive_mean",
    "adaptive_gaussian",
    "niblack",
    "sauvola",
    "sobel",
    "scharr",
    "prewitt",
    "laplacian_of_gaussian",
    "canny_skimage",
    "canny_opencv",
    "kmeans",
    "meanshift",
    "region_growing",
    "connected_components",
    "seeded_watershed",
)
# The checks that need float64 (JAX_ENABLE_X64=1): without it these layers' float64
# statistics become float32 and their thresholds move off the references' (the mean
# threshold by a float32 rounding, 3e-6; Li's by 6e-5; Niblack's and Sauvola's by 3e-5), and
# mean shift does not run at all (below). Every other layer is exact on JAX without x64.
X64 = frozenset({"threshold_mean", "threshold_li", "niblack", "sauvola", "meanshift"})
# Without x64, MeanShiftSegmentation's int64 cell keys would become int32 and its float64
# modes float32 (a mode moves by 0.06 from scikit-learn's): the layer refuses to run and says
# to set JAX_ENABLE_X64; the check passes on that error (or on scikit-learn's result).
WITHOUT_X64 = ("meanshift_without_x64",)
CORNERS = ((0, 0), (200, 300))  # the top-left corners of the two crops of slice 00
SIZE = (60, 70)  # rows, columns: not powers of two, not square


# ----------------------------------------------------------------------------- the test side


@pytest.fixture(scope="module")
def report(data_dir):
    """The merged JSON reports of the two subprocesses (with and without x64)."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install 'jax[cpu]', part of the test extra)")
    jobs = []
    for x64 in (False, True):
        names = [name for name in CHECKS if (name in X64) == x64]
        names += [] if x64 else list(WITHOUT_X64)
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1" if x64 else "0")
        env["JAX_PLATFORMS"] = "cpu"
        command = [sys.executable, __file__, str(data_dir), *names]
        jobs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    merged = {}
    for job in jobs:
        try:
            stdout, stderr = job.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in jobs:
                other.kill()
            raise
        assert job.returncode == 0, stderr.decode()[-3000:]
        merged.update(json.loads(stdout.decode().strip().splitlines()[-1]))
    return merged


def test_every_check_ran(report):
    assert sorted(report) == sorted(CHECKS + WITHOUT_X64)


@pytest.mark.parametrize("name", CHECKS)
def test_layer_under_jax_jit_matches_its_reference(report, name):
    result = report[name]
    assert result["ok"], f"{name}: {result['detail']}"


def test_mean_shift_without_x64_says_it_needs_x64(report):
    result = report["meanshift_without_x64"]
    assert result["ok"], result["detail"]


# ----------------------------------------------------------------------------- the worker side
# Everything below runs in the subprocess, with KERAS_BACKEND=jax set before keras is imported.


def _load(data_dir):
    """Two crops of slice 00 (uint8 image, label) as (2, 64, 64) arrays."""
    import skimage.io

    folder = Path(data_dir) / "isbi2012-membrane" / "train"
    image = skimage.io.imread(folder / "image" / "00.png")
    label = skimage.io.imread(folder / "label" / "00.png")
    images = np.stack([image[r : r + SIZE[0], c : c + SIZE[1]] for r, c in CORNERS])
    labels = np.stack([label[r : r + SIZE[0], c : c + SIZE[1]] for r, c in CORNERS])
    return images, labels


def _jit(layer):
    import jax

    return jax.jit(lambda *args: layer(*args))


def _numpy(outputs):
    if isinstance(outputs, (tuple, list)):
        return tuple(np.asarray(o) for o in outputs)
    return np.asarray(outputs)


def _equal(got, expected, what):
    """'' or a line saying how `got` differs from `expected` (exact comparison)."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return f"{what}: shape {got.shape}, expected {expected.shape}"
    same = (
        (got == expected) | (np.isnan(got) & np.isnan(expected))
        if got.dtype.kind == "f"
        else (got == expected)
    )
    if same.all():
        return ""
    first = tuple(int(i) for i in np.argwhere(~same)[0])
    return (
        f"{what}: {int((~same).sum())} of {same.size} differ, first at {first}: "
        f"{got[first]!r} vs {expected[first]!r} (dtype {got.dtype})"
    )


def _close(got, expected, what, atol, rtol=0.0):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return f"{what}: shape {got.shape}, expected {expected.shape}"
    error = np.abs(got - expected)
    bound = atol + rtol * np.abs(expected)
    if np.all(error <= bound):
        return ""
    return f"{what}: max |diff| {error.max():.3g} > atol {atol:g} + rtol {rtol:g}"


def _threshold(name, images, _labels):
    from skimage import filters

    from kerasseg.classical import threshold as th

    layer_class = {
        "otsu": th.OtsuThreshold,
        "yen": th.YenThreshold,
        "isodata": th.IsodataThreshold,
        "triangle": th.TriangleThreshold,
        "mean": th.MeanThreshold,  # numpy's exact float64 mean
        "li": th.LiThreshold,  # a float64 iteration
        "minimum": th.MinimumThreshold,  # float64 smoothing of the histogram
    }[name]
    reference = getattr(filters, f"threshold_{name}")
    mask, threshold = _numpy(_jit(layer_class(return_threshold=True))(images[..., None]))
    expected = []
    for image in images:
        try:
            expected.append(reference(image))
        except (ValueError, RuntimeError):  # no threshold: the layer gives NaN
            expected.append(np.nan)
    expected = np.array(expected, np.float64)
    if name == "li":
        problem = _close(threshold, expected, "threshold", 0.0, 1e-12)
    else:
        problem = _equal(threshold, expected, "threshold")
    return problem or _equal(mask[..., 0], images > expected[:, None, None], "mask")


def _multiotsu(images, _labels):
    from skimage import filters

    from kerasseg.classical.threshold import MultiOtsuThreshold

    labels, thresholds = _numpy(
        _jit(MultiOtsuThreshold(classes=3, return_threshold=True))(images[..., None])
    )
    for i, image in enumerate(images):
        expected = filters.threshold_multiotsu(image, classes=3)
        problem = _equal(thresholds[i], expected, f"thresholds {i}") or _equal(
            labels[i, ..., 0], np.digitize(image, bins=expected), f"labels {i}"
        )
        if problem:
            return problem
    return ""


def _adaptive(method, images, _labels):
    import cv2

    from kerasseg.classical.local_threshold import AdaptiveThreshold

    kind = {"mean": cv2.ADAPTIVE_THRESH_MEAN_C, "gaussian": cv2.ADAPTIVE_THRESH_GAUSSIAN_C}
    # block 17 (289 pixels): OpenCV's float32 rounding of the box mean
    for block_size, c, inverse in ((15, 2, False), (17, -3.5, True)):
        layer = AdaptiveThreshold(block_size, c, method, inverse)
        masks = _numpy(_jit(layer)(images[..., None]))[..., 0].astype(bool)
        for i, image in enumerate(images):
            flag = cv2.THRESH_BINARY_INV if inverse else cv2.THRESH_BINARY
            expected = cv2.adaptiveThreshold(image, 255, kind[method], flag, block_size, c) > 0
            problem = _equal(masks[i], expected, f"block {block_size}, image {i}")
            if problem:
                return problem
    return ""


def _niblack_sauvola(name, images, _labels):
    from skimage.filters import threshold_niblack, threshold_sauvola

    from kerasseg.classical.local_threshold import NiblackThreshold, SauvolaThreshold

    layer_class, reference = {
        "niblack": (NiblackThreshold, threshold_niblack),
        "sauvola": (SauvolaThreshold, threshold_sauvola),
    }[name]
    mask, threshold = _numpy(
        _jit(layer_class(window_size=15, k=0.2, return_threshold=True))(images[..., None])
    )
    expected = np.stack([reference(image, window_size=15, k=0.2) for image in images])
    problem = _close(threshold[..., 0], expected, "threshold", 1e-9)
    # XLA may contract multiply-adds into FMAs (test_local_threshold.py): masks may differ
    # only where the pixel equals the threshold to 1e-9.
    differ = mask[..., 0].astype(bool) != (images > expected)
    if not problem and not np.all(np.abs(images - expected)[differ] < 1e-9):
        problem = f"mask differs at {int(differ.sum())} pixels away from the threshold"
    return problem


def _gradient(kernel, images, _labels):
    import skimage.filters

    from kerasseg.classical.edges import GradientMagnitude

    magnitude, direction = _numpy(
        _jit(GradientMagnitude(kernel, return_direction=True))(images[..., None])
    )
    reference = getattr(skimage.filters, kernel)
    expected = np.stack([reference(image) for image in images])
    problem = _close(magnitude[..., 0], expected, "magnitude", 1e-6)
    if problem:
        return problem
    angle = np.stack([np.arctan2(reference(i, axis=0), reference(i, axis=1)) for i in images])
    moving = magnitude[..., 0] > 1e-3  # the angle of a near-zero gradient is ill-posed
    error = np.abs(direction[..., 0] - angle)[moving]
    if np.minimum(error, 2 * np.pi - error).max() >= 2e-5:  # XLA's atan2: ~1e-5 rad
        return f"direction: max error {np.minimum(error, 2 * np.pi - error).max():.3g} rad"
    return ""


def _log(images, _labels):
    import scipy.ndimage as ndi
    from skimage.util import img_as_float

    from kerasseg.classical.edges import LaplacianOfGaussian

    out = _numpy(_jit(LaplacianOfGaussian(2.0))(images[..., None]))
    expected = np.stack([ndi.gaussian_laplace(img_as_float(i), 2.0) for i in images])
    return _close(out[..., 0], expected, "response", 1e-6)


def _canny_skimage(images, _labels):
    from skimage.feature import canny

    from kerasseg.classical.edges import Canny

    for sigma in (1.0, 2.0):
        out = _numpy(_jit(Canny(sigma=sigma))(images[..., None]))
        expected = np.stack([canny(image, sigma=sigma) for image in images])
        problem = _equal(out[..., 0], expected, f"edges, sigma {sigma}")
        if problem:
            return problem
    return ""


def _canny_opencv(images, _labels):
    import cv2

    from kerasseg.classical.edges import Canny

    for low, high, l2 in ((50, 150, False), (20.5, 60.7, True)):
        out = _numpy(_jit(Canny(low, high, compat="opencv", l2_gradient=l2))(images[..., None]))
        expected = np.stack([cv2.Canny(i, low, high, L2gradient=l2) // 255 for i in images])
        problem = _equal(out[..., 0], expected, f"edges {low}/{high} L2={l2}")
        if problem:
            return problem
    return ""


def _kmeans(images, _labels):
    from sklearn.cluster import KMeans

    from kerasseg.classical.kmeans import KMeansSegmentation

    layer = KMeansSegmentation(k=3, n_init=2, return_inertia=True)
    labels, centres, inertia = _numpy(_jit(layer)(images[..., None]))
    for i, image in enumerate(images):
        x = image.reshape(-1, 1) / 255.0
        expected = KMeans(3, n_init=2, random_state=0).fit(x).inertia_
        if not inertia[i] <= 1.01 * expected:  # test_kmeans.py: within 1 % of scikit-learn
            return f"inertia {inertia[i]:.6g} > 1.01 x scikit-learn's {expected:.6g}"
        distance = (x - centres[i].reshape(1, -1)) ** 2
        if np.mean(distance.argmin(1) == labels[i].ravel()) <= 0.999:
            return f"image {i}: labels are not the nearest centres"
        if abs(inertia[i] - distance.min(1).sum()) > 1e-4 * distance.min(1).sum():
            return f"image {i}: inertia is not the sum of squared distances"
    return ""


def _meanshift(images, _labels):
    from sklearn.cluster import MeanShift
    from sklearn.metrics import adjusted_rand_score

    from kerasseg.classical.meanshift import MeanShiftSegmentation

    labels, modes, count = _numpy(_jit(MeanShiftSegmentation(bandwidth=0.1))(images[..., None]))
    for i, image in enumerate(images):
        x = image.reshape(-1, 1) / 255.0
        reference = MeanShift(bandwidth=0.1, bin_seeding=True).fit(x)
        centres, n = reference.cluster_centers_, int(count[i])
        if n != len(centres):
            return f"image {i}: {n} modes, scikit-learn {len(centres)}"
        ours = labels[i].ravel()
        if adjusted_rand_score(reference.labels_, ours) < 0.9:
            return f"image {i}: adjusted Rand {adjusted_rand_score(reference.labels_, ours):.3f}"
        problem = _close(modes[i, :n], centres, f"modes {i}", 1e-5)
        if problem or np.mean(reference.labels_ == ours) < 0.95:
            return problem or f"image {i}: fewer than 95 % of the labels equal scikit-learn's"
    return ""


def _meanshift_without_x64(images, labels):
    """Without x64: scikit-learn's result, or an error that says to enable x64."""
    try:
        return _meanshift(images, labels)
    except Exception as error:
        if "JAX_ENABLE_X64" in str(error):
            return ""
        raise


def _region_growing(images, _labels):
    from skimage.morphology import flood

    from kerasseg.classical.region import RegionGrowing

    seeds = np.array([[[32, 32], [5, 60]], [[32, 32], [-1, -1]]], np.int32)  # -1: padding
    for connectivity in (1, 2):
        layer = RegionGrowing(tolerance=20, connectivity=connectivity, return_converged=True)
        labels, converged = _numpy(_jit(layer)(images[..., None], seeds))
        if not converged.all():
            return "not converged"
        for i, image in enumerate(images):
            expected = np.zeros(image.shape, np.int32)  # the smallest seed index wins
            for j, seed in reversed(list(enumerate(seeds[i]))):
                if seed[0] >= 0:
                    region = flood(image, tuple(seed), tolerance=20, connectivity=connectivity)
                    expected[region] = j + 1
            problem = _equal(labels[i, ..., 0], expected, f"connectivity {connectivity}, {i}")
            if problem:
                return problem
    return ""


def _connected_components(_images, labels):
    from skimage.measure import label

    from kerasseg.classical.region import ConnectedComponents

    for connectivity in (1, 2):
        layer = ConnectedComponents(connectivity=connectivity, return_num=True)
        got, num = _numpy(_jit(layer)(labels[..., None]))
        expected = np.stack([label(m, connectivity=connectivity) for m in labels])
        problem = _equal(got[..., 0], expected, f"labels, connectivity {connectivity}") or (
            _equal(num, expected.max(axis=(1, 2)), "num")
        )
        if problem:
            return problem
    return ""


def _seeded_watershed(_images, labels):
    import scipy.ndimage as ndi
    from skimage.measure import label
    from skimage.metrics import adapted_rand_error
    from skimage.segmentation import watershed

    from kerasseg.classical.watershed import SeededWatershed

    # test_watershed.py: a U-Net-like probability, the true interior blurred
    interior = (labels == 255).astype(np.float64)
    probability = np.stack([ndi.gaussian_filter(i, 1.5) for i in interior]).astype(np.float32)
    got = _numpy(_jit(SeededWatershed(seed_threshold=0.9))(probability[..., None]))
    for i, p in enumerate(probability):
        markers = label(p > 0.9, connectivity=1)
        expected = watershed(1 - p, markers=markers, connectivity=1)
        seeded = markers > 0
        problem = _equal(got[i][seeded], markers[seeded], f"seed labels {i}")
        if problem:
            return problem
        if markers.max() < 3 or np.mean(got[i] == expected) < 0.99:  # ties may differ
            return f"image {i}: {np.mean(got[i] == expected):.4f} of pixels agree"
        if 1 - adapted_rand_error(expected, got[i])[0] < 0.98:
            return f"image {i}: adapted Rand F below 0.98"
    return ""


def _check_functions():
    import functools

    functions = {f"threshold_{n}": functools.partial(_threshold, n) for n in THRESHOLDS}
    functions.update(
        multiotsu=_multiotsu,
        adaptive_mean=functools.partial(_adaptive, "mean"),
        adaptive_gaussian=functools.partial(_adaptive, "gaussian"),
        niblack=functools.partial(_niblack_sauvola, "niblack"),
        sauvola=functools.partial(_niblack_sauvola, "sauvola"),
        sobel=functools.partial(_gradient, "sobel"),
        scharr=functools.partial(_gradient, "scharr"),
        prewitt=functools.partial(_gradient, "prewitt"),
        laplacian_of_gaussian=_log,
        canny_skimage=_canny_skimage,
        canny_opencv=_canny_opencv,
        kmeans=_kmeans,
        meanshift=_meanshift,
        meanshift_without_x64=_meanshift_without_x64,
        region_growing=_region_growing,
        connected_components=_connected_components,
        seeded_watershed=_seeded_watershed,
    )
    return functions


def _main(data_dir, names):
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    images, labels = _load(data_dir)
    functions = _check_functions()
    report = {}
    for name in names:
        start = time.perf_counter()
        try:
            problem = functions[name](images, labels)
        except Exception as error:  # a layer that does not run on JAX: say where
            lines = traceback.format_exception(error)
            problem = f"{type(error).__name__}: {error} | " + " ".join(lines[-6:])[-1500:]
        report[name] = {
            "ok": not problem,
            "detail": problem,
            "seconds": round(time.perf_counter() - start, 2),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
