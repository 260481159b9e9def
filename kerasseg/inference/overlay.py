"""Label maps drawn over their images, in their palette's colours, with a legend.

picture = overlay(image, labels, palette=model_palette(model), legend=True)
picture = instance_overlay(image, instance_ids)      # distinct colours and contours
"""

import numpy as np

from kerasseg.ops.checks import check_int, check_probability
from kerasseg.palette import (
    MAX_GENERIC_CLASSES,
    generic_palette,
    instance_boundaries,
    instance_colours,
)

__all__ = [
    "instance_overlay",
    "legend_entries",
    "legend_strip",
    "overlay",
]


def _check_maps(image, labels, name):
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(
            f"{name}: `labels` must be an integer (H, W) map; got {labels.dtype} of shape "
            f"{labels.shape}."
        )
    shape_ok = image.shape[:2] == labels.shape and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)
    )
    if not shape_ok or image.dtype != np.uint8:
        raise ValueError(
            f"{name}: `image` must be uint8 (H, W) or (H, W, 3) with the labels' (H, W) = "
            f"{labels.shape}; got {image.dtype} of shape {image.shape} (see "
            "kerasseg.inference.display_image)."
        )
    return image, labels.astype(np.int64) if labels.dtype == bool else labels


def _check_ids(labels, palette, name):
    """The palette to use; every id of `labels` must have a colour in it."""
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if palette is None:
        if high >= MAX_GENERIC_CLASSES or low < 0:
            raise ValueError(
                f"{name}: `labels` hold ids {low}..{high}; without a `palette` ids 0.."
                f"{MAX_GENERIC_CLASSES - 1} are drawn. Pass a palette, or instance_overlay "
                "for instance ids."
            )
        return generic_palette(max(high + 1, 2), background=True)
    if low < 0 or high >= len(palette):
        raise ValueError(
            f"{name}: `labels` hold ids {low}..{high} but the palette has colours for ids "
            f"0..{len(palette) - 1}; pass a palette that names every id (for an ignore "
            "label: kerasseg.inference.colours.dataset_palette(..., ignore=True))."
        )
    return palette


def _grey_to_rgb(part):
    return np.repeat(part[..., None], 3, axis=-1) if part.ndim == 2 else part


def overlay(image, labels, alpha=0.45, rows=256, *, palette=None, legend=False):
    """Blend an integer label map over a grey or RGB uint8 image in a palette's colours.

    Each pixel becomes `(1 - alpha) * image + alpha * colour` of its class; the palette's
    `uncoloured` classes stay as the image. Without a palette, class 0 stays uncoloured
    (background) and classes 1.. take `kerasseg.palette.generic_palette`'s colours.

    Args:
        image: uint8 (H, W) or (H, W, 3).
        labels: integer (H, W) label map.
        alpha: the weight of the label colours, in [0, 1].
        rows: rows blended at a time, so that a large image needs little memory beyond the
            result.
        palette: a `kerasseg.palette.Palette` with a colour for every id of `labels`
            (`kerasseg.inference.colours.model_palette(model)` finds a model's), or None.
        legend: add a strip below the image naming the classes present, each with its
            colour swatch (`legend_strip`); the picture is widened (white on the right)
            where a legend row is wider than the image.

    Returns:
        uint8 (H, W, 3), or (H + strip, max(W, strip width), 3) with `legend`.

    Raises:
        ValueError: a label id without a colour in the palette, or mismatched shapes.
    """
    image, labels = _check_maps(image, labels, "overlay")
    alpha = check_probability(alpha, "alpha", "overlay")
    rows = check_int(rows, "rows", 1, context="overlay")
    palette = _check_ids(labels, palette, "overlay")
    colours = palette.colours.astype(np.float32)
    painted = np.ones(len(palette), bool)
    painted[list(palette.uncoloured)] = False
    result = np.empty(labels.shape + (3,), np.uint8)
    for top in range(0, labels.shape[0], rows):
        rgb = _grey_to_rgb(image[top : top + rows]).astype(np.float32)
        band = labels[top : top + rows]
        blend = np.where(painted[band][..., None], (1 - alpha) * rgb + alpha * colours[band], rgb)
        result[top : top + rows] = np.round(blend)  # a convex blend of 0..255 values
    if not legend:
        return result
    return _stack(result, legend_strip(legend_entries(labels, palette), labels.shape[1]))


