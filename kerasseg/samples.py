"""Built-in sample images with known ground truth, generated on the fly (no downloads).

Each function is deterministic for a seed and returns `(image, mask)`: a uint8 image and
its int32 label map, so the demo and tests can measure how well a method segments them.
"""

import numpy as np

__all__ = ["SAMPLES", "load_sample", "membranes", "nuclei", "shapes"]


def _grid(size):
    return np.mgrid[0:size, 0:size].astype(np.float64)


def _smooth_noise(rng, size, scale):
    coarse = rng.normal(size=(size // scale + 2, size // scale + 2))
    rows = np.linspace(0, coarse.shape[0] - 1.001, size)
    cols = np.linspace(0, coarse.shape[1] - 1.001, size)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def nuclei(size=256, count=24, seed=0):
    """Bright, roughly elliptical nuclei on a dark, unevenly lit background (grey)."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    mask = np.zeros((size, size), np.int32)
    brightness = np.zeros((size, size))
    for _ in range(count):
        cy, cx = rng.uniform(0.08, 0.92, size=2) * size
        ry, rx = rng.uniform(0.03, 0.07, size=2) * size
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        inside = u**2 + v**2 <= 1
        mask[inside] = 1
        brightness = np.maximum(brightness, inside * rng.uniform(0.6, 1.0))
    background = 40 + 25 * (xx / size) + 8 * _smooth_noise(rng, size, 32)
    image = background + 150 * brightness + rng.normal(0, 22, size=(size, size))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def membranes(size=256, cells=40, seed=1):
    """Cells separated by dark membranes, like electron microscopy (grey); mask 1 = interior."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    centres = rng.uniform(0, size, size=(cells, 2))
    distances = np.sqrt((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2)
    distances.sort(axis=-1)
    boundary = (distances[..., 1] - distances[..., 0]) < 3.0
    mask = (~boundary).astype(np.int32)
    texture = 12 * _smooth_noise(rng, size, 8)
    image = np.where(boundary, 60, 170) + texture + rng.normal(0, 35, size=(size, size))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def shapes(size=256, seed=2):
    """Coloured discs and squares on a textured background (RGB); mask 1 = object."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    image = np.stack([30 + 20 * _smooth_noise(rng, size, 16) for _ in range(3)], axis=-1)
    mask = np.zeros((size, size), np.int32)
    for i in range(8):
        cy, cx = rng.uniform(0.15, 0.85, size=2) * size
        radius = rng.uniform(0.05, 0.1) * size
        if i % 2:
            inside = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
        else:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[inside] = rng.uniform(140, 240, size=3)
        mask[inside] = 1
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


SAMPLES = {"nuclei": nuclei, "membranes": membranes, "shapes": shapes}


def load_sample(name, **kwargs):
    """`(image, mask)` of the built-in sample `name`.

    Args:
        name: "nuclei", "membranes" or "shapes".
        **kwargs: arguments of that sample's function (`size`, `seed`, ...).

    Returns:
        A uint8 image and its int32 label map.

    Raises:
        ValueError: `name` is not a built-in sample.
    """
    if name not in SAMPLES:
        raise ValueError(f"`name` must be one of {sorted(SAMPLES)}; got {name!r}.")
    return SAMPLES[name](**kwargs)
