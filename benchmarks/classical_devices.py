"""Every classical layer under jit on this machine's device vs OpenCV and scikit-image on its CPU.

Usage:
    python benchmarks/classical_devices.py --backend jax [--batch 64] [--repeats 5]
        [--data ../shared/data] [--reference-images 8] [--no-x64] [--only NAME ...]

`--backend` (jax or tensorflow) sets KERAS_BACKEND before Keras is imported; with jax,
TensorFlow is never imported (the script checks at the end), so it runs in a JAX + PyTorch
environment without TensorFlow. JAX runs with JAX_ENABLE_X64=1 unless `--no-x64`: the mean
and Li thresholds, Niblack, Sauvola and mean shift compute in float64 and are exact only
with it (without it mean shift does not run; see tests/test_classical_jax.py).

Inputs: batches of `--batch` ISBI 2012 slices, 512x512, repeating the 30 test slices
(`test/NN.png`) as needed. Connected components label the 25 training label images
(`train/label`, cell interior vs membrane); the seeded watershed floods their interior
blurred with a Gaussian of sigma 1.5 (a U-Net-like probability, as in test_watershed.py);
region growing starts from 16 seeds on a 4x4 grid, tolerance 20 (the lower seed index wins
where regions overlap).

kerasseg: `jax.jit` of the layer call (JAX) or `tf.function(jit_compile=True)` (TensorFlow);
the batch is put on the device first and each timed call ends with the outputs copied back
to numpy. The first call (tracing and compilation) is reported as "compile s" and is not
timed. OpenCV and scikit-image (or the scikit-learn / SciPy function a layer reproduces)
run in a Python loop, one image at a time, on the first `--reference-images` images of the
batch, in the same run. Before timing, each layer's result on those images is compared with
the reference it follows (printed; the same criteria as the tests). Times are medians of
`--repeats` runs after one warm-up (benchmarks/timing.py), in ms per image.
"""

import argparse
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
from timing import median_ms

__all__ = ["main"]

