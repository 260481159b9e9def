"""Prediction on image files: palette label PNGs, overlays, 16-bit instance PNGs.

kerasseg.inference.predict_file(model, "slice.png", "slice_labels.png",
                                 overlay_path="slice_overlay.png")
"""

import os
import warnings
from pathlib import Path

import numpy as np

from kerasseg import files
from kerasseg.inference.colours import model_palette
from kerasseg.inference.inputs import InputNote, fit_to_model, input_contract
from kerasseg.inference.instances import predict_instances
from kerasseg.inference.overlay import instance_overlay, overlay
from kerasseg.inference.semantic import cell_instances, predict_image
from kerasseg.inference.task import task_of
from kerasseg.inference.tiled_instances import cell_instances_tiled, predict_instances_tiled
from kerasseg.inference.tiling import predict_tiled
from kerasseg.ops.checks import check_int
from kerasseg.palette import MAX_GENERIC_CLASSES, Palette

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_TILE",
    "choose_tile",
    "display_image",
    "file_bit_depth",
    "output_channels",
    "predict_file",
    "read_image_file",
]


def display_image(image):
    """uint8 (H, W) or (H, W, 3) version of an image with stored values, for overlays.

    uint8 images are returned as they are (no copy); others are scaled down when their
    maximum exceeds 255.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    top = float(image.max()) if image.size else 0.0
    scale = np.float32(255.0 / top if top > 255 else 1.0)
    return np.clip(np.round(image.astype(np.float32) * scale), 0, 255).astype(np.uint8)


# Images with more pixels than this are predicted in tiles (or refused when tiling is off):
# whole-image prediction needs memory in proportion to the image (a U-Net of 7.8M parameters
# needs several GB at 2048 x 2048).
DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_TILE = 512


def choose_tile(height, width, tile="auto", max_pixels=DEFAULT_MAX_PIXELS):
    """The tile size to predict a (height, width) image with, or None for the whole image.

    Args:
        height, width: the image size.
        tile: an int (always tile), "auto" (`DEFAULT_TILE` above `max_pixels`, else whole) or
            None (never tile).
        max_pixels: the most pixels predicted whole; None for no limit.

    Raises:
        ValueError: `tile` is None and the image has more than `max_pixels` pixels.
    """
    large = max_pixels is not None and height * width > max_pixels
    if tile == "auto":
        return DEFAULT_TILE if large else None
    if tile is None:
        if large:
            raise ValueError(
                f"the image is {width}x{height} = {height * width:,} pixels, above max_pixels "
                f"= {max_pixels:,}, and tiling is off; predict it in "
                "tiles (kerasseg predict: drop --no-tile, or give --tile 512) or raise "
                "--max-pixels if the memory allows."
            )
        return None
    return check_int(tile, "tile", minimum=1)


def predict_file(
    model,
    input_path,
    output_path,
    *,
    overlay_path=None,
    instances_path=None,
    instances_overlay_path=None,
    watershed_seeds=None,
    channels=None,
    threshold=0.5,
    from_logits=None,
    min_score=0.5,
    tile="auto",
    overlap=0.25,
    max_pixels=DEFAULT_MAX_PIXELS,
    flatten_alpha=False,
    rescale=None,
    palette=None,
):
    """Segment an image file and write its label map (and an overlay) as PNG.

    The file (PNG, JPEG or TIFF, 8 or 16 bit) is read with `kerasseg.data.read_image` and
    fitted to the model by `kerasseg.inference.inputs.fit_to_model` (grey <-> RGB, alpha,
    16-bit values; each conversion is warned about with an `InputNote`), then given to the
    model with its values as stored. Images above `max_pixels` are predicted in overlapping
    tiles (`kerasseg.inference.tiling.predict_tiled`; instance models and `instances_path`
    through `kerasseg.inference.tiled_instances`).

    The label map PNG has the input's height and width. It is a palette ("P" mode) PNG: the
    pixels hold the class ids (Pillow's `np.asarray(Image.open(path))` and
    `kerasseg.data.read_mask` give them back) and image viewers show them in the palette's
    colours. With more than 256 classes it is a 16-bit grey PNG of the ids (no colours). A
    binary (1-channel, sigmoid) model writes an 8-bit grey PNG with class 1 as 255 (0/255,
    black and white in every viewer and the ISBI 2012 labels' convention; every reader,
    OpenCV and imageio included, gets the same values, which is not so for palette PNGs).
    `overlay_path`: an RGB PNG of the image with every class blended in its palette colour
    (`kerasseg.inference.overlay`) and a legend strip below it naming the classes present.

    An instance model (Mask R-CNN, `task_of(model) == "instance"`) writes 16-bit instance labels
    instead (`predict_instances`: 0 = background, 1..n by decreasing score), with `threshold`
    as the mask threshold and `min_score` as the detection score cut; its `overlay_path` is
    an instance overlay (`kerasseg.inference.overlay.instance_overlay`: one colour per
    instance, contours drawn, no legend).

    Args:
        model: a `keras.Model` (or callable) as in `probabilities`.
        input_path: the image file.
        output_path: the label map PNG to write (folders are created).
        overlay_path: optional overlay PNG to write.
        instances_path: optional 16-bit PNG of the instance labels of class 1
            (`cell_instances`; 0 = no instance).
        instances_overlay_path: optional RGB PNG of those instances over the image
            (`instance_overlay`); needs `instances_path`.
        watershed_seeds: `cell_instances`' seeded watershed threshold for `instances_path`.
        channels: None keeps the file's channel count; an int requires it.
        threshold: probability threshold of binary models (of the masks, instance models).
        from_logits: None detects it from the model's "output" layer.
        min_score: instance models: detections scoring below it are left out.
        tile: an int tile size (always tiled), "auto" (tiles of `DEFAULT_TILE` above
            `max_pixels`) or None (never tiled; larger images are refused).
        overlap: the overlap of neighbouring tiles, a fraction of the tile in [0, 1).
        max_pixels: the most pixels predicted as one piece; None for no limit.
        flatten_alpha: composite transparent images over white instead of refusing them.
        rescale: for 16-bit files: "full", "minmax" or "keep" (see
            `kerasseg.inference.inputs.RESCALE_MODES`); needed for models that take 8-bit
            values.
        palette: semantic models: the `kerasseg.palette.Palette` of the label PNG and the
            overlay; None: `kerasseg.inference.colours.model_palette(model)` (the preset's
            data set, else generic colours).

    Returns:
        The int32 (H, W) label map (class ids, 0/1 for a binary model; instance ids).
    """
    if watershed_seeds is not None and instances_path is None:
        raise ValueError(
            "predict_file: `watershed_seeds` labels the cells of `instances_path`; give both."
        )
    if instances_overlay_path is not None and instances_path is None:
        raise ValueError(
            "predict_file: `instances_overlay_path` draws the cells of `instances_path`; give both."
        )
    instance = task_of(model) == "instance"
    if instance and instances_path is not None:
        raise ValueError(
            "predict_file: an instance model writes its instance labels to `output_path`; "
            "drop `instances_path`."
        )
    image, bits = read_image_file(input_path, channels)
    try:
        image, notes = fit_to_model(
            image, input_contract(model), bits=bits, flatten_alpha=flatten_alpha, rescale=rescale
        )
        tile = choose_tile(*image.shape[:2], tile, max_pixels)
    except ValueError as error:
        raise ValueError(f"{os.fspath(input_path)}: {error}") from None
    for note in notes:
        warnings.warn(note, InputNote, stacklevel=2)
    tiling = {"tile": tile, "overlap": overlap}
    if instance:
        labels = _instance_labels(model, image, tiling, min_score, threshold)
        _write_png(_instance_png(labels), output_path)
        if overlay_path is not None:
            _write_png(instance_overlay(display_image(image), labels), overlay_path)
        return labels
    labels, probs = _semantic_labels(
        model, image, tiling, threshold, from_logits, keep=instances_path is not None
    )
    palette = _label_palette(model, output_channels(model, probs), palette)
    if palette is None and overlay_path is not None:
        raise ValueError(
            f"predict_file: the model has {output_channels(model, probs)} classes and generic "
            f"colours stop at {MAX_GENERIC_CLASSES}; pass `palette` (a kerasseg.palette.Palette) "
            "for an overlay, or drop `overlay_path`."
        )
    _write_png(_label_png(labels, output_channels(model, probs), palette), output_path)
    if overlay_path is not None:
        picture = overlay(display_image(image), labels, palette=palette, legend=True)
        _write_png(picture, overlay_path)
    if instances_path is not None:
        instances = _cell_labels(probs, tiling, threshold, watershed_seeds)
        _write_png(_instance_png(instances), instances_path)
        if instances_overlay_path is not None:
            _write_png(instance_overlay(display_image(image), instances), instances_overlay_path)
    return labels


def _label_palette(model, channels, palette):
    """The palette of a semantic model's label maps: `palette` when given (it must name
    every class), else `model_palette(model)`; None above 256 classes without a palette."""
    classes = 2 if channels == 1 else channels
    if palette is None:
        try:
            return model_palette(model, classes)
        except ValueError:
            if classes <= MAX_GENERIC_CLASSES:
                raise
            return None  # 16-bit grey label PNGs need no colours
    if not isinstance(palette, Palette) or len(palette) < classes:
        shown = f"one of {len(palette)} classes" if isinstance(palette, Palette) else repr(palette)
        raise ValueError(
            f"predict_file: `palette` must be a kerasseg.palette.Palette naming the model's "
            f"{classes} classes; got {shown}."
        )
    return palette


def _instance_labels(model, image, tiling, min_score, threshold):
    if tiling["tile"] is None:
        return predict_instances(model, image, min_score=min_score, mask_threshold=threshold)[0]
    return predict_instances_tiled(
        model, image, **tiling, min_score=min_score, mask_threshold=threshold
    )[0]


def _semantic_labels(model, image, tiling, threshold, from_logits, keep):
    """(labels, probabilities or None): probabilities are kept for tiled images only when
    `keep` asks (they take 4 bytes per pixel and class)."""
    if tiling["tile"] is None:
        return predict_image(
            model, image.astype(np.float32), threshold=threshold, from_logits=from_logits
        )
    return predict_tiled(
        model,
        image,
        **tiling,
        threshold=threshold,
        from_logits=from_logits,
        keep_probabilities=keep,
    )


def _cell_labels(probs, tiling, threshold, watershed_seeds):
    if tiling["tile"] is None:
        return cell_instances(probs[None], threshold=threshold, watershed_seeds=watershed_seeds)[0]
    return cell_instances_tiled(
        probs, **tiling, threshold=threshold, watershed_seeds=watershed_seeds
    )


def output_channels(model, probs=None):
    """The channel count of the model's output (1 for a binary sigmoid model)."""
    if probs is not None:
        return probs.shape[-1]
    return int(model.outputs[0].shape[-1])


