"""Tiled (sliding-window) prediction of dense models on images far larger than their crops.

    labels, probabilities = predict_tiled(model, image, tile=512, overlap=0.25)
    for top, bottom, band in tiled_probability_bands(model, image, tile=512):
        ...  # rows top:bottom of the probability map, final, in order

The image is padded at the bottom/right with zeros to the model's `size_divisor` (as whole-
image prediction does), covered by the overlapping windows of `tile_windows` (on the model's
stride grid, border windows flush with the image), and the windows are sent to the model in
batches of exactly `batch_size`. Their probabilities are blended by weights and divided by the
summed weights, row of windows by row of windows: only a band of one tile's height is held,
never a full-size accumulator, and the image stays in its own dtype (each window is converted
to float32 on its own). This is the scheme of MONAI's `sliding_window_inference`; the default
"cosine" blend is this package's (see `axis_weights`).

The rules that whole-image prediction shares with tiles (is the output logits, the size rule,
logits to probabilities, probabilities to labels) live here, below `semantic`, so that
`semantic.predict_image(tile=...)` can delegate without an import cycle.

References:
    Cardoso, M. J. et al. (2022). MONAI: An open-source framework for deep learning in
    healthcare. arXiv:2211.02701.
"""

import keras
import numpy as np

from kerasseg.inference.windows import tile_windows
from kerasseg.ops.checks import check_int, check_probability, did_you_mean

__all__ = [
    "BLENDS",
    "axis_weights",
    "labels_from_probabilities",
    "model_probabilities",
    "model_size_rule",
    "output_is_logits",
    "predict_tiled",
    "tiled_probability_bands",
    "to_probabilities",
    "window_count",
]

BLENDS = ("cosine", "gaussian", "constant")
GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's `sigma_scale` default, a fraction of the window size
GAUSSIAN_FLOOR = 1e-3  # MONAI clips its importance map away from 0 at this value


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


def model_size_rule(model):
    """(size_divisor, size_offset) of `model`: accepted sizes are offset + k * divisor
    ((1, 0), any size, for a model or callable that does not say)."""
    divisor = int(getattr(model, "size_divisor", 1) or 1)
    offset = int(getattr(model, "size_offset", 0) or 0)
    return divisor, offset


def to_probabilities(outputs, from_logits):
    """float32 probabilities from model outputs (..., C): a sigmoid (C = 1) or softmax of
    logits when `from_logits`, the outputs unchanged otherwise."""
    outputs = np.asarray(outputs, dtype=np.float32)
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


def model_probabilities(model, images, from_logits):
    """Probabilities float32 (B, H, W, C) of a float32 batch whose size the model accepts.

    Uses `model.predict_on_batch` when the model has it (one compiled function per input
    shape), else calls the model; checks that the output has the input's size.
    """
    if hasattr(model, "predict_on_batch"):
        outputs = model.predict_on_batch(images)
    else:
        outputs = model(images)
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float32)
    if outputs.ndim != 4 or outputs.shape[:3] != images.shape[:3]:
        raise ValueError(
            f"the model must output (batch, height, width, classes) at the input size "
            f"{tuple(images.shape[1:3])}; got shape {outputs.shape} (models with unpadded "
            f"convolutions, padding='valid', are not supported here)."
        )
    return to_probabilities(outputs, from_logits)


def _ramp(distance, radius):
    """Raised-cosine step from 0 (distance <= -radius) to 1 (distance >= radius)."""
    if radius <= 0:
        return (distance > 0).astype(np.float64)
    t = np.clip(distance / radius, -1.0, 1.0)
    return 0.5 + 0.5 * np.sin(0.5 * np.pi * t)


