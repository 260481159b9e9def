"""One assembly for the architectures on a keras.applications encoder: encoder -> decoder -> head.

U-Net with an encoder, U-Net++, Attention U-Net, FPN, LinkNet, PSPNet, DeepLabV3 and
DeepLabV3+ share everything but their decoder (as segmentation_models.pytorch's
`SegmentationModel`: encoder, decoder, head). Each builder checks the arguments it adds,
describes its decoder and head, and leaves the rest to `encoder_decoder`:

    arguments = EncoderDecoderArguments.from_builder(locals(), "fpn")  # first statement
    ...  # the builder's own checks
    return encoder_decoder(arguments, decoder, head=functools.partial(segmentation_head, ...))

`encoder_decoder` checks the input size against the network's stride, builds the encoder
(frozen with `encoder_freeze`), puts the input normalisation (`include_preprocessing`) and
the reflection padding (`pad_to_fit`) in front of it, runs the decoder on its features,
ends with the head (centre-cropped back to the input size with `pad_to_fit`) and returns a
`SegmentationModel` that knows the sizes it accepts.

The arguments all these builders take are described once, in `COMMON_ARGUMENTS`; the
`document_common_arguments` decorator adds them to a builder's docstring. Each builder is
declared with `encoder_decoder_builder`, which registers it with the metadata they share
and completes its docstring so:

    @encoder_decoder_builder("fpn", description="...", reference="...")
    def fpn(num_classes=1, input_shape=(None, None, 3), encoder="resnet50", ...):
"""

import dataclasses
import inspect
import textwrap

import keras

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import ReflectPadToMultiple, check_common_arguments, segmentation_head
from kerasseg.models.encoders import (
    build_encoder,
    check_encoder_arguments,
    encoder_preprocessing,
    get_encoder_spec,
)
from kerasseg.models.input_checks import check_spatial_size
from kerasseg.preprocessing import ImagePreprocessing
from kerasseg.registry import register_model

__all__ = [
    "COMMON_ARGUMENTS",
    "EncoderDecoderArguments",
    "decoder_skips",
    "document_common_arguments",
    "encoder_decoder",
    "encoder_decoder_builder",
    "encoder_input_stage",
]

# The arguments every encoder-decoder builder takes, as its docstring's `Args:` describes
# them; "{architecture}", "{multiple}" and "{minimum}" are filled in per builder.
COMMON_ARGUMENTS = {
    "num_classes": "output channels (1 for binary segmentation with a sigmoid).",
    "input_shape": "(height, width, channels); height and width may be None.",
    "encoder": 'a name from `kerasseg.models.encoders.ENCODERS` (default "resnet50").',
    "encoder_weights": 'None, "imagenet" or a path to the encoder network\'s weights '
    "(3-channel weights are adapted to other channel counts).",
    "encoder_freeze": "if True, the encoder's weights are not trained.",
    "activation": 'None (logits), "sigmoid" or "softmax".',
    "include_preprocessing": "put the input normalisation the encoder's weights expect "
    "(`ImagePreprocessing`) inside the model, so it takes 0..255 images.",
    "pad_to_fit": "pad inputs inside the model by reflection up to a multiple of {multiple} "
    "and crop the output(s) back, so the model takes any height and width of at least "
    "{minimum}.",
    "name": 'model name (default "{architecture}_<encoder>").',
}


def document_common_arguments(architecture, multiple="32", minimum="17"):
    """A decorator completing a builder's `Args:` section with `COMMON_ARGUMENTS`.

    The arguments of the builder's signature that its docstring does not describe itself
    are added from `COMMON_ARGUMENTS`, and the section is put in the signature's order, so
    `help(builder)` lists every argument.

    Args:
        architecture: the default model name's prefix ("fpn" for "fpn_<encoder>").
        multiple: what `pad_to_fit` pads up to a multiple of, in words ("32").
        minimum: the smallest size `pad_to_fit` takes, in words ("17").

    Returns:
        A decorator that returns the builder itself, with its docstring completed.
    """
    values = {"architecture": architecture, "multiple": multiple, "minimum": minimum}

    def decorate(builder):
        if builder.__doc__:  # None under `python -OO`
            order = list(inspect.signature(builder).parameters)
            texts = {name: text.format(**values) for name, text in COMMON_ARGUMENTS.items()}
            builder.__doc__ = _complete_arguments(builder.__doc__, order, texts)
        return builder

    return decorate


