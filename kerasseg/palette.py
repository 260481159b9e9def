"""Class names and display colours: one palette source for overlays, legends and label PNGs.

    palette = kerasseg.palette.generic_palette(5)      # 5 distinct colours, class 0 included
    palette = kerasseg.palette.Palette(["sky", "road"], [(128, 128, 128), (128, 64, 128)])
    palette.entries([0, 1])                            # LegendEntry rows of a legend

Presets and data sets carry their own palettes (`kerasseg.inference.colours.model_palette`
finds them); `generic_palette` is the fallback for models that name no data set, and
`instance_colours` colours instance ids (any number of them). numpy only.
"""

import dataclasses
import functools

import numpy as np

from kerasseg.ops.checks import check_int

__all__ = [
    "DISTINCT_COLOURS",
    "MAX_GENERIC_CLASSES",
    "MAX_IDS",
    "LegendEntry",
    "Palette",
    "generic_palette",
    "instance_boundaries",
    "instance_colours",
]

# A label PNG stores at most 16-bit ids.
MAX_IDS = 65536
MAX_GENERIC_CLASSES = 256

# Sasha Trubetskoy (2017), "List of 20 Simple, Distinct Colors"
# (https://sashamaps.net/docs/resources/20-colors/), in the list's order, without its white and
# black: red, green, yellow, blue, orange, purple, cyan, magenta, lime, pink, teal, lavender,
# brown, beige, maroon, mint, olive, coral, navy, grey.
DISTINCT_COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 190],
        [0, 128, 128],
        [230, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [170, 255, 195],
        [128, 128, 0],
        [255, 215, 180],
        [0, 0, 128],
        [128, 128, 128],
    ],
    dtype=np.uint8,
)
DISTINCT_COLOURS.flags.writeable = False


@dataclasses.dataclass(frozen=True)
class LegendEntry:
    """One row of a legend.

    Attributes:
        class_id: the label value.
        name: the class name.
        colour: (r, g, b) ints, the class's display colour.
        coloured: False for a class that overlays leave as the image (e.g. background).
    """

    class_id: int
    name: str
    colour: tuple
    coloured: bool


class Palette:
    """Class names and uint8 RGB display colours for label ids 0..N-1 (N <= 65536).

    Args:
        names: one name per class id.
        colours: one (r, g, b) per class id, integers in 0..255.
        uncoloured: class ids that overlays leave as the image (drawn unfilled in a
            legend); a label PNG still shows them in their colour.

    Raises:
        ValueError: names and colours of different lengths, no or more than 65536 classes,
            colours that are not integer (r, g, b) triples in 0..255, or an `uncoloured` id
            outside 0..N-1.
    """

    def __init__(self, names, colours, *, uncoloured=()):
        names = tuple(str(name) for name in names)
        array = np.asarray(colours)
        if not 1 <= len(names) <= MAX_IDS:
            raise ValueError(
                f"Palette: `names` must name 1 to {MAX_IDS} classes; got {len(names)}."
            )
        if array.shape != (len(names), 3):
            raise ValueError(
                f"Palette: `colours` must be one (r, g, b) per name, shape ({len(names)}, 3); "
                f"got shape {array.shape}."
            )
        integral = array.dtype.kind in "iu" or (
            array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array % 1 == 0)
        )
        if not integral or array.min() < 0 or array.max() > 255:
            raise ValueError(
                "Palette: `colours` must be integers in 0..255 (uint8 RGB); got values "
                f"{array.min()!r}..{array.max()!r} of dtype {array.dtype}; scale them yourself."
            )
        uncoloured = frozenset(
            check_int(i, "uncoloured", 0, len(names) - 1, context="Palette") for i in uncoloured
        )
        self.names = names
        self.colours = array.astype(np.uint8)
        self.colours.flags.writeable = False
        self.uncoloured = uncoloured

    def __len__(self):
        return len(self.names)

    def __eq__(self, other):
        return (
            isinstance(other, Palette)
            and self.names == other.names
            and np.array_equal(self.colours, other.colours)
            and self.uncoloured == other.uncoloured
        )

    def __hash__(self):
        return hash((self.names, self.colours.tobytes(), self.uncoloured))

    def __repr__(self):
        shown = ", ".join(f"{n!r}: {tuple(int(v) for v in c)}" for n, c in self._rows(4))
        more = f", ... {len(self) - 4} more" if len(self) > 4 else ""
        return f"Palette({{{shown}{more}}}, uncoloured={sorted(self.uncoloured)})"

    def _rows(self, count):
        return list(zip(self.names[:count], self.colours[:count], strict=True))

    def entries(self, class_ids):
        """The `LegendEntry` of each of `class_ids`, in the order given.

        Raises:
            ValueError: an id outside 0..N-1.
        """
        rows = []
        for class_id in class_ids:
            class_id = check_int(class_id, "class_ids", 0, len(self) - 1, context="Palette")
            rows.append(
                LegendEntry(
                    class_id,
                    self.names[class_id],
                    tuple(int(v) for v in self.colours[class_id]),
                    class_id not in self.uncoloured,
                )
            )
        return rows

    def png_palette(self):
        """The flat [r0, g0, b0, r1, ...] list of a "P" mode PNG (Pillow's `putpalette`).

        Raises:
            ValueError: more than 256 classes (a palette PNG holds 8-bit indices).
        """
        if len(self) > 256:
            raise ValueError(
                f"Palette: a palette PNG holds at most 256 classes; this palette has {len(self)} "
                "(write 16-bit grey ids instead)."
            )
        return [int(v) for v in self.colours.ravel()]


