"""Edge detection speed: kerasseg's layers vs scikit-image and OpenCV on the same images.

Usage: python benchmarks/edges.py [--data ../shared/data] [--repeats 5] [--images 55]
Images: the ISBI 2012 membrane slices (512x512 uint8 grey; 25 train + 30 test), as one
batch. Reports the median of `repeats` runs after one warm-up (which also traces and
compiles), in ms per image, and the ratios to OpenCV and scikit-image (same run). Before
timing, it checks that each method gives the reference's result on these images (max abs
difference or differing pixels), so the table compares like with like:

* Sobel: `GradientMagnitude("sobel")` == `skimage.filters.sobel`; the OpenCV anchor is
  `cv2.Sobel` (float32, BORDER_REFLECT) x and y + `cv2.magnitude`, scaled like skimage.
* Canny (OpenCV semantics): `Canny(50, 150, compat="opencv")` == `cv2.Canny(img, 50, 150)`.
* Canny (scikit-image semantics): `Canny(sigma=1)` == `skimage.feature.canny(img, 1)`.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from skimage.feature import canny as skimage_canny
from skimage.filters import sobel as skimage_sobel
from timing import median_ms

from kerasseg.classical.edges import Canny, GradientMagnitude


def cv2_sobel(image):
    image = image.astype(np.float32) / 255
    dx = cv2.Sobel(image, cv2.CV_32F, 1, 0, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(image, cv2.CV_32F, 0, 1, borderType=cv2.BORDER_REFLECT)
    return cv2.magnitude(dx, dy) / (4 * np.sqrt(2))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=55)
    args = parser.parse_args()
    folder = Path(args.data) / "isbi2012-membrane"
    paths = sorted(folder.glob("train/image/*.png")) + sorted(folder.glob("test/*.png"))
    images = np.stack([skimage.io.imread(p) for p in paths[: args.images]])
    tensor = tf.constant(images[..., None])
    n = len(images)

    def loop(fn):
        return lambda: [fn(image) for image in images]

    def variants(layer):
        graph = tf.function(lambda x: layer(x))
        xla = tf.function(lambda x: layer(x), jit_compile=True)
        return {
            "eager": lambda: layer(tensor).numpy(),
            "tf.function": lambda: graph(tensor).numpy(),
            "tf.function(jit_compile=True)": lambda: xla(tensor).numpy(),
        }

    sobel_layer = GradientMagnitude("sobel")
    opencv_canny = Canny(50, 150, compat="opencv")
    skimage_compat = Canny(sigma=1.0)
    sobel_ref = np.stack([skimage_sobel(i) for i in images])
    canny_cv2_ref = np.stack([cv2.Canny(i, 50, 150) > 0 for i in images])
    canny_sk_ref = np.stack([skimage_canny(i, sigma=1.0) for i in images])
    print(f"{n} images {images.shape[1]}x{images.shape[2]} uint8, median of {args.repeats}")
    print(
        "agreement: Sobel max |ours - skimage| =",
        f"{np.abs(sobel_layer(tensor).numpy()[..., 0] - sobel_ref).max():.2e};",
        "|cv2 anchor - skimage| =",
        f"{np.abs(np.stack([cv2_sobel(i) for i in images]) - sobel_ref).max():.2e};",
        "Canny(opencv) differing pixels =",
        int((opencv_canny(tensor).numpy()[..., 0].astype(bool) != canny_cv2_ref).sum()),
        "; Canny(skimage) differing pixels =",
        int((skimage_compat(tensor).numpy()[..., 0].astype(bool) != canny_sk_ref).sum()),
    )
    groups = {
        "Sobel magnitude": (
            {
                "OpenCV cv2.Sobel x2 + cv2.magnitude, loop": loop(cv2_sobel),
                "scikit-image filters.sobel, loop": loop(skimage_sobel),
            },
            sobel_layer,
            'GradientMagnitude("sobel")',
        ),
        "Canny, OpenCV semantics (50, 150)": (
            {"OpenCV cv2.Canny, loop": loop(lambda i: cv2.Canny(i, 50, 150))},
            opencv_canny,
            'Canny(50, 150, compat="opencv")',
        ),
        "Canny, scikit-image semantics (sigma 1)": (
            {
                "OpenCV cv2.Canny, loop": loop(lambda i: cv2.Canny(i, 50, 150)),
                "scikit-image feature.canny, loop": loop(lambda i: skimage_canny(i, 1.0)),
            },
            skimage_compat,
            "Canny(sigma=1.0)",
        ),
    }
    print("| method | implementation | ms / image | vs OpenCV | vs scikit-image |")
    print("|---|---|---|---|---|")
    for group, (anchors, layer, name) in groups.items():
        runs = dict(anchors)
        runs.update({f"kerasseg {name}, {k}": fn for k, fn in variants(layer).items()})
        results = {k: median_ms(fn, args.repeats) / n for k, fn in runs.items()}
        opencv = next(ms for k, ms in results.items() if k.startswith("OpenCV"))
        sk = next((ms for k, ms in results.items() if k.startswith("scikit-image")), None)
        for key, ms in results.items():
            versus_sk = f"{ms / sk:.2f}x" if sk else "-"
            print(f"| {group} | {key} | {ms:.3f} | {ms / opencv:.2f}x | {versus_sk} |")


if __name__ == "__main__":
    main()