def encoder_decoder_builder(
    name, description, reference, preprocessing=encoder_preprocessing, **doc_options
):
    """A decorator declaring an encoder-decoder builder: registered, its docstring completed.

    The builder is registered as `name` (`kerasseg.registry.register_model`) with the
    metadata every encoder-decoder shares, a semantic task of one class by default, and its
    `Args:` section is completed by `document_common_arguments`.

    Args:
        name: the registered name, also the default model name's prefix ("fpn" for
            "fpn_<encoder>").
        description: one line for listings.
        reference: the publication the model follows.
        preprocessing: the `ImagePreprocessing` mode the inputs need, or a function of the
            builder's arguments that returns it (default `encoder_preprocessing`: the
            encoder's own normalisation).
        **doc_options: `multiple` and `minimum` of `document_common_arguments`.

    Returns:
        A decorator that returns the builder itself, registered and documented.
    """
    register = register_model(
        name,
        task="semantic",
        description=description,
        reference=reference,
        num_classes=1,
        preprocessing=preprocessing,
    )
    document = document_common_arguments(name, **doc_options)

    def decorate(builder):
        return document(register(builder))

    return decorate


def _complete_arguments(docstring, order, texts):
    """`docstring` with the entries of `texts` its `Args:` section lacks, in `order`."""
    lines = docstring.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())] + "    "
    entries, end = {}, start + 1
    while end < len(lines) and lines[end].strip():
        if not lines[end].startswith(indent + " "):  # "name: ..." starts an entry
            name = lines[end].strip().split(":")[0]
            entries[name] = []
        entries[name].append(lines[end])
        end += 1
    for name in order:
        if name not in entries and name in texts:
            entries[name] = textwrap.wrap(
                f"{name}: {texts[name]}",
                width=100,
                initial_indent=indent,
                subsequent_indent=indent + "    ",
            )
    names = [name for name in order if name in entries]
    names += [name for name in entries if name not in names]
    section = [line for name in names for line in entries[name]]
    return "\n".join(lines[: start + 1] + section + lines[end:])


@dataclasses.dataclass(frozen=True)
class EncoderDecoderArguments:
    """The arguments every encoder-decoder builder takes, checked (see `COMMON_ARGUMENTS`)."""

    num_classes: int
    input_shape: tuple
    encoder: str
    encoder_weights: str | None
    encoder_freeze: bool
    activation: str | None
    include_preprocessing: bool
    pad_to_fit: bool
    name: str

    @classmethod
    def from_builder(cls, builder_arguments, architecture):
        """Check and collect the common arguments of a builder.

        Args:
            builder_arguments: the builder's arguments by name: its `locals()`, taken as its
                first statement.
            architecture: the default model name's prefix ("fpn" for "fpn_<encoder>").

        Returns:
            An `EncoderDecoderArguments`.

        Raises:
            ValueError: a bad class count, input shape, activation, encoder or encoder
                weights.
        """
        given = {field.name: builder_arguments[field.name] for field in dataclasses.fields(cls)}
        check_common_arguments(given["num_classes"], given["input_shape"], given["activation"])
        check_encoder_arguments(given["encoder"], given["encoder_weights"])
        given.update(
            input_shape=tuple(given["input_shape"]),
            encoder_freeze=bool(given["encoder_freeze"]),
            name=given["name"] or f"{architecture}_{given['encoder']}",
        )
        return cls(**given)


def decoder_skips(features):
    """The skips of a decoder walking up from stride 32 to full resolution.

    Args:
        features: the encoder's five features at strides 2, 4, 8, 16 and 32 (None where
            the encoder has none).

    Returns:
        The features at strides 16, 8, 4 and 2, then None (full resolution has no skip).
    """
    return features[3::-1] + [None]


