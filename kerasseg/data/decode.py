"""Decode PNG, JPEG and TIFF images and label masks with TensorFlow ops (works in `tf.data.map`).

Pixel values come back exactly as stored in the file: an 8-bit PNG read as uint16 keeps 0..255,
a 1-, 2- or 4-bit greyscale PNG keeps 0..1, 0..3 or 0..15, and a 16-bit file asked for as
uint8 is an error, never a clip. Every runtime error names the file. TIFF files (and palette
PNG masks) are decoded by Pillow through `tf.numpy_function`, so compressed TIFFs work too.

A file damaged inside (its end marker intact, so the completeness checks pass) makes
TensorFlow's PNG or JPEG decoder fail with a message that names no file ("Invalid PNG data,
size 3118"), and an op's message cannot be changed. So when a path is given, the decoder
runs inside a one-element nested `tf.data` pipeline whose `ignore_errors` drops its failure;
an empty image then comes out instead, and an assertion that names the file fails on it
(about 0.15 to 0.3 ms of CPU per file). Eagerly the decoder's error is caught and raised again
with the file's name.
"""

import io
import os

import numpy as np
import tensorflow as tf

from kerasseg.ops.checks import is_int

__all__ = [
    "check_same_size",
    "decode_image",
    "decode_mask",
    "decode_pair",
    "decode_png_or_jpeg",
    "error_text",
    "file_format",
    "jpeg_is_complete",
    "load_pair",
    "png_is_complete",
    "read_image",
    "read_mask",
]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_SOS = b"\xff\xda"
_JPEG_END = b"\xff\xd9"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_NO_PATH = "(in-memory bytes)"
_DTYPES = ("uint8", "uint16")
_CHANNELS = (1, 2, 3, 4)
# Pillow mode -> bits per sample the TIFF must declare for the values to come back as stored.
_TIFF_MODES = {
    "1": 1,
    "L": 8,
    "P": 8,
    "LA": 8,
    "RGB": 8,
    "RGBA": 8,
    "I;16": 16,
    "I;16L": 16,
    "I;16B": 16,
    "I;16N": 16,
}


def _message(*parts):
    """Join strings and scalar tensors into one scalar string tensor for an assertion."""
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif part.dtype == tf.string:
            pieces.append(part)
        else:
            pieces.append(tf.strings.as_string(part))
    return tf.strings.join(pieces)


def _check(condition, *parts):
    """Return an assertion op that fails with the joined message (raises at once in eager)."""
    return tf.debugging.Assert(condition, [_message(*parts)])


def error_text(error):
    """The readable part of a `tf.errors.OpError` raised by these decoders or other assertions.

    An assertion inside a `tf.data` map or a graph surfaces as "... assertion failed:
    [message] [values]" wrapped in graph details, and eagerly as "Expected ... to be true.
    Summarized data: b'message' values"; both give "message values" on one line. Other
    errors give their first line without the "{{function_node ...}}" prefix.
    """
    text = getattr(error, "message", None) or str(error)
    graph, eager = "assertion failed: ", "Summarized data: "
    if graph in text:
        text = text.split(graph, 1)[1].split("\n", 1)[0].strip()
        return " ".join(part.strip("[] ") for part in text.split("] [")).strip()
    if eager in text:
        parts = text.split(eager, 1)[1].strip().split("\n")
        parts = [p[2:-1] if p.startswith(("b'", 'b"')) else p for p in parts]
        return " ".join(p.strip() for p in parts if p.strip())
    text = text.split("\n", 1)[0]
    if text.startswith("{{function_node"):
        text = text.split("}}", 1)[-1]
    return text.strip()


def _path_tensor(path):
    if path is None:
        return tf.constant(_NO_PATH)
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return tf.convert_to_tensor(path, dtype=tf.string)


def _contents_tensor(contents):
    contents = tf.convert_to_tensor(contents, dtype=tf.string)
    if contents.shape.rank not in (None, 0):
        raise ValueError(
            f"contents must be a scalar string tensor (the bytes of one file); "
            f"got shape {contents.shape}"
        )
    return contents


def _check_dtype(dtype):
    try:
        name = tf.as_dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'uint8' or 'uint16'; got {dtype!r}")
    return name