def axis_weights(spans, blend="cosine"):
    """Blending weights along one axis, float64, one array per window.

    Args:
        spans: the windows along the axis in order, (start, length, owned_start, owned_stop)
            each, as `kerasseg.inference.windows.axis_windows` gives them.
        blend: "cosine": 1 inside the owned interval, 0 beyond it, with a raised-cosine ramp
            of half-width r centred on each inner owned boundary, r a quarter of the overlap
            with that neighbour (at most half of either owned interval, so that two ramps never
            meet); the ramps of two neighbours are complementary, so the weights of all windows
            sum to exactly 1 at every pixel, and a window weighs 0 within a quarter of the
            overlap (at least) from its inner edges. "gaussian": MONAI's importance map, a
            Gaussian of sigma 0.125 x the window length centred on the window (the 2-D floor
            is applied by the caller). "constant": 1 (a uniform mean).

    Returns:
        A list of float64 arrays, the weight of each pixel of each window.
    """
    weights = []
    for index, (start, length, owned_start, owned_stop) in enumerate(spans):
        centres = np.arange(start, start + length) + 0.5
        if blend == "constant":
            weights.append(np.ones(length))
        elif blend == "gaussian":
            offsets = np.arange(length) - (length - 1) / 2.0
            sigma = GAUSSIAN_SIGMA_SCALE * length
            weights.append(np.exp(-(offsets**2) / (2.0 * sigma**2)))
        else:
            weight = np.ones(length)
            if index > 0:
                weight *= _ramp(centres - owned_start, _radius(spans[index - 1], spans[index]))
            if index < len(spans) - 1:
                weight *= 1.0 - _ramp(centres - owned_stop, _radius(spans[index], spans[index + 1]))
            weights.append(weight)
    return weights


def _radius(behind, ahead):
    """The ramp half-width at the boundary of two neighbouring windows along an axis."""
    overlap = behind[0] + behind[1] - ahead[0]
    return min(overlap / 4.0, (behind[3] - behind[2]) / 2.0, (ahead[3] - ahead[2]) / 2.0)


