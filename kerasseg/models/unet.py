"""U-Net (Ronneberger et al. 2015) and U-Net with a pretrained encoder.

References:
    Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015, arXiv:1505.04597.
    The encoder-decoder variant follows segmentation_models.pytorch's `Unet`: five decoder
    blocks (2x nearest up-sampling, concatenation with the encoder feature at that stride,
    two 3x3 conv-BN-ReLU), then a 3x3 convolution to the classes.
"""

import functools

import keras
from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    decoder_skips,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import (
    DECODER_FILTERS_RULE,
    CenterCropLike,
    ReflectPadToMultiple,
    check_common_arguments,
    conv_block,
    segmentation_head,
)
from kerasseg.models.encoders import encoder_preprocessing
from kerasseg.models.input_checks import check_spatial_size
from kerasseg.ops.checks import check_int, check_ints, check_rate
from kerasseg.preprocessing import ImagePreprocessing

__all__ = [
    "DEFAULT_DECODER_FILTERS",
    "ENCODER_ONLY",
    "ORIGINAL_ONLY",
    "unet",
    "unet_decoder",
    "unet_preprocessing",
    "valid_unet_output_size",
    "valid_unet_size_rule",
]

DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)


def unet_preprocessing(arguments):
    """0..1 images for the original U-Net (no encoder); else what the encoder needs."""
    if arguments.get("encoder") is None and not arguments.get("include_preprocessing"):
        return "unit"
    return encoder_preprocessing(arguments)


# The arguments that apply to one kind of U-Net only.
ENCODER_ONLY = ("encoder_weights", "encoder_freeze", "decoder_filters")
ORIGINAL_ONLY = ("base_filters", "depth", "batch_norm", "dropout", "padding", "upsampling")


def _reject(arguments, names, mode):
    """Raise a ValueError naming those of `names` given (not None) in `arguments`."""
    given = [name for name in names if arguments[name] is not None]
    if given:
        raise ValueError(f"{', '.join(f'`{g}`' for g in given)} only apply {mode}.")