def _check_channels(channels):
    if channels is None:
        return None
    if not is_int(channels) or int(channels) not in _CHANNELS:
        raise ValueError(f"channels must be None, 1, 2, 3 or 4; got {channels!r}")
    return int(channels)


def _contains(contents, marker):
    """True when `marker` occurs anywhere in `contents` (a byte-wise split, no regex)."""
    return tf.size(tf.strings.split(contents, sep=marker)) > 1


def _byte(contents, position):
    return tf.cast(
        tf.io.decode_raw(tf.strings.substr(contents, position, 1), tf.uint8)[0], tf.int32
    )


def _as_bytes(value):
    if isinstance(value, np.ndarray):
        value = value.item()
    return value if isinstance(value, bytes) else bytes(value)


def _pillow_decode(contents, path, kind, palette_indices):
    """Decode with Pillow; return (uint16 HxWxC pixels, is_16_bit, error message or b"")."""
    from PIL import Image  # only TIFF files and palette PNG masks need Pillow

    path = _as_bytes(path).decode("utf-8", "replace")
    kind = _as_bytes(kind).decode()
    empty = np.zeros((0, 0, 1), np.uint16)

    def fail(text):
        return empty, np.bool_(False), text.encode()

    try:
        with Image.open(io.BytesIO(_as_bytes(contents))) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                return fail(f"{kind} {path} has {frames} pages; only single-page files are read")
            mode = image.mode
            bits = _TIFF_MODES.get(mode)
            tags = getattr(image, "tag_v2", None)
            declared = tags.get(258) if tags is not None else None
            declared = (declared,) if isinstance(declared, int) else tuple(declared or ())
            if bits is None or any(b != bits for b in declared if mode != "P"):
                return fail(
                    f"{kind} {path} has pixel mode {mode!r} with bits per sample "
                    f"{declared or 'unknown'}; supported: 1-, 8- or 16-bit greyscale, "
                    f"8-bit RGB (with or without alpha), 8-bit palette"
                )
            if mode == "P" and not palette_indices:
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            pixels = np.asarray(image)
    except Exception as error:  # Pillow raises many types on corrupt data; name the file.
        return fail(f"cannot decode {kind} {path}: {type(error).__name__}: {error}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    is_16_bit = np.bool_(pixels.dtype.itemsize == 2)
    return pixels.astype(np.uint16), is_16_bit, b""


def _finish(pixels, path, dtype, is_16_bit=None):
    """Cast decoded pixels to `dtype`, refusing a 16-bit file asked for as uint8."""
    if dtype != tf.uint8 or is_16_bit is None:
        return tf.cast(pixels, dtype)
    check = _check(
        tf.logical_not(is_16_bit),
        "16-bit image ",
        path,
        "; pass dtype='uint16' (uint8 cannot hold its values)",
    )
    with tf.control_dependencies([check]):
        return tf.cast(pixels, dtype)


def _pillow(contents, path, dtype, kind, palette_indices=False):
    pixels, is_16_bit, error = tf.numpy_function(
        _pillow_decode,
        [contents, path, tf.constant(kind), tf.constant(palette_indices)],
        [tf.uint16, tf.bool, tf.string],
        stateful=False,
    )
    pixels.set_shape([None, None, None])
    is_16_bit.set_shape([])
    error.set_shape([])
    with tf.control_dependencies([_check(tf.equal(error, ""), error)]):
        return _finish(pixels, path, dtype, is_16_bit)


def _damaged(kind, path):
    """The message for a file that TensorFlow's `kind` decoder rejects (a scalar string)."""
    return _message(
        "cannot decode ",
        kind,
        " ",
        path,
        ": the file is damaged (not truncated, but the decoder rejects its data); replace the "
        "file or export it again",
    )


def _named(decoder, dtype, contents, path, kind, named):
    """Run the TensorFlow decoder `decoder(contents)` so that its failure names `path`.

    Args:
        decoder: function of a scalar string tensor, one `tf.io.decode_*` call.
        dtype: the dtype `decoder` returns.
        contents: scalar string tensor, the encoded file.
        path: scalar string tensor, the file name for the message.
        kind: "PNG" or "JPEG", for the message.
        named: False runs `decoder` as it is (no file name to give; keeps serving graphs
            free of nested datasets).

    Returns:
        The decoded tensor.
    """
    if not named:
        return decoder(contents)
    if tf.executing_eagerly():
        try:
            return decoder(contents)
        except tf.errors.InvalidArgumentError:
            message = _damaged(kind, path).numpy().decode("utf-8", "replace")
            raise tf.errors.InvalidArgumentError(None, None, message) from None

    # The op's own error cannot be re-worded inside a graph: drop it, take the empty image
    # that follows instead, and let an assertion that names the file fail on it.
    decoded = tf.data.Dataset.from_tensors(contents).map(decoder).ignore_errors()
    empty = tf.data.Dataset.from_tensors(tf.zeros([0, 0, 0], dtype))
    pixels = decoded.concatenate(empty).take(1).get_single_element()
    with tf.control_dependencies([_check(tf.size(pixels) > 0, _damaged(kind, path))]):
        return tf.identity(pixels)


def png_is_complete(contents):
    """True when PNG bytes are long enough and hold the IEND chunk (not truncated)."""
    size = tf.strings.length(contents)
    ends = tf.equal(tf.strings.substr(contents, tf.maximum(size - 12, 0), 12), _PNG_END)
    return tf.logical_and(
        size >= 45, tf.cond(ends, lambda: ends, lambda: _contains(contents, _PNG_END))
    )


def jpeg_is_complete(contents):
    """True when JPEG bytes end with the end-of-image marker after the last scan."""
    ends = tf.equal(
        tf.strings.substr(contents, tf.maximum(tf.strings.length(contents) - 2, 0), 2), _JPEG_END
    )

    def end_after_last_scan():
        # Some writers append bytes after the end marker; accept it if it follows the last scan.
        segments = tf.strings.split(contents, sep=_JPEG_SOS)
        return tf.logical_and(tf.size(segments) > 1, _contains(segments[-1], _JPEG_END))

    return tf.cond(ends, lambda: ends, end_after_last_scan)


def _png(contents, path, dtype, palette_indices, named):
    complete = png_is_complete(contents)
    with tf.control_dependencies([_check(complete, "truncated or corrupt PNG ", path)]):
        depth = _byte(contents, 24)
        colour = _byte(contents, 25)
    is_16_bit = tf.equal(depth, 16)

    def decoded(depth_dtype):
        return _named(
            lambda data: tf.io.decode_png(data, channels=0, dtype=depth_dtype),
            depth_dtype,
            contents,
            path,
            "PNG",
            named,
        )

    def sixteen():
        return _finish(decoded(tf.uint16), path, dtype, is_16_bit)

    def eight_or_less():
        pixels = decoded(tf.uint8)
        # libpng expands 1/2/4-bit grey to 0..255; undo that exact scaling (by 255, 85, 17).
        low_grey = tf.logical_and(tf.equal(colour, 0), depth < 8)
        factor = tf.cast(255 // tf.maximum(tf.bitwise.left_shift(1, depth) - 1, 1), tf.uint8)
        pixels = tf.cond(
            low_grey,
            lambda: tf.concat([pixels[..., :1] // factor, pixels[..., 1:]], axis=-1),
            lambda: pixels,
        )
        return tf.cast(pixels, dtype)

    def tensorflow_png():
        return tf.cond(is_16_bit, sixteen, eight_or_less)

    if not palette_indices:
        return tensorflow_png()
    return tf.cond(
        tf.equal(colour, 3),
        lambda: _pillow(contents, path, dtype, "PNG", palette_indices=True),
        tensorflow_png,
    )


def _jpeg(contents, path, dtype, named):
    complete = jpeg_is_complete(contents)
    with tf.control_dependencies([_check(complete, "truncated or corrupt JPEG ", path)]):
        pixels = _named(
            lambda data: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
            tf.uint8,
            contents,
            path,
            "JPEG",
            named,
        )
    return tf.cast(pixels, dtype)


def file_format(contents):
    """(is_png, is_jpeg, is_tiff): boolean scalar tensors from the first bytes of a file."""
    head = tf.strings.substr(contents, 0, 8)
    is_png = tf.equal(head, _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), _JPEG_MAGIC)
    start = tf.strings.substr(head, 0, 4)
    is_tiff = tf.logical_or(tf.equal(start, _TIFF_MAGICS[0]), tf.equal(start, _TIFF_MAGICS[1]))
    return is_png, is_jpeg, is_tiff


def decode_png_or_jpeg(contents, *, path=None):
    """Decode an 8-bit PNG or a JPEG to uint8 (H, W, C) with stock TensorFlow ops only.

    Unlike `decode_image`, no Python callback (Pillow) is ever in the graph, so a SavedModel
    that uses it runs in TF-Serving. TIFF and anything else is an error naming `path`, as
    are truncated files and 16-bit PNGs; the channel count is the file's (palette PNGs give
    RGB, or RGBA with transparency).
    """
    contents = _contents_tensor(contents)
    path = _path_tensor(path)
    is_png, is_jpeg, _ = file_format(contents)
    known = _check(tf.logical_or(is_png, is_jpeg), "file ", path, " is not a PNG or JPEG image")
    with tf.control_dependencies([known]):
        pixels = tf.cond(
            is_png,
            lambda: _png(contents, path, tf.uint8, palette_indices=False, named=False),
            lambda: _jpeg(contents, path, tf.uint8, named=False),
        )
    pixels.set_shape([None, None, None])
    return pixels


def _decode(contents, path, dtype, *, mask, named):
    """Decode any supported file to an (H, W, C) tensor of `dtype` holding the stored values;
    `named`: a failure of TensorFlow's decoders names `path` (see `_named`)."""
    is_png, is_jpeg, is_tiff = file_format(contents)
    known = tf.reduce_any(tf.stack([is_png, is_jpeg, is_tiff]))
    checks = [_check(known, "file ", path, " is not a PNG, JPEG or TIFF image")]
    if mask:
        checks.append(
            _check(
                tf.logical_not(is_jpeg),
                "mask ",
                path,
                " is a JPEG; lossy compression changes label values, so masks must be PNG or TIFF",
            )
        )
    with tf.control_dependencies(checks):
        pixels = tf.case(
            [
                (is_png, lambda: _png(contents, path, dtype, mask, named)),
                (is_jpeg, lambda: _jpeg(contents, path, dtype, named)),
            ],
            default=lambda: _pillow(contents, path, dtype, "TIFF", palette_indices=mask),
        )
    pixels.set_shape([None, None, None])
    return pixels


def decode_image(contents, *, channels=None, dtype="uint8", path=None):
    """Decode a PNG, JPEG or TIFF image to its stored values.

    Args:
        contents: scalar string tensor, the encoded bytes of one file; the format is
            detected from its first bytes.
        channels: None, 1, 2, 3 or 4. None keeps the file's channels (1 or 3; a file with
            alpha is an error). An int must equal the file's channel count; nothing is
            converted or dropped.
        dtype: "uint8" or "uint16", the output dtype. A 16-bit file read as "uint8" is an
            error; 8-bit files read as "uint16" keep their 0..255 values (no rescaling).
        path: optional str or scalar string tensor, used only in error messages. With a
            path, a file that TensorFlow's PNG or JPEG decoder rejects (damaged inside) is
            reported by name; without one, by the decoder's own message.

    Returns:
        tensor of shape (H, W, C) and `dtype`.

    Raises:
        ValueError: `channels`, `dtype` or `contents` is not of the accepted kind.
        tf.errors.InvalidArgumentError: (when the op runs) the file cannot be decoded as
            asked; the message names `path`.
    """
    channels = _check_channels(channels)
    dtype = _check_dtype(dtype)
    contents = _contents_tensor(contents)
    named = path is not None
    path = _path_tensor(path)
    pixels = _decode(contents, path, tf.as_dtype(dtype), mask=False, named=named)
    count = tf.shape(pixels)[-1]
    if channels is None:
        channel_check = _check(
            tf.logical_or(tf.equal(count, 1), tf.equal(count, 3)),
            "image ",
            path,
            " has ",
            count,
            " channels (an alpha channel?); by default an image must have 1 or 3, "
            "so pass channels=",
            count,
            " to keep them all",
        )
    else:
        channel_check = _check(
            tf.equal(count, channels),
            "image ",
            path,
            " has ",
            count,
            f" channels; the model takes {channels}",
        )
    with tf.control_dependencies([channel_check]):
        image = tf.identity(pixels)
    image.set_shape([None, None, channels])
    return image


def read_image(path, *, channels=None, dtype="uint8"):
    """Read and decode one image file; see `decode_image` for the arguments."""
    path = _path_tensor(path)
    return decode_image(tf.io.read_file(path), channels=channels, dtype=dtype, path=path)


def decode_mask(contents, *, path=None):
    """Decode a single-channel label image (PNG of 1-16 bits, palette PNG or TIFF).

    Args:
        contents: scalar string tensor, the encoded bytes of one PNG or TIFF file (JPEG is
            refused: it is lossy).
        path: optional str or scalar string tensor, used only in error messages (as in
            `decode_image`).

    Returns:
        int32 tensor of shape (H, W, 1) with the label values as stored (palette PNGs give
        their palette indices).
    """
    contents = _contents_tensor(contents)
    named = path is not None
    path = _path_tensor(path)
    pixels = _decode(contents, path, tf.int32, mask=True, named=named)
    count = tf.shape(pixels)[-1]
    check = _check(
        tf.equal(count, 1),
        "mask ",
        path,
        " has ",
        count,
        " channels; masks must be single-channel class ids (colour-coded masks need an "
        "explicit palette mapping, which kerasseg.data does not do)",
    )
    with tf.control_dependencies([check]):
        mask = tf.identity(pixels)
    mask.set_shape([None, None, 1])
    return mask


def read_mask(path):
    """Read and decode one label image file; see `decode_mask`."""
    path = _path_tensor(path)
    return decode_mask(tf.io.read_file(path), path=path)


def _size_text(shape):
    return tf.strings.reduce_join(tf.strings.as_string(shape[:2]), separator="x")


def check_same_size(image, mask, image_path=None, mask_path=None):
    """Assert that `image` and `mask` have the same height and width, naming both files.

    Returns the assertion op (None in eager mode, where a mismatch raises at once); inside a
    `tf.function` or `tf.data` map it runs by itself, or put it in `tf.control_dependencies`.
    """
    image_path, mask_path = _path_tensor(image_path), _path_tensor(mask_path)
    image_shape, mask_shape = tf.shape(image), tf.shape(mask)
    return _check(
        tf.reduce_all(tf.equal(image_shape[:2], mask_shape[:2])),
        "image ",
        image_path,
        " is ",
        _size_text(image_shape),
        " (HxW) but mask ",
        mask_path,
        " is ",
        _size_text(mask_shape),
    )


def decode_pair(image_bytes, mask_bytes, *, image_path=None, mask_path=None, channels=None,
                dtype="uint8"):  # fmt: skip
    """Decode an encoded image and its mask, checking they have the same height and width.

    Args:
        image_bytes: scalar string tensor, the encoded image file.
        mask_bytes: scalar string tensor, the encoded mask file.
        image_path: optional str or scalar string tensor, used only in error messages.
        mask_path: optional str or scalar string tensor, used only in error messages.
        channels: as in `decode_image`.
        dtype: as in `decode_image`.

    Returns:
        (image, mask): float32 (H, W, C) with the stored values (not rescaled) and int32
        (H, W, 1).
    """
    image = decode_image(image_bytes, channels=channels, dtype=dtype, path=image_path)
    mask = decode_mask(mask_bytes, path=mask_path)
    with tf.control_dependencies([check_same_size(image, mask, image_path, mask_path)]):
        image = tf.cast(image, tf.float32)
        mask = tf.identity(mask)
    return image, mask


def load_pair(image_path, mask_path, *, channels=None, dtype="uint8"):
    """Read an image file and its mask file; see `decode_pair` for the checks and outputs."""
    image_path = _path_tensor(image_path)
    mask_path = _path_tensor(mask_path)
    return decode_pair(
        tf.io.read_file(image_path),
        tf.io.read_file(mask_path),
        image_path=image_path,
        mask_path=mask_path,
        channels=channels,
        dtype=dtype,
    )
