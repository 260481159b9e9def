"""Run a segmentation model on images and image files: label maps, probabilities, PNGs.

    labels, probabilities = kerasseg.inference.predict_image(model, image)
    kerasseg.inference.predict_file(model, "slice.png", "slice_labels.png",
                                     overlay_path="slice_overlay.png")

Models take images with their values as stored (float32 0..255 for 8-bit files): presets and
models trained with `kerasseg train` normalise inside. Images whose size does not fit the
model's `size_divisor` are padded at the bottom/right with 0 and the output is cropped back.
"""

import functools

import numpy as np

from kerasseg.classical.watershed import SeededWatershed
from kerasseg.inference.tiling import (
    labels_from_probabilities,
    model_probabilities,
    model_size_rule,
    output_is_logits,
    predict_tiled,
)
from kerasseg.ops.checks import check_probability
from kerasseg.ops.labelling import label_components

__all__ = [
    "cell_instances",
    "labels_from_probabilities",
    "output_is_logits",
    "predict_image",
    "probabilities",
]

# `output_is_logits` and `labels_from_probabilities` are defined in `tiling` (with the model
# call they share with whole-image prediction) and re-exported here, where they always were.


def probabilities(model, images, *, from_logits=None):
    """Class probabilities of an image batch: float32 (B, H, W, C), C = 1 for binary.

    Args:
        model: a `keras.Model` (or any callable) mapping (B, H, W, C) float32 images, values
            as stored, to (B, H, W, C') sigmoid/softmax probabilities or logits.
        images: (B, H, W, C) array-like.
        from_logits: None detects it from the model's "output" layer; True applies a sigmoid
            (1 channel) or softmax (more) to the outputs.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must have shape (batch, height, width, channels); got {images.shape}."
        )
    height, width = images.shape[1:3]
    divisor, offset = model_size_rule(model)
    if divisor > 1 and offset == 0:
        pad_h, pad_w = -height % divisor, -width % divisor
        if pad_h or pad_w:
            images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    if from_logits is None:
        from_logits = output_is_logits(model)
    return np.ascontiguousarray(model_probabilities(model, images, from_logits)[:, :height, :width])


@functools.lru_cache(maxsize=4)
def _compiled_watershed(seed_threshold):
    import tensorflow as tf  # the compiled watershed runs on TensorFlow alone

    return tf.function(SeededWatershed(seed_threshold=seed_threshold), jit_compile=True)


def cell_instances(probs, *, threshold=0.5, watershed_seeds=None):
    """Instance labels (B, H, W) int32 of class 1 (cell interior for ISBI 2012).

    Without `watershed_seeds`: the 4-connected regions of class 1 (`labels_from_probabilities`),
    so pixels of other classes (membranes) are 0. With `watershed_seeds` (a 1-channel model
    only): `kerasseg.layers.SeededWatershed` seeds cells at the 4-connected regions of
    p > `watershed_seeds` and floods 1 - p from them, so every pixel belongs to a cell and a
    gap in a membrane no longer merges two cells.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 4:
        raise ValueError(f"`probs` must have shape (batch, H, W, channels); got {probs.shape}.")
    if watershed_seeds is None:
        foreground = labels_from_probabilities(probs, threshold) == 1
        return np.asarray(label_components(foreground, 1)[0]).astype(np.int32)
    if probs.shape[-1] != 1:
        raise ValueError(
            "`watershed_seeds` needs a 1-channel (sigmoid) probability map; got "
            f"{probs.shape[-1]} channels."
        )
    if isinstance(watershed_seeds, bool) or not 0.0 < watershed_seeds <= 1.0:
        raise ValueError(f"`watershed_seeds` must be in (0, 1]; got {watershed_seeds!r}.")
    return np.asarray(_compiled_watershed(float(watershed_seeds))(probs)).astype(np.int32)


def predict_image(
    model, image, *, threshold=0.5, from_logits=None, tile=None, overlap=0.25, batch_size=4
):
    """Segment one image, whole or by overlapping tiles.

    Args:
        model: a `keras.Model` (or callable) as in `probabilities`.
        image: (H, W) or (H, W, C) array with the values as stored (not normalised).
        threshold: class 1 where the probability of a 1-channel (sigmoid) output exceeds it.
        from_logits: None detects it from the model's "output" layer.
        tile: None predicts the whole image at once; an int (or (height, width)) predicts it
            by overlapping windows of that size with cosine blending,
            `kerasseg.inference.tiling.predict_tiled`, for images too large for one pass.
        overlap: with `tile`, the overlap of neighbouring windows, a fraction of the tile in
            [0, 1); not used without `tile`.
        batch_size: with `tile`, windows per model call; not used without `tile`.

    Returns:
        (labels, probabilities): int32 (H, W) class ids and float32 (H, W, C) probabilities
        (C = 1 for a binary sigmoid model: the probability of class 1).
    """
    check_probability(threshold, "threshold")
    if tile is not None:
        return predict_tiled(
            model,
            image,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            threshold=threshold,
            from_logits=from_logits,
        )
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(
            f"`image` must have shape (height, width) or (height, width, channels); got "
            f"{image.shape}."
        )
    probs = probabilities(model, image[None], from_logits=from_logits)[0]
    return labels_from_probabilities(probs, threshold), probs
