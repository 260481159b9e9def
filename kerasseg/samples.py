"""Built-in sample images with known ground truth, generated on the fly (no downloads).

Each function is deterministic for a seed and returns `(image, mask)`: a uint8 image and
its int32 label map, so the demo and tests can measure how well a method segments them.
"""

import numpy as np

__all__ = ["SAMPLES", "load_sample", "membranes", "nuclei", "shapes", "street"]


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


# CamVid's class ids (kerasseg.datasets.CAMVID) of the classes `street` draws.
_SKY, _BUILDING, _POLE, _ROAD, _PAVEMENT, _TREE, _CAR = 0, 1, 2, 3, 4, 5, 8


def _street_things(rng, image, mask, paint, horizon, centre):
    """Draw the trees, poles and car of `street` into `image` and `mask` (in place)."""
    height, width = mask.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    leaves = _smooth_noise(rng, max(height, width), 3)[:height, :width]
    for tree_x in (0.08, 0.9):  # trees on the pavements
        cy, cx = horizon - 0.08 * height, tree_x * width
        crown = ((yy - cy) / (0.17 * height)) ** 2 + ((xx - cx) / (0.1 * width)) ** 2 < 1
        crown &= leaves > -1.2  # gaps in the foliage show what is behind
        image[crown] = np.array([55.0, 70.0, 35.0]) + 28 * leaves[crown, None] * [1.0, 1.2, 0.6]
        mask[crown] = _TREE
        trunk = (np.abs(xx - cx) < 4) & (yy >= cy) & (yy < horizon + 0.2 * height) & ~crown
        paint(trunk, np.array([70.0, 55.0, 40.0]), _TREE)
    for pole_x in (0.25, 0.75):
        x = centre + (pole_x - 0.5) * width * 1.3
        pole = (np.abs(xx - x) < 2.5) & (yy > 0.2 * height) & (yy < horizon + 0.15 * height)
        paint(pole, np.array([70.0, 70.0, 70.0]), _POLE, texture=4.0)
    car_top, car_left = 0.62 * height, centre - 0.2 * width
    car = (yy >= car_top) & (yy < car_top + 0.16 * height)
    car &= (xx >= car_left) & (xx < car_left + 0.24 * width)
    paint(car, np.array([150.0, 30.0, 35.0]), _CAR, texture=5.0)  # a red car
    glass = (
        car
        & (yy < car_top + 0.06 * height)
        & (xx > car_left + 8)
        & (xx < car_left + 0.24 * width - 8)
    )
    image[glass] = [40, 50, 60]
    wheels = (
        car & (yy > car_top + 0.12 * height) & (np.abs(xx - car_left - 0.12 * width) > 0.08 * width)
    )
    image[wheels] = [25, 25, 28]


def street(height=360, width=480, seed=3):
    """A drawn street scene in perspective, like a CamVid frame (RGB); mask = CamVid class ids.

    A bright overcast sky, building facades with windows that come down to the pavements, a
    road narrowing to the horizon with lane marks, trees, poles and a car, each with texture
    and noise. The mask holds the CamVid ids of `kerasseg.datasets.CAMVID` (sky 0,
    building 1, pole 2, road 3, pavement 4, tree 5, car 8).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = 0.45 * height
    centre = width * rng.uniform(0.45, 0.55)
    # An overcast sky as a camera exposes it for the street: nearly white, a little grey.
    fade = np.minimum(yy / horizon, 1.0)[..., None]
    image = (1 - fade) * np.array([232.0, 236.0, 242.0]) + fade * np.array([246.0, 247.0, 248.0])
    image = image + 6 * _smooth_noise(rng, max(height, width), 48)[:height, :width, None]
    mask = np.full((height, width), _SKY, np.int32)

    def paint(region, colour, label, texture=8.0):
        image[region] = colour + texture * rng.normal(size=(int(region.sum()), 1))
        mask[region] = label

    spread = np.clip((yy - horizon) / (height - horizon), 0, None)  # 0 at the horizon
    kerb = 0.04 * width + spread * 0.75 * width  # the pavements' outer edge from the centre
    facade_foot = (yy >= horizon) & (np.abs(xx - centre) >= kerb)  # buildings meet the kerb
    left = 0.0
    while left < width:  # a row of facades in muted stone, brick and render colours
        right = left + width * rng.uniform(0.12, 0.22)
        top = height * rng.uniform(0.02, 0.25)
        tone = rng.uniform(0.55, 1.0) * np.array(
            [(150.0, 120.0, 95.0), (175.0, 160.0, 135.0), (120.0, 110.0, 105.0)][rng.integers(3)]
        )
        block = (xx >= left) & (xx < right) & (((yy >= top) & (yy < horizon)) | facade_foot)
        paint(block, tone, _BUILDING, texture=10.0)
        image[block & ((yy - top) % 6 < 1)] *= 0.9  # courses of brick or stone
        windows = block & ((yy - top) % 24 < 12) & ((xx - left) % 20 < 9) & (yy > top + 6)
        image[windows] = image[windows] * 0.35 + 10
        left = right
    below = (yy >= horizon) & ~facade_foot
    paint(below, np.array([150.0, 140.0, 125.0]), _PAVEMENT, texture=8.0)
    slabs = below & ((yy - horizon) % (4 + 30 * spread) < 1 + spread)
    image[slabs] *= 0.8  # the joints between paving slabs
    road = below & (np.abs(xx - centre) < 0.02 * width + spread * 0.5 * width)
    paint(road, np.array([82.0, 80.0, 86.0]), _ROAD, texture=7.0)
    kerb_stone = below & ~road & (np.abs(xx - centre) < 0.02 * width + spread * 0.53 * width)
    image[kerb_stone] = [185.0, 180.0, 172.0]
    marks = road & (np.abs(xx - centre) < 1 + 4 * spread) & ((yy - horizon) % 40 < 20 * spread + 4)
    image[marks] = 225
    _street_things(rng, image, mask, paint, horizon, centre)
    image += rng.normal(0, 2, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


SAMPLES = {"nuclei": nuclei, "membranes": membranes, "shapes": shapes, "street": street}


def load_sample(name, **kwargs):
    """`(image, mask)` of the built-in sample `name`.

    Args:
        name: "nuclei", "membranes", "shapes" or "street".
        **kwargs: arguments of that sample's function (`size`, `seed`, ...).

    Returns:
        A uint8 image and its int32 label map.

    Raises:
        ValueError: `name` is not a built-in sample.
    """
    if name not in SAMPLES:
        raise ValueError(f"`name` must be one of {sorted(SAMPLES)}; got {name!r}.")
    return SAMPLES[name](**kwargs)
