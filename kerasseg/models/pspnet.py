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

import keras
from keras import layers

from kerasseg.models.base import SegmentationModel, check_spatial_size
from kerasseg.models.blocks import (
    check_common_arguments,
    check_rate,
    conv_bn_relu,
    segmentation_head,
)
from kerasseg.models.encoders import (
    build_encoder,
    check_encoder_arguments,
    encoder_input_stage,
    encoder_preprocessing,
)
from kerasseg.models.resize import AdaptiveAveragePooling2D, ResizeLike
from kerasseg.registry import register_model

REFERENCE = "Zhao et al. 2017, Pyramid Scene Parsing Network, arXiv:1612.01105"
DEFAULT_BINS = (1, 2, 3, 6)


@register_model(
    "pspnet",
    task="semantic",
    description="PSPNet: pyramid pooling on the stride-8 features of a pretrained encoder",
    reference="Zhao et al. 2017, arXiv:1612.01105",
    num_classes=1,
    preprocessing=encoder_preprocessing,
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
        num_classes: output channels (1 for binary segmentation with a sigmoid).
        input_shape: (height, width, channels); height and width may be None.
        encoder: a name from `kerasseg.models.encoders.ENCODERS` (default "resnet50").
        encoder_weights: None, "imagenet" or a path to the encoder network's weights
            (3-channel weights are adapted to other channel counts).
        encoder_freeze: if True, the encoder's weights are not trained.
        encoder_depth: 3 (default, smp: stride 8), 4 (stride 16) or 5 (stride 32); the
            encoder's layers past that stride are not part of the model.
        bins: pyramid pooling grid sizes (default (1, 2, 3, 6), the paper's); each branch
            gets in_channels // len(bins) channels.
        psp_filters: channels of the 1x1 conv-BN-ReLU after the concatenation (default 512).
        dropout: spatial dropout rate before the head (default 0.2; 0 for none).
        activation: None (logits), "sigmoid" or "softmax".
        include_preprocessing: put the input normalisation the encoder's weights expect
            (`ImagePreprocessing`) inside the model, so it takes 0..255 images.
        pad_to_fit: pad inputs inside the model by reflection up to a multiple of
            2**encoder_depth and crop the output back, so the model takes any height and
            width of at least 2**encoder_depth / 2 + 1.
        name: model name (default "pspnet_<encoder>").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 2**encoder_depth (8) unless `pad_to_fit`. The pooling is
        adaptive, so they need not be multiples of 2**encoder_depth * 6.
    """
    check_common_arguments(num_classes, input_shape, activation)
    input_shape = tuple(input_shape)
    spec = check_encoder_arguments(encoder, encoder_weights)
    if encoder_depth not in (3, 4, 5) or isinstance(encoder_depth, bool):
        raise ValueError(f"`encoder_depth` must be 3, 4 or 5; got {encoder_depth!r}.")
    if (
        not isinstance(bins, tuple | list)
        or not bins
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bins)
    ):
        raise ValueError(
            f"`bins` must be a non-empty sequence of integers >= 1, e.g. (1, 2, 3, 6); got "
            f"{bins!r}."
        )
    bins = tuple(bins)
    if isinstance(psp_filters, bool) or not isinstance(psp_filters, int) or psp_filters < 1:
        raise ValueError(f"`psp_filters` must be an integer >= 1; got {psp_filters!r}.")
    check_rate(dropout, "dropout")
    stride = 2**encoder_depth
    size_divisor, min_size = (1, stride // 2 + 1) if pad_to_fit else (stride, stride)
    check_spatial_size(input_shape[:2], size_divisor, "input_shape", 0, min_size)
    # The encoder is built size-free: it only has to reach stride 2**encoder_depth, not 32.
    full, present = build_encoder(encoder, (None, None, input_shape[2]), weights=encoder_weights)
    tap = sum(present[:encoder_depth]) - 1  # index among the outputs that exist
    backbone = keras.Model(full.inputs, full.outputs[tap], name="encoder")
    backbone.trainable = not encoder_freeze

    images, features = encoder_input_stage(
        backbone, input_shape, spec, include_preprocessing, stride if pad_to_fit else None
    )
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
    x = conv_bn_relu(x, psp_filters, 1, "psp_bottleneck")
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="psp_dropout")(x)
    crop_to = images if pad_to_fit else None
    outputs = segmentation_head(
        x, num_classes, activation, kernel_size=3, crop_to=crop_to, upsample=stride
    )
    return SegmentationModel(
        images,
        outputs,
        name=name or f"pspnet_{encoder}",
        size_divisor=size_divisor,
        min_size=min_size,
    )