NAMES = (
    "otsu",
    "yen",
    "isodata",
    "triangle",
    "mean_threshold",
    "li",
    "minimum",
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
    "mean_shift",
    "region_growing",
    "connected_components",
    "seeded_watershed",
)
# region growing: 16 seeds on a grid over the 512x512 slice (row, col)
SEEDS = tuple((row, col) for row in range(64, 512, 128) for col in range(64, 512, 128))
TOLERANCE = 20


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow"), required=True)
    parser.add_argument("--batch", type=int, default=64, help="images per jitted call")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument(
        "--reference-images",
        type=int,
        default=8,
        help="images the CPU references loop over (at most --batch)",
    )
    parser.add_argument("--no-x64", action="store_true", help="JAX without 64-bit types")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run these layers only")
    args = parser.parse_args()
    for name in ("batch", "repeats", "reference_images"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            parser.error(f"{option} must be a positive integer; got {getattr(args, name)}.")
    if args.no_x64 and args.backend != "jax":
        parser.error("--no-x64 applies to --backend jax only.")
    return args


# ----------------------------------------------------------------------------- inputs


def load_inputs(data, batch):
    """{kind: (batch, ...) numpy array} for every kind of layer input."""
    import scipy.ndimage as ndi
    import skimage.io

    folder = Path(data) / "isbi2012-membrane"
    images = [skimage.io.imread(p) for p in sorted(folder.glob("test/*.png"))]
    labels = [skimage.io.imread(p) for p in sorted(folder.glob("train/label/*.png"))]
    if len(images) != 30 or len(labels) != 25:
        sys.exit(
            f"--data {data}: expected 30 slices in isbi2012-membrane/test and 25 in "
            f"train/label, found {len(images)} and {len(labels)}; pass the shared data folder."
        )
    images = np.stack([images[i % len(images)] for i in range(batch)])
    labels = np.stack([labels[i % len(labels)] for i in range(batch)])
    interior = [ndi.gaussian_filter((lab == 255).astype(np.float64), 1.5) for lab in labels]
    return {
        "images": images,
        "labels": labels,
        "probability": np.stack(interior).astype(np.float32),
        "seeds": np.tile(np.array([SEEDS], np.int32), (batch, 1, 1)),
    }


# ----------------------------------------------------------------------------- agreement


def _exact(ours, expected):
    ours, expected = np.asarray(ours), np.asarray(expected)
    same = (
        (ours == expected) | (np.isnan(ours) & np.isnan(expected))
        if ours.dtype.kind == "f"
        else (ours == expected)
    )
    return bool(same.all()), f"{same.mean():.6f} equal"


def _within(ours, expected, atol, rtol=0.0):
    error = np.abs(np.asarray(ours, np.float64) - np.asarray(expected, np.float64))
    ok = bool(np.all(error <= atol + rtol * np.abs(expected)))
    return ok, f"max |diff| {np.nanmax(error):.2g} (tolerance {atol:g} + {rtol:g} relative)"


def agree_threshold(ours, expected, images, rtol=0.0):
    """Global thresholds: the values (exact, or to rtol) and the masks image > t."""
    mask, threshold = ours
    expected = np.array(expected, np.float64)
    ok_t, text_t = _within(threshold, expected, 0.0, rtol) if rtol else _exact(threshold, expected)
    ok_m, text_m = _exact(mask[..., 0], images > expected[:, None, None])
    return ok_t and ok_m, f"thresholds {text_t}; masks {text_m}"


def agree_multiotsu(ours, expected, images):
    labels, thresholds = ours
    expected = np.stack(expected)
    digitized = np.stack([np.digitize(i, t) for i, t in zip(images, expected, strict=True)])
    ok_t, text_t = _exact(thresholds, expected)
    ok_l, text_l = _exact(labels[..., 0], digitized)
    return ok_t and ok_l, f"thresholds {text_t}; labels {text_l}"


def agree_mask(ours, expected, images):
    return _exact(np.asarray(ours)[..., 0].astype(bool), np.stack(expected))


def agree_local(ours, expected, images):
    """Niblack / Sauvola: thresholds to 1e-9; masks may differ only at pixels that close."""
    mask, threshold = ours
    expected = np.stack(expected)
    ok, text = _within(threshold[..., 0], expected, 1e-9)
    differ = mask[..., 0].astype(bool) != (images > expected)
    ok = ok and bool(np.all(np.abs(images - expected)[differ] < 1e-9))
    return ok, f"thresholds {text}; masks {1 - differ.mean():.6f} equal"


def agree_float(atol):
    def agree(ours, expected, images):
        return _within(np.asarray(ours)[..., 0], np.stack(expected), atol)

    return agree


def agree_kmeans(ours, expected, images):
    """Inertia within 1 % of scikit-learn's (test_kmeans.py), per image."""
    inertia = np.asarray(ours[2])
    ratio = inertia / np.array(expected)
    return bool(np.all(ratio <= 1.01)), f"inertia / scikit-learn's at most {ratio.max():.4f}"


def agree_mean_shift(ours, expected, images):
    """The number of modes, the modes (1e-5) and >= 95 % of the labels of scikit-learn."""
    labels, modes, count = (np.asarray(o) for o in ours)
    ok, same = True, []
    for i, (centres, reference_labels) in enumerate(expected):
        n = int(count[i])
        ok = ok and n == len(centres) and np.allclose(modes[i, :n], centres, rtol=0, atol=1e-5)
        same.append(np.mean(labels[i].ravel() == reference_labels))
    ok = ok and min(same) >= 0.95
    return ok, f"modes {'equal' if ok else 'differ'}; labels {min(same):.4f} equal (worst image)"


def agree_labels(ours, expected, images):
    labels = np.asarray(ours[0] if isinstance(ours, tuple) else ours)
    ok, text = _exact(labels[..., 0], np.stack(expected))
    return ok, f"{text}; {np.mean(labels > 0):.3f} of pixels labelled"


def agree_watershed(ours, expected, images):
    """>= 99 % of the pixels with scikit-image's label (test_watershed.py; ties differ)."""
    same = np.mean(np.asarray(ours) == np.stack(expected))
    return bool(same >= 0.99), f"{same:.4f} of pixels equal"


# ----------------------------------------------------------------------------- CPU references


def _or_nan(fn, image):
    """scikit-image's threshold, NaN where it has none (as the layers give)."""
    try:
        return fn(image)
    except (ValueError, RuntimeError):
        return np.nan


def _threshold_and_mask(fn):
    def run(image):
        threshold = _or_nan(fn, image)
        _ = image > threshold  # the mask, as the layer returns it
        return threshold

    return run


def _local_and_mask(fn, **kwargs):
    def run(image):
        threshold = fn(image, **kwargs)
        _ = image > threshold
        return threshold

    return run


def _cv2_threshold(flag):
    import cv2

    return lambda image: cv2.threshold(image, 0, 1, cv2.THRESH_BINARY | flag)


def _cv2_gradient(kind):
    """cv2.Sobel / cv2.Scharr x and y + cv2.magnitude on float32, scaled like scikit-image."""
    import cv2

    def run(image):
        x = image.astype(np.float32) / 255
        if kind == "sobel":
            dx = cv2.Sobel(x, cv2.CV_32F, 1, 0, borderType=cv2.BORDER_REFLECT)
            dy = cv2.Sobel(x, cv2.CV_32F, 0, 1, borderType=cv2.BORDER_REFLECT)
            return cv2.magnitude(dx, dy) / (4 * np.sqrt(2))
        dx = cv2.Scharr(x, cv2.CV_32F, 1, 0, borderType=cv2.BORDER_REFLECT)
        dy = cv2.Scharr(x, cv2.CV_32F, 0, 1, borderType=cv2.BORDER_REFLECT)
        return cv2.magnitude(dx, dy) / (16 * np.sqrt(2))

    return run


def _cv2_kmeans(image):
    import cv2

    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 300, 1e-4)
    x = image.reshape(-1, 1).astype(np.float32) / 255
    return cv2.kmeans(x, 3, None, criteria, 1, cv2.KMEANS_PP_CENTERS)[0]


