"""Small building blocks shared by the segmentation architectures."""

import keras
from keras import layers, ops

from kerasseg.models.resize import UpSamplingBilinear2D
from kerasseg.ops.checks import check_int, is_int

__all__ = [
    "DECODER_FILTERS_RULE",
    "HEAD_ACTIVATIONS",
    "CenterCropLike",
    "ReflectPadToMultiple",
    "check_common_arguments",
    "conv_block",
    "conv_bn_relu",
    "segmentation_head",
]


@keras.saving.register_keras_serializable(package="kerasseg")
class CenterCropLike(layers.Layer):
    """Crop the first input's centre to the spatial size of the second.

    The U-Net paper's "valid" convolutions shrink the decoder's maps, so the encoder's skip
    features are centre-cropped before concatenation (Ronneberger et al. 2015, Fig. 1).
    Works with unknown spatial sizes.
    """

    def call(self, inputs, training=None):
        features, reference = inputs
        height, width = ops.shape(features)[1], ops.shape(features)[2]
        target_h, target_w = ops.shape(reference)[1], ops.shape(reference)[2]
        top = (height - target_h) // 2
        left = (width - target_w) // 2
        return ops.slice(
            features,
            [0, top, left, 0],
            [ops.shape(features)[0], target_h, target_w, ops.shape(features)[3]],
        )

    def compute_output_shape(self, input_shapes):
        features, reference = input_shapes
        return (features[0], reference[1], reference[2], features[3])


@keras.saving.register_keras_serializable(package="kerasseg")
class ReflectPadToMultiple(layers.Layer):
    """Pad height and width up to multiples of `multiple` by reflection, split evenly.

    With `CenterCropLike` on the output, a network that needs sizes divisible by `multiple`
    takes any size of at least `multiple // 2 + 1` (reflection needs the padding of a side
    to be smaller than the image).
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, inputs, training=None):
        height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
        pad_h = (-height) % self.multiple
        pad_w = (-width) % self.multiple
        widths = [
            [0, 0],
            [pad_h // 2, pad_h - pad_h // 2],
            [pad_w // 2, pad_w - pad_w // 2],
            [0, 0],
        ]
        return ops.pad(inputs, widths, mode="reflect")

    def compute_output_shape(self, input_shape):
        def padded(size):
            return None if size is None else -(-size // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def conv_block(x, filters, name, batch_norm=True, padding="same", convs=2):
    """`convs` x (3x3 conv, optional batch norm, ReLU).

    Layers are named `{name}_conv{i}`, `{name}_bn{i}`, `{name}_relu{i}`, i = 1..convs; without
    batch norm the convolutions have a bias.
    """
    for i in range(1, convs + 1):
        x = layers.Conv2D(
            filters,
            3,
            padding=padding,
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


HEAD_ACTIVATIONS = (None, "sigmoid", "softmax")


def segmentation_head(
    x, num_classes, activation, kernel_size=1, crop_to=None, upsample=1, align_corners=True
):
    """Class logits, plus an optional sigmoid or softmax, in float32 (mixed-precision safe).

    Layers: "head" (the convolution), "head_upsample", "crop_to_input", "output".

    Args:
        x: the decoder's last feature map.
        num_classes: output channels.
        activation: None (logits), "sigmoid" or "softmax".
        kernel_size: the head convolution's kernel size.
        crop_to: None, or a tensor whose height and width the logits are centre-cropped to
            (after the head's convolution, so its border sees the padded context).
        upsample: a bilinear up-sampling factor applied to the logits.
        align_corners: the up-sampling's corner rule, as in
            `kerasseg.models.resize.UpSamplingBilinear2D`.

    Returns:
        The output tensor, named "output".
    """
    x = layers.Conv2D(num_classes, kernel_size, padding="same", name="head")(x)
    if upsample > 1:
        x = UpSamplingBilinear2D(upsample, align_corners=align_corners, name="head_upsample")(x)
    if crop_to is not None:
        x = CenterCropLike(name="crop_to_input")([x, crop_to])
    return layers.Activation(activation or "linear", dtype="float32", name="output")(x)


DECODER_FILTERS_RULE = "five integers >= 1, deepest block first"


def check_common_arguments(num_classes, input_shape, activation):
    """Check the arguments every architecture takes: classes, input shape, head activation.

    Raises:
        ValueError: `num_classes` is not an integer >= 1, `input_shape` is not (height,
            width, channels) with a known channel count, or `activation` is not one of
            `HEAD_ACTIVATIONS`.
    """
    check_int(num_classes, "num_classes", 1)
    if not isinstance(input_shape, tuple | list) or len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with height/width None or an "
            f"integer; got {input_shape!r}."
        )
    if not is_int(input_shape[2]) or input_shape[2] < 1:
        raise ValueError(
            f"`input_shape`: the channel count must be a known integer >= 1; got {input_shape!r}."
        )
    if activation not in HEAD_ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {HEAD_ACTIVATIONS} (None gives logits); got "
            f"{activation!r}."
        )


def conv_bn_relu(x, filters, kernel_size, name, dilation_rate=1, separable=False, batch_norm=True):
    """A convolution (depthwise-separable with `separable`), batch norm, ReLU.

    Layers are named `{name}_conv`, `{name}_bn`, `{name}_relu`; without batch norm the
    convolution has a bias.
    """
    options = dict(
        padding="same", dilation_rate=dilation_rate, use_bias=not batch_norm, name=f"{name}_conv"
    )
    if separable and kernel_size > 1:
        x = layers.SeparableConv2D(filters, kernel_size, **options)(x)
    else:
        x = layers.Conv2D(filters, kernel_size, kernel_initializer="he_normal", **options)(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)
