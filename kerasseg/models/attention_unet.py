"""Attention U-Net: a U-Net decoder with additive attention gates on its skip connections.

References:
    Oktay, Schlemper, Le Folgoc, Lee, Heinrich, Misawa, Mori, McDonagh, Hammerla, Kainz,
    Glocker & Rueckert, "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018,
    arXiv:1804.03999 (the attention gate: Fig. 2).
    The decoder is the encoder U-Net of `kerasseg.models.unet` (segmentation_models.pytorch's
    `Unet` layout): five blocks of 2x nearest up-sampling, concatenation with the encoder
    feature at the new stride, two 3x3 conv-BN-ReLU, then a 3x3 convolution to the classes.

Each encoder feature x (stride s) is gated before it is concatenated, by the gating signal g,
the decoder's feature at stride 2s before its up-sampling (the encoder's stride-32 output for
the first block): W_x, a 2x2 stride-2 convolution without bias, brings x to g's grid; W_g, a
1x1 convolution with bias, projects g; then ReLU(W_x x + W_g g), psi (a 1x1 convolution to
one channel, with bias) and a sigmoid give the attention coefficients alpha in (0, 1) at
stride 2s, which are resampled 2x bilinearly (half-pixel centres) to x's grid and multiply x.
Oktay et al.'s code (`GridAttentionBlock`) strides W_x the same way, with F_int = half the
skip's channels by default. Its extra output transform (a 1x1 conv and BatchNorm on the gated
skip) is not in the paper's Fig. 2 and is left out. The coefficients can be read for
visualisation from the layers "decoder<k>_attention_coefficients" (stride 2s) or
"decoder<k>_attention_resample" (stride s), k = 1..4 from the deepest skip.

Encoders without a stride-2 feature (ConvNeXt): that block has no skip and so no gate.
"""

import functools

from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.blocks import DECODER_FILTERS_RULE, segmentation_head
from kerasseg.models.resize import UpSamplingBilinear2D
from kerasseg.models.unet import unet_decoder
from kerasseg.ops.checks import check_ints

__all__ = ["DEFAULT_DECODER_FILTERS", "GATES", "REFERENCE", "attention_gate", "attention_unet"]

REFERENCE = "Oktay et al. 2018, Attention U-Net, arXiv:1804.03999"
DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)
GATES = 4  # one per skip, at strides 16, 8, 4 and 2


def attention_gate(skip, gating, filters, name):
    """Gate `skip` (B, H, W, C) by `gating` (B, H/2, W/2, G): Oktay et al. 2018, Fig. 2.

    Returns the skip multiplied by its attention coefficients (layers `{name}_wx`,
    `{name}_wg`, `{name}_add`, `{name}_relu`, `{name}_psi`, `{name}_coefficients`,
    `{name}_resample`, `{name}_multiply`).
    """
    theta = layers.Conv2D(
        filters, 2, strides=2, use_bias=False, kernel_initializer="he_normal", name=f"{name}_wx"
    )(skip)
    phi = layers.Conv2D(filters, 1, kernel_initializer="he_normal", name=f"{name}_wg")(gating)
    f = layers.Add(name=f"{name}_add")([theta, phi])
    f = layers.Activation("relu", name=f"{name}_relu")(f)
    alpha = layers.Conv2D(1, 1, kernel_initializer="he_normal", name=f"{name}_psi")(f)
    alpha = layers.Activation("sigmoid", name=f"{name}_coefficients")(alpha)
    alpha = UpSamplingBilinear2D(2, align_corners=False, name=f"{name}_resample")(alpha)
    return layers.Multiply(name=f"{name}_multiply")([skip, alpha])


def _check_attention_filters(attention_filters):
    if attention_filters is None:
        return None
    return check_ints(
        attention_filters,
        GATES,
        "attention_filters",
        f"None (half the channels of each skip) or {GATES} integers >= 1, one per gate, "
        "deepest (stride 16) first",
    )


@encoder_decoder_builder(
    "attention_unet",
    description="Attention U-Net: U-Net decoder with additive attention gates on the encoder skips",
    reference="Oktay et al. 2018, arXiv:1804.03999",
)
def attention_unet(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    decoder_filters=DEFAULT_DECODER_FILTERS,
    attention_filters=None,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build an Attention U-Net on a keras.applications encoder.

    Reference: Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the
    Pancreas", arXiv:1804.03999; the decoder of `kerasseg.models.unet` with an encoder, each
    skip connection gated (see the module docstring).

    Args:
        decoder_filters: five filter counts of the decoder blocks, deepest first
            (default (256, 128, 64, 32, 16)).
        attention_filters: the intermediate channels F_int of the four gates, deepest
            (stride 16) first; None (default): half the channels of each gated skip (at
            least 1), the default of Oktay et al.'s code.

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 32 unless `pad_to_fit`.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "attention_unet")
    decoder_filters = check_ints(decoder_filters, 5, "decoder_filters", DECODER_FILTERS_RULE)
    attention_filters = _check_attention_filters(attention_filters)

    def gate(skip, x, index, block):
        if attention_filters:
            filters = attention_filters[index]
        else:
            filters = max(1, skip.shape[-1] // 2)
        return attention_gate(skip, x, filters, f"{block}_attention")

    decoder = functools.partial(unet_decoder, decoder_filters=decoder_filters, gate=gate)
    return encoder_decoder(arguments, decoder, functools.partial(segmentation_head, kernel_size=3))