def _sklearn_kmeans(image):
    from sklearn.cluster import KMeans

    return KMeans(3, n_init=1, random_state=0).fit(image.reshape(-1, 1) / 255.0).inertia_


def _sklearn_mean_shift(image):
    from sklearn.cluster import MeanShift

    fit = MeanShift(bandwidth=0.1, bin_seeding=True).fit(image.reshape(-1, 1) / 255.0)
    return fit.cluster_centers_, fit.labels_


def _cv2_flood(image):
    import cv2

    labels = np.zeros(image.shape, np.int32)
    flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    for i, seed in reversed(list(enumerate(SEEDS))):
        mask = np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8)
        cv2.floodFill(image, mask, seed[::-1], 1, TOLERANCE, TOLERANCE, flags)
        labels[mask[1:-1, 1:-1] > 0] = i + 1
    return labels


def _skimage_flood(image):
    from skimage.morphology import flood

    labels = np.zeros(image.shape, np.int32)
    for i, seed in reversed(list(enumerate(SEEDS))):
        labels[flood(image, seed, tolerance=TOLERANCE)] = i + 1
    return labels


def _skimage_watershed(probability):
    from skimage.measure import label
    from skimage.segmentation import watershed

    markers = label(probability > 0.9, connectivity=1)
    return watershed(1 - probability, markers=markers, connectivity=1)


def _cv2_watershed(probability):
    import cv2

    _, markers = cv2.connectedComponents((probability > 0.9).astype(np.uint8), connectivity=4)
    landscape = np.round((1 - probability) * 255).astype(np.uint8)
    return cv2.watershed(cv2.cvtColor(landscape, cv2.COLOR_GRAY2BGR), markers)


# ----------------------------------------------------------------------------- the layers


def _case(layer, agree, opencv=None, python=None, reference="python", inputs=("images",)):
    """One row: the layer, its inputs, its CPU peers (label, per-image fn) and the check."""
    return {
        "layer": layer,
        "inputs": inputs,
        "cpu": {"OpenCV": opencv, "Python": python},
        "reference": "OpenCV" if reference == "opencv" else "Python",
        "agree": agree,
    }


