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

from keras import layers

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import (
    check_common_arguments,
    conv_bn_relu,
    segmentation_head,
)
from kerasseg.models.encoders import (
    check_encoder_arguments,
    encoder_preprocessing,
    stride32_encoder_stage,
)
from kerasseg.registry import register_model

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


@register_model(
    "linknet",
    task="semantic",
    description="LinkNet on a pretrained encoder, decoder blocks added to its features",
    reference="Chaurasia & Culurciello 2017, arXiv:1707.03718",
    num_classes=1,
    preprocessing=encoder_preprocessing,
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
        num_classes: output channels (1 for binary segmentation with a sigmoid).
        input_shape: (height, width, channels); height and width may be None.
        encoder: a name from `kerasseg.models.encoders.ENCODERS` (default "resnet50").
        encoder_weights: None, "imagenet" or a path to the encoder network's weights
            (3-channel weights are adapted to other channel counts).
        encoder_freeze: if True, the encoder's weights are not trained.
        upsampling: "transpose" (default, smp: 4x4 stride-2 transposed convolution) or
            "upsampling" (qubvel's Keras segmentation_models: 2x nearest up-sampling, then a
            3x3 convolution), each followed by BatchNorm and ReLU.
        final_filters: channels of the last, full-resolution decoder block (default 32).
        activation: None (logits), "sigmoid" or "softmax".
        include_preprocessing: put the input normalisation the encoder's weights expect
            (`ImagePreprocessing`) inside the model, so it takes 0..255 images.
        pad_to_fit: pad inputs inside the model by reflection up to a multiple of 32 and
            crop the output back, so the model takes any height and width of at least 17.
        name: model name (default "linknet_<encoder>").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes);
        H and W must be multiples of 32 unless `pad_to_fit`.
    """
    check_common_arguments(num_classes, input_shape, activation)
    input_shape = tuple(input_shape)
    spec = check_encoder_arguments(encoder, encoder_weights)
    if upsampling not in UPSAMPLING:
        raise ValueError(f"`upsampling` must be one of {UPSAMPLING}; got {upsampling!r}.")
    if isinstance(final_filters, bool) or not isinstance(final_filters, int) or final_filters < 1:
        raise ValueError(f"`final_filters` must be an integer >= 1; got {final_filters!r}.")
    images, features, size_divisor, min_size = stride32_encoder_stage(
        spec, input_shape, encoder_weights, encoder_freeze, include_preprocessing, pad_to_fit
    )
    x = features[-1]
    skips = features[3::-1] + [None]  # strides 16, 8, 4, 2, then full resolution
    for i, skip in enumerate(skips):
        out_filters = final_filters if i == len(skips) - 1 else None
        if skip is not None:
            out_filters = skip.shape[-1]
        x = _decoder_block(x, skip, out_filters, upsampling, f"decoder{i + 1}")
    crop_to = images if pad_to_fit else None
    outputs = segmentation_head(x, num_classes, activation, kernel_size=1, crop_to=crop_to)
    return SegmentationModel(
        images,
        outputs,
        name=name or f"linknet_{encoder}",
        size_divisor=size_divisor,
        min_size=min_size,
    )
