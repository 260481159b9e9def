"""SegFormer: the Mix Transformer (MiT) encoder and the all-MLP decoder.

References:
    Xie, Wang, Yu, Anandkumar, Alvarez & Luo, "SegFormer: Simple and Efficient Design for
    Semantic Segmentation with Transformers", NeurIPS 2021, arXiv:2105.15203 (Sec. 3,
    Table 6 for the MiT-B0..B5 settings).
    The layout and the layer-norm epsilons follow HuggingFace transformers'
    `SegformerForSemanticSegmentation` (models/segformer/modeling_segformer.py), so a
    converter of its checkpoints (nvidia/mit-b*, nvidia/segformer-b*-finetuned-*) is a
    renaming plus transposes (`kerasseg.convert.huggingface`; tests/test_segformer.py checks
    converted checkpoints against transformers' `SegformerForSemanticSegmentation`):

    ==========================================  ==============================================
    HuggingFace (PyTorch)                       here (layer names in the "encoder" sub-model)
    ==========================================  ==============================================
    encoder.patch_embeddings.{i}.proj           patch_embed{i+1}_proj (Conv2D; after an
                                                explicit ZeroPadding2D(k // 2), as PyTorch's)
    encoder.patch_embeddings.{i}.layer_norm     patch_embed{i+1}_norm
    encoder.block.{i}.{j}.layer_norm_1          block{i+1}_{j+1}_norm1
    encoder.block.{i}.{j}.attention.self.       block{i+1}_{j+1}_attention: query, key,
      query / key / value / sr / layer_norm       value, sr (Conv2D), norm
    encoder.block.{i}.{j}.attention.output.     block{i+1}_{j+1}_attention: proj
      dense
    encoder.block.{i}.{j}.layer_norm_2          block{i+1}_{j+1}_norm2
    encoder.block.{i}.{j}.mlp.dense1 / dwconv.  block{i+1}_{j+1}_mlp: dense1, dwconv
      dwconv / dense2                             (DepthwiseConv2D), dense2
    encoder.layer_norm.{i}                      stage{i+1}_norm
    decode_head.linear_c.{i}.proj               linear_c{i+1} (in the top-level model)
    decode_head.linear_fuse / batch_norm        linear_fuse / linear_fuse_bn
    decode_head.classifier                      head
    ==========================================  ==============================================

    Linear weights transpose to Dense kernels, Conv2d (out, in, kh, kw) weights permute to
    (kh, kw, in, out), the depthwise (C, 1, 3, 3) to (3, 3, C, 1). The decoder concatenates
    the stage maps in HuggingFace's (and the official code's) order, stage 4 first, so the
    fuse kernel maps without reordering. All layer norms use epsilon 1e-5 as HuggingFace's
    (PyTorch's default; NVlabs' original code uses 1e-6 in the blocks and after each stage),
    the batch norm epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1). Initial values: Dense
    kernels normal(0, 0.02) as HuggingFace's, convolutions normal(0, sqrt(2 / fan_out)) as
    the official code's.

The network, on (B, H, W, C) maps throughout (a token sequence in the paper is the map
flattened row by row, so a Linear on tokens is a Dense on the channel axis):

- Four stages; stage i: an overlapping patch embedding (a k x k convolution with stride s
  and zero padding k // 2: 7x7 stride 4, then 3x3 stride 2; LayerNorm), L_i transformer
  blocks and a LayerNorm. Stage i's map is ceil(H / 4 / 2**(i-1)) high.
- A block: x + DropPath(Attention(LN(x))), then x + DropPath(MixFFN(LN(x))). Attention is
  multi-head self-attention whose keys and values come from the map reduced by an R x R
  convolution with stride R (R = 8, 4, 2, 1) and a LayerNorm. Mix-FFN: Dense to 4C, 3x3
  depthwise convolution, GELU (exact, erf), Dense back to C. Stochastic depth rates rise
  linearly from 0 to `drop_path_rate` over all blocks.
- Decoder: a Dense (the paper's "MLP") per stage to `decoder_filters`, bilinear resizing to
  stage 1's map (align_corners=False), concatenation, a 1x1 convolution without bias,
  BatchNorm, ReLU, dropout and a 1x1 classifier; the logits are resized bilinearly
  (align_corners=False) to the input size, as HuggingFace's loss and post-processing do.

Sizes: any height and width of at least `min_input_size()` (29): stage 1's map (H / 4,
rounded up) must cover the 8x8 reduction kernel. Sizes need not be multiples of 32.

Input: ImageNet mean/std normalisation of 0..1 pixels (`SegformerImageProcessor`), the
"torch" mode of `kerasseg.preprocessing.ImagePreprocessing`; with
`include_preprocessing=True` the model applies it to 0..255 images itself.
"""

