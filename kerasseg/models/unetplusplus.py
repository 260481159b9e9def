"""U-Net++ (nested U-Net) on a keras.applications encoder, with optional deep supervision.

References:
    Zhou, Rahman Siddiquee, Tajbakhsh & Liang, "UNet++: A Nested U-Net Architecture for
    Medical Image Segmentation", DLMIA 2018, arXiv:1807.10165.
    The decoder follows segmentation_models.pytorch's `UnetPlusPlus`
    (decoders/unetplusplus/decoder.py).

The node grid, in the paper's notation: X^{i,0} are the encoder's features at strides 2, 4, 8,
16 and 32 (i = 0..4). Each nested node X^{i,j} (j >= 1, i + j <= 4) up-samples the deeper
node X^{i+1,j-1} 2x (nearest), concatenates it with all the nodes before it on its own level,
[X^{i,j-1}, ..., X^{i,1}, X^{i,0}] (smp's order; the encoder feature last), and applies two
3x3 conv-BN-ReLU. The nodes on the diagonal i + j = 4 (X^{3,1}, X^{2,2}, X^{1,3}, X^{0,4}) are
the decoder proper and have `decoder_filters[0..3]` channels; the other nested nodes have
the channels of the encoder feature on their level, as in smp. A last block up-samples X^{0,4}
(stride 2) to the input size with `decoder_filters[4]` channels, then the 3x3 head of the
shared `segmentation_head`. Encoders without a stride-2 feature (ConvNeXt): the level-0
nodes have no encoder skip and `decoder_filters[3]` channels.

Deep supervision (the paper's Sec. 2, "Deep supervision"): `deep_supervision=True` adds a
1x1 convolution to the classes on X^{0,1}, X^{0,2} and X^{0,3} (stride 2), each up-sampled
2x bilinearly (half-pixel centres) to the input size; the fourth output is the default path
(X^{0,4}, the full-resolution block and the 3x3 head), so head 4 computes exactly what the
model built without deep supervision computes. `inference_model` turns such a model into a
single-output one: the mean of the heads (the paper's "accurate" mode) or one head (its
"fast" mode, pruned to the layers that head needs).
"""

import functools

import keras
from keras import layers

from kerasseg.models.assembly import (
    EncoderDecoderArguments,
    encoder_decoder,
    encoder_decoder_builder,
)
from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import (
    DECODER_FILTERS_RULE,
    CenterCropLike,
    conv_block,
    segmentation_head,
)
from kerasseg.models.resize import UpSamplingBilinear2D
from kerasseg.ops.checks import check_ints, is_int

__all__ = [
    "DEFAULT_DECODER_FILTERS",
    "HEADS",
    "LEVELS",
    "OUTPUT_NAMES",
    "REFERENCE",
    "inference_model",
    "unetplusplus",
]

REFERENCE = "Zhou et al. 2018, UNet++: A Nested U-Net Architecture, arXiv:1807.10165"
DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)
LEVELS = 4  # nested levels, at strides 2, 4, 8 and 16; X^{4,0} is the stride-32 bottleneck
HEADS = 4  # deep-supervision outputs, one per X^{0,j}, j = 1..4
OUTPUT_NAMES = tuple(f"output_{j}" for j in range(1, HEADS + 1))


@encoder_decoder_builder(
    "unetplusplus",
    description="U-Net++: nested dense skip pathways on a pretrained encoder, optional deep "
    "supervision",
    reference="Zhou et al. 2018, arXiv:1807.10165",
)
def unetplusplus(
    num_classes=1,
    input_shape=(None, None, 3),
    encoder="resnet50",
    encoder_weights=None,
    encoder_freeze=False,
    decoder_filters=DEFAULT_DECODER_FILTERS,
    deep_supervision=False,
    activation=None,
    include_preprocessing=False,
    pad_to_fit=False,
    name=None,
):
    """Build a U-Net++ (nested U-Net) on a keras.applications encoder.

    Reference: Zhou et al. 2018, "UNet++: A Nested U-Net Architecture for Medical Image
    Segmentation", arXiv:1807.10165; the decoder layout of segmentation_models.pytorch's
    `UnetPlusPlus` (see the module docstring for the node grid).

    Args:
        decoder_filters: five filter counts, deepest first (default (256, 128, 64, 32, 16)):
            the decoder nodes X^{3,1}, X^{2,2}, X^{1,3}, X^{0,4} and the full-resolution block.
        deep_supervision: False (default): one output. True: four outputs, one per X^{0,j}
            (j = 1..4), each at the input size, for training with a loss on every head.
        activation: None (logits), "sigmoid" or "softmax", applied by every head.

    Returns:
        A `SegmentationModel`. With `deep_supervision=False`, it maps (batch, H, W, C) images
        to (batch, H, W, num_classes). With `deep_supervision=True`, to a list of four such
        maps, the outputs "output_1" ... "output_4" (head j on X^{0,j}); train it with one
        loss for all heads or one per head, e.g.::

            model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(),
                          loss_weights=[1.0, 1.0, 1.0, 1.0])
            model.fit(images, [masks] * 4)            # or {"output_1": masks, ...}

        `model.predict` then returns the four maps; for inference and for
        `kerasseg.export`, take `inference_model(model)` (the mean of the four heads, the
        paper's "accurate" mode) or `inference_model(model, head=j)` (head j only, its "fast"
        mode; head 4 equals the model built without deep supervision). H and W must be
        multiples of 32 unless `pad_to_fit`.

    Raises:
        TypeError: `deep_supervision` is not a boolean.
        ValueError: any other argument out of its accepted values.
    """
    arguments = EncoderDecoderArguments.from_builder(locals(), "unetplusplus")
    decoder_filters = check_ints(decoder_filters, 5, "decoder_filters", DECODER_FILTERS_RULE)
    if not isinstance(deep_supervision, bool):
        raise TypeError(f"`deep_supervision` must be True or False; got {deep_supervision!r}.")
    decoder = functools.partial(_decoder, decoder_filters=decoder_filters)
    head = _supervision_heads if deep_supervision else _head
    return encoder_decoder(arguments, decoder, head)


