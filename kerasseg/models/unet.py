"""U-Net (Ronneberger et al. 2015) and U-Net with a pretrained encoder.

References:
    Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015, arXiv:1505.04597.
    The encoder-decoder variant follows segmentation_models.pytorch's `Unet`: five decoder
    blocks (2x nearest up-sampling, concatenation with the encoder feature at that stride,
    two 3x3 conv-BN-ReLU), then a 3x3 convolution to the classes.
"""

import keras
from keras import layers

from kerasseg.models.base import SegmentationModel, check_spatial_size
from kerasseg.models.blocks import (
    DECODER_FILTERS_RULE,
    CenterCropLike,
    ReflectPadToMultiple,
    check_common_arguments,
    check_ints,
    conv_block,
    segmentation_head,
)
from kerasseg.models.encoders import (
    check_encoder_arguments,
    encoder_preprocessing,
    stride32_encoder_stage,
)
from kerasseg.preprocessing import ImagePreprocessing
from kerasseg.registry import register_model

DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)


def unet_preprocessing(arguments):
    """0..1 images for the original U-Net (no encoder); else what the encoder needs."""
    if arguments.get("encoder") is None and not arguments.get("include_preprocessing"):
        return "unit"
    return encoder_preprocessing(arguments)


def _reject(mode, **options):
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(f'`{g}`' for g in given)} only apply {mode}.")


@register_model(
    "unet",
    task="semantic",
    description="U-Net, the original or on a pretrained keras.applications encoder",
    reference="Ronneberger et al. 2015, arXiv:1505.04597",
    num_classes=1,
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

    Args:
        num_classes: output channels (1 for binary segmentation with a sigmoid).
        input_shape: (height, width, channels); height and width may be None.
        encoder: None for the original U-Net, or a name from
            `kerasseg.models.encoders.ENCODERS` (e.g. "resnet50", "efficientnet_b0").
        encoder_weights: None, "imagenet" or a path to the encoder network's weights
            (3-channel weights are adapted to other channel counts).
        encoder_freeze: if True, the encoder's weights are not trained (default False).
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
        activation: None (logits), "sigmoid" or "softmax".
        include_preprocessing: put the input normalisation the encoder's weights expect
            (`ImagePreprocessing`) inside the model, so it takes 0..255 images.
        pad_to_fit: pad inputs inside the model by reflection up to the size the network
            needs (a multiple of 2**depth, or 32 with an encoder) and crop the output back,
            so the model takes any height and width of at least half that multiple plus one
            ("same" padding only).
        name: model name (default "unet" or "unet_<encoder>").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H', W', num_classes).
    """
    check_common_arguments(num_classes, input_shape, activation)
    input_shape = tuple(input_shape)
    if encoder is None:
        _reject(
            "with an `encoder`",
            encoder_weights=encoder_weights,
            encoder_freeze=encoder_freeze,
            decoder_filters=decoder_filters,
        )
        return _original_unet(
            num_classes,
            input_shape,
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
    _reject(
        "to the original U-Net (`encoder=None`)",
        base_filters=base_filters,
        depth=depth,
        batch_norm=batch_norm,
        dropout=dropout,
        padding=padding,
        upsampling=upsampling,
    )
    return _encoder_unet(
        num_classes,
        input_shape,
        encoder=encoder,
        encoder_weights=encoder_weights,
        encoder_freeze=bool(encoder_freeze),
        decoder_filters=DEFAULT_DECODER_FILTERS if decoder_filters is None else decoder_filters,
        activation=activation,
        include_preprocessing=include_preprocessing,
        pad_to_fit=pad_to_fit,
        name=name or f"unet_{encoder}",
    )


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
    if isinstance(base_filters, bool) or not isinstance(base_filters, int) or base_filters < 1:
        raise ValueError(f"`base_filters` must be an integer >= 1; got {base_filters!r}.")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 6:
        raise ValueError(f"`depth` must be an integer from 1 to 6; got {depth!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1); got {dropout!r}.")
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


def _encoder_unet(
    num_classes,
    input_shape,
    encoder,
    encoder_weights,
    encoder_freeze,
    decoder_filters,
    activation,
    include_preprocessing,
    pad_to_fit,
    name,
):
    spec = check_encoder_arguments(encoder, encoder_weights)
    decoder_filters = check_ints(decoder_filters, 5, "decoder_filters", DECODER_FILTERS_RULE)
    images, features, size_divisor, min_size = stride32_encoder_stage(
        spec, input_shape, encoder_weights, encoder_freeze, include_preprocessing, pad_to_fit
    )
    x = features[-1]
    skips = features[3::-1] + [None]  # strides 16, 8, 4, 2, then full resolution
    for i, (skip, filters) in enumerate(zip(skips, decoder_filters, strict=True)):
        block = f"decoder{i + 1}"
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{block}_upsample")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"{block}_concat")([x, skip])
        x = conv_block(x, filters, block, batch_norm=True)
    crop_to = images if pad_to_fit else None
    outputs = segmentation_head(x, num_classes, activation, kernel_size=3, crop_to=crop_to)
    return SegmentationModel(
        images, outputs, name=name, size_divisor=size_divisor, min_size=min_size
    )
