"""FPN: the panoptic Feature Pyramid Network decoder on a keras.applications encoder.

References:
    Kirillov, Girshick, He & Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019,
    arXiv:1901.02446 (semantic segmentation branch, Fig. 3).
    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, arXiv:1612.03144.
    The layout follows segmentation_models.pytorch's `FPN` (decoders/fpn/decoder.py):
    1x1 lateral convolutions to `pyramid_filters` on the encoder features at strides 4, 8,
    16 and 32, a top-down path of 2x nearest up-sampling and addition, one segmentation block
    per level (3x3 conv without bias, GroupNorm(32), ReLU and 2x bilinear up-sampling with
    align_corners=True,
    repeated until stride 4; the stride-4 level gets one conv and no up-sampling), the four
    maps merged by addition or concatenation, spatial dropout, a 1x1 convolution to the
    classes and 4x bilinear up-sampling to the input size.

The bilinear up-sampling is `kerasseg.models.resize.UpSamplingBilinear2D` with PyTorch's
`align_corners=True`, as smp uses.
`normalization="batch"` gives the BatchNorm variant of qubvel's Keras `segmentation_models`.
"""

import functools

from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.blocks import segmentation_head
from kerasseg.models.resize import UpSamplingBilinear2D
from kerasseg.ops.checks import check_int, check_rate

__all__ = ["GROUPS", "MERGE_POLICIES", "NORMALIZATIONS", "REFERENCE", "fpn", "fpn_decoder"]

REFERENCE = "Kirillov et al. 2019, Panoptic Feature Pyramid Networks, arXiv:1901.02446"
MERGE_POLICIES = ("add", "concat")
NORMALIZATIONS = ("group", "batch")
GROUPS = 32  # GroupNorm(32, C) as in the paper and smp


def _norm(x, normalization, name):
    if normalization == "group":
        return layers.GroupNormalization(GROUPS, epsilon=1e-5, name=f"{name}_gn")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _segmentation_block(x, filters, upsamples, normalization, name):
    """max(1, upsamples) x (3x3 conv, norm, ReLU, then 2x bilinear up-sampling if upsamples)."""
    for i in range(1, max(upsamples, 1) + 1):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        x = _norm(x, normalization, f"{name}_{i}")
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if upsamples:
            x = UpSamplingBilinear2D(2, name=f"{name}_upsample{i}")(x)
    return x


@encoder_decoder_builder(
    "fpn",
    description="FPN (panoptic FPN semantic branch) on a pretrained encoder",
    reference="Kirillov et al. 2019, arXiv:1901.02446",
)
def fpn(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    pyramid_filters=256,
    segmentation_filters=128,
    merge="add",
    normalization="group",
    dropout=0.2,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build an FPN (panoptic FPN semantic branch) on a keras.applications encoder.

    Reference: Kirillov et al. 2019, "Panoptic Feature Pyramid Networks", arXiv:1901.02446;
    the layout of segmentation_models.pytorch's `FPN` (see the module docstring).

    Args:
        pyramid_filters: channels of the lateral 1x1 convolutions and the top-down path
            (default 256).
        segmentation_filters: channels of the segmentation blocks (default 128; a multiple
            of 32 with `normalization="group"`).
        merge: "add" (default, the paper's and smp's) or "concat" (4 x segmentation_filters
            channels into the head).
        normalization: "group" (default, GroupNorm with 32 groups as in the paper and smp)
            or "batch" (BatchNorm, as qubvel's Keras segmentation_models).
        dropout: spatial dropout rate after the merge (default 0.2; 0 for none).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 32 unless `pad_to_fit`.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "fpn")
    check_int(pyramid_filters, "pyramid_filters", 1)
    check_int(segmentation_filters, "segmentation_filters", 1)
    if merge not in MERGE_POLICIES:
        raise ValueError(f"`merge` must be one of {MERGE_POLICIES}; got {merge!r}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}; got {normalization!r}.")
    if normalization == "group" and segmentation_filters % GROUPS:
        raise ValueError(
            f"`segmentation_filters` must be a multiple of {GROUPS} with "
            f"normalization='group' (GroupNorm with {GROUPS} groups); got "
            f"{segmentation_filters!r}."
        )
    check_rate(dropout, "dropout")
    decoder = functools.partial(
        fpn_decoder,
        pyramid_filters=pyramid_filters,
        segmentation_filters=segmentation_filters,
        merge=merge,
        normalization=normalization,
        dropout=dropout,
    )
    return encoder_decoder(arguments, decoder, functools.partial(segmentation_head, upsample=4))


def fpn_decoder(features, pyramid_filters, segmentation_filters, merge, normalization, dropout):
    """The FPN decoder on the encoder's features at strides 4..32, up to its stride-4 map.

    Lateral 1x1 convolutions and the top-down path ("fpn_p5".."fpn_p2"), a segmentation
    block per level ("seg_p5".."seg_p2"), the merge and the spatial dropout (see the
    module docstring); the arguments are `fpn`'s.

    Returns:
        The merged stride-4 map.
    """
    c2, c3, c4, c5 = features[1:]  # strides 4, 8, 16, 32
    lateral = dict(kernel_size=1, kernel_initializer="he_uniform")
    p = layers.Conv2D(pyramid_filters, name="fpn_p5_lateral", **lateral)(c5)
    pyramid = [p]
    for level, skip in zip((4, 3, 2), (c4, c3, c2), strict=True):
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_p{level}_upsample")(p)
        skip = layers.Conv2D(pyramid_filters, name=f"fpn_p{level}_lateral", **lateral)(skip)
        p = layers.Add(name=f"fpn_p{level}_add")([up, skip])
        pyramid.append(p)
    maps = [
        _segmentation_block(p, segmentation_filters, upsamples, normalization, f"seg_p{level}")
        for p, level, upsamples in zip(pyramid, (5, 4, 3, 2), (3, 2, 1, 0), strict=True)
    ]
    if merge == "add":
        x = layers.Add(name="merge_add")(maps)
    else:
        x = layers.Concatenate(name="merge_concat")(maps)
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="merge_dropout")(x)
    return x