def _decoder(features, decoder_filters):
    """The maps the heads read: X^{0,1}, X^{0,2}, X^{0,3} (stride 2) and the full-resolution
    block on X^{0,4}."""
    nodes = _nested_decoder(features, decoder_filters)
    x = layers.UpSampling2D(2, interpolation="nearest", name="final_upsample")(nodes[0, LEVELS])
    x = conv_block(x, decoder_filters[4], "final", batch_norm=True)
    return [nodes[0, j] for j in range(1, HEADS)] + [x]


def _head(maps, num_classes, activation, crop_to=None):
    """The single head of the model without deep supervision: a 3x3 convolution on the
    full-resolution block."""
    return segmentation_head(maps[-1], num_classes, activation, kernel_size=3, crop_to=crop_to)


def _supervision_heads(maps, num_classes, activation, crop_to=None):
    """The four deep-supervision heads, one per map of `_decoder`."""
    return [
        _supervision_head(x, j, num_classes, activation, crop_to)
        for j, x in enumerate(maps, start=1)
    ]


def _nested_decoder(features, decoder_filters):
    """The nodes X^{i,j} as a dict {(i, j): tensor}; X^{i,0} are the encoder's features
    (X^{0,0} may be None)."""
    nodes = {(i, 0): feature for i, feature in enumerate(features)}
    for j in range(1, LEVELS + 1):
        for i in range(LEVELS + 1 - j):
            on_diagonal = i + j == LEVELS
            if on_diagonal or features[i] is None:
                filters = decoder_filters[LEVELS - 1 - i]
            else:
                filters = features[i].shape[-1]
            block = f"x{i}_{j}"
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"{block}_upsample")(
                nodes[i + 1, j - 1]
            )
            same_level = [nodes[i, k] for k in range(j - 1, -1, -1) if nodes[i, k] is not None]
            if same_level:
                x = layers.Concatenate(name=f"{block}_concat")([x, *same_level])
            nodes[i, j] = conv_block(x, filters, block, batch_norm=True)
    return nodes


def _supervision_head(x, j, num_classes, activation, crop_to):
    """Deep-supervision head j: `segmentation_head`'s layers, suffixed with `_j`.

    Heads 1..3 sit on stride-2 nodes: a 1x1 convolution, then 2x bilinear up-sampling with
    half-pixel centres. Head 4 sits on the full-resolution block: a 3x3 convolution.
    """
    last = j == HEADS
    x = layers.Conv2D(num_classes, 3 if last else 1, padding="same", name=f"head_{j}")(x)
    if not last:
        x = UpSamplingBilinear2D(2, align_corners=False, name=f"head_{j}_upsample")(x)
    if crop_to is not None:
        x = CenterCropLike(name=f"crop_to_input_{j}")([x, crop_to])
    return layers.Activation(activation or "linear", dtype="float32", name=f"output_{j}")(x)


def inference_model(model, head="average"):
    """A single-output model from a U-Net++ built with `deep_supervision=True`.

    The new model shares the layers, and so the weights, of `model` (no copy); save it, call
    it or pass it to `kerasseg.export` like any kerasseg model.

    Args:
        model: a `unetplusplus(..., deep_supervision=True)` model (or one loaded from its
            `.keras` file).
        head: "average" (default): the mean of the four heads' outputs (probabilities with a
            sigmoid/softmax head, else logits), the paper's "accurate" mode. An integer j in
            1..4: head j only, the paper's "fast" mode; the decoder nodes head j does not use
            are pruned (the encoder still runs whole). Head 4 equals the model built without
            deep supervision.

    Returns:
        A `SegmentationModel` with one output (batch, H, W, num_classes), the same input
        size rule as `model`, and the final layer named "output" (where it carries the
        heads' activation) that `kerasseg.inference` and `kerasseg.export` read.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    names = {layer.name for layer in model.layers}
    if not set(OUTPUT_NAMES) <= names:
        raise ValueError(
            f"`model` must be a U-Net++ built with `deep_supervision=True` (outputs "
            f"{list(OUTPUT_NAMES)}); {model.name!r} has outputs "
            f"{list(getattr(model, 'output_names', []))}."
        )
    heads = [model.get_layer(output) for output in OUTPUT_NAMES]
    if head == "average":
        averaged = [h.output for h in heads]
        if heads[-1].activation is keras.activations.linear:
            x = layers.Average(name="average_heads")(averaged)
            output = layers.Activation("linear", dtype="float32", name="output")(x)
        else:  # probabilities: no activation on top ("output" then reads as probabilities)
            output = layers.Average(dtype="float32", name="output")(averaged)
        suffix = "average"
    elif is_int(head) and 1 <= head <= HEADS:
        layer = heads[head - 1]
        output = layers.Activation(layer.activation, dtype="float32", name="output")(layer.input)
        suffix = f"head{head}"
    else:
        raise ValueError(
            f"`head` must be 'average' (mean of the heads) or an integer from 1 to {HEADS} "
            f"(one head); got {head!r}."
        )
    return SegmentationModel(
        model.inputs[0],
        output,
        name=f"{model.name}_{suffix}",
        size_divisor=getattr(model, "size_divisor", 1),
        size_offset=getattr(model, "size_offset", 0),
        min_size=getattr(model, "min_size", None),
    )
