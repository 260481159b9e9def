"""LinkNet on a keras.applications encoder.

References:
    Chaurasia & Culurciello, "LinkNet: Exploiting Encoder Representations for Efficient
    Semantic Segmentation", VCIP 2017, arXiv:1707.03718.
    The layout follows segmentation_models.pytorch's `Linknet` (decoders/linknet/decoder.py):
    five decoder blocks from the stride-32 feature up to full resolution, each a 1x1
    conv-BN-ReLU to in/4 channels, a 2x up-sampling (4x4 stride-2 transposed conv-BN-ReLU),
    and a 1x1 conv-BN-ReLU to the channels of the encoder feature at the new stride, which is
    then added (the "link"); the last block, at full resolution, has no skip and ends with
    `final_filters` (32) channels; then a 1x1 convolution to the classes.
    `upsampling="upsampling"` gives qubvel's Keras segmentation_models block instead: 2x
    nearest up-sampling and a 3x3 conv-BN-ReLU.

Encoders without a stride-2 feature (ConvNeXt): the block at stride 2 has nothing to add and
keeps its in/4 width.
"""

import functools

from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    decoder_skips,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.blocks import conv_bn_relu
from kerasseg.ops.checks import check_int

__all__ = ["REFERENCE", "UPSAMPLING", "linknet", "linknet_decoder"]

REFERENCE = "Chaurasia & Culurciello 2017, LinkNet, arXiv:1707.03718"
UPSAMPLING = ("transpose", "upsampling")


def _decoder_block(x, skip, out_filters, upsampling, name):
    mid = x.shape[-1] // 4
    x = conv_bn_relu(x, mid, 1, f"{name}_reduce")
    if upsampling == "transpose":
        # smp's TransposeX2: ConvTranspose2d(k=4, s=2, p=1) keeps its bias before BatchNorm.
        x = layers.Conv2DTranspose(
            mid, 4, strides=2, padding="same", kernel_initializer="he_normal", name=f"{name}_up"
        )(x)
        x = layers.BatchNormalization(name=f"{name}_up_bn")(x)
        x = layers.Activation("relu", name=f"{name}_up_relu")(x)
    else:
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
        x = conv_bn_relu(x, mid, 3, f"{name}_up")
    x = conv_bn_relu(x, out_filters or mid, 1, f"{name}_expand")
    if skip is not None:
        x = layers.Add(name=f"{name}_add")([x, skip])
    return x


@encoder_decoder_builder(
    "linknet",
    description="LinkNet on a pretrained encoder, decoder blocks added to its features",
    reference="Chaurasia & Culurciello 2017, arXiv:1707.03718",
)
def linknet(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    upsampling="transpose",
    final_filters=32,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build a LinkNet on a keras.applications encoder.

    Reference: Chaurasia & Culurciello 2017, "LinkNet: Exploiting Encoder Representations
    for Efficient Semantic Segmentation", arXiv:1707.03718; the layout of
    segmentation_models.pytorch's `Linknet` (see the module docstring).

    Args:
        upsampling: "transpose" (default, smp: 4x4 stride-2 transposed convolution) or
            "upsampling" (qubvel's Keras segmentation_models: 2x nearest up-sampling, then a
            3x3 convolution), each followed by BatchNorm and ReLU.
        final_filters: channels of the last, full-resolution decoder block (default 32).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 32 unless `pad_to_fit`.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "linknet")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"`upsampling` must be one of {UPSAMPLING}; got {upsampling!r}.")
    check_int(final_filters, "final_filters", 1)
    decoder = functools.partial(linknet_decoder, upsampling=upsampling, final_filters=final_filters)
    return encoder_decoder(arguments, decoder)


def linknet_decoder(features, upsampling, final_filters):
    """The LinkNet decoder: five blocks "decoder1".."decoder5" from the stride-32 feature
    up to full resolution, each added to the encoder's feature at its new stride (see the
    module docstring); the arguments are `linknet`'s.

    Returns:
        The last block's output, at full resolution with `final_filters` channels.
    """
    x = features[-1]
    skips = decoder_skips(features)
    for i, skip in enumerate(skips):
        out_filters = final_filters if i == len(skips) - 1 else None
        if skip is not None:
            out_filters = skip.shape[-1]
        x = _decoder_block(x, skip, out_filters, upsampling, f"decoder{i + 1}")
    return x
