"""Seeded region growing (flood fill) and connected-component labelling as batched Keras layers.

Both are iterative and data-dependent, written as bounded `keras.ops.while_loop`s over the
whole batch (the loop runs until every image has converged or `max_iter` is reached) with
keras.ops only, so they run eagerly, in `tf.function`, with XLA (`jit_compile=True`) and
inside `tf.data`.

* `RegionGrowing` grows each seed's region one pixel ring per step (geodesic dilation on
  bit-packed masks) for up to 32 steps, which settles small regions; larger ones are the
  connected component of the pixels within `tolerance` of the seed's value that holds the
  seed (`component_roots`: label equivalence, a number of passes that grows with the
  logarithm of the region's size). With `max_iter` it only grows ring by ring, so the cap is
  a geodesic radius.
* `ConnectedComponents` labels by label equivalence with pointer jumping on blocks of
  pixels (`label_components`), then numbers the components in raster order of their first
  pixel, as scikit-image does.

References:
    R. Adams and L. Bischof, "Seeded region growing", IEEE TPAMI 16(6), 1994.
    A. Rosenfeld and J. L. Pfaltz, "Sequential operations in digital picture processing",
    J. ACM 13(4), 1966. K. Wu, E. Otoo and K. Suzuki, "Optimizing two-pass connected-component
    labeling algorithms", Pattern Anal. Appl. 12, 2009 (LBNL report 2005). O. Kalentev et al.,
    "Connected component labeling on a 2D grid using CUDA", J. Parallel Distrib. Comput. 71,
    2011 (label equivalence with pointer jumping, the parallel scheme used here). D. P.
    Playne and K. Hawick, "A new algorithm for parallel connected-component labelling on
    GPUs", IEEE TPDS 29(6), 2018 (labelling blocks of pixels instead of pixels).
"""

import math

import keras
import numpy as np
from keras import ops

from kerasseg.classical.base import ClassicalLayer, layer_model, register_classical
from kerasseg.models.base import SegmentationModel
from kerasseg.ops.checks import check_int, is_number
from kerasseg.ops.components import check_connectivity, grow
from kerasseg.ops.image import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    INTEGER_LIMITS,
    check_finite,
    check_images,
    images_input,
    is_symbolic,
    to_grey,
)
from kerasseg.ops.labelling import component_roots, label_components

__all__ = ["ConnectedComponents", "RegionGrowing", "connected_components", "region_growing"]

# Rings of bit-packed growth tried before labelling the candidates: a region whose geodesic
# radius is under 32 pixels settles in them (one pass over 1/32 of the image each).
SMALL_REGION_STEPS = 32

