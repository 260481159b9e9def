"""Region growing (flood fill) and connected-component labelling speed: kerasseg's layers vs
scikit-image and OpenCV on the same images.

Usage: python benchmarks/region.py [--data ../shared/data] [--repeats 7]

Flood fill: ISBI 2012 membrane slice 00 (512x512 uint8), seed (256, 256), tolerance 20,
8-connected (region of 21452 pixels, 392 growth steps), one image per call, and the same
seed in a batch of the 25 training slices. OpenCV's equivalent is `cv2.floodFill` with
FLOODFILL_FIXED_RANGE | FLOODFILL_MASK_ONLY | 8 (identical region).
Connected components: the 25 ISBI training label images (255 = cell interior, given as 0/1
uint8), 4- and 8-connected, as one batch; OpenCV `cv2.connectedComponents` numbers
components differently (same count). Medians of `repeats` runs after one warm-up (and XLA
compilation), in ms per image. Each table also gives the passes over the image kerasseg's
loop made (label-equivalence iterations).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from skimage.measure import label
from skimage.morphology import flood
from timing import interleaved

from kerasseg.classical.region import ConnectedComponents, RegionGrowing
from kerasseg.ops.labelling import component_roots, label_components


def table(title, runs, repeats, reference, peer):
    """Times `runs` ({name: (fn, images per call)}) round-robin and prints ms per image and
    the ratios to the `reference` (OpenCV) and `peer` (scikit-image) rows."""
    timed = interleaved({name: fn for name, (fn, _) in runs.items()}, repeats, warmups=1)
    per_image = {name: timed[name][0] / n for name, (_, n) in runs.items()}
    print(f"\n{title}\n| implementation | ms / image | vs OpenCV | vs scikit-image |")
    print("|---|---|---|---|")
    for name, value in per_image.items():
        print(
            f"| {name} | {value:.2f} | {value / per_image[reference]:.2f}x "
            f"| {value / per_image[peer]:.2f}x |"
        )


def flood_benchmark(images, repeats):
    image = images[0]
    seed = (256, 256)
    area = int(flood(image, seed, tolerance=20).sum())
    layer = RegionGrowing(tolerance=20, connectivity=2, return_converged=True)
    one = tf.constant(image[None, ..., None])
    one_seed = tf.constant([[seed]], dtype=tf.int32)
    batch = tf.constant(images[..., None])
    batch_seeds = tf.constant([[seed]] * len(images), dtype=tf.int32)
    graph = tf.function(lambda x, s: layer(x, s))
    xla = tf.function(lambda x, s: layer(x, s), jit_compile=True)
    labels, converged = xla(one, one_seed)
    assert int((labels.numpy() == 1).sum()) == area and bool(converged.numpy().all())

    def opencv():
        mask = np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8)
        flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
        cv2.floodFill(image, mask, (seed[1], seed[0]), 0, 20, 20, flags)
        return mask

    assert int(opencv()[1:-1, 1:-1].sum()) == area
    candidates = tf.constant(np.abs(image.astype(int) - int(image[seed]))[None] <= 20)
    passes = int(tf.function(component_roots, jit_compile=True)(candidates, 2)[2])

    def scikit_image():
        flood(image, seed, tolerance=20)

    def scikit_image_batch():
        for im in images:
            flood(im, seed, tolerance=20)

    runs = {
        "OpenCV cv2.floodFill (FIXED_RANGE, 8-conn), 1 image": (opencv, 1),
        "scikit-image flood, 1 image": (scikit_image, 1),
        "scikit-image flood, loop over batch": (scikit_image_batch, len(images)),
        "kerasseg RegionGrowing, tf.function, 1 image": (
            lambda: graph(one, one_seed)[0].numpy(),
            1,
        ),
        "kerasseg RegionGrowing, XLA, 1 image": (lambda: xla(one, one_seed)[0].numpy(), 1),
        f"kerasseg RegionGrowing, XLA, batch of {len(images)}": (
            lambda: xla(batch, batch_seeds)[0].numpy(),
            len(images),
        ),
    }
    table(
        f"Flood fill, 512x512 ISBI slice, seed (256, 256), tolerance 20, 8-connected "
        f"(area {area}, {passes} passes), median of {repeats}",
        runs,
        repeats,
        "OpenCV cv2.floodFill (FIXED_RANGE, 8-conn), 1 image",
        "scikit-image flood, 1 image",
    )


def label_benchmark(masks, repeats, connectivity):
    layer = ConnectedComponents(connectivity=connectivity, return_num=True)
    batch = tf.constant(masks[..., None])
    graph = tf.function(lambda x: layer(x))
    xla = tf.function(lambda x: layer(x), jit_compile=True)
    labels, _ = xla(batch)
    expected = np.stack([label(m, connectivity=connectivity) for m in masks])
    assert np.array_equal(labels.numpy()[..., 0], expected)
    one = batch[:1]
    passes = tf.function(label_components, jit_compile=True)(masks > 0, connectivity)[3]
    neighbours = 4 if connectivity == 1 else 8

    def opencv():
        for m in masks:
            cv2.connectedComponents(m, connectivity=neighbours)

    def scikit_image():
        for m in masks:
            label(m, connectivity=connectivity)

    n = len(masks)
    runs = {
        f"OpenCV cv2.connectedComponents(connectivity={neighbours}), loop": (opencv, n),
        f"scikit-image measure.label(connectivity={connectivity}), loop": (scikit_image, n),
        "kerasseg ConnectedComponents, tf.function, batch": (lambda: graph(batch)[0].numpy(), n),
        "kerasseg ConnectedComponents, XLA, batch": (lambda: xla(batch)[0].numpy(), n),
        "kerasseg ConnectedComponents, XLA, 1 image": (lambda: xla(one)[0].numpy(), 1),
    }
    table(
        f"Connected components, {n} ISBI label images 512x512, {neighbours}-connected "
        f"({int(expected.max(axis=(1, 2)).mean())} components per image, {int(passes)} "
        f"passes), median of {repeats}",
        runs,
        repeats,
        f"OpenCV cv2.connectedComponents(connectivity={neighbours}), loop",
        f"scikit-image measure.label(connectivity={connectivity}), loop",
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = Path(args.data) / "isbi2012-membrane" / "train"
    images = np.stack([skimage.io.imread(p) for p in sorted(folder.glob("image/*.png"))])
    masks = np.stack([skimage.io.imread(p) for p in sorted(folder.glob("label/*.png"))])
    masks = (masks > 127).astype(np.uint8)
    print(
        f"TensorFlow {tf.__version__}, OpenCV {cv2.__version__}, scikit-image {skimage.__version__}"
    )
    flood_benchmark(images, args.repeats)
    for connectivity in (1, 2):
        label_benchmark(masks, args.repeats, connectivity)


if __name__ == "__main__":
    main()