import dataclasses
import difflib
import math

import keras
from keras import layers, ops

from kerasseg.models.assembly import document_common_arguments
from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import check_common_arguments
from kerasseg.models.resize import ResizeLike
from kerasseg.ops.checks import check_int, check_rate, is_int
from kerasseg.preprocessing import ImagePreprocessing
from kerasseg.registry import register_model

__all__ = [
    "BATCH_NORM_EPSILON",
    "BATCH_NORM_MOMENTUM",
    "LAYER_NORM_EPSILON",
    "MLP_RATIO",
    "NUM_HEADS",
    "PATCH_SIZES",
    "PREPROCESSING",
    "REFERENCE",
    "SR_RATIOS",
    "STRIDES",
    "VARIANTS",
    "DropPath",
    "EfficientSelfAttention",
    "MiTVariant",
    "MixFFN",
    "all_mlp_decoder",
    "check_variant",
    "min_input_size",
    "mix_transformer",
    "preprocessing_rule",
    "segformer",
]

REFERENCE = (
    "Xie et al. 2021, SegFormer: Simple and Efficient Design for Semantic Segmentation with "
    "Transformers, arXiv:2105.15203"
)

PREPROCESSING = "torch"  # ImageNet mean/std on 0..1 pixels, as SegformerImageProcessor

PATCH_SIZES = (7, 3, 3, 3)
STRIDES = (4, 2, 2, 2)
SR_RATIOS = (8, 4, 2, 1)
NUM_HEADS = (1, 2, 5, 8)
MLP_RATIO = 4
LAYER_NORM_EPSILON = 1e-5  # HuggingFace: nn.LayerNorm's default everywhere
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9  # PyTorch momentum 0.1


@dataclasses.dataclass(frozen=True)
class MiTVariant:
    """One Mix Transformer size (paper Table 6; HuggingFace `SegformerConfig`)."""

    widths: tuple
    depths: tuple
    decoder_filters: int


