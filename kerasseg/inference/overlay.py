"""Label maps drawn over their images."""

import numpy as np

__all__ = ["OVERLAY_COLOURS", "overlay"]

OVERLAY_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
    dtype=np.float64,
)


def overlay(image, labels, alpha=0.45):
    """Blend an integer label map over a grey or RGB uint8 image; label 0 stays uncoloured.

    Args:
        image: uint8 (H, W) or (H, W, 3).
        labels: integer (H, W) label map.
        alpha: the weight of the label colours, in [0, 1].

    Returns:
        uint8 (H, W, 3).
    """
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    rgb = rgb.astype(np.float64)
    colours = OVERLAY_COLOURS[1:][(labels - 1) % (len(OVERLAY_COLOURS) - 1)]
    blend = np.where(labels[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)