def threshold_cases():
    import cv2
    from skimage import filters

    from kerasseg.classical import threshold as th

    cases = {}
    for name, layer_class, opencv_flag in (
        ("otsu", th.OtsuThreshold, cv2.THRESH_OTSU),
        ("yen", th.YenThreshold, None),
        ("isodata", th.IsodataThreshold, None),
        ("triangle", th.TriangleThreshold, cv2.THRESH_TRIANGLE),
        ("mean_threshold", th.MeanThreshold, None),
        ("li", th.LiThreshold, None),
        ("minimum", th.MinimumThreshold, None),
    ):
        function = "threshold_" + name.removesuffix("_threshold")
        opencv = None
        if opencv_flag is not None:
            flag = "THRESH_OTSU" if name == "otsu" else "THRESH_TRIANGLE"
            opencv = (f"cv2.threshold({flag})", _cv2_threshold(opencv_flag))
        python = (f"skimage {function}", _threshold_and_mask(getattr(filters, function)))

        def agree(ours, expected, images, rtol=1e-12 if name == "li" else 0.0):
            return agree_threshold(ours, expected, images, rtol)

        cases[name] = _case(layer_class(return_threshold=True), agree, opencv, python)

    def multiotsu(image):
        thresholds = filters.threshold_multiotsu(image, classes=3)
        _ = np.digitize(image, bins=thresholds)
        return thresholds

    cases["multiotsu"] = _case(
        th.MultiOtsuThreshold(classes=3, return_threshold=True),
        agree_multiotsu,
        python=("skimage threshold_multiotsu", multiotsu),
    )
    return cases


def local_cases():
    import cv2
    from skimage import filters

    from kerasseg.classical.local_threshold import (
        AdaptiveThreshold,
        NiblackThreshold,
        SauvolaThreshold,
    )

    cases = {}
    for method, flag in (
        ("mean", cv2.ADAPTIVE_THRESH_MEAN_C),
        ("gaussian", cv2.ADAPTIVE_THRESH_GAUSSIAN_C),
    ):
        cases[f"adaptive_{method}"] = _case(
            AdaptiveThreshold(15, 2, method),
            agree_mask,
            opencv=(
                f"cv2.adaptiveThreshold({method.upper()}_C, 15, 2)",
                lambda image, flag=flag: (
                    cv2.adaptiveThreshold(image, 255, flag, cv2.THRESH_BINARY, 15, 2) > 0
                ),
            ),
            python=(
                f"skimage threshold_local('{method}', 15, offset=2)",
                _local_and_mask(filters.threshold_local, block_size=15, method=method, offset=2),
            ),
            reference="opencv",
        )
    for name, layer_class in (("niblack", NiblackThreshold), ("sauvola", SauvolaThreshold)):
        function = getattr(filters, f"threshold_{name}")
        cases[name] = _case(
            layer_class(window_size=15, k=0.2, return_threshold=True),
            agree_local,
            python=(
                f"skimage threshold_{name}(15, 0.2)",
                _local_and_mask(function, window_size=15),
            ),
        )
    return cases


