"""MobileNetV3-Large features, numerically faithful to torchvision's `mobilenet_v3_large`.

Reference:
    Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le & Adam,
    "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244 (Table 1: the blocks of
    MobileNetV3-Large; Sec. 5.1: hard-swish; Sec. 6.4 and Fig. 10: the segmentation
    variant, whose last stage is dilated so the features stay at stride 16).
    The layout, channel rounding and batch-norm settings follow torchvision's
    `models/mobilenetv3.py` (`_mobilenet_v3_conf("mobilenet_v3_large", dilated=True)`, the
    backbone of `lraspp_mobilenet_v3_large` and `deeplabv3_mobilenet_v3_large`).

The network is torchvision's ``features`` sequence, index by index:

* ``features.0``: 3x3 convolution, stride 2, 16 filters, BatchNorm, hard-swish;
* ``features.1`` .. ``features.15``: the inverted residual blocks of `LARGE_BLOCKS`. A block
  is an optional 1x1 expansion (conv, BN, activation), a k x k depthwise convolution (conv,
  BN, activation), an optional squeeze-and-excitation (global average, 1x1 conv ``fc1``,
  ReLU, 1x1 conv ``fc2``, hard-sigmoid, channel-wise scaling), and a 1x1 projection (conv,
  BN, no activation), plus the input when the stride is 1 and the channels are unchanged;
* ``features.16``: 1x1 convolution to 960 filters, BatchNorm, hard-swish.

With ``dilated=True`` the last three blocks (``features.13`` .. ``features.15``) run with
stride 1 and dilation 2 instead of the stride 2 of ``features.13``, so the output stays at
stride 16. torchvision's segmentation models take two maps (`FEATURE_INDICES`): "low", the
output of ``features.4`` (40 channels, stride 8: the last block before the stride-16
stage; torchvision's ``stage_indices[-4]``) and "high", the output of ``features.16`` (960
channels, stride 16 dilated, 32 otherwise).

Numeric parity with torchvision:

* hard-swish is ``x * relu6(x + 3) / 6`` and hard-sigmoid ``relu6(x + 3) / 6``, as
  ``nn.Hardswish`` / ``nn.Hardsigmoid`` (written with `keras.ops`: some Keras versions'
  ``hard_sigmoid`` uses another slope);
* strided convolutions take an explicit ``ZeroPadding2D((k - 1) // 2)`` and "valid": Keras
  "same" pads (0, 1) on even sizes where torch pads (1, 1). Unstrided ones use "same",
  which pads ``(k - 1) // 2 * dilation`` on each side, as torch;
* batch norm epsilon 1e-3, momentum 0.99 (torch momentum 0.01);
* initial values as torchvision: convolutions normal with variance 2 / fan_out (for the
  depthwise kernel, Keras' fan_in of its (k, k, C, 1) layout is torch's fan_out), biases 0.

Keras layer names spell the torchvision state-dict keys with "_" for ".": ``features_0_0``
(stem conv), ``features_0_1`` (its BN), ``features_{i}_block_{j}_0`` / ``_1`` (conv / BN
of the block's j-th part), ``features_{i}_block_{j}_fc1`` / ``_fc2`` (squeeze-and-
excitation), ``features_16_0`` / ``features_16_1``;
`kerasseg.convert.torchvision_mobilenet` relies on them.
"""

import dataclasses

import keras
from keras import layers, ops

__all__ = [
    "BATCH_NORM_EPSILON",
    "BATCH_NORM_MOMENTUM",
    "FEATURE_INDICES",
    "LARGE_BLOCKS",
    "REFERENCE",
    "BlockConfig",
    "HardSigmoid",
    "HardSwish",
    "make_divisible",
    "mobilenet_v3_large_features",
]

REFERENCE = "Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244"

BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99  # torch momentum 0.01

# torchvision's "low" and "high" feature maps of its segmentation models: `features` indices.
FEATURE_INDICES = {"low": 4, "high": 16}

# The depthwise kernel's torch fan_out (C * k * k) is Keras' fan_in of its (k, k, C, 1) kernel.
_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
_DEPTHWISE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_in", "distribution": "untruncated_normal"},
}


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One inverted residual block (torchvision `InvertedResidualConfig`, paper Table 1)."""

    kernel: int
    expanded: int
    filters: int
    squeeze_excitation: bool
    hard_swish: bool
    stride: int


# features.1 .. features.15 of MobileNetV3-Large (input channels: the previous block's filters,
# 16 for the first).
LARGE_BLOCKS = (
    BlockConfig(3, 16, 16, False, False, 1),
    BlockConfig(3, 64, 24, False, False, 2),
    BlockConfig(3, 72, 24, False, False, 1),
    BlockConfig(5, 72, 40, True, False, 2),
    BlockConfig(5, 120, 40, True, False, 1),
    BlockConfig(5, 120, 40, True, False, 1),
    BlockConfig(3, 240, 80, False, True, 2),
    BlockConfig(3, 200, 80, False, True, 1),
    BlockConfig(3, 184, 80, False, True, 1),
    BlockConfig(3, 184, 80, False, True, 1),
    BlockConfig(3, 480, 112, True, True, 1),
    BlockConfig(3, 672, 112, True, True, 1),
    BlockConfig(5, 672, 160, True, True, 2),
    BlockConfig(5, 960, 160, True, True, 1),
    BlockConfig(5, 960, 160, True, True, 1),
)
_STEM_FILTERS = 16
_DILATED_FROM = 13  # features.13 .. features.15 are dilated with `dilated=True`
_LAST_FILTERS = 960


def make_divisible(value, divisor=8):
    """`value` rounded to the nearest multiple of `divisor`, never 10 % below it.

    torchvision's `_make_divisible` (from TensorFlow's slim MobileNet), used for the
    squeeze-and-excitation width: ``make_divisible(expanded // 4)``.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@keras.saving.register_keras_serializable(package="kerasseg")
class HardSwish(layers.Layer):
    """``x * relu6(x + 3) / 6``, torch ``nn.Hardswish`` (arXiv:1905.02244 Sec. 5.2)."""

    def call(self, inputs, training=None):
        return inputs * ops.relu6(inputs + 3.0) / 6.0

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasseg")
class HardSigmoid(layers.Layer):
    """``relu6(x + 3) / 6``, torch ``nn.Hardsigmoid`` (arXiv:1905.02244 Sec. 5.2)."""

    def call(self, inputs, training=None):
        return ops.relu6(inputs + 3.0) / 6.0

    def compute_output_shape(self, input_shape):
        return input_shape


def _activation(hard_swish, name):
    return HardSwish(name=name) if hard_swish else layers.ReLU(name=name)


def _conv_bn(x, filters, kernel, name, stride=1, dilation=1, depthwise=False, activation=None):
    """torchvision `Conv2dNormActivation`: conv without bias (``{name}_0``), BN (``{name}_1``)
    and, unless `activation` is None, "relu" or "hard_swish" (``{name}_2``)."""
    padding = "same"
    if stride > 1:
        x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    common = dict(
        strides=stride, padding=padding, dilation_rate=dilation, use_bias=False, name=f"{name}_0"
    )
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, depthwise_initializer=_DEPTHWISE_INIT, **common)(x)
    else:
        x = layers.Conv2D(filters, kernel, kernel_initializer=_CONV_INIT, **common)(x)
    x = layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_1"
    )(x)
    if activation is not None:
        x = _activation(activation == "hard_swish", f"{name}_2")(x)
    return x


