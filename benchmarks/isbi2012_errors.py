"""Where `unet_isbi2012` is wrong: pixel errors by distance to the labelled membrane edge.

For each pixel, the Euclidean distance (scipy's `distance_transform_edt`) to the nearest
pixel of the other label class; errors at threshold 0.5 are counted per distance band, on
the validation slices 20..24 and on training slices 00, 04, .., 16 (read with
`kerasseg.datasets.isbi2012`).

    python benchmarks/isbi2012_errors.py --data PATH/isbi2012-membrane
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

import kerasseg  # noqa: E402

BANDS = ((0, 2), (2, 3), (3, 5), (5, 10), (10, None))  # distances d with lo < d <= hi


def _slices(folder, subset, every=1):
    """(images, interior) of a `kerasseg.datasets.isbi2012` subset, every `every`-th slice."""
    dataset, _ = kerasseg.datasets.isbi2012(folder, subset=subset, batch_size=25)
    images, masks = next(iter(dataset))
    return images.numpy()[::every], masks.numpy()[::every, ..., 0] == 1


def _edge_distance(interior):
    inside = ndimage.distance_transform_edt(interior)
    outside = ndimage.distance_transform_edt(~interior)
    return np.where(interior, inside, outside)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the isbi2012-membrane folder")
    args = parser.parse_args(argv)
    model = kerasseg.load("unet_isbi2012")
    for split, every in (("validation", 1), ("train", 4)):
        images, truth = _slices(args.data, split, every)
        predicted = model.predict(images, batch_size=1, verbose=0)[..., 0] > 0.5
        wrong = predicted != truth
        distance = np.stack([_edge_distance(t) for t in truth])
        print(f"{split}: pixel accuracy {1 - wrong.mean():.4f}")
        for low, high in BANDS:
            band = (distance > low) & (distance <= (np.inf if high is None else high))
            print(
                f"  edge distance ({low}, {high or 'inf'}] px: {band.mean():6.1%} of pixels, "
                f"errors {(wrong & band).mean():.2%} of all pixels "
                f"(interior predicted: {(wrong & band & predicted).mean():.2%})"
            )


if __name__ == "__main__":
    main()
