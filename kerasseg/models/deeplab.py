"""DeepLabV3 and DeepLabV3+ on a keras.applications encoder made dilated (atrous).

References:
    Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", 2017, arXiv:1706.05587 (DeepLabV3).
    Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable
    Convolution for Semantic Image Segmentation", ECCV 2018, arXiv:1802.02611 (DeepLabV3+).
    The layout follows segmentation_models.pytorch's `DeepLabV3` / `DeepLabV3Plus`
    (decoders/deeplabv3/decoder.py).

Output stride. DeepLab keeps the encoder's deepest features at stride 8 or 16 instead of 32
by removing the last down-sampling steps and dilating every later convolution ("atrous
algorithm", arXiv:1706.05587 Sec. 3.1). keras.applications networks cannot change their
strides in place, so `dilated_encoder` rebuilds the encoder from its layer configs (same
layers, same weights, `keras.models.clone_model`) with:

- every convolution or pooling that down-samples from stride >= `output_stride` set to
  stride 1;
- every later convolution (and depthwise convolution) with a kernel larger than 1 given
  the dilation rate `original input stride / output_stride` (2, or 4 for stage 5 at output
  stride 8);
- explicit `ZeroPadding2D` + "valid" pairs (ResNetV2, MobileNet, EfficientNet) and 2x2
  "patchify" convolutions (ConvNeXt) turned into "same" padding, so maps keep their size.

The whole encoder, stride-32 stage included, is kept; nothing is dropped. This is exactly
the atrous algorithm where it can be: the dilated network's deepest map, sampled every
32 / output_stride pixels, equals the original's (checked for ResNet, ResNetV2,
MobileNetV2 and ConvNeXt at output strides 8 and 16, VGG and DenseNet at 16; the tests
check ResNet50). Approximations, with unchanged weights: squeeze-and-excitation blocks
(EfficientNet, EfficientNetV2, MobileNetV3) average over the whole larger map (relative
difference ~1e-3 with random weights); VGG and DenseNet at output stride 8 keep a 2x2
pooling at stride 16 whose window cannot be dilated (Keras pooling has no dilation; DeepLab
v1 made VGG's poolings stride 1 the same way; segmentation_models.pytorch refuses dilation
for these two). ImageNet weights load as usual.

Design (segmentation_models.pytorch defaults):

- ASPP: a 1x1 conv, three 3x3 atrous convs (rates 12, 24, 36 at output stride 8; 6, 12, 18
  at 16 as in the papers; smp uses 12, 24, 36 for both), image pooling (global average,
  1x1 conv, broadcast back), each with `decoder_filters` (256) filters, BN and ReLU;
  concatenation, 1x1 projection + BN + ReLU and dropout 0.5. With `separable=True` the
  atrous branches are depthwise-separable (depthwise 3x3 dilated, pointwise 1x1, no BN in
  between, as smp's `SeparableConv2d`).
- DeepLabV3: ASPP, a 3x3 conv + BN + ReLU, the 1x1 class conv, bilinear up-sampling by the
  output stride. Default output stride 8 and regular (not separable) ASPP, as smp.
- DeepLabV3+: ASPP, a 3x3 conv + BN + ReLU, bilinear up-sampling to stride 4; the stride-4
  encoder features projected to 48 channels (1x1 conv + BN + ReLU) and concatenated; a 3x3
  conv of `decoder_filters` + BN + ReLU; the 1x1 class conv and 4x bilinear up-sampling.
  Default output stride 16 and `separable=True` (ASPP and both decoder 3x3 convs
  separable, the paper's Xception-style design; smp always makes the decoder convs
  separable and the ASPP by default). The paper's decoder uses two 3x3 convs after the
  concatenation; smp (and this module) uses one, plus the one after ASPP.

Bilinear up-sampling: `kerasseg.models.resize.UpSamplingBilinear2D` with half-pixel
centres (align_corners=False, the values of Keras's UpSampling2D); smp's
`UpsamplingBilinear2d` uses align_corners=True.
"""