def encoder_input_stage(backbone, input_shape, spec, include_preprocessing, pad_multiple, present):
    """The input stage every encoder-decoder shares, up to the encoder's features.

    Args:
        backbone: the encoder, a `keras.Model`.
        input_shape: (height, width, channels) of the model's input.
        spec: the encoder's `EncoderSpec` (its input normalisation).
        include_preprocessing: put the encoder's input normalisation in the model.
        pad_multiple: reflection-pad the images up to a multiple of this; None for none.
        present: None, or which of the five strides the encoder has a feature at (from
            `build_encoder`).

    Returns:
        `(images, features)`: the "images" input and the encoder's outputs; with `present`,
        the five stride features with None where one is missing.
    """
    images = keras.Input(input_shape, name="images")
    x = images
    if include_preprocessing:
        x = ImagePreprocessing(spec.preprocessing, name="preprocessing")(x)
    if pad_multiple:
        x = ReflectPadToMultiple(pad_multiple, name="pad_to_fit")(x)
    outputs = backbone(x)
    if present is None:
        return images, outputs
    outputs = iter(outputs)
    return images, [next(outputs) if exists else None for exists in present]


def _encoder(arguments, stride, prepare_encoder):
    """The encoder and which strides it has features at (see `encoder_decoder`)."""
    height, width, channels = arguments.input_shape
    if prepare_encoder is None:
        if arguments.pad_to_fit:  # the encoder sees the padded size
            height, width = (
                None if s is None else -(-s // stride) * stride for s in (height, width)
            )
        shape = (height, width, channels)
        backbone, present = build_encoder(arguments.encoder, shape, arguments.encoder_weights)
    else:
        built = build_encoder(arguments.encoder, (None, None, channels), arguments.encoder_weights)
        backbone, present = prepare_encoder(*built)
    backbone.trainable = not arguments.encoder_freeze
    return backbone, present


def encoder_decoder(arguments, decoder, head=segmentation_head, stride=32, prepare_encoder=None):
    """Build an encoder-decoder model: encoder, decoder, head, as a `SegmentationModel`.

    Args:
        arguments: the builder's `EncoderDecoderArguments`.
        decoder: `decoder(features)`: the builder's decoder on the encoder's features (the
            five stride-2..32 features, None where the encoder has none, unless
            `prepare_encoder` gives other ones); returns what `head` takes.
        head: `head(x, num_classes, activation, crop_to=...)` returns the model's output(s)
            (`crop_to`: the images with `pad_to_fit`, else None); default
            `segmentation_head`, a 1x1 convolution; builders pass it with their options,
            e.g. `functools.partial(segmentation_head, kernel_size=3)`.
        stride: the network's total stride: known input sizes must be multiples of it, or
            with `pad_to_fit` are padded up to one.
        prepare_encoder: None, or `prepare_encoder(encoder, present)` returning `(encoder,
            present)`, to cut or dilate the encoder (PSPNet, DeepLab); with `present` None
            its outputs reach the decoder as they are. The encoder is then built for any
            input size, as it need not reach stride 32.

    Returns:
        A `SegmentationModel` named `arguments.name` that takes sizes of multiples of
        `stride` (any size from `stride // 2 + 1` with `pad_to_fit`).
    """
    if arguments.pad_to_fit:
        size_divisor, min_size = 1, stride // 2 + 1
    else:
        size_divisor, min_size = stride, stride
    check_spatial_size(arguments.input_shape[:2], size_divisor, "input_shape", 0, min_size)
    backbone, present = _encoder(arguments, stride, prepare_encoder)
    images, features = encoder_input_stage(
        backbone,
        arguments.input_shape,
        get_encoder_spec(arguments.encoder),
        arguments.include_preprocessing,
        stride if arguments.pad_to_fit else None,
        present,
    )
    crop_to = images if arguments.pad_to_fit else None
    outputs = head(decoder(features), arguments.num_classes, arguments.activation, crop_to=crop_to)
    return SegmentationModel(
        images, outputs, name=arguments.name, size_divisor=size_divisor, min_size=min_size
    )