def file_bit_depth(path):
    """8 or 16: the bits per sample of an image file, read from its header."""
    from PIL import Image  # Pillow reads only the header here

    with open(path, "rb") as handle:
        head = handle.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 25:
        return 16 if head[24] == 16 else 8  # the IHDR chunk's bit depth
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):
                return 16
            bits = image.tag_v2.get(258) if hasattr(image, "tag_v2") else None
    except (OSError, ValueError):
        return 8  # unreadable header: read_image reports the file
    if isinstance(bits, tuple):
        bits = max(bits)
    return 16 if bits == 16 else 8


def read_image_file(input_path, channels=None):
    """An image file's values as stored, (H, W, C) numpy, and its bit depth.

    8-bit files come back as uint8 (a large image is not doubled in memory), 16-bit ones as
    uint16.

    Raises:
        FileNotFoundError: `input_path` is not a file.
        ValueError: the file cannot be decoded (the message names it).
    """
    # Imported here: reading files goes through TensorFlow (kerasseg.data), which
    # `import kerasseg` does not load.
    import tensorflow as tf

    from kerasseg.data import read_image
    from kerasseg.data.decode import error_text

    input_path = os.fspath(input_path)
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"predict_file: `input_path` {input_path!r} is not a file.")
    bits = file_bit_depth(input_path)
    if channels is None:
        channels = _alpha_channels(input_path)
    try:
        dtype = "uint16" if bits == 16 else "uint8"
        return read_image(input_path, channels=channels, dtype=dtype).numpy(), bits
    except tf.errors.InvalidArgumentError as error:
        text = error_text(error)
        raise ValueError(text if input_path in text else f"{input_path}: {text}") from None


def _alpha_channels(path):
    """2 or 4 for a file with an alpha channel (grey + alpha, RGBA), else None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            bands = image.getbands()
    except (OSError, ValueError):
        return None  # read_image reports the file
    return len(bands) if bands[-1] == "A" and len(bands) in (2, 4) else None


def _label_png(labels, channels, palette):
    """The label PNG's image: 0/255 grey for a binary (1-channel) model, a palette ("P")
    image of the class ids up to 256 classes, 16-bit grey ids above."""
    from PIL import Image  # Pillow: only the PNG writer needs it

    if channels == 1:
        return (labels * 255).astype(np.uint8)
    if channels > 256:
        return labels.astype(np.uint16)
    picture = Image.fromarray(labels.astype(np.uint8))
    picture.putpalette(palette.png_palette(), rawmode="RGB")
    return picture


def _instance_png(labels):
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"predict_file: {labels.max()} instances do not fit a 16-bit PNG.")
    return labels.astype(np.uint16)


def _write_png(picture, path):
    """Write a numpy array or a Pillow image as PNG (atomically)."""
    from PIL import Image  # Pillow: only the PNG writer needs it

    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    with files.atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