import dataclasses
import functools

import keras
from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.blocks import conv_bn_relu, segmentation_head
from kerasseg.models.resize import BroadcastLike, UpSamplingBilinear2D
from kerasseg.ops.checks import check_int, check_ints, check_rate

__all__ = [
    "DEFAULT_ATROUS_RATES",
    "OUTPUT_STRIDES",
    "aspp",
    "deeplabv3",
    "deeplabv3plus",
    "dilated_encoder",
]

OUTPUT_STRIDES = (8, 16)
DEFAULT_ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
_STRIDED = (
    layers.Conv2D,
    layers.DepthwiseConv2D,
    layers.SeparableConv2D,
    layers.MaxPooling2D,
    layers.AveragePooling2D,
)
_CONVS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)


def _pair(value):
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _step(layer):
    """The down-sampling factor of a layer (or of a Sequential of layers)."""
    if isinstance(layer, keras.Sequential):
        step = 1
        for inner in layer.layers:
            step *= _step(inner)
        return step
    return max(_pair(layer.strides)) if isinstance(layer, _STRIDED) else 1


def _parent(layer):
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation


def _copy(layer):
    return layer.__class__.from_config(layer.get_config())


def _dilate(layer, s_in, output_stride, parent):
    """(replacement or None, name of a ZeroPadding2D parent made redundant or None).

    `s_in`: the stride of the layer's input in the original network.
    """
    if isinstance(layer, keras.Sequential):  # ConvNeXt's stem and down-sampling blocks
        new_layers, changed, stride, previous = [], False, s_in, None
        for inner in layer.layers:
            new, dropped = _dilate(inner, stride, output_stride, previous)
            if dropped is not None:
                raise ValueError(f"cannot dilate encoder layer {layer.name!r}.")
            changed = changed or new is not None
            new_layers.append(_copy(inner) if new is None else new)
            stride, previous = stride * _step(inner), inner
        return (keras.Sequential(new_layers, name=layer.name) if changed else None), None
    if not isinstance(layer, _STRIDED) or s_in < output_stride:
        return None, None
    config = layer.get_config()
    strides = _pair(layer.strides)
    strided = max(strides) > 1
    if not isinstance(layer, _CONVS):  # pooling: stride 1 with "same" size
        if not strided:
            return None, None
        return layer.__class__.from_config({**config, "strides": (1, 1), "padding": "same"}), None
    kernel = _pair(layer.kernel_size)
    rate = s_in // output_stride if s_in > output_stride else 1
    config = {**config, "strides": (1, 1), "dilation_rate": (rate, rate)}
    if max(kernel) == 1 or layer.padding == "same":
        return layer.__class__.from_config(config), None
    if isinstance(parent, layers.ZeroPadding2D):  # explicit padding + "valid": now "same"
        return layer.__class__.from_config({**config, "padding": "same"}), parent.name
    if strided and kernel == strides:
        # A "patchify" convolution (window = stride, no padding) reads pixels i .. i + k - 1
        # of its input; at stride 1 with dilation it reads i, i + rate, ...: pad after.
        after = (kernel[0] - 1) * rate, (kernel[1] - 1) * rate
        return keras.Sequential(
            [
                layers.ZeroPadding2D(((0, after[0]), (0, after[1])), name=f"{layer.name}_pad"),
                layer.__class__.from_config(config),
            ],
            name=layer.name,
        ), None
    raise ValueError(
        f"cannot dilate encoder layer {layer.name!r}: a 'valid' convolution without explicit "
        f"zero padding."
    )