def edge_cases():
    import cv2
    import scipy.ndimage as ndi
    import skimage.filters
    from skimage.feature import canny
    from skimage.util import img_as_float

    from kerasseg.classical.edges import Canny, GradientMagnitude, LaplacianOfGaussian

    cases = {}
    for kernel in ("sobel", "scharr", "prewitt"):
        opencv = (
            None
            if kernel == "prewitt"
            else (f"cv2.{kernel.title()} x, y + magnitude", _cv2_gradient(kernel))
        )
        cases[kernel] = _case(
            GradientMagnitude(kernel),
            agree_float(1e-6),
            opencv,
            (f"skimage filters.{kernel}", getattr(skimage.filters, kernel)),
        )

    def opencv_log(image):
        blurred = cv2.GaussianBlur(image.astype(np.float32) / 255, (0, 0), 2.0)
        return cv2.Laplacian(blurred, cv2.CV_32F)

    cases["laplacian_of_gaussian"] = _case(
        LaplacianOfGaussian(2.0),
        agree_float(1e-6),
        ("cv2.GaussianBlur(2) + cv2.Laplacian", opencv_log),
        ("scipy gaussian_laplace(2)", lambda image: ndi.gaussian_laplace(img_as_float(image), 2.0)),
    )
    opencv_canny = ("cv2.Canny(50, 150)", lambda image: cv2.Canny(image, 50, 150) // 255)
    skimage_canny = ("skimage canny(sigma=1)", lambda image: canny(image, sigma=1.0))
    cases["canny_skimage"] = _case(Canny(sigma=1.0), agree_mask, opencv_canny, skimage_canny)
    cases["canny_opencv"] = _case(
        Canny(50, 150, compat="opencv"), agree_mask, opencv_canny, skimage_canny, "opencv"
    )
    return cases


def other_cases():
    import cv2
    from skimage.measure import label

    from kerasseg.classical.kmeans import KMeansSegmentation
    from kerasseg.classical.meanshift import MeanShiftSegmentation
    from kerasseg.classical.region import ConnectedComponents, RegionGrowing
    from kerasseg.classical.watershed import SeededWatershed

    return {
        "kmeans": _case(
            KMeansSegmentation(k=3, n_init=1, return_inertia=True),
            agree_kmeans,
            ("cv2.kmeans(3, KMEANS_PP_CENTERS)", _cv2_kmeans),
            ("sklearn KMeans(3, n_init=1)", _sklearn_kmeans),
        ),
        "mean_shift": _case(
            MeanShiftSegmentation(bandwidth=0.1, max_seeds=16),  # grey: at most 11 bins
            agree_mean_shift,
            python=("sklearn MeanShift(0.1, bin_seeding=True)", _sklearn_mean_shift),
        ),
        "region_growing": _case(
            RegionGrowing(tolerance=TOLERANCE),
            agree_labels,
            ("cv2.floodFill(FIXED_RANGE, 8)", _cv2_flood),
            (f"skimage flood(tolerance={TOLERANCE})", _skimage_flood),
            inputs=("images", "seeds"),
        ),
        "connected_components": _case(
            ConnectedComponents(connectivity=1),
            agree_labels,
            (
                "cv2.connectedComponents(4)",
                lambda mask: cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=4)[
                    1
                ],
            ),
            ("skimage label(connectivity=1)", lambda mask: label(mask, connectivity=1)),
            inputs=("labels",),
        ),
        "seeded_watershed": _case(
            SeededWatershed(seed_threshold=0.9),
            agree_watershed,
            ("cv2.watershed (8-bit landscape)", _cv2_watershed),
            ("skimage watershed(connectivity=1)", _skimage_watershed),
            inputs=("probability",),
        ),
    }


# ----------------------------------------------------------------------------- running


class Device:
    """The backend's jit, where its inputs live, and what it runs on."""

    def __init__(self, backend):
        self.backend = backend
        if backend == "jax":
            import jax

            self._jax = jax
            x64 = jax.config.read("jax_enable_x64")
            self.description = (
                f"JAX {jax.__version__}, default backend {jax.default_backend()}, devices "
                f"{jax.devices()}, x64 {'on' if x64 else 'off'}"
            )
        else:
            import tensorflow as tf

            self._tf = tf
            gpus = tf.config.list_physical_devices("GPU")
            self.description = (
                f"TensorFlow {tf.__version__}, devices {tf.config.list_physical_devices()}"
                + ("" if gpus else " (no GPU: XLA on the CPU)")
            )

    def put(self, arrays):
        if self.backend == "jax":
            return [self._jax.device_put(a) for a in arrays]
        return [self._tf.identity(self._tf.constant(a)) for a in arrays]

    def compile(self, layer):
        """A function of the device arrays that returns the layer's outputs as numpy."""
        if self.backend == "jax":
            jitted = self._jax.jit(lambda *args: layer(*args))
            return lambda arrays: self._jax.tree_util.tree_map(np.asarray, jitted(*arrays))
        tf = self._tf
        jitted = tf.function(lambda *args: layer(*args), jit_compile=True)
        return lambda arrays: tf.nest.map_structure(lambda t: t.numpy(), jitted(*arrays))


def _head(outputs, n):
    if isinstance(outputs, (tuple, list)):
        return tuple(np.asarray(o)[:n] for o in outputs)
    return np.asarray(outputs)[:n]