def _srgb_to_lab(rgb):
    """CIELAB (D65) of uint8 sRGB colours (N, 3), as in IEC 61966-2-1 and CIE 15."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ]
    )
    xyz = linear @ matrix.T / np.array([0.950456, 1.0, 1.088754])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1
    )


@functools.lru_cache(maxsize=1)
def _generic_colours():
    """`MAX_GENERIC_CLASSES` colours: `DISTINCT_COLOURS`, then Glasbey's greedy rule."""
    levels = np.arange(0, 256, 17)  # a 16 x 16 x 16 grid of candidate colours
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_lab(grid)
    # Black and white are kept out: black shows an uncoloured background in label PNGs and
    # white would vanish on bright images.
    taken = np.concatenate([[[0, 0, 0], [255, 255, 255]], DISTINCT_COLOURS])
    taken_lab = _srgb_to_lab(taken)
    nearest = np.full(len(grid), np.inf)
    for colour in taken_lab:
        nearest = np.minimum(nearest, np.linalg.norm(lab - colour, axis=1))
    chosen = [c for c in DISTINCT_COLOURS]
    while len(chosen) < MAX_GENERIC_CLASSES:
        best = int(np.argmax(nearest))
        chosen.append(grid[best])
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[best], axis=1))
    colours = np.array(chosen, np.uint8)
    colours.flags.writeable = False
    return colours


def generic_palette(num_classes, *, background=False):
    """A fixed palette of pairwise distinct colours for a model that names no data set.

    The first 20 colours are Trubetskoy's list of 20 distinct colours (`DISTINCT_COLOURS`);
    the rest, up to 256, are chosen by the greedy rule of Glasbey et al. (2007): each next
    colour is the one of a 16-level RGB grid farthest in CIELAB from every colour chosen so
    far (and from black and white). The palette is the same on every call and machine.

    Args:
        num_classes: classes, 1 to 256; the names are "class 0", "class 1", ...
        background: class 0 is background: black in label PNGs and left uncoloured in
            overlays, the classes 1.. take the distinct colours. Otherwise class 0 is
            coloured like every other class.

    Returns:
        A `Palette`.

    Raises:
        ValueError: `num_classes` is not an integer in 1..256.

    References:
        Trubetskoy, S. (2017). List of 20 Simple, Distinct Colors.
        https://sashamaps.net/docs/resources/20-colors/
        Glasbey, C., van der Heijden, G., Toh, V. F. K. & Gray, A. (2007). Colour displays
        for categorical images. Color Research & Application, 32(4), 304-309.
    """
    num_classes = check_int(
        num_classes, "num_classes", 1, MAX_GENERIC_CLASSES, context="generic_palette"
    )
    names = [f"class {i}" for i in range(num_classes)]
    if not background:
        return Palette(names, _generic_colours()[:num_classes])
    colours = np.concatenate([[[0, 0, 0]], _generic_colours()[: num_classes - 1]])
    return Palette(names, colours, uncoloured=(0,))


# The golden ratio's fractional part: hues i * GOLDEN mod 1 of consecutive ids lie far apart
# on the hue circle and never repeat (Weyl's equidistribution; the "golden angle" walk).
GOLDEN = 0.6180339887498949


def instance_colours(ids):
    """Display colours of instance ids: a golden-ratio walk around the hue circle.

    Consecutive ids differ in hue by 0.382 of the circle (137.5 degrees); saturation
    alternates with the id's parity and value cycles with period 3, which separates ids whose
    hues come close again (ids 21, 34, 55, ... apart). Id 0 (background) is black.

    Args:
        ids: integer ids >= 0, any shape.

    Returns:
        uint8 array of shape ids.shape + (3,).
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
        raise ValueError(
            f"instance_colours: `ids` must be integers >= 0; got dtype {ids.dtype}"
            + (f" with minimum {ids.min()}" if ids.size and ids.dtype.kind in "iu" else "")
            + "."
        )
    ids = ids.astype(np.int64)
    hue = (ids * GOLDEN) % 1.0
    saturation = np.where(ids % 2 == 0, 0.65, 0.95)
    value = np.choose(ids % 3, [1.0, 0.8, 0.9])
    rgb = _hsv_to_rgb(hue, saturation, value)
    rgb[ids == 0] = 0
    return np.round(rgb * 255).astype(np.uint8)


def _hsv_to_rgb(hue, saturation, value):
    """RGB in [0, 1] of HSV arrays in [0, 1] (the hexcone model of Smith 1978)."""
    sector = np.floor(hue * 6).astype(np.int64) % 6
    fraction = hue * 6 - np.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    red = np.choose(sector, [value, q, p, p, t, value])
    green = np.choose(sector, [t, value, value, q, p, p])
    blue = np.choose(sector, [p, p, t, value, value, q])
    return np.stack([red, green, blue], axis=-1)


def instance_boundaries(labels):
    """Inner contours of an instance map: pixels of an instance (id > 0) that touch a pixel of
    another id (4-neighbours), as scikit-image's `find_boundaries(mode="inner")`.

    Args:
        labels: integer (H, W) instance ids, 0 = background.

    Returns:
        bool (H, W).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"instance_boundaries: `labels` must be a 2-D (H, W) map; got shape {labels.shape}."
        )
    edge = np.zeros(labels.shape, bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (labels != 0)