def dilated_encoder(encoder, output_stride):
    """The encoder rebuilt with its deepest features at `output_stride` (8 or 16).

    Down-sampling at stride >= `output_stride` is removed and later convolutions are dilated
    (see the module docstring); weights are copied. Returns a new `keras.Model`.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"`output_stride` must be one of {OUTPUT_STRIDES}; got {output_stride!r}.")
    strides_out, replacements, dropped = {}, {}, set()
    for operation in encoder.operations:  # topological order; includes ops that are not layers
        parents = [
            t._keras_history.operation.name
            for node in operation._inbound_nodes[:1]
            for t in node.input_tensors
        ]
        s_in = max((strides_out.get(p, 1) for p in parents), default=1)  # 1: model input
        strides_out[operation.name] = s_in * _step(operation)
        if isinstance(operation, _STRIDED + (keras.Sequential,)):
            parent = _parent(operation) if parents else None
            new, padding = _dilate(operation, s_in, output_stride, parent)
            if new is not None:
                replacements[operation.name] = new
            if padding is not None:
                dropped.add(padding)

    def clone(layer):
        if layer.name in dropped:
            return layers.Identity(name=layer.name)
        return replacements.get(layer.name) or _copy(layer)

    dilated = keras.models.clone_model(encoder, clone_function=clone)
    for old, new in zip(encoder.layers, dilated.layers, strict=True):
        if old.weights:
            new.set_weights(old.get_weights())
    return dilated


@dataclasses.dataclass(frozen=True)
class _DeepLabArguments:
    """The arguments DeepLabV3 and DeepLabV3+ share beyond the common ones, checked."""

    output_stride: int
    atrous_rates: tuple
    decoder_filters: int
    separable: bool
    aspp_dropout: float

    @classmethod
    def from_builder(cls, builder_arguments):
        """Check and collect them from the builder's arguments by name (its `locals()`).

        `atrous_rates` None becomes `DEFAULT_ATROUS_RATES[output_stride]`.

        Raises:
            ValueError: any of them out of its accepted values.
        """
        output_stride = builder_arguments["output_stride"]
        if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"`output_stride` must be one of {OUTPUT_STRIDES}; got {output_stride!r}."
            )
        atrous_rates = builder_arguments["atrous_rates"]
        if atrous_rates is None:
            atrous_rates = DEFAULT_ATROUS_RATES[output_stride]
        atrous_rates = check_ints(
            atrous_rates,
            3,
            "atrous_rates",
            "three integers >= 1 (the ASPP's dilation rates, e.g. (6, 12, 18))",
        )
        decoder_filters = builder_arguments["decoder_filters"]
        check_int(decoder_filters, "decoder_filters", 1)
        aspp_dropout = builder_arguments["aspp_dropout"]
        check_rate(aspp_dropout, "aspp_dropout")
        separable = bool(builder_arguments["separable"])
        return cls(output_stride, atrous_rates, decoder_filters, separable, aspp_dropout)

    def aspp(self, x):
        """`aspp` on `x` with these options."""
        return aspp(x, self.decoder_filters, self.atrous_rates, self.separable, self.aspp_dropout)


def _deeplab(arguments, options, decoder, upsample):
    """Build DeepLabV3 or DeepLabV3+ on the dilated encoder.

    Args:
        arguments: the builder's `EncoderDecoderArguments`.
        options: the builder's `_DeepLabArguments`.
        decoder: `decoder(features)`, on the dilated encoder's five features.
        upsample: the head's bilinear up-sampling factor, back to the input size.

    Returns:
        The `SegmentationModel`.
    """
    output_stride = options.output_stride
    return encoder_decoder(
        arguments,
        decoder,
        functools.partial(segmentation_head, upsample=upsample, align_corners=False),
        stride=output_stride,
        prepare_encoder=lambda encoder, present: (dilated_encoder(encoder, output_stride), present),
    )


def aspp(x, filters, atrous_rates, separable, dropout, name="aspp"):
    """Atrous spatial pyramid pooling (arXiv:1706.05587 Sec. 3.3), as smp's `ASPP`."""
    branches = [conv_bn_relu(x, filters, 1, f"{name}_1x1")]
    for i, rate in enumerate(atrous_rates, start=1):
        branches.append(
            conv_bn_relu(
                x, filters, 3, f"{name}_atrous{i}", dilation_rate=rate, separable=separable
            )
        )
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, f"{name}_pool")
    branches.append(BroadcastLike(name=f"{name}_pool_broadcast")([pooled, x]))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_relu(x, filters, 1, f"{name}_project")
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


