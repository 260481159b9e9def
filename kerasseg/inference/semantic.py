"""Run a segmentation model on images and image files: label maps, probabilities, PNGs.

    labels, probabilities = kerasseg.inference.semantic.predict_image(model, image)
    kerasseg.inference.semantic.predict_file(model, "slice.png", "slice_labels.png",
                                     overlay_path="slice_overlay.png")

Models take images with their values as stored (float32 0..255 for 8-bit files): presets and
models trained with `kerasseg train` normalise inside. Images whose size does not fit the
model's `size_divisor` are padded at the bottom/right with 0 and the output is cropped back.
"""

import functools
import os
from pathlib import Path

import keras
import numpy as np

from kerasseg import files

__all__ = [
    "cell_instances",
    "display_image",
    "is_instance_model",
    "labels_from_probabilities",
    "output_is_logits",
    "predict_file",
    "predict_image",
    "predict_instances",
    "probabilities",
]


def output_is_logits(model):
    """True when the layer named "output" of `model` (kerasseg heads) is linear: logits.

    A wrapper without such a layer (e.g. `kerasseg.inference.tta.wrap`) answers for the model
    it wraps.
    """
    try:
        layer = model.get_layer("output")
    except (AttributeError, ValueError):
        inner = [m for m in getattr(model, "layers", ()) if isinstance(m, keras.Model)]
        return len(inner) == 1 and output_is_logits(inner[0])
    return getattr(layer, "activation", None) is keras.activations.linear


def _size_rule(model):
    divisor = int(getattr(model, "size_divisor", 1) or 1)
    offset = int(getattr(model, "size_offset", 0) or 0)
    return divisor, offset


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
    divisor, offset = _size_rule(model)
    if divisor > 1 and offset == 0:
        pad_h, pad_w = -height % divisor, -width % divisor
        if pad_h or pad_w:
            images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    if hasattr(model, "predict_on_batch"):
        outputs = model.predict_on_batch(images)
    else:
        outputs = model(images)
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float32)
    if outputs.ndim != 4 or outputs.shape[1:3] != images.shape[1:3]:
        raise ValueError(
            f"the model must output (batch, height, width, classes) at the input size "
            f"{tuple(images.shape[1:3])}; got shape {outputs.shape} (models with unpadded "
            f"convolutions, padding='valid', are not supported here)."
        )
    outputs = outputs[:, :height, :width]
    if from_logits is None:
        from_logits = output_is_logits(model)
    if from_logits:
        if outputs.shape[-1] == 1:
            outputs = 1.0 / (1.0 + np.exp(-outputs))
        else:
            shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
            outputs = shifted / shifted.sum(axis=-1, keepdims=True)
    return outputs.astype(np.float32)


def labels_from_probabilities(probs, threshold=0.5):
    """Integer class ids (..., H, W): p > threshold for 1 channel, argmax over more."""
    probs = np.asarray(probs)
    if probs.shape[-1] == 1:
        return (probs[..., 0] > threshold).astype(np.int32)
    return probs.argmax(axis=-1).astype(np.int32)


@functools.lru_cache(maxsize=4)
def _compiled_watershed(seed_threshold):
    import tensorflow as tf

    from kerasseg.classical.watershed import SeededWatershed

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
        from kerasseg.ops.components import label_components

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