def _squeeze_excitation(x, channels, name):
    """torchvision `SqueezeExcitation` with a hard-sigmoid gate (Hu et al. 2018,
    arXiv:1709.01507)."""
    scale = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avgpool")(x)
    scale = layers.Conv2D(
        make_divisible(channels // 4), 1, kernel_initializer=_CONV_INIT, name=f"{name}_fc1"
    )(scale)
    scale = layers.ReLU(name=f"{name}_activation")(scale)
    scale = layers.Conv2D(channels, 1, kernel_initializer=_CONV_INIT, name=f"{name}_fc2")(scale)
    scale = HardSigmoid(name=f"{name}_scale_activation")(scale)
    return layers.Multiply(name=f"{name}_scale")([x, scale])


def _inverted_residual(x, in_filters, config, dilation, name):
    """torchvision `InvertedResidual`; `name` is "features_{i}"."""
    activation = "hard_swish" if config.hard_swish else "relu"
    stride = 1 if dilation > 1 else config.stride
    y, part = x, 0
    if config.expanded != in_filters:
        y = _conv_bn(y, config.expanded, 1, f"{name}_block_{part}", activation=activation)
        part += 1
    y = _conv_bn(
        y,
        config.expanded,
        config.kernel,
        f"{name}_block_{part}",
        stride=stride,
        dilation=dilation,
        depthwise=True,
        activation=activation,
    )
    part += 1
    if config.squeeze_excitation:
        y = _squeeze_excitation(y, config.expanded, f"{name}_block_{part}")
        part += 1
    y = _conv_bn(y, config.filters, 1, f"{name}_block_{part}")
    if config.stride == 1 and in_filters == config.filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v3_large_features(input_shape=(None, None, 3), dilated=True, name=None):
    """Build torchvision's MobileNetV3-Large ``features`` as a model of its two segmentation maps.

    Reference: Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244; the
    layout of torchvision's ``mobilenet_v3_large(dilated=...).features`` (see the module
    docstring).

    Args:
        input_shape: (height, width, channels); height and width may be None. Any size of
            at least 1 works (torchvision's ``min_size`` (1, 1)).
        dilated: True (default, as torchvision's segmentation models): the last three
            blocks use dilation 2 instead of stride 2, so "high" is at stride 16; False:
            the classification network, "high" at stride 32.
        name: model name (default "mobilenet_v3_large").

    Returns:
        A `keras.Model` mapping ImageNet-normalised (B, H, W, C) images to a dict: "low",
        the output of ``features.4`` (B, ceil(H / 8), ceil(W / 8), 40), and "high", the
        output of ``features.16`` (B, ceil(H / 16), ceil(W / 16), 960) when dilated (see
        `FEATURE_INDICES`).

    Raises:
        ValueError: `input_shape` is not (height, width, channels) with a known channel
            count, or `dilated` is not a bool.
    """
    if not isinstance(input_shape, tuple | list) or len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels); got {input_shape!r}.")
    if input_shape[2] is None:
        raise ValueError(f"`input_shape`: the channel count must be known; got {input_shape!r}.")
    if not isinstance(dilated, bool):
        raise ValueError(f"`dilated` must be True or False; got {dilated!r}.")
    inputs = keras.Input(tuple(input_shape), name="pixels")
    x = _conv_bn(inputs, _STEM_FILTERS, 3, "features_0", stride=2, activation="hard_swish")
    features, in_filters = {}, _STEM_FILTERS
    for index, config in enumerate(LARGE_BLOCKS, start=1):
        dilation = 2 if dilated and index >= _DILATED_FROM else 1
        x = _inverted_residual(x, in_filters, config, dilation, f"features_{index}")
        in_filters = config.filters
        if index == FEATURE_INDICES["low"]:
            features["low"] = x
    index = len(LARGE_BLOCKS) + 1
    features["high"] = _conv_bn(x, _LAST_FILTERS, 1, f"features_{index}", activation="hard_swish")
    return keras.Model(inputs, features, name=name or "mobilenet_v3_large")