def _check_image(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(
            f"`image` must have shape (height, width) or (height, width, channels), none of "
            f"them 0; got {image.shape}."
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise TypeError(f"`image` must hold numbers; got dtype {image.dtype}.")
    if np.iscomplexobj(image):
        raise TypeError(f"`image` must hold real numbers; got dtype {image.dtype}.")
    return image


def _plan(model, image, tile, overlap, batch_size, blend):
    """Checks the arguments; returns ((padded height, padded width), windows, row spans,
    column spans), spans as `axis_weights` takes them."""
    divisor, offset = model_size_rule(model)
    if offset:
        raise ValueError(
            f"tiled prediction needs a model whose output has its input's size (padding="
            f"'same'); this one has size_offset={offset} (unpadded 'valid' convolutions). "
            "Predict the whole image, or build the model with padding='same'."
        )
    check_int(batch_size, "batch_size", minimum=1)
    if blend not in BLENDS:
        raise ValueError(
            f"`blend` must be one of {', '.join(map(repr, BLENDS))}; got {blend!r}."
            + did_you_mean(blend, BLENDS, count=1)
        )
    height, width = image.shape[:2]
    padded = (height + -height % divisor, width + -width % divisor)
    windows = tile_windows(*padded, tile, overlap, divisor)
    minimum = int(getattr(model, "min_size", 1) or 1)
    if min(windows[0].height, windows[0].width) < minimum:
        raise ValueError(
            f"`tile` {tile!r}: windows of {windows[0].height}x{windows[0].width} (the tile, "
            f"clipped to the image padded to {padded[0]}x{padded[1]}) are smaller than the "
            f"model's smallest input side {minimum}; use a larger tile (or image)."
        )
    rows = sorted({(w.top, w.height, w.owned[0], w.owned[1]) for w in windows})
    columns = sorted({(w.left, w.width, w.owned[2], w.owned[3]) for w in windows})
    return padded, windows, rows, columns


def _window_weights(rows, columns, blend):
    """A function (top, left) -> the float32 2-D weight of the window there (one array
    shared by all windows under "gaussian" and "constant", which do not depend on place)."""
    row_weights = dict(zip((r[0] for r in rows), axis_weights(rows, blend), strict=True))
    column_weights = dict(zip((c[0] for c in columns), axis_weights(columns, blend), strict=True))
    if blend != "cosine":  # every window has the same size and the same map
        shared = np.outer(row_weights[rows[0][0]], column_weights[columns[0][0]])
        if blend == "gaussian":
            shared = np.maximum(shared, max(shared.min(), GAUSSIAN_FLOOR))
        shared = shared.astype(np.float32)
        return lambda top, left: shared
    return lambda top, left: np.outer(row_weights[top], column_weights[left]).astype(np.float32)


def _window_batches(model, image, windows, batch_size, from_logits):
    """Yields (window, probabilities) in the order of `windows`; the model always gets a
    float32 batch of exactly `batch_size` windows (the last one filled up with zeros)."""
    shape = (batch_size, windows[0].height, windows[0].width, image.shape[-1])
    batch = np.zeros(shape, np.float32)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch[...] = 0
        for slot, window in enumerate(chunk):
            inside = image[
                window.top : window.top + window.height, window.left : window.left + window.width
            ]
            batch[slot, : inside.shape[0], : inside.shape[1]] = inside
        probs = model_probabilities(model, batch, from_logits)
        yield from zip(chunk, probs, strict=False)


def tiled_probability_bands(
    model, image, *, tile=512, overlap=0.25, batch_size=4, blend="cosine", from_logits=None
):
    """Blended probabilities of a large image, yielded band by band from the top.

    Windows are placed by `kerasseg.inference.windows.tile_windows` on the padded image and
    predicted in row-major order; a band buffer of one tile's height accumulates the weighted
    probabilities and the weights. When the first window of the next row of windows arrives,
    the rows above its top are covered by no later window: they are divided by their summed
    weights and yielded. Memory: the image, one band (tile rows x width x (C + 1) float32) and
    one batch, whatever the image's height.

    With `blend="cosine"`, tiled prediction equals whole-image prediction everywhere, image
    borders included (border windows are flush with the padded image and see the same zero
    padding), up to float round-off, wherever a quarter of the overlap between neighbouring
    windows covers the model's receptive radius: a window weighs 0 that close to its inner
    edges, where its output differs from the whole image's. "gaussian" and "constant" give
    every window weight up to its edges and so blend in outputs that saw the edge.

    Args:
        model: a `keras.Model` (or any callable) mapping (B, H, W, C) float32 images, values
            as stored, to (B, H, W, C') probabilities or logits at the input size; its
            `size_divisor` (total stride) places the windows; `size_offset` must be 0.
        image: (H, W) or (H, W, C) array of any numeric dtype, values as stored.
        tile: the window side, or (height, width); multiples of the model's `size_divisor`.
            Clipped to the padded image along an axis where the image is smaller.
        overlap: overlap of neighbouring windows, a fraction of the tile in [0, 1).
        batch_size: windows per model call (every call gets exactly this many).
        blend: "cosine", "gaussian" or "constant"; see `axis_weights`.
        from_logits: None detects it from the model's "output" layer; True applies a sigmoid
            (1 channel) or softmax (more) to each window's outputs before blending.

    Returns:
        An iterator of (row_start, row_stop, probabilities): consecutive row ranges covering
        the image from the top, and float32 (row_stop - row_start, W, C') blended
        probabilities of those rows, final when yielded.

    Raises:
        ValueError: a bad image, tile, overlap, batch size or blend, or a model with
            `size_offset` != 0 (when called, before any window is predicted).
    """
    image = _check_image(image)
    padded, windows, rows, columns = _plan(model, image, tile, overlap, batch_size, blend)
    if from_logits is None:
        from_logits = output_is_logits(model)
    batches = _window_batches(model, image, windows, batch_size, from_logits)
    return _bands(batches, _window_weights(rows, columns, blend), image.shape[:2], padded)


def _bands(batches, weight_of, size, padded):
    """The generator of `tiled_probability_bands` (which checks the arguments at once)."""
    height, width = size
    band_top, sums, weights = 0, None, None
    for window, probs in batches:
        if sums is None:
            sums = np.zeros((window.height, padded[1], probs.shape[-1]), np.float32)
            weights = np.zeros(sums.shape[:2], np.float32)
        if window.top > band_top:
            yield from _emit(sums, weights, band_top, window.top, height, width)
            _shift(sums, weights, window.top - band_top)
            band_top = window.top
        weight = weight_of(window.top, window.left)
        rows_at = slice(window.top - band_top, window.top - band_top + window.height)
        columns_at = slice(window.left, window.left + window.width)
        sums[rows_at, columns_at] += probs * weight[..., None]
        weights[rows_at, columns_at] += weight
    yield from _emit(sums, weights, band_top, padded[0], height, width)


def _emit(sums, weights, band_top, stop, height, width):
    """The final rows [band_top, stop) of the band, cropped to the image, as one band."""
    stop = min(stop, height)
    if stop > band_top:
        count = stop - band_top
        band = sums[:count, :width] / weights[:count, :width, None]
        yield band_top, stop, band.astype(np.float32, copy=False)


def _shift(sums, weights, rows):
    """Moves the band up by `rows` (NumPy copies overlapping slices safely) and clears the
    rows that come free at its bottom."""
    for buffer in (sums, weights):
        buffer[:-rows] = buffer[rows:]
        buffer[-rows:] = 0


def predict_tiled(
    model,
    image,
    *,
    tile=512,
    overlap=0.25,
    batch_size=4,
    blend="cosine",
    threshold=0.5,
    from_logits=None,
    keep_probabilities=True,
):
    """Segment a large image by overlapping tiles (MONAI's sliding-window inference).

    The contract of `kerasseg.inference.predict_image`, with memory bounded by a tile's band
    rather than by the image: see `tiled_probability_bands` for the scheme, the blends and
    when the result equals whole-image prediction.

    Args:
        model: a `keras.Model` (or callable) as in `tiled_probability_bands`.
        image: (H, W) or (H, W, C) array of any numeric dtype, values as stored.
        tile: the window side (or (height, width)), a multiple of the model's `size_divisor`.
        overlap: overlap of neighbouring windows, a fraction of the tile in [0, 1).
        batch_size: windows per model call.
        blend: "cosine" (default), "gaussian" (MONAI's importance map) or "constant".
        threshold: class 1 where the probability of a 1-channel (sigmoid) output exceeds it.
        from_logits: None detects it from the model's "output" layer.
        keep_probabilities: False returns None for the probabilities and never holds the full
            probability map (only the labels).

    Returns:
        (labels, probabilities): int32 (H, W) class ids and float32 (H, W, C) probabilities
        (C = 1 for a binary sigmoid model), or None with `keep_probabilities=False`.

    References:
        Cardoso, M. J. et al. (2022). MONAI: An open-source framework for deep learning in
        healthcare. arXiv:2211.02701.
    """
    check_probability(threshold, "threshold")
    image = _check_image(image)
    labels = np.empty(image.shape[:2], np.int32)
    probabilities = None
    bands = tiled_probability_bands(
        model,
        image,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        blend=blend,
        from_logits=from_logits,
    )
    for top, bottom, band in bands:
        labels[top:bottom] = labels_from_probabilities(band, threshold)
        if keep_probabilities:
            if probabilities is None:
                probabilities = np.empty((*image.shape[:2], band.shape[-1]), np.float32)
            probabilities[top:bottom] = band
    return labels, probabilities


def window_count(height, width, model=None, *, tile=512, overlap=0.25):
    """How many windows `predict_tiled` runs on a (height, width) image (benchmarks, logs)."""
    divisor = model_size_rule(model)[0] if model is not None else 1
    padded = (height + -height % divisor, width + -width % divisor)
    return len(tile_windows(*padded, tile, overlap, divisor))