def legend_entries(labels, palette):
    """The `kerasseg.palette.LegendEntry` rows of the classes present in `labels`, by id.

    Raises:
        ValueError: an id of `labels` that the palette does not name.
    """
    labels = np.asarray(labels)
    palette = _check_ids(labels, palette, "legend_entries")
    counts = np.zeros(len(palette), np.int64)
    for band in np.array_split(labels.ravel(), max(1, labels.size // (1 << 22))):
        counts += np.bincount(band, minlength=len(palette))
    return palette.entries(np.flatnonzero(counts))


def _font(size):
    from PIL import ImageFont  # Pillow draws the legend text only

    return ImageFont.load_default(size=size)


def legend_strip(entries, width, *, size=None):
    """A white strip with one swatch and name per legend entry, wrapped into rows.

    Coloured entries get a filled swatch of their exact colour with a dark outline;
    uncoloured ones an empty outlined swatch and "(not coloured)" after their name.

    Args:
        entries: `kerasseg.palette.LegendEntry` rows (`legend_entries`).
        width: the picture's width; the strip is wider only when one entry is.
        size: the text and swatch height in pixels; None: width / 40, within 12..32.

    Returns:
        uint8 (h, w, 3) with w = max(width, the widest entry).
    """
    from PIL import Image, ImageDraw  # Pillow draws the legend only

    width = check_int(width, "width", 1, context="legend_strip")
    size = check_int(
        size if size is not None else int(np.clip(round(width / 40), 12, 32)),
        "size",
        6,
        context="legend_strip",
    )
    font, gap = _font(size), max(4, size // 2)
    texts = [e.name if e.coloured else f"{e.name} (not coloured)" for e in entries]
    widths = [size + gap + int(np.ceil(font.getlength(t))) for t in texts]
    strip_width = max([width] + [w + 2 * gap for w in widths])
    places, x, y = [], gap, gap
    for item in widths:
        if x > gap and x + item > strip_width - gap:
            x, y = gap, y + size + gap
        places.append((x, y))
        x += item + 2 * gap
    picture = Image.new("RGB", (strip_width, y + size + gap), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for entry, text, (x, y) in zip(entries, texts, places, strict=True):
        fill = entry.colour if entry.coloured else None
        draw.rectangle([x, y, x + size - 1, y + size - 1], fill=fill, outline=(64, 64, 64))
        draw.text((x + size + gap, y + size / 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(picture)


def _stack(picture, strip):
    """`picture` above `strip`, the narrower one widened with white on the right."""
    width = max(picture.shape[1], strip.shape[1])

    def widen(part):
        pad = np.full((part.shape[0], width - part.shape[1], 3), 255, np.uint8)
        return np.concatenate([part, pad], axis=1)

    return np.concatenate([widen(picture), widen(strip)], axis=0)


def instance_overlay(image, instances, alpha=0.45, rows=256, *, contours=True):
    """Blend an instance map over its image: one colour per instance, contours drawn.

    Instance i is filled with `kerasseg.palette.instance_colours(i)` (a golden-ratio hue
    walk: neighbouring ids get far-apart hues) blended with weight `alpha`; its inner
    contour (`kerasseg.palette.instance_boundaries`: its pixels that touch another id) is
    drawn in that colour at full strength. Background (0) stays as the image.

    Args:
        image: uint8 (H, W) or (H, W, 3).
        instances: integer (H, W) instance ids >= 0.
        alpha: the weight of the fill colours, in [0, 1].
        rows: rows drawn at a time (each band reads one row more above and below).
        contours: draw the contours.

    Returns:
        uint8 (H, W, 3).
    """
    image, instances = _check_maps(image, instances, "instance_overlay")
    alpha = check_probability(alpha, "alpha", "instance_overlay")
    rows = check_int(rows, "rows", 1, context="instance_overlay")
    if instances.size and instances.min() < 0:
        raise ValueError(
            f"instance_overlay: `instances` must be ids >= 0; got minimum {instances.min()}."
        )
    result = np.empty(instances.shape + (3,), np.uint8)
    height = instances.shape[0]
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        above, below = max(top - 1, 0), min(bottom + 1, height)
        band = instances[top:bottom]
        rgb = _grey_to_rgb(image[top:bottom]).astype(np.float32)
        colours = instance_colours(band).astype(np.float32)
        weight = np.where(band > 0, np.float32(alpha), np.float32(0))
        if contours:
            edges = instance_boundaries(instances[above:below])[top - above : bottom - above]
            weight[edges] = 1.0
        weight = weight[..., None]
        result[top:bottom] = np.round((1 - weight) * rgb + weight * colours)
    return result