@encoder_decoder_builder(
    "unet",
    description="U-Net, the original or on a pretrained keras.applications encoder",
    reference="Ronneberger et al. 2015, arXiv:1505.04597",
    preprocessing=unet_preprocessing,
)
def unet(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder=None,
    encoder_weights=None,
    encoder_freeze=None,
    decoder_filters=None,
    base_filters=None,
    depth=None,
    batch_norm=None,
    dropout=None,
    padding=None,
    upsampling=None,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build a U-Net, the original (``encoder=None``) or on a keras.applications encoder.

    `encoder_weights`, `encoder_freeze` and `decoder_filters` apply with an encoder only;
    `base_filters`, `depth`, `batch_norm`, `dropout`, `padding` and `upsampling` to the
    original U-Net only.

    Args:
        encoder: None for the original U-Net, or a name from
            `kerasseg.models.encoders.ENCODERS` (e.g. "resnet50", "efficientnet_b0").
        decoder_filters: five filter counts of the decoder blocks, deepest first
            (default (256, 128, 64, 32, 16)).
        base_filters: filters of the first level of the original U-Net (default 64,
            doubled at each level).
        depth: number of down-sampling steps of the original U-Net (default 4).
        batch_norm: batch normalisation after each convolution of the original U-Net
            (default False, as in the paper).
        dropout: dropout rate at the end of the contracting path (default 0: none).
        padding: "same" (default, output size = input size) or "valid" (the paper's
            unpadded convolutions with centre-cropped skips; 572 -> 388 at depth 4).
        upsampling: "transpose" (default, 2x2 transposed convolution) or "bilinear"
            (bilinear 2x up-sampling then a 2x2 convolution).
        include_preprocessing: put the input normalisation inside the model
            (`ImagePreprocessing`: the one the encoder's weights expect, or x / 255 for the
            original U-Net), so it takes 0..255 images.
        pad_to_fit: pad inputs inside the model by reflection up to the size the network
            needs (a multiple of 2**depth, or 32 with an encoder) and crop the output back,
            so the model takes any height and width of at least half that multiple plus one
            ("same" padding only).
        name: model name (default "unet" or "unet_<encoder>").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H', W', num_classes).
    """
    given = locals()  # the builder's arguments by name
    if encoder is None:
        check_common_arguments(num_classes, input_shape, activation)
        _reject(given, ENCODER_ONLY, "with an `encoder`")
        return _original_unet(
            num_classes,
            tuple(input_shape),
            base_filters=64 if base_filters is None else base_filters,
            depth=4 if depth is None else depth,
            batch_norm=bool(batch_norm),
            dropout=0.0 if dropout is None else dropout,
            padding=padding or "same",
            upsampling=upsampling or "transpose",
            activation=activation,
            include_preprocessing=include_preprocessing,
            pad_to_fit=pad_to_fit,
            name=name or "unet",
        )
    arguments = EncoderDecoderArguments.from_builder(given, "unet")
    _reject(given, ORIGINAL_ONLY, "to the original U-Net (`encoder=None`)")
    if decoder_filters is None:
        decoder_filters = DEFAULT_DECODER_FILTERS
    decoder_filters = check_ints(decoder_filters, 5, "decoder_filters", DECODER_FILTERS_RULE)
    decoder = functools.partial(unet_decoder, decoder_filters=decoder_filters)
    return encoder_decoder(arguments, decoder, functools.partial(segmentation_head, kernel_size=3))


def unet_decoder(features, decoder_filters, gate=None):
    """The decoder of U-Net on an encoder, as segmentation_models.pytorch's `Unet`.

    Five blocks "decoder1".."decoder5" from the stride-32 feature up to full resolution:
    2x nearest up-sampling, concatenation with the encoder's feature at the new stride
    (none at full resolution, nor where the encoder has none), two 3x3 conv-BN-ReLU.

    Args:
        features: the encoder's five features at strides 2..32 (None where it has none).
        decoder_filters: the five blocks' filters, deepest first.
        gate: None, or `gate(skip, x, index, block)` returning the skip to concatenate,
            from the decoder's map `x` before its up-sampling (Attention U-Net's gates).

    Returns:
        The last block's output, at full resolution.
    """
    x = features[-1]
    skips = decoder_skips(features)
    for i, (skip, filters) in enumerate(zip(skips, decoder_filters, strict=True)):
        block = f"decoder{i + 1}"
        if skip is not None and gate is not None:
            skip = gate(skip, x, i, block)
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{block}_upsample")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"{block}_concat")([x, skip])
        x = conv_block(x, filters, block, batch_norm=True)
    return x


def valid_unet_output_size(size, depth):
    """Output size of the unpadded ("valid") U-Net for an input size, or None if invalid."""
    for _ in range(depth):
        size -= 4
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4
    if size < 1:
        return None
    for _ in range(depth):
        size = size * 2 - 4
        if size < 1:
            return None
    return size


def valid_unet_size_rule(depth):
    """(divisor, offset, minimum): the unpadded U-Net takes sizes offset + k * divisor."""
    divisor, offset = 2**depth, 4 * (2**depth - 1)
    minimum = offset + divisor
    while valid_unet_output_size(minimum, depth) is None:
        minimum += divisor
    return divisor, offset, minimum


def _original_unet(
    num_classes,
    input_shape,
    base_filters,
    depth,
    batch_norm,
    dropout,
    padding,
    upsampling,
    activation,
    include_preprocessing,
    pad_to_fit,
    name,
):
    check_int(base_filters, "base_filters", 1)
    check_int(depth, "depth", 1, 6)
    check_rate(dropout, "dropout")
    if padding not in ("same", "valid"):
        raise ValueError(f"`padding` must be 'same' or 'valid'; got {padding!r}.")
    if upsampling not in ("transpose", "bilinear"):
        raise ValueError(f"`upsampling` must be 'transpose' or 'bilinear'; got {upsampling!r}.")
    if pad_to_fit and padding != "same":
        raise ValueError("`pad_to_fit` needs padding='same' (valid convolutions shrink maps).")
    if padding == "same":
        size_divisor, size_offset, min_size = 2**depth, 0, 2**depth
    else:
        size_divisor, size_offset, min_size = valid_unet_size_rule(depth)
    network_divisor = size_divisor
    if pad_to_fit:
        size_divisor, min_size = 1, network_divisor // 2 + 1
    check_spatial_size(input_shape[:2], size_divisor, "input_shape", size_offset, min_size)

    images = keras.Input(input_shape, name="images")
    x = (
        ImagePreprocessing("unit", name="preprocessing")(images)
        if include_preprocessing
        else images
    )
    if pad_to_fit:
        x = ReflectPadToMultiple(network_divisor, name="pad_to_fit")(x)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, f"down{level + 1}", batch_norm, padding)
        if dropout and level == depth - 1:
            x = layers.Dropout(dropout, name=f"down{level + 1}_dropout")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, "bottleneck", batch_norm, padding)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        block = f"up{level + 1}"
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"{block}_upconv")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{block}_upsample")(x)
            x = layers.Conv2D(filters, 2, padding="same", name=f"{block}_upconv")(x)
        skip = skips[level]
        if padding == "valid":
            skip = CenterCropLike(name=f"{block}_crop")([skip, x])
        x = layers.Concatenate(name=f"{block}_concat")([skip, x])
        x = conv_block(x, filters, block, batch_norm, padding)
    crop_to = images if pad_to_fit else None
    outputs = segmentation_head(x, num_classes, activation, kernel_size=1, crop_to=crop_to)
    return SegmentationModel(
        images,
        outputs,
        name=name,
        size_divisor=size_divisor,
        size_offset=size_offset,
        min_size=min_size,
    )
