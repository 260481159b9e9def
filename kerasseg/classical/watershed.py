"""Seeded watershed of a cell-probability map as a batched Keras layer.

Seeds are the 4-connected components of `p > seed_threshold` (`ConnectedComponents`,
numbered in raster order like scikit-image); the landscape `1 - p` is then flooded from
them in order of quantised levels, with keras.ops only (eager, `tf.function`, XLA).

References:
    S. Beucher and F. Meyer, "The morphological approach to segmentation: the watershed
    transformation", in Mathematical Morphology in Image Processing, Marcel Dekker, 1993.
    L. Vincent and P. Soille, "Watersheds in digital spaces: an efficient algorithm based on
    immersion simulations", IEEE TPAMI 13(6), 1991.
"""

import keras
from keras import ops

from kerasseg.classical.base import ClassicalLayer
from kerasseg.classical.region import ConnectedComponents
from kerasseg.ops.checks import check_int, is_number
from kerasseg.ops.image import FLOAT_DTYPES, check_finite, check_images, is_symbolic, materialize

__all__ = ["SeededWatershed"]

STEPS_PER_ITERATION = 8


@keras.saving.register_keras_serializable(package="kerasseg")
class SeededWatershed(ClassicalLayer):
    """Instance labels from a probability map: seeds plus a quantised watershed of `1 - p`.

    Seeds are the 4-connected components of `p > seed_threshold`, numbered 1..n per image in
    raster order. `p` is quantised to levels `t_k = seed_threshold * (levels - k) / levels`,
    k = 0..levels (level k: `t_k <= p < t_(k-1)`; p < 0 and NaN: the last level). Flooding
    then mimics scikit-image's priority queue with a breadth-first wave per step: the
    labelled, not yet processed pixels at the image's lowest pending level give their label
    to their unlabelled 4-neighbours (the larger label wins where two reach a pixel in the
    same step), until nothing is pending. Every pixel 4-connected to a seed is labelled;
    images without a seed give all zeros. This approximates
    `skimage.segmentation.watershed(1 - p, markers, connectivity=1)` and converges to it as
    `levels` grows (ties within a level go breadth first, not by exact value).

    Args:
        seed_threshold: seeds are `p > seed_threshold`; a real in (0, 1].
        levels: number of flooding levels (a positive integer); more is closer to the exact
            watershed and slower.

    Input (batch, H, W, 1) float probabilities; output (batch, H, W) int32 labels. NaN/inf:
    eager calls raise ValueError; traced, NaN pixels are never seeds and join the last
    level. Eager calls run the loop op by op: use `tf.function` (best with
    `jit_compile=True`) for large images.

    Example:
        >>> labels = SeededWatershed(seed_threshold=0.9, levels=64)(probabilities)
    """

    config_keys = ("seed_threshold", "levels")

    def __init__(self, seed_threshold=0.9, levels=64, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not is_number(seed_threshold) or not 0.0 < seed_threshold <= 1.0:
            raise ValueError(
                f"`seed_threshold` must be a number in (0, 1]; got {seed_threshold!r}."
            )
        self.seed_threshold = float(seed_threshold)
        self.levels = check_int(levels, "levels", 1)
        self.supports_jit = True
        self._components = ConnectedComponents(connectivity=1, name="seed_components")

    def build(self, input_shape):
        self._components.build(tuple(input_shape))
        self.built = True

    def call(self, images, training=None):
        name = type(self).__name__
        check_images(images, name, channels=(1,), dtypes=FLOAT_DTYPES)
        check_finite(images, name)
        p = ops.cast(images[..., 0], "float32")
        labels = self._components(ops.expand_dims(p > self.seed_threshold, -1))[..., 0]
        height, width = ops.shape(p)[1], ops.shape(p)[2]
        levels = self.levels
        # the level of each pixel: k where t_k <= p < t_(k - 1); NaN and p < 0: the last
        level = ops.ceil((self.seed_threshold - p) * (levels / self.seed_threshold))
        level = ops.where(p >= 0, ops.clip(level, 0, levels), levels)
        level = ops.cast(level, "int32")
        limit = height * width + 1  # never reached: every step processes a pending pixel
        traced = is_symbolic(p)

        def step(labels, done):
            # as scikit-image's priority queue: the labelled pixels not yet processed at the
            # lowest level (all at once, so ties go breadth first) label their free neighbours
            pending = ops.logical_and(labels > 0, ops.logical_not(done))
            lowest = ops.min(ops.where(pending, level, levels + 1), axis=(1, 2), keepdims=True)
            active = ops.logical_and(pending, level <= lowest)
            padded = ops.pad(ops.where(active, labels, 0), ((0, 0), (1, 1), (1, 1)))
            best = ops.maximum(
                ops.maximum(padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]),
                ops.maximum(padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]),
            )
            labels = ops.where(ops.equal(labels, 0), best, labels)
            return labels, ops.logical_or(done, active)

        def cond(labels, done, changed, iteration):
            return ops.logical_and(changed, iteration < limit)

        def body(labels, done, changed, iteration):
            new, new_done = labels, done
            for k in range(STEPS_PER_ITERATION):
                if k and traced:
                    new, new_done = materialize(new), materialize(new_done)
                new, new_done = step(new, new_done)
            changed = ops.any(ops.not_equal(new_done, done))
            return new, new_done, changed, iteration + STEPS_PER_ITERATION

        done = ops.zeros_like(labels, dtype="bool")
        start = (labels, done, ops.convert_to_tensor(True), ops.convert_to_tensor(0, "int32"))
        labels, _, _, _ = ops.while_loop(cond, body, start)
        return labels

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(tuple(images.shape[:3]), dtype="int32")