@encoder_decoder_builder(
    "deeplabv3",
    description="DeepLabV3: atrous spatial pyramid pooling on a dilated pretrained encoder",
    reference="Chen et al. 2017, arXiv:1706.05587",
    multiple="`output_stride`",
    minimum="`output_stride // 2 + 1`",
)
def deeplabv3(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    output_stride=8,
    atrous_rates=None,
    decoder_filters=256,
    separable=False,
    aspp_dropout=0.5,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) on a dilated encoder.

    The encoder's last stages are dilated so its deepest features are at `output_stride`
    (see the module docstring for how, and where that is exact); ASPP, a 3x3 conv-BN-ReLU,
    a 1x1 class convolution and bilinear up-sampling by `output_stride` follow.

    Args:
        output_stride: 8 (default, as smp) or 16: the stride of the deepest features.
        atrous_rates: the three ASPP dilation rates (default (12, 24, 36) at output stride 8,
            (6, 12, 18) at 16).
        decoder_filters: filters of the ASPP branches and the head conv (default 256).
        separable: depthwise-separable 3x3 atrous convolutions in the ASPP (default False).
        aspp_dropout: dropout rate after the ASPP projection (default 0.5).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of `output_stride` unless `pad_to_fit`.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "deeplabv3")
    options = _DeepLabArguments.from_builder(locals())

    def decoder(features):
        return conv_bn_relu(options.aspp(features[-1]), decoder_filters, 3, "decoder")

    return _deeplab(arguments, options, decoder, upsample=output_stride)


@encoder_decoder_builder(
    "deeplabv3plus",
    description="DeepLabV3+: DeepLabV3 with a stride-4 decoder, dilated pretrained encoder",
    reference="Chen et al. 2018, arXiv:1802.02611",
    multiple="`output_stride`",
    minimum="`output_stride // 2 + 1`",
)
def deeplabv3plus(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    output_stride=16,
    atrous_rates=None,
    decoder_filters=256,
    low_level_filters=48,
    separable=True,
    aspp_dropout=0.5,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build DeepLabV3+ (Chen et al. 2018, arXiv:1802.02611) on a dilated encoder.

    ASPP on the encoder's deepest features (at `output_stride`, see the module docstring),
    a 3x3 conv-BN-ReLU, bilinear up-sampling to stride 4, concatenation with the stride-4
    encoder features projected to `low_level_filters` channels, a 3x3 conv-BN-ReLU, a 1x1
    class convolution and 4x bilinear up-sampling.

    Args:
        output_stride: 16 (default, as the paper and smp) or 8.
        atrous_rates: the three ASPP dilation rates (default (6, 12, 18) at output stride 16,
            (12, 24, 36) at 8).
        decoder_filters: filters of the ASPP branches and decoder convs (default 256).
        low_level_filters: channels of the projected stride-4 features (default 48).
        separable: depthwise-separable 3x3 convolutions in the ASPP and the decoder
            (default True, as smp and the paper's Xception model).
        aspp_dropout: dropout rate after the ASPP projection (default 0.5).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of `output_stride` unless `pad_to_fit`.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "deeplabv3plus")
    check_int(low_level_filters, "low_level_filters", 1)
    options = _DeepLabArguments.from_builder(locals())
    separable = options.separable

    def decoder(features):
        x = options.aspp(features[-1])
        x = conv_bn_relu(x, decoder_filters, 3, "aspp_head", separable=separable)
        to_stride_4 = UpSamplingBilinear2D(
            output_stride // 4, align_corners=False, name="decoder_upsample"
        )
        x = to_stride_4(x)
        low = conv_bn_relu(features[1], low_level_filters, 1, "decoder_low_level")
        x = layers.Concatenate(name="decoder_concat")([x, low])
        return conv_bn_relu(x, decoder_filters, 3, "decoder", separable=separable)

    return _deeplab(arguments, options, decoder, upsample=4)