def run_case(name, case, inputs, device, args):
    """{column: value} of one layer: its agreement (printed) and its timings."""
    import time

    arrays = [inputs[kind] for kind in case["inputs"]]
    subset = arrays[0][: min(args.reference_images, args.batch)]
    # the layers take (batch, H, W, 1) images; seeds are (batch, num_seeds, 2)
    on_device = device.put(
        [
            a if kind == "seeds" else a[..., None]
            for kind, a in zip(case["inputs"], arrays, strict=True)
        ]
    )
    run = device.compile(case["layer"])
    start = time.perf_counter()
    ours = run(on_device)  # traces and compiles
    compile_s = time.perf_counter() - start
    label, reference = case["cpu"][case["reference"]]
    expected = [reference(image) for image in subset]
    ok, text = case["agree"](_head(ours, len(subset)), expected, subset)
    verdict = "agrees with" if ok else "DIFFERS from"
    print(f"{name}: {verdict} {label} on {len(subset)} images: {text}", flush=True)
    row = {
        "ms": median_ms(lambda: run(on_device), args.repeats) / args.batch,
        "compile_s": compile_s,
        "agrees": "yes" if ok else "**no**",
    }
    for library, peer in case["cpu"].items():
        if peer is not None:
            fn = peer[1]
            total = median_ms(lambda fn=fn: [fn(image) for image in subset], args.repeats)
            row[library] = total / len(subset)
    return row


def print_table(rows, cases, device, args):
    mode = "jax.jit" if args.backend == "jax" else "tf.function(jit_compile=True)"
    print(f"\nkerasseg: {mode} on {device.description}; batch {args.batch}, 512x512.")
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; references"
        f" loop over {min(args.reference_images, args.batch)} images. ms / image, medians of"
        f" {args.repeats}. * = the reference the layer reproduces.\n"
    )
    print(
        "| layer | kerasseg ms/image | images/s | compile s | OpenCV ms/image "
        "| scikit-image / -learn, SciPy ms/image | vs fastest CPU | agrees |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        if "error" in row:
            print(f"| {name} | fails: {row['error']} | | | | | | |")
            continue
        cells = []
        for library in ("OpenCV", "Python"):
            star = "*" if cases[name]["reference"] == library else ""
            cells.append(f"{row[library]:.2f}{star}" if library in row else "-")
        fastest = min(row.get("OpenCV", np.inf), row.get("Python", np.inf))
        print(
            f"| {name} | {row['ms']:.2f} | {1000 / row['ms']:.0f} | {row['compile_s']:.1f} | "
            f"{cells[0]} | {cells[1]} | {fastest / row['ms']:.3g}x | {row['agrees']} |"
        )
    print("\nCPU functions:")
    for name, case in cases.items():
        peers = [f"{lib}: {peer[0]}" for lib, peer in case["cpu"].items() if peer is not None]
        print(f"- {name}: " + "; ".join(peers))


def _error_line(error):
    """The exception's own message in one line (Keras wraps it in layer-call context)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception encountered")] or [""]
    return f"{type(error).__name__}: {lines[0][:200]}"


def main():
    args = parse_args()
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
    if args.backend == "jax":
        os.environ["JAX_ENABLE_X64"] = "0" if args.no_x64 else "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    device = Device(args.backend)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}; {device.description}")
    inputs = load_inputs(args.data, args.batch)
    cases = {**threshold_cases(), **local_cases(), **edge_cases(), **other_cases()}
    cases = {name: cases[name] for name in (args.only or NAMES)}
    rows = {}
    for name, case in cases.items():
        try:
            rows[name] = run_case(name, case, inputs, device, args)
        except Exception as error:  # a layer that fails on this backend: say so, go on
            rows[name] = {"error": _error_line(error)}
            print(f"{name}: fails: {rows[name]['error']}", flush=True)
    print_table(rows, cases, device, args)
    if args.backend == "jax":
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        print(f"\ntensorflow imported: {'yes, ' + loaded[0] if loaded else 'no'}")


if __name__ == "__main__":
    main()