VARIANTS = {
    "b0": MiTVariant((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": MiTVariant((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": MiTVariant((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": MiTVariant((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": MiTVariant((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": MiTVariant((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


def _dense_initializer():
    # HuggingFace's normal(0, 0.02) for Linear layers (the official code truncates it at 2 std).
    return keras.initializers.RandomNormal(stddev=0.02)


def _conv_initializer():
    # The official code's normal(0, sqrt(2 / fan_out)) for convolutions.
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def min_input_size(strides=STRIDES, sr_ratios=SR_RATIOS):
    """The smallest height (and width) every stage's attention reduction fits: 29 for MiT.

    Stage i's map is the input divided by the strides so far, rounded up at each stage
    (padding k // 2); its sequence-reduction convolution (kernel and stride R_i) needs a
    map of at least R_i.
    """
    size = 1
    while True:
        length, fits = size, True
        for stride, ratio in zip(strides, sr_ratios, strict=True):
            length = -(-length // stride)
            fits = fits and length >= ratio
        if fits:
            return size
        size += 1


def check_variant(variant):
    """The `MiTVariant` called `variant` ("b0".."b5"), or a ValueError listing the names."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        close = difflib.get_close_matches(str(variant).lower(), list(VARIANTS), n=1, cutoff=0.5)
        hint = f" Closest: {close}." if close else ""
        raise ValueError(
            f"`variant` must be one of {tuple(VARIANTS)} (MiT-B0..B5); got {variant!r}.{hint}"
        )
    return VARIANTS[variant]


@keras.saving.register_keras_serializable(package="kerasseg")
class DropPath(layers.Layer):
    """Stochastic depth: zero a residual branch for a whole sample with probability `rate`.

    In training, each sample's branch is kept with probability 1 - rate and scaled by
    1 / (1 - rate) (Huang et al. 2016; timm / HuggingFace `drop_path`); identity otherwise.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_rate(rate, "rate")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        return inputs / keep * ops.floor(keep + noise)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasseg")
class EfficientSelfAttention(layers.Layer):
    """SegFormer's multi-head self-attention with sequence reduction, on (B, H, W, C) maps.

    Queries come from every position; keys and values from the map reduced by a
    `sr_ratio` x `sr_ratio` convolution with that stride and a LayerNorm (none when
    `sr_ratio` is 1), so the cost is (HW)^2 / R^2. The heads' outputs are projected by a
    Dense layer (HuggingFace's `attention.output.dense`).

    Args:
        filters: channels C of input and output (divisible by `num_heads`).
        num_heads: attention heads.
        sr_ratio: sequence reduction ratio R (an integer >= 1).
        attention_dropout: dropout on the attention probabilities (training only).
        projection_dropout: dropout after the output projection (training only).
        epsilon: the reduction LayerNorm's epsilon.
    """

    def __init__(
        self,
        filters,
        num_heads,
        sr_ratio=1,
        attention_dropout=0.0,
        projection_dropout=0.0,
        epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_int(filters, "filters", 1)
        check_int(num_heads, "num_heads", 1)
        check_int(sr_ratio, "sr_ratio", 1)
        check_rate(attention_dropout, "attention_dropout")
        check_rate(projection_dropout, "projection_dropout")
        if filters % num_heads:
            raise ValueError(
                f"`filters` ({filters}) must be divisible by `num_heads` ({num_heads})."
            )
        self.filters = filters
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attention_dropout = float(attention_dropout)
        self.projection_dropout = float(projection_dropout)
        self.epsilon = float(epsilon)
        self.head_size = filters // num_heads
        common = dict(dtype=self.dtype_policy)
        dense = dict(kernel_initializer=_dense_initializer(), **common)
        self.query = layers.Dense(filters, name="query", **dense)
        self.key = layers.Dense(filters, name="key", **dense)
        self.value = layers.Dense(filters, name="value", **dense)
        self.proj = layers.Dense(filters, name="proj", **dense)
        if sr_ratio > 1:
            self.sr = layers.Conv2D(
                filters,
                sr_ratio,
                strides=sr_ratio,
                padding="valid",
                kernel_initializer=_conv_initializer(),
                name="sr",
                **common,
            )
            self.norm = layers.LayerNormalization(epsilon=self.epsilon, name="norm", **common)
        self.attention_dropout_layer = layers.Dropout(attention_dropout, **common)
        self.projection_dropout_layer = layers.Dropout(projection_dropout, **common)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels != self.filters:
            raise ValueError(
                f"`EfficientSelfAttention` with filters={self.filters} needs {self.filters} input "
                f"channels; got input shape {tuple(input_shape)}."
            )
        for dense in (self.query, self.key, self.value, self.proj):
            dense.build(input_shape)
        if self.sr_ratio > 1:
            self.sr.build(input_shape)
            self.norm.build(input_shape)

    def _heads(self, x, batch):
        # (B, h, w, C) -> (B, heads, h * w, head_size)
        x = ops.reshape(x, (batch, -1, self.num_heads, self.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        query = self._heads(self.query(inputs), batch)
        source = inputs
        if self.sr_ratio > 1:
            source = self.norm(self.sr(inputs))
        key = self._heads(self.key(source), batch)
        value = self._heads(self.value(source), batch)
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        scores = scores / ops.cast(math.sqrt(self.head_size), scores.dtype)
        # Softmax in float32, so bfloat16 compute does not lose the small probabilities; written
        # out, as `ops.softmax` warns when a small map reduces to a single key.
        scores = ops.cast(scores, "float32")
        scores = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        probabilities = ops.cast(scores / ops.sum(scores, axis=-1, keepdims=True), query.dtype)
        probabilities = self.attention_dropout_layer(probabilities, training=training)
        context = ops.matmul(probabilities, value)  # (B, heads, h * w, head_size)
        context = ops.reshape(
            ops.transpose(context, (0, 2, 1, 3)), (batch, height, width, self.filters)
        )
        return self.projection_dropout_layer(self.proj(context), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_heads": self.num_heads,
            "sr_ratio": self.sr_ratio,
            "attention_dropout": self.attention_dropout,
            "projection_dropout": self.projection_dropout,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="kerasseg")
class MixFFN(layers.Layer):
    """SegFormer's Mix-FFN on (B, H, W, C) maps: Dense(hidden), 3x3 depthwise conv, GELU,
    dropout, Dense(C), dropout.

    The depthwise convolution (zero padding 1, with bias) leaks the positional information
    that makes positional encodings unnecessary (paper Eq. 3). GELU is the exact (erf) one,
    HuggingFace's "gelu".

    Args:
        filters: channels C of input and output.
        hidden_filters: channels of the expansion (MiT: 4C).
        dropout: dropout rate after the activation and after the second Dense (training only).
    """

    def __init__(self, filters, hidden_filters, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_int(filters, "filters", 1)
        check_int(hidden_filters, "hidden_filters", 1)
        check_rate(dropout, "dropout")
        self.filters = filters
        self.hidden_filters = hidden_filters
        self.dropout = float(dropout)
        common = dict(dtype=self.dtype_policy)
        dense = dict(kernel_initializer=_dense_initializer(), **common)
        self.dense1 = layers.Dense(hidden_filters, name="dense1", **dense)
        self.dwconv = layers.DepthwiseConv2D(
            3, padding="same", depthwise_initializer=_conv_initializer(), name="dwconv", **common
        )
        self.dense2 = layers.Dense(filters, name="dense2", **dense)
        self.dropout_layer = layers.Dropout(dropout, **common)

    def build(self, input_shape):
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_filters,)
        self.dense1.build(input_shape)
        self.dwconv.build(hidden_shape)
        self.dense2.build(hidden_shape)

    def call(self, inputs, training=None):
        x = self.dwconv(self.dense1(inputs))
        x = self.dropout_layer(ops.gelu(x, approximate=False), training=training)
        return self.dropout_layer(self.dense2(x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "hidden_filters": self.hidden_filters,
            "dropout": self.dropout,
        }


def _drop_path_rates(depths, drop_path_rate):
    """Per-block stochastic depth rates, linear from 0 to `drop_path_rate` (torch.linspace)."""
    total = sum(depths)
    if total == 1:
        return [0.0]
    return [drop_path_rate * i / (total - 1) for i in range(total)]


def _transformer_block(x, filters, num_heads, sr_ratio, drop_path, name):
    """x + DropPath(attention(LN(x))), then x + DropPath(MixFFN(LN(x)))."""
    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_norm1")(x)
    y = EfficientSelfAttention(filters, num_heads, sr_ratio, name=f"{name}_attention")(y)
    if drop_path:
        y = DropPath(drop_path, name=f"{name}_drop_path1")(y)
    x = layers.Add(name=f"{name}_add1")([x, y])
    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_norm2")(x)
    y = MixFFN(filters, MLP_RATIO * filters, name=f"{name}_mlp")(y)
    if drop_path:
        y = DropPath(drop_path, name=f"{name}_drop_path2")(y)
    return layers.Add(name=f"{name}_add2")([x, y])


def mix_transformer(variant="b0", input_shape=(None, None, 3), drop_path_rate=0.1, name=None):
    """Build the Mix Transformer (MiT) encoder of SegFormer.

    Reference: Xie et al. 2021, arXiv:2105.15203, Sec. 3.1 and Table 6; the layout of
    HuggingFace's `SegformerModel` (see the module docstring).

    Args:
        variant: "b0" .. "b5" (MiT-B0..B5).
        input_shape: (height, width, channels); height and width may be None, or integers
            of at least `min_input_size()` (29).
        drop_path_rate: the stochastic depth rate of the last block (default 0.1); the
            blocks' rates rise linearly from 0.
        name: model name (default "mit_<variant>").

    Returns:
        A `keras.Model` mapping (B, H, W, C) to the four stages' maps, (B, ceil(H / 4),
        ceil(W / 4), C1), ... at strides 4, 8, 16 and 32, each after its stage's LayerNorm.
    """
    spec = check_variant(variant)
    check_rate(drop_path_rate, "drop_path_rate")
    rates = iter(_drop_path_rates(spec.depths, drop_path_rate))
    inputs = keras.Input(tuple(input_shape), name="pixels")
    x, features = inputs, []
    for stage, (width, depth, k, s, sr, heads) in enumerate(
        zip(spec.widths, spec.depths, PATCH_SIZES, STRIDES, SR_RATIOS, NUM_HEADS, strict=True),
        start=1,
    ):
        prefix = f"patch_embed{stage}"
        x = layers.ZeroPadding2D(k // 2, name=f"{prefix}_pad")(x)
        x = layers.Conv2D(
            width, k, strides=s, kernel_initializer=_conv_initializer(), name=f"{prefix}_proj"
        )(x)
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{prefix}_norm")(x)
        for block in range(1, depth + 1):
            x = _transformer_block(x, width, heads, sr, next(rates), f"block{stage}_{block}")
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"stage{stage}_norm")(x)
        features.append(x)
    return keras.Model(inputs, features, name=name or f"mit_{variant}")


def preprocessing_rule(arguments):
    """The `ImagePreprocessing` mode a `segformer(**arguments)` model's inputs need: "torch"
    (ImageNet mean/std on 0..1), or "none" with `include_preprocessing=True`."""
    return "none" if arguments.get("include_preprocessing") else PREPROCESSING


@document_common_arguments("segformer")
@register_model(
    "segformer",
    task="semantic",
    description="SegFormer: Mix Transformer encoder (MiT-B0..B5, `variant`) and all-MLP decoder",
    reference="Xie et al. 2021, arXiv:2105.15203",
    num_classes=1,
    preprocessing=preprocessing_rule,
)
def segformer(
    num_classes=1,
    input_shape=(None, None, 3),
    variant="b0",
    decoder_filters=None,
    dropout=0.1,
    drop_path_rate=0.1,
    encoder_freeze=False,
    activation=None,
    include_preprocessing=False,
    name=None,
):
    """Build a SegFormer: a Mix Transformer encoder and the all-MLP decoder.

    Reference: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
    Segmentation with Transformers", arXiv:2105.15203; the layout of HuggingFace's
    `SegformerForSemanticSegmentation` (see the module docstring).

    Args:
        input_shape: (height, width, channels); height and width may be None, or integers
            of at least 29 (any size from 29 up works, no multiple needed).
        variant: "b0" (default) .. "b5": the encoder size, MiT-B0..B5.
        decoder_filters: the decoder's channel width C; None takes the paper's (256 for
            B0/B1, 768 for B2..B5).
        dropout: dropout rate before the classifier (default 0.1; 0 for none). Channel-wise
            (`SpatialDropout2D`), as the official code's `Dropout2d`; HuggingFace uses
            element-wise dropout there. Identical at inference.
        drop_path_rate: the encoder's stochastic depth rate of the last block (default 0.1).
        include_preprocessing: normalise inside the model (ImageNet mean/std of x / 255,
            `ImagePreprocessing("torch")`), so it takes 0..255 images; otherwise feed images
            normalised that way.
        name: model name (default "segformer_<variant>").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes):
        the classifier's output at 1/4 resolution, resized bilinearly (align_corners=False)
        to the input size.
    """
    check_common_arguments(num_classes, input_shape, activation)
    input_shape = tuple(input_shape)
    spec = check_variant(variant)
    if decoder_filters is None:
        decoder_filters = spec.decoder_filters
    check_int(decoder_filters, "decoder_filters", 1)
    check_rate(dropout, "dropout")
    check_rate(drop_path_rate, "drop_path_rate")
    minimum = _check_input_size(input_shape)

    encoder = mix_transformer(variant, input_shape, drop_path_rate, name="encoder")
    encoder.trainable = not encoder_freeze
    images = keras.Input(input_shape, name="images")
    x = images
    if include_preprocessing:
        x = ImagePreprocessing(PREPROCESSING, name="preprocessing")(x)
    x = all_mlp_decoder(encoder(x), decoder_filters, dropout)
    x = layers.Conv2D(num_classes, 1, name="head")(x)
    x = ResizeLike(align_corners=False, name="head_upsample")([x, images])
    outputs = layers.Activation(activation or "linear", dtype="float32", name="output")(x)
    return SegmentationModel(
        images, outputs, name=name or f"segformer_{variant}", size_divisor=1, min_size=minimum
    )


def _check_input_size(input_shape):
    """`min_input_size()`, after checking that known sizes are integers at least that."""
    minimum = min_input_size()
    for size in input_shape[:2]:
        if size is not None and not is_int(size):
            raise ValueError(
                f"`input_shape`: height and width must be None or integers; got {input_shape!r}."
            )
        if size is not None and size < minimum:
            raise ValueError(
                f"`input_shape`: SegFormer needs height and width of at least {minimum} (its "
                f"stride-4 map must cover the 8x8 attention reduction of stage 1); got "
                f"{input_shape!r}. Pad or resize the images."
            )
    return minimum


def all_mlp_decoder(features, decoder_filters, dropout):
    """SegFormer's all-MLP decoder on the four stage maps, up to the classifier's input.

    A Dense per stage to `decoder_filters` ("linear_c1".."linear_c4"), bilinear resizing to
    stage 1's map (align_corners=False), concatenation with stage 4 first (as HuggingFace),
    a 1x1 convolution without bias, BatchNorm and ReLU ("linear_fuse"), then channel-wise
    dropout at `dropout`.

    Returns:
        The fused map, at stride 4.
    """
    reference = features[0]  # stage 1, stride 4
    maps = []
    for stage, feature in enumerate(features, start=1):
        y = layers.Dense(
            decoder_filters, kernel_initializer=_dense_initializer(), name=f"linear_c{stage}"
        )(feature)
        if stage > 1:
            y = ResizeLike(align_corners=False, name=f"linear_c{stage}_resize")([y, reference])
        maps.append(y)
    x = layers.Concatenate(name="linear_concat")(maps[::-1])  # stage 4 first, as HuggingFace
    x = layers.Conv2D(
        decoder_filters, 1, use_bias=False, kernel_initializer="he_normal", name="linear_fuse"
    )(x)
    x = layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="linear_fuse_bn"
    )(x)
    x = layers.Activation("relu", name="linear_fuse_relu")(x)
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="decoder_dropout")(x)
    return x
