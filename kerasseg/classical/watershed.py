"""Seeded watershed of a cell-probability map as a batched Keras layer.

Seeds are the 4-connected components of `p > seed_threshold` (`ConnectedComponents`,
numbered in raster order like scikit-image); the landscape `1 - p` is then flooded from
them as a minimum spanning forest (Borůvka rounds), with keras.ops only (eager,
`tf.function`, XLA).

References:
    S. Beucher and F. Meyer, "The morphological approach to segmentation: the watershed
    transformation", in Mathematical Morphology in Image Processing, Marcel Dekker, 1993.
    L. Vincent and P. Soille, "Watersheds in digital spaces: an efficient algorithm based on
    immersion simulations", IEEE TPAMI 13(6), 1991. J. Cousty, G. Bertrand, L. Najman and
    M. Couprie, "Watershed cuts: minimum spanning forests and the drop of water principle",
    IEEE TPAMI 31(8), 2009.
"""

import keras
from keras import ops

from kerasseg.classical.base import ClassicalLayer
from kerasseg.classical.region import ConnectedComponents
from kerasseg.ops.checks import check_int, is_number
from kerasseg.ops.flooding import MAX_LEVELS, flood_from_seeds
from kerasseg.ops.image import FLOAT_DTYPES, check_finite, check_images

__all__ = ["SeededWatershed"]


@keras.saving.register_keras_serializable(package="kerasseg")
class SeededWatershed(ClassicalLayer):
    """Instance labels from a probability map: seeds plus a quantised watershed of `1 - p`.

    Seeds are the 4-connected components of `p > seed_threshold`, numbered 1..n per image in
    raster order. `p` is quantised to levels `t_k = seed_threshold * (levels - k) / levels`,
    k = 0..levels (level k: `t_k <= p < t_(k-1)`; p < 0 and NaN: the last level). The
    landscape is then flooded from the seeds as a minimum spanning forest rooted at them
    (`kerasseg.ops.flooding`: Borůvka rounds, at most log2 of the pixel count + 1 and 5 on
    ISBI cell maps, instead of one pass per step of the flooding paths): each pixel joins
    the seed reached through the lowest 4-connected pass, ties going to the lower neighbour
    (the one scikit-image's priority queue pops first) and plateaus flooding breadth first
    from their lower border, as the queue does. Every pixel 4-connected to a seed is
    labelled; images without a seed give all zeros. This approximates
    `skimage.segmentation.watershed(1 - p, markers, connectivity=1)`: on `unet_isbi2012`'s
    maps of ISBI 2012 slices 20-24, 99.99 % of the pixels get scikit-image's label
    (`benchmarks/watershed.py`); the rest are ties along the ridges.

    Args:
        seed_threshold: seeds are `p > seed_threshold`; a real in (0, 1].
        levels: number of flooding levels, 1 to 32767; fewer levels make more ties. The
            cost does not depend on it.

    Input (batch, H, W, 1) float probabilities; output (batch, H, W) int32 labels. NaN/inf:
    eager calls raise ValueError; traced, NaN pixels are never seeds and join the last
    level. Eager calls run the loop op by op: use `tf.function` (best with
    `jit_compile=True`) for large images.

    Example:
        >>> labels = SeededWatershed(seed_threshold=0.9)(probabilities)
    """

    config_keys = ("seed_threshold", "levels")

    def __init__(self, seed_threshold=0.9, levels=16384, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not is_number(seed_threshold) or not 0.0 < seed_threshold <= 1.0:
            raise ValueError(
                f"`seed_threshold` must be a number in (0, 1]; got {seed_threshold!r}."
            )
        self.seed_threshold = float(seed_threshold)
        self.levels = check_int(levels, "levels", 1, MAX_LEVELS)
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
        return flood_from_seeds(self.quantise(p), labels)[0]

    def quantise(self, p):
        """The flooding level of each probability: k where t_k <= p < t_(k - 1); NaN and
        p < 0 go to the last level.

        Args:
            p: float probabilities of any shape.

        Returns:
            int32 levels in [0, levels], of the same shape.
        """
        levels = self.levels
        level = ops.ceil((self.seed_threshold - p) * (levels / self.seed_threshold))
        return ops.cast(ops.where(p >= 0, ops.clip(level, 0, levels), levels), "int32")

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(tuple(images.shape[:3]), dtype="int32")