def predict_image(model, image, *, threshold=0.5, from_logits=None):
    """Segment one image.

    Args:
        model: a `keras.Model` (or callable) as in `probabilities`.
        image: (H, W) or (H, W, C) array with the values as stored (not normalised).
        threshold: class 1 where the probability of a 1-channel (sigmoid) output exceeds it.
        from_logits: None detects it from the model's "output" layer.

    Returns:
        (labels, probabilities): int32 (H, W) class ids and float32 (H, W, C) probabilities
        (C = 1 for a binary sigmoid model: the probability of class 1).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1]; got {threshold!r}.")
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


def is_instance_model(model):
    """True for a Mask R-CNN style model: its outputs are a dict of detections."""
    output = getattr(model, "output", None)
    return isinstance(output, dict) and {"boxes", "masks", "num_detections"} <= set(output)


def predict_instances(model, image, *, min_score=0.5, mask_threshold=0.5):
    """Instance labels of one image from a Mask R-CNN (`is_instance_model`).

    Grey images are repeated to RGB. The masks of the detections scoring >= `min_score` are
    pasted at the image size (probability > `mask_threshold`) and painted best on top
    (`kerasseg.evaluation.coco.instance_map`); ids are then renumbered 1..n by
    decreasing score, 0 = background.

    Args:
        model: a Mask R-CNN (e.g. `kerasseg.load("maskrcnn_resnet18_isbi2012")`).
        image: (H, W), (H, W, 1) or (H, W, 3) array with the values as stored (0..255).
        min_score: in [0, 1]; detections below it are left out.
        mask_threshold: in [0, 1]; torchvision's 0.5.

    Returns:
        (labels, detections): int32 (H, W) instance ids and the image's detections of
        `kerasseg.evaluation.coco.detections_from_outputs` (all of them, by score).
    """
    from kerasseg.evaluation.coco import detections_from_outputs, instance_map

    for name, value in (("min_score", min_score), ("mask_threshold", mask_threshold)):
        if isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}.")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            "`image` must have shape (height, width), (height, width, 1) or (height, width, 3); "
            f"got {image.shape}."
        )
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    size = image.shape[:2]
    outputs = model.predict(
        {"images": image[None], "image_sizes": np.array([size], "int32")}, verbose=0
    )
    detections = detections_from_outputs(outputs, size, mask_threshold=mask_threshold)[0]
    painted = instance_map(detections["masks"], detections["scores"], min_score=min_score)
    ids, labels = np.unique(painted, return_inverse=True)  # ids sorted: row order = score order
    labels = labels.reshape(painted.shape).astype(np.int32)
    return (labels if ids[0] == 0 else labels + 1), detections


def display_image(image):
    """uint8 (H, W) or (H, W, 3) version of an image with stored values, for overlays."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    image = image.astype(np.float64)
    top = image.max() if image.size else 0.0
    if top > 255:
        image = image * (255.0 / top)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def predict_file(
    model,
    input_path,
    output_path,
    *,
    overlay_path=None,
    instances_path=None,
    watershed_seeds=None,
    channels=None,
    threshold=0.5,
    from_logits=None,
    min_score=0.5,
):
    """Segment an image file and write its label map (and an overlay) as PNG.

    The file (PNG, JPEG or TIFF, 8 or 16 bit) is read with `kerasseg.data.read_image` and
    given to the model with its values as stored, float32 (1, H, W, C).

    The label map PNG has the input's height and width and holds the class ids as 8-bit
    values (16-bit when there are more than 256 classes); for a binary (1-channel, sigmoid)
    model class 1 is written as 255 (so 0/255, viewable like the ISBI 2012 labels).
    `overlay_path`: an RGB PNG of the image with the classes > 0 blended in the colours of
    `kerasseg.demo.overlay` (class 0 stays uncoloured).

    An instance model (Mask R-CNN, `is_instance_model`) writes 16-bit instance labels
    instead (`predict_instances`: 0 = background, 1..n by decreasing score), with `threshold`
    as the mask threshold and `min_score` as the detection score cut.

    Args:
        model: a `keras.Model` (or callable) as in `probabilities`.
        input_path: the image file.
        output_path: the label map PNG to write (folders are created).
        overlay_path: optional overlay PNG to write.
        instances_path: optional 16-bit PNG of the instance labels of class 1
            (`cell_instances`; 0 = no instance).
        watershed_seeds: `cell_instances`' seeded watershed threshold for `instances_path`.
        channels: None keeps the file's channel count; an int requires it.
        threshold: probability threshold of binary models (of the masks, instance models).
        from_logits: None detects it from the model's "output" layer.
        min_score: instance models: detections scoring below it are left out.

    Returns:
        The int32 (H, W) label map (class ids, 0/1 for a binary model; instance ids).
    """
    import tensorflow as tf

    from kerasseg.data import read_image
    from kerasseg.demo import overlay

    if watershed_seeds is not None and instances_path is None:
        raise ValueError(
            "predict_file: `watershed_seeds` labels the cells of `instances_path`; give both."
        )
    input_path = os.fspath(input_path)
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"predict_file: `input_path` {input_path!r} is not a file.")
    try:
        image = read_image(input_path, channels=channels, dtype="uint16").numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"predict_file: cannot read {input_path!r}: {error.message}") from None
    if is_instance_model(model):
        if instances_path is not None:
            raise ValueError(
                "predict_file: an instance model writes its instance labels to `output_path`; "
                "drop `instances_path`."
            )
        labels, _ = predict_instances(model, image, min_score=min_score, mask_threshold=threshold)
        _write_png(_instance_png(labels), output_path)
    else:
        labels, probs = predict_image(
            model, image.astype(np.float32), threshold=threshold, from_logits=from_logits
        )
        if probs.shape[-1] == 1:
            stored = (labels * 255).astype(np.uint8)
        elif probs.shape[-1] <= 256:
            stored = labels.astype(np.uint8)
        else:
            stored = labels.astype(np.uint16)
        _write_png(stored, output_path)
    if overlay_path is not None:
        _write_png(overlay(display_image(image), labels), overlay_path)
    if instances_path is not None:
        instances = cell_instances(
            probs[None], threshold=threshold, watershed_seeds=watershed_seeds
        )[0]
        _write_png(_instance_png(instances), instances_path)
    return labels


def _instance_png(labels):
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"predict_file: {labels.max()} instances do not fit a 16-bit PNG.")
    return labels.astype(np.uint16)


def _write_png(array, path):
    from PIL import Image

    with files.atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")
