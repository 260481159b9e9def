"""Prediction on image files: label PNGs, overlays, 16-bit instance PNGs.

kerasseg.inference.predict_file(model, "slice.png", "slice_labels.png",
                                 overlay_path="slice_overlay.png")
"""

import os
from pathlib import Path

import numpy as np

from kerasseg import files
from kerasseg.inference.instances import predict_instances
from kerasseg.inference.overlay import overlay
from kerasseg.inference.semantic import cell_instances, predict_image
from kerasseg.inference.task import task_of

__all__ = ["display_image", "predict_file"]


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
    `kerasseg.inference.overlay` (class 0 stays uncoloured).

    An instance model (Mask R-CNN, `task_of(model) == "instance"`) writes 16-bit instance labels
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
    if watershed_seeds is not None and instances_path is None:
        raise ValueError(
            "predict_file: `watershed_seeds` labels the cells of `instances_path`; give both."
        )
    image = _read_image(input_path, channels)
    if task_of(model) == "instance":
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
        _write_png(_label_png(labels, probs.shape[-1]), output_path)
    if overlay_path is not None:
        _write_png(overlay(display_image(image), labels), overlay_path)
    if instances_path is not None:
        instances = cell_instances(
            probs[None], threshold=threshold, watershed_seeds=watershed_seeds
        )[0]
        _write_png(_instance_png(instances), instances_path)
    return labels


def _read_image(input_path, channels):
    """The image file's values as stored, (H, W, C) uint16 numpy."""
    # Imported here: reading files goes through TensorFlow (kerasseg.data), which
    # `import kerasseg` does not load.
    import tensorflow as tf

    from kerasseg.data import read_image

    input_path = os.fspath(input_path)
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"predict_file: `input_path` {input_path!r} is not a file.")
    try:
        return read_image(input_path, channels=channels, dtype="uint16").numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"predict_file: cannot read {input_path!r}: {error.message}") from None


def _label_png(labels, channels):
    """Class ids as stored in the label PNG: 0/255 for a binary (1-channel) model."""
    if channels == 1:
        return (labels * 255).astype(np.uint8)
    return labels.astype(np.uint8 if channels <= 256 else np.uint16)


def _instance_png(labels):
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"predict_file: {labels.max()} instances do not fit a 16-bit PNG.")
    return labels.astype(np.uint16)


def _write_png(array, path):
    from PIL import Image  # Pillow: only the PNG writer needs it

    with files.atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")