# ----------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="kerasseg")
class RegionGrowing(ClassicalLayer):
    """Seeded region growing / flood fill with `skimage.morphology.flood` semantics.

    For each seed, its region is the set of pixels connected to the seed through pixels
    whose value v satisfies `low <= v <= high`, with low/high = seed value -/+ `tolerance`
    clipped to the dtype's range (inclusive, always relative to the seed's value, never to
    the neighbour's), or `v == seed value` when `tolerance` is None. As scikit-image, integer
    images use the bounds converted to the image dtype (truncated toward zero), float images
    the bounds rounded to the image's float dtype. Colour images are converted with rgb2gray
    first (tolerance then in [0, 1] units).

    Call: `layer(images, seeds)` with images (batch, H, W, C) and seeds (batch, S, 2) integer
    (row, col) positions. A seed (-1, -1) is padding (no region). Output: int32 labels
    (batch, H, W, 1), 0 outside every region and i + 1 in the region of seed i; where regions
    overlap, the smallest seed index wins. With `return_converged=True` also a (batch,) bool
    that is False for an image whose regions still grew at the last allowed step.

    Args:
        tolerance: None (equal values) or a real >= 0.
        connectivity: 2 (8-connected, scikit-image's default "full") or 1 (4-connected);
            4 and 8 are accepted as aliases.
        max_iter: None (the whole region) or a cap on the geodesic radius: the region then
            grows one pixel ring per step for at most `max_iter` steps (the loop ends
            earlier when nothing grows, checked every 16 steps).
        return_converged: also return the converged flags.

    Seeds outside the image (other than (-1, -1)) and NaN pixels raise ValueError in eager
    calls; in traced calls an out-of-range seed gives no region and NaN pixels never join a
    region (a NaN seed gives an empty region). float16/bfloat16 images are compared in
    float32 (scikit-image refuses float16). Negative seed indices do not wrap around as
    numpy indexing (and `flood`) would. Cost: up to 32 rings of growth on bit-packed masks
    (a pass over 1/32 of the image each), which settle regions of geodesic radius under 32;
    if a region still grows, a connected-component labelling of each seed's candidates
    (about log2 of the region's size passes: 6 for the 21452-pixel region of the ISBI
    benchmark). With `max_iter`, one ring per step up to `max_iter`. Eager
    calls run the loop op by op: call it inside `tf.function`, `model.predict` or `tf.data`
    (best with `jit_compile=True`).

    Example:
        >>> labels = RegionGrowing(tolerance=20)(images, seeds)  # seeds: (batch, S, 2) int32
    """

    config_keys = ("tolerance", "connectivity", "max_iter", "return_converged")

    def __init__(
        self, tolerance=None, connectivity=2, max_iter=None, return_converged=False, **kwargs
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if tolerance is not None:
            if not is_number(tolerance) or not math.isfinite(tolerance):
                raise TypeError(f"`tolerance` must be None or a finite number; got {tolerance!r}.")
            if tolerance < 0:
                raise ValueError(f"`tolerance` must be >= 0; got {tolerance!r}.")
            tolerance = float(tolerance)
        self.tolerance = tolerance
        self.connectivity = check_connectivity(connectivity)
        self.max_iter = check_int(max_iter, "max_iter", 1, allow_none=True)
        self.return_converged = bool(return_converged)
        self.supports_jit = True

    def _check_seeds(self, seeds, images):
        shape = tuple(seeds.shape)
        if len(shape) != 3 or shape[-1] != 2:
            raise ValueError(
                f"RegionGrowing: `seeds` must have shape (batch, num_seeds, 2) of (row, col) "
                f"positions; got shape {shape}."
            )
        dtype = keras.backend.standardize_dtype(seeds.dtype)
        if dtype not in ("int32", "int64", "int16", "uint8", "uint16", "int8"):
            raise TypeError(f"RegionGrowing: `seeds` must be integers (int32); got {dtype}.")
        if is_symbolic(seeds) or is_symbolic(images):
            return
        values = np.asarray(ops.convert_to_numpy(seeds)).reshape(-1, 2)
        height, width = images.shape[1], images.shape[2]
        padding = np.all(values == -1, axis=1)
        inside = (values[:, 0] >= 0) & (values[:, 0] < height)
        inside &= (values[:, 1] >= 0) & (values[:, 1] < width)
        bad = values[~(padding | inside)]
        if len(bad):
            raise ValueError(
                f"RegionGrowing: `seeds` must be (row, col) inside the {height}x{width} image "
                f"or (-1, -1) for padding; got {bad[0].tolist()}."
            )

    def call(self, images, seeds, training=None):
        name = type(self).__name__
        dtype = check_images(images, name)
        check_finite(images, name)
        self._check_seeds(seeds, images)
        if images.shape[-1] == 1:
            grey = images[..., 0]
        else:
            grey = to_grey(images, "float32" if dtype == "float32" else "float64")[..., 0]
        grey_dtype = keras.backend.standardize_dtype(grey.dtype)
        if grey_dtype in ("float16", "bfloat16"):
            grey, grey_dtype = ops.cast(grey, "float32"), "float32"

        batch = ops.shape(grey)[0]
        height, width = ops.shape(grey)[1], ops.shape(grey)[2]
        seeds = ops.cast(seeds, "int32")
        num_seeds = ops.shape(seeds)[1]
        row, col = seeds[..., 0], seeds[..., 1]
        valid = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        flat_index = ops.where(valid, row * width + col, 0)  # (batch, S)
        flat = ops.reshape(grey, (batch, -1))
        seed_value = ops.take_along_axis(flat, flat_index, axis=1)  # (batch, S)

        candidates = self._candidates(grey, seed_value, grey_dtype)  # (batch, S, H, W)
        candidates = ops.logical_and(candidates, valid[:, :, None, None])
        candidates = ops.reshape(candidates, (-1, height, width))
        positions = ops.arange(height * width, dtype="int32")[None, None, :]
        start = ops.reshape(ops.equal(positions, flat_index[:, :, None]), (-1, height, width))
        if self.max_iter is not None:  # at most `max_iter` steps of geodesic distance
            regions, converged, _ = grow(candidates, start, self.connectivity, self.max_iter)
        else:
            regions, converged = self._whole_regions(candidates, start, flat_index)
        regions = ops.reshape(regions, (batch, num_seeds, height, width))
        # the smallest seed index wins (sums, not min/argmax: those refuse zero seeds)
        hits = ops.cast(regions, "int32")
        first = hits * ops.cast(ops.equal(ops.cumsum(hits, axis=1), 1), "int32")
        number = ops.reshape(ops.arange(1, num_seeds + 1, dtype="int32"), (1, -1, 1, 1))
        labels = ops.expand_dims(ops.sum(first * number, axis=1), -1)
        if not self.return_converged:
            return labels
        converged = ops.all(ops.reshape(converged, (batch, num_seeds)), axis=1)
        return labels, converged

    def _whole_regions(self, candidates, start, flat_index):
        """Each seed's whole region: a few rings of bit-packed growth settle small regions
        (far cheaper than labelling the image); where one is still growing, every region
        is the seed's connected component of its candidates instead."""
        grown, settled, _ = grow(candidates, start, self.connectivity, SMALL_REGION_STEPS)

        def components():
            roots, converged, _ = component_roots(candidates, self.connectivity)
            roots = ops.reshape(roots, (ops.shape(flat_index)[0], ops.shape(flat_index)[1], -1))
            seed_root = ops.take_along_axis(roots, flat_index[:, :, None], axis=2)
            regions = ops.logical_and(ops.equal(roots, seed_root), seed_root >= 0)
            return ops.reshape(regions, ops.shape(candidates)), converged

        return ops.cond(ops.all(settled), lambda: (grown, settled), components)

    def _candidates(self, grey, seed_value, dtype):
        values = grey[:, None]  # (batch, 1, H, W)
        seed = seed_value[:, :, None, None]  # (batch, S, 1, 1)
        if self.tolerance is None:
            return ops.equal(values, seed)
        seed64 = ops.cast(seed, "float64")
        if dtype in INTEGER_LIMITS:
            low_limit, high_limit = INTEGER_LIMITS[dtype]
            low = ops.maximum(seed64 - self.tolerance, float(low_limit))
            high = ops.minimum(seed64 + self.tolerance, float(high_limit))
            # scikit-image passes the bounds to a Cython routine typed like the image: C casts
            # truncate toward zero. Clip again in case float64 rounding left the range.
            low = ops.cast(ops.clip(ops.cast(low, "int64"), low_limit, high_limit), dtype)
            high = ops.cast(ops.clip(ops.cast(high, "int64"), low_limit, high_limit), dtype)
        else:
            limit = float(np.finfo(dtype).max)
            low = ops.cast(ops.maximum(seed64 - self.tolerance, -limit), dtype)
            high = ops.cast(ops.minimum(seed64 + self.tolerance, limit), dtype)
        return ops.logical_and(low <= values, values <= high)

    def compute_output_spec(self, images, seeds, training=None):
        labels = keras.KerasTensor(tuple(images.shape[:3]) + (1,), dtype="int32")
        if not self.return_converged:
            return labels
        return labels, keras.KerasTensor((images.shape[0],), dtype="bool")


@keras.saving.register_keras_serializable(package="kerasseg")
class ConnectedComponents(ClassicalLayer):
    """Connected-component labelling with `skimage.measure.label` semantics.

    Pixels equal to `background` are 0; other pixels connect to their neighbours (4 with
    connectivity 1, 8 with connectivity 2 = scikit-image's default) that have the same
    value, or any non-background value with `binary=True` (a bool input is always binary).
    Components are numbered 1..n in raster order of their first pixel, exactly like
    scikit-image, so labels match label for label.

    Method: pixels are grouped in blocks whose foreground pixels are neighbours (2 x 2
    squares for 8-connectivity, horizontal pairs for 4-connectivity; label images where two
    values meet inside a pair go pixel by pixel); every block starts with its own index;
    each iteration takes the minimum over the linked neighbours, hooks the block each label
    points to onto that minimum (scatter-min) and jumps pointers twice, until nothing
    changes (label equivalence, Kalentev et al. 2011; blocks as in Playne and Hawick 2018);
    components are then numbered by a cumulative sum over their first pixels. 5-6
    iterations on ISBI 2012 label images: the count grows with the logarithm of the
    components' size, not with their length.

    Args:
        connectivity: 1 (4-connected), 2 (8-connected) or None (full = 2); 4 and 8 accepted.
        background: the integer background value (default 0).
        binary: treat all non-background values as one foreground class.
        max_iter: cap on iterations; None: H * W, enough for any image.
        return_num: also return the (batch,) int32 number of components.
        return_converged: also return a (batch,) bool, False where `max_iter` stopped the
            loop before the labels settled (the labels are then not final).

    Returns labels (batch, H, W, 1) int32, then `num` and `converged` as requested, in that
    order. Input (batch, H, W, 1) of bool, integer or float dtype; float images are truncated
    to integers first, as scikit-image does (so 0.5 is background). NaN/inf: eager calls
    raise ValueError; traced, their integer cast is unspecified (garbage labels there).

    Example:
        >>> labels = ConnectedComponents(connectivity=1)(masks)  # masks: (batch, H, W, 1)
    """

    config_keys = (
        "connectivity",
        "background",
        "binary",
        "max_iter",
        "return_num",
        "return_converged",
    )

    def __init__(
        self,
        connectivity=None,
        background=0,
        binary=False,
        max_iter=None,
        return_num=False,
        return_converged=False,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.connectivity = check_connectivity(connectivity)
        self.background = check_int(background, "background", type_error=True)
        self.binary = bool(binary)
        self.max_iter = check_int(max_iter, "max_iter", 1, allow_none=True)
        self.return_num = bool(return_num)
        self.return_converged = bool(return_converged)
        self.supports_jit = True

    def call(self, images, training=None):
        name = type(self).__name__
        dtype = check_images(
            images, name, channels=(1,), dtypes=("bool",) + INTEGER_DTYPES + FLOAT_DTYPES
        )
        check_finite(images, name)
        values = images[..., 0]
        if dtype in FLOAT_DTYPES:  # scikit-image casts float images to integers (truncation)
            values, dtype = ops.cast(values, "int64"), "int64"
        if dtype == "bool":
            foreground = ops.not_equal(values, bool(self.background))
            values = None
        else:
            foreground = ops.not_equal(values, ops.cast(self.background, dtype))
            values = None if self.binary else values
        labels, count, converged, _ = label_components(
            foreground, self.connectivity, values, self.max_iter
        )
        outputs = [ops.expand_dims(labels, -1)]
        if self.return_num:
            outputs.append(count)
        if self.return_converged:
            outputs.append(converged)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def compute_output_spec(self, images, training=None):
        outputs = [keras.KerasTensor(tuple(images.shape[:3]) + (1,), dtype="int32")]
        if self.return_num:
            outputs.append(keras.KerasTensor((images.shape[0],), dtype="int32"))
        if self.return_converged:
            outputs.append(keras.KerasTensor((images.shape[0],), dtype="bool"))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


# ----------------------------------------------------------------------------- builders


@register_classical(
    "region_growing",
    description="Seeded region growing from (row, col) seeds (scikit-image flood semantics), "
    "no weights",
    reference="Adams & Bischof 1994, IEEE TPAMI 16(6)",
)
def region_growing(input_dtype="uint8", tolerance=None, connectivity=2, max_iter=None, channels=1):
    """Seeded region growing (scikit-image `flood` semantics) as a model.

    Inputs {"images": (batch, H, W, channels), "seeds": (batch, S, 2) int32 (row, col),
    (-1, -1) = padding}; outputs {"labels": (batch, H, W, 1) int32, seed i -> i + 1,
    "converged": (batch,) bool}.

    Args:
        input_dtype: dtype of the images the model takes (any integer or float dtype).
        tolerance, connectivity, max_iter: as `RegionGrowing`.
        channels: 1 (grey) or 3 (converted with rgb2gray).

    Returns:
        A `SegmentationModel`.
    """
    images = images_input(input_dtype, channels)
    seeds = keras.Input((None, 2), dtype="int32", name="seeds")
    layer = RegionGrowing(
        tolerance=tolerance,
        connectivity=connectivity,
        max_iter=max_iter,
        return_converged=True,
        name="region_growing",
    )
    labels, converged = layer(images, seeds)
    return SegmentationModel(
        {"images": images, "seeds": seeds},
        {"labels": labels, "converged": converged},
        name="region_growing",
    )


@register_classical(
    "connected_components",
    description="Connected-component labelling (scikit-image label numbering), no weights",
    reference="Rosenfeld & Pfaltz 1966, J. ACM 13(4); Wu et al. 2009",
)
def connected_components(
    input_dtype="uint8", connectivity=None, background=0, binary=False, max_iter=None
):
    """Connected-component labelling (scikit-image `label` semantics) as a model.

    Input "images": (batch, H, W, 1) masks or label images of `input_dtype` ("bool", an
    integer or a float dtype). Outputs {"labels": (batch, H, W, 1) int32, "num_labels":
    (batch,) int32, "converged": (batch,) bool}.

    Args:
        input_dtype: dtype of the masks the model takes.
        connectivity, background, binary, max_iter: as `ConnectedComponents`.

    Returns:
        A `SegmentationModel`.
    """
    images = images_input(input_dtype, 1, ("bool",) + INTEGER_DTYPES + FLOAT_DTYPES)
    layer = ConnectedComponents(
        connectivity=connectivity,
        background=background,
        binary=binary,
        max_iter=max_iter,
        return_num=True,
        return_converged=True,
        name="connected_components",
    )
    return layer_model(layer, images, ("labels", "num_labels", "converged"))
