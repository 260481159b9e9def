"""Label maps drawn over their images."""

import numpy as np

__all__ = ["OVERLAY_COLOURS", "overlay"]

OVERLAY_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
    dtype=np.float64,
)


def overlay(image, labels, alpha=0.45, rows=256):
    """Blend an integer label map over a grey or RGB uint8 image; label 0 stays uncoloured.

    Args:
        image: uint8 (H, W) or (H, W, 3).
        labels: integer (H, W) label map.
        alpha: the weight of the label colours, in [0, 1].
        rows: rows blended at a time, so that a large image needs little memory beyond the
            result.

    Returns:
        uint8 (H, W, 3).
    """
    labels = np.asarray(labels)
    result = np.empty(labels.shape + (3,), np.uint8)
    colours = OVERLAY_COLOURS.astype(np.float32)
    for top in range(0, labels.shape[0], rows):
        part = image[top : top + rows]
        rgb = np.repeat(part[..., None], 3, axis=-1) if part.ndim == 2 else part
        rgb = rgb.astype(np.float32)
        band = labels[top : top + rows]
        painted = colours[1:][(band - 1) % (len(colours) - 1)]
        blend = np.where(band[..., None] > 0, (1 - alpha) * rgb + alpha * painted, rgb)
        result[top : top + rows] = np.clip(np.round(blend), 0, 255)
    return result
