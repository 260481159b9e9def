"""The ISBI 2012 membrane slices the classical benchmarks time, read once."""

from pathlib import Path

import numpy as np
import skimage.io


def membrane_slices(data):
    """All 55 ISBI 2012 slices (30 training, 25 test) as one (55, 512, 512) uint8 array.

    Args:
        data: the shared data folder (holding isbi2012-membrane/).

    Returns:
        The slices, training ones first.
    """
    folder = Path(data) / "isbi2012-membrane"
    paths = sorted(folder.glob("train/image/*.png")) + sorted(folder.glob("test/*.png"))
    if not paths:
        raise SystemExit(f"no ISBI 2012 slices under {folder}; pass --data <shared data folder>")
    return np.stack([skimage.io.imread(p) for p in paths])
