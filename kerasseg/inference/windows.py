"""Overlapping windows over a large image: where tiled prediction runs the model.

    windows = tile_windows(8000, 8000, tile=512, overlap=0.25, divisor=32)

Windows lie inside the image and are placed on a grid whose step is a multiple of the
model's total stride (`divisor`), so a window sees the same pooling grid as whole-image
prediction; the last window of a row or column is flush with the image border (it may overlap
its neighbour more). An image no larger than the tile along an axis gets one window of the
image's size along it. Each window also carries the part of the image it owns: the owned
parts split every overlap at its middle and together cover every pixel exactly once.

The height and width given must already fit `divisor` (callers pad the image first, as
whole-image prediction does).
"""

from typing import NamedTuple

from kerasseg.ops.checks import check_int, check_number

__all__ = ["Window", "axis_windows", "tile_windows"]


class Window(NamedTuple):
    """One window of `tile_windows`, in pixels of the (padded) image.

    Attributes:
        top, left: the window's first row and column.
        height, width: its size.
        owned: (top, bottom, left, right), the half-open part of the image this window owns.
        inner: (top, bottom, left, right) booleans, True where that edge of the window lies
            inside the image (a neighbouring window continues there), False at the image
            border.
    """

    top: int
    left: int
    height: int
    width: int
    owned: tuple
    inner: tuple


def axis_windows(size, tile, overlap, divisor=1):
    """Windows along one axis: a list of (start, length, owned_start, owned_stop).

    Args:
        size: the axis length, a multiple of `divisor`.
        tile: the window length, a multiple of `divisor`.
        overlap: the wanted overlap of neighbouring windows as a fraction of `tile`, in
            [0, 1); the step is rounded down to a multiple of `divisor` (at least `divisor`),
            so the overlap is at least the one asked for.
        divisor: the model's total stride.
    """
    if size <= tile:
        return [(0, size, 0, size)]
    step = int(tile - round(overlap * tile)) // divisor * divisor
    step = max(step, divisor)
    starts = list(range(0, size - tile, step)) + [size - tile]
    bounds = [0] + [
        (ahead + behind + tile) // 2 for behind, ahead in zip(starts, starts[1:], strict=False)
    ]
    bounds.append(size)
    return [(start, tile, bounds[index], bounds[index + 1]) for index, start in enumerate(starts)]


def tile_windows(height, width, tile, overlap=0.25, divisor=1):
    """The windows covering a (height, width) image, row by row, left to right.

    Args:
        height, width: the image size, multiples of `divisor`.
        tile: the window side, a multiple of `divisor`; an int, or (tile_height, tile_width).
        overlap: overlap of neighbouring windows as a fraction of the tile, in [0, 1).
        divisor: the model's total stride.

    Returns:
        A list of `Window`s in row-major order.

    Raises:
        ValueError: a tile that is not a positive multiple of `divisor`, an overlap outside
            [0, 1), or an image size that does not fit `divisor`.
    """
    divisor = check_int(divisor, "divisor", minimum=1)
    tiles = tuple(tile) if isinstance(tile, tuple | list) else (tile, tile)
    for name, value in zip(("tile height", "tile width"), tiles, strict=True):
        check_int(value, name, minimum=1)
        if value % divisor:
            low = max(divisor, value // divisor * divisor)
            raise ValueError(
                f"`tile`: {name} {value} is not a multiple of the model's total stride "
                f"{divisor}; use {low} or {low + divisor}."
            )
    overlap = check_number(overlap, "overlap", 0, 1)
    if overlap >= 1:
        raise ValueError(f"`overlap` must be a fraction of the tile in [0, 1); got {overlap!r}.")
    for name, value in (("height", height), ("width", width)):
        check_int(value, name, minimum=1)
        if value % divisor:
            raise ValueError(
                f"tile_windows: image {name} {value} is not a multiple of {divisor}; pad the "
                "image first."
            )
    rows = axis_windows(height, tiles[0], overlap, divisor)
    columns = axis_windows(width, tiles[1], overlap, divisor)
    windows = []
    for row, (top, tile_height, own_top, own_bottom) in enumerate(rows):
        for column, (left, tile_width, own_left, own_right) in enumerate(columns):
            inner = (row > 0, row < len(rows) - 1, column > 0, column < len(columns) - 1)
            owned = (own_top, own_bottom, own_left, own_right)
            windows.append(Window(top, left, tile_height, tile_width, owned, inner))
    return windows
