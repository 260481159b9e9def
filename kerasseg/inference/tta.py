"""Test-time augmentation: average a dense model's outputs over flips and transposes.

`kerasseg.inference.tta.wrap(model)` returns a Keras model that runs `model` on each transformed
copy of the input, maps every output back with the inverse transform and averages them
(the "flip and rotate" averaging of Ronneberger et al. 2015, arXiv:1505.04597, and of
ttach for PyTorch). The eight transforms are the symmetries of the square (the dihedral
group D4): the identity, the two flips, both flips (a half turn), and the same four after a
transpose (quarter turns and the two diagonal mirrors). They move pixels without
resampling, so the averaged map is aligned with the input pixel for pixel.

The outputs are averaged as the model gives them: probabilities for sigmoid or softmax
models, logits otherwise.
"""

import keras
from keras import ops

from kerasseg.models.base import SegmentationModel

# (transpose, flip height, flip width) for each transform; the first four need no transpose.
__all__ = ["TRANSFORMS", "TRANSFORM_SETS", "DihedralTransform", "wrap"]

TRANSFORMS = tuple((t, h, w) for t in (False, True) for h in (False, True) for w in (False, True))
TRANSFORM_SETS = {"flips": 4, "dihedral": 8}


@keras.saving.register_keras_serializable(package="kerasseg")
class DihedralTransform(keras.layers.Layer):
    """One symmetry of the square applied to (batch, height, width, channels) tensors.

    `index` picks (transpose, flip height, flip width) from `TRANSFORMS`: the transpose
    (swap height and width) comes first, the flips after. `inverse=True` undoes the
    transform (the flips first, then the transpose).
    """

    def __init__(self, index, inverse=False, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(TRANSFORMS)
        ):
            raise ValueError(f"`index` must be an int in [0, {len(TRANSFORMS)}); got {index!r}.")
        self.index = index
        self.inverse = bool(inverse)

    def call(self, x):
        transpose, flip_height, flip_width = TRANSFORMS[self.index]
        if transpose and not self.inverse:
            x = ops.transpose(x, (0, 2, 1, 3))
        if flip_height:
            x = ops.flip(x, axis=1)
        if flip_width:
            x = ops.flip(x, axis=2)
        if transpose and self.inverse:
            x = ops.transpose(x, (0, 2, 1, 3))
        return x

    def compute_output_shape(self, input_shape):
        if TRANSFORMS[self.index][0]:
            return (input_shape[0], input_shape[2], input_shape[1], *input_shape[3:])
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "index": self.index, "inverse": self.inverse}


def wrap(model, transforms="dihedral"):
    """Wrap `model` so that it predicts the mean over flipped (and transposed) inputs.

    Args:
        model: a dense `keras.Model` with one (batch, height, width, channels) input and
            one output of the same height and width (a semantic segmentation model).
        transforms: "dihedral" (8 passes: flips and transposes; needs a square input or
            free height and width) or "flips" (4 passes: identity, the two flips, both).

    Returns:
        A model with `model`'s input and output shapes and size rule; `model` is shared,
        not copied, and the wrapper saves to `.keras` with it.
    """
    if transforms not in TRANSFORM_SETS:
        raise ValueError(
            f"`transforms` must be one of {sorted(TRANSFORM_SETS)}; got {transforms!r}."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`model` must have one input and one output (a dense segmentation model); "
            f"{model.name!r} has {len(model.inputs)} and {len(model.outputs)}."
        )
    input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    if len(input_shape) != 4 or len(output_shape) != 4:
        raise ValueError(
            f"`model` must map (batch, height, width, channels) to a map of the same rank; "
            f"{model.name!r} maps {input_shape} to {output_shape}."
        )
    if input_shape[1:3] != output_shape[1:3]:
        raise ValueError(
            f"`model`'s output must keep the input's height and width; {model.name!r} maps "
            f"{input_shape} to {output_shape}."
        )
    output_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
    if "float" not in output_dtype:
        raise ValueError(
            f"`model` must output probabilities or logits to average; {model.name!r} outputs "
            f"{output_dtype} (labels)."
        )
    height, width = input_shape[1:3]
    if transforms == "dihedral" and height != width:
        raise ValueError(
            f"transforms='dihedral' transposes the input, so `model` needs a square input "
            f"or free height and width; {model.name!r} takes {input_shape}. Use "
            "transforms='flips'."
        )
    inputs = keras.Input(input_shape[1:], dtype=model.inputs[0].dtype, name="images")
    passes = []
    for index in range(TRANSFORM_SETS[transforms]):
        outputs = model(DihedralTransform(index, name=f"transform_{index}")(inputs))
        passes.append(DihedralTransform(index, inverse=True, name=f"inverse_{index}")(outputs))
    average = keras.layers.Average(name="average", dtype=output_dtype)(passes)
    return SegmentationModel(
        inputs,
        average,
        name=f"{model.name}_tta_{transforms}",
        size_divisor=getattr(model, "size_divisor", 1),
        size_offset=getattr(model, "size_offset", 0),
        min_size=getattr(model, "min_size", None),
    )
