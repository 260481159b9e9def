"""PSPNet: the pyramid scene parsing network on a keras.applications encoder.

References:
    Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017, arXiv:1612.01105.
    The layout follows segmentation_models.pytorch's `PSPNet` (decoders/pspnet/decoder.py):
    the encoder is cut at stride 2**encoder_depth (default 3: stride 8); the pyramid pooling
    module average-pools that feature into 1x1, 2x2, 3x3 and 6x6 bins, reduces each to
    in / 4 channels with a 1x1 conv-BN-ReLU (the 1x1 bin without BatchNorm, with a bias, as
    smp), up-samples each bilinearly (align_corners=True, as smp) back to the feature's size
    and concatenates them with it; a 1x1 conv-BN-ReLU to `psp_filters` (512), spatial dropout
    (0.2), a 3x3 convolution to the classes and 2**encoder_depth x bilinear up-sampling
    (align_corners=True).

Sizes: the pooling is adaptive, with PyTorch's `AdaptiveAvgPool2d` bins (bin i of n over a
length L covers floor(i * L / n) .. ceil((i + 1) * L / n), so bins may overlap), so any size
whose stride-8 map exists works: inputs must be multiples of 2**encoder_depth (8), not of
8 * 6. `pad_to_fit=True` takes any size of at least 2**encoder_depth / 2 + 1 by reflection
padding up to that multiple and cropping back. The final up-sampling is bilinear with
align_corners=True, as smp's head (`kerasseg.models.resize.UpSamplingBilinear2D`).
"""

import functools

import keras
from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.blocks import conv_bn_relu, segmentation_head
from kerasseg.models.resize import AdaptiveAveragePooling2D, ResizeLike
from kerasseg.ops.checks import check_int, check_rate, is_int

__all__ = ["DEFAULT_BINS", "REFERENCE", "pspnet", "pyramid_pooling"]

REFERENCE = "Zhao et al. 2017, Pyramid Scene Parsing Network, arXiv:1612.01105"
DEFAULT_BINS = (1, 2, 3, 6)


@encoder_decoder_builder(
    "pspnet",
    description="PSPNet: pyramid pooling on the stride-8 features of a pretrained encoder",
    reference="Zhao et al. 2017, arXiv:1612.01105",
    multiple="2**encoder_depth",
    minimum="2**encoder_depth / 2 + 1",
)
def pspnet(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    encoder_depth=3,
    bins=DEFAULT_BINS,
    psp_filters=512,
    dropout=0.2,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build a PSPNet on a keras.applications encoder cut at stride 2**encoder_depth.

    Reference: Zhao et al. 2017, "Pyramid Scene Parsing Network", arXiv:1612.01105; the
    layout of segmentation_models.pytorch's `PSPNet` (see the module docstring).

    Args:
        encoder_depth: 3 (default, smp: stride 8), 4 (stride 16) or 5 (stride 32); the
            encoder's layers past that stride are not part of the model.
        bins: pyramid pooling grid sizes (default (1, 2, 3, 6), the paper's); each branch
            gets in_channels // len(bins) channels.
        psp_filters: channels of the 1x1 conv-BN-ReLU after the concatenation (default 512).
        dropout: spatial dropout rate before the head (default 0.2; 0 for none).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 2**encoder_depth (8) unless `pad_to_fit`. The pooling is
        adaptive, so they need not be multiples of 2**encoder_depth * 6.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "pspnet")
    if encoder_depth not in (3, 4, 5) or isinstance(encoder_depth, bool):
        raise ValueError(f"`encoder_depth` must be 3, 4 or 5; got {encoder_depth!r}.")
    if (
        not isinstance(bins, tuple | list)
        or not bins
        or not all(is_int(b) and b >= 1 for b in bins)
    ):
        raise ValueError(
            f"`bins` must be a non-empty sequence of integers >= 1, e.g. (1, 2, 3, 6); got "
            f"{bins!r}."
        )
    check_int(psp_filters, "psp_filters", 1)
    check_rate(dropout, "dropout")
    stride = 2**encoder_depth
    return encoder_decoder(
        arguments,
        functools.partial(pyramid_pooling, bins=tuple(bins), filters=psp_filters, dropout=dropout),
        functools.partial(segmentation_head, kernel_size=3, upsample=stride),
        stride=stride,
        prepare_encoder=functools.partial(_cut_encoder, depth=encoder_depth),
    )


def _cut_encoder(encoder, present, depth):
    """The encoder up to its feature at stride 2**depth, as a single-output model."""
    tap = sum(present[:depth]) - 1  # index among the outputs that exist
    return keras.Model(encoder.inputs, encoder.outputs[tap], name="encoder"), None


def pyramid_pooling(features, bins, filters, dropout):
    """The pyramid pooling module on the encoder's deepest feature, then the bottleneck.

    Each bin size b gives a branch "psp_bin<b>": adaptive average pooling to b x b, a 1x1
    conv-BN-ReLU to in_channels // len(bins) (no BatchNorm for b = 1, as smp) and bilinear
    resizing back; the branches and the feature are concatenated, reduced by a 1x1
    conv-BN-ReLU to `filters` ("psp_bottleneck") and dropped out channel-wise at `dropout`.

    Returns:
        The bottleneck's output, at the feature's stride.

    Raises:
        ValueError: more bins than the feature has channels.
    """
    channels = features.shape[-1]
    branch_filters = channels // len(bins)
    if branch_filters < 1:
        raise ValueError(
            f"`bins`: {len(bins)} branches need at least that many encoder channels; the "
            f"encoder gives {channels}."
        )
    branches = []
    for b in bins:
        y = AdaptiveAveragePooling2D(b, name=f"psp_pool{b}")(features)
        # smp: no BatchNorm on the 1x1 bin (PyTorch's BatchNorm rejects 1x1 maps in training).
        y = conv_bn_relu(y, branch_filters, 1, f"psp_bin{b}", batch_norm=b > 1)
        branches.append(ResizeLike(name=f"psp_bin{b}_resize")([y, features]))
    x = layers.Concatenate(name="psp_concat")(branches + [features])
    x = conv_bn_relu(x, filters, 1, "psp_bottleneck")
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="psp_dropout")(x)
    return x
