"""torchvision's ImageNet ResNet-18 / ResNet-34 as the `encoder_weights="imagenet"` of encoders.

The encoders "resnet18" and "resnet34" (`kerasseg.models.encoders`) are torchvision's
networks; their ImageNet weights are torchvision's classification checkpoints
(``ResNet18_Weights.IMAGENET1K_V1``, ``ResNet34_Weights.IMAGENET1K_V1``). This module
registers each as a `kerasseg.public_weights.PublicWeights` of its encoder
(`kerasseg.models.encoders.register_encoder_weights`): the first
``kerasseg.load(..., encoder="resnet34", encoder_weights="imagenet")`` downloads the `.pth`,
checks the sha256 prefix its name carries, converts it without torch and caches the
converted `.weights.h5` (under ``$KERASSEG_HOME``, as the presets' weights; offline, put the
original where the error message says).

Conversion: the state dict's keys are the Keras layer names with "." for "_" (``conv1``,
``bn1``, ``layer{s}.{b}.conv{k}``, ``layer{s}.{b}.bn{k}``, ``layer{s}.{b}.downsample.{0,1}``,
see `kerasseg.models.torchvision_resnet`), mapped by the generic engine
`kerasseg.convert.torchvision.assign_weights`. The classifier (``fc.*``) is left out; every
other key must feed a weight, and every weight must have its key.

The figures quoted are torchvision's own (its ``*_Weights`` metadata, ImageNet-1k val at
224x224), not re-measured here.
"""

from kerasseg.convert.presets import hub_hash_prefix
from kerasseg.convert.torchvision import assign_weights, load_state_dict
from kerasseg.models.encoders import encoder_network, register_encoder_weights
from kerasseg.public_weights import PublicWeights

__all__ = [
    "RESNET_ENCODER_LAYER_MAP",
    "TORCHVISION_IMAGENET_LICENCE",
    "resnet_encoder_converter",
    "resnet_encoder_weights",
]

# Keras layer name (full match) -> torchvision module path of `torchvision.models.ResNet`.
RESNET_ENCODER_LAYER_MAP = (
    (r"(conv1|bn1)", r"\1"),
    (r"layer(\d+)_(\d+)_(conv|bn)(\d+)", r"layer\1.\2.\3\4"),
    (r"layer(\d+)_(\d+)_downsample_([01])", r"layer\1.\2.downsample.\3"),
)
_CLASSIFIER = "fc."  # torchvision's ImageNet classifier, not part of the encoder

TORCHVISION_IMAGENET_LICENCE = (
    "BSD-3-Clause (torchvision); the weights derive from ImageNet-1k, whose images are under "
    "ImageNet's terms of access (non-commercial research and education), check them for "
    "your use"
)


def resnet_encoder_weights(state_dict, network):
    """Load a torchvision ResNet state dict into the network of a ResNet encoder.

    Args:
        state_dict: ``{key: numpy array}`` of `torchvision.models.resnet18` / `resnet34`
            (``conv1.weight``, ``bn1.running_var``, ``layer1.0.conv1.weight``, ...); the
            classifier's ``fc.*`` keys are ignored.
        network: ``kerasseg.models.encoders.encoder_network("resnet18")`` (or "resnet34"),
            3 input channels.

    Returns:
        The set of `state_dict` keys consumed (all but ``fc.*``).

    Raises:
        TypeError: `state_dict` is not a dict.
        ValueError: a weight of `network` without its key, a shape mismatch (e.g. another
            depth's or a bottleneck ResNet's weights), or a key other than ``fc.*`` that
            feeds no weight; nothing is assigned then.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"`state_dict` must be a dict of arrays, got {type(state_dict).__name__}")
    encoder_keys = {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER)}
    # owned_prefixes ("",): every key left is the encoder's, so an unused one is an error.
    return assign_weights(
        encoder_keys, network.layers, RESNET_ENCODER_LAYER_MAP, "", owned_prefixes=("",)
    )


def resnet_encoder_converter(encoder):
    """A `PublicWeights.converter` for encoder `encoder` ("resnet18" or "resnet34").

    Returns:
        ``convert(original_path, destination)``: reads the torchvision checkpoint (no
        torch needed) and writes the `.weights.h5` of ``encoder_network(encoder)``.
    """

    def convert(original, destination):
        network = encoder_network(encoder)
        resnet_encoder_weights(load_state_dict(original), network)
        network.save_weights(destination)

    return convert


for _depth, _url, _top1, _top5 in (
    (18, "https://download.pytorch.org/models/resnet18-f37072fd.pth", 69.758, 89.078),
    (34, "https://download.pytorch.org/models/resnet34-b627a593.pth", 73.314, 91.42),
):
    register_encoder_weights(
        f"resnet{_depth}",
        PublicWeights(
            name="imagenet",
            preset=f"encoder_resnet{_depth}_imagenet",
            url=_url,
            converter=resnet_encoder_converter(f"resnet{_depth}"),
            sha256_prefix=hub_hash_prefix(_url),
            source=f"torchvision ResNet{_depth}_Weights.IMAGENET1K_V1",
            licence=TORCHVISION_IMAGENET_LICENCE,
            dataset="imagenet-1k (encoder only)",
            split="ImageNet-1k val, 224x224 centre crops, as published",
            metrics={"acc@1": _top1, "acc@5": _top5},
        ),
    )
