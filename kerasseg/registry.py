"""The model registry: every architecture and preset behind one loader, `load(name)`.

An entry is an architecture (a builder function and its metadata) or a preset (an
architecture, fixed arguments and named weights). Built-in architectures are registered at
the bottom of this module; shipped presets come from `saved_models/manifest.json`.
"""

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from pathlib import Path

import keras

from kerasseg import weights as weights_lib

TASKS = ("semantic", "instance", "classical")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """Everything the registry knows about one loadable name."""

    name: str
    builder: Callable
    task: str
    description: str
    reference: str
    input_channels: int
    default_input_shape: tuple
    num_classes: int | None
    preprocessing: str | Callable  # an ImagePreprocessing mode, or f(arguments) -> mode
    weights: dict = dataclasses.field(default_factory=dict)  # name -> WeightsInfo
    architecture: str | None = None  # for presets: the architecture they instantiate
    defaults: dict = dataclasses.field(default_factory=dict)  # arguments a preset fixes
    default_weights: str | None = None  # named weights a preset loads unless told otherwise

    @property
    def is_preset(self):
        return self.architecture is not None

    def preprocessing_for(self, arguments=None):
        """The `ImagePreprocessing` mode for a model built with `arguments`."""
        if callable(self.preprocessing):
            return self.preprocessing({**self.defaults, **(arguments or {})})
        return self.preprocessing

    def summary(self):
        """A plain dict for listings (`list_models`, `kerasseg info`)."""
        first = next(iter(self.weights.values()), None)
        return {
            "name": self.name,
            "kind": "preset" if self.is_preset else "architecture",
            "architecture": self.architecture or self.name,
            "task": self.task,
            "description": self.description,
            "reference": self.reference,
            "input_channels": self.input_channels,
            "default_input_shape": self.default_input_shape,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing_for()
            if not callable(self.preprocessing)
            else "depends on the encoder (see `kerasseg info`)",
            "arguments": dict(self.defaults),
            "weights": {name: info.as_dict() for name, info in self.weights.items()},
            "dataset": first.dataset if first else "",
            "metrics": dict(first.metrics) if first else {},
        }


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name,
    builder,
    *,
    task,
    description,
    reference="",
    input_channels=3,
    default_input_shape=(None, None, 3),
    num_classes=None,
    preprocessing="none",
    weights=(),
    architecture=None,
    defaults=None,
    default_weights=None,
    overwrite=False,
):
    """Register an architecture or a preset under `name`; returns its `ModelEntry`.

    `builder(**arguments)` must return a `keras.Model`. `weights` is a sequence of
    `WeightsInfo`. A preset gives the `architecture` it instantiates, the `defaults` it fixes
    and the `default_weights` it loads.
    """
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"`name` must be a snake_case identifier; got {name!r}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"`name`: {name!r} is already registered; pass overwrite=True.")
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}; got {task!r}.")
    if not callable(builder):
        raise TypeError(f"`builder` must be callable; got {builder!r}.")
    weights = {info.name: info for info in weights}
    if default_weights is not None and default_weights not in weights:
        raise ValueError(
            f"`default_weights` {default_weights!r} is not among the entry's weights "
            f"{sorted(weights)}."
        )
    entry = ModelEntry(
        name=name,
        builder=builder,
        task=task,
        description=description,
        reference=reference,
        input_channels=input_channels,
        default_input_shape=tuple(default_input_shape),
        num_classes=num_classes,
        preprocessing=preprocessing,
        weights=weights,
        architecture=architecture,
        defaults=dict(defaults or {}),
        default_weights=default_weights,
    )
    _REGISTRY[name] = entry
    return entry


def get_entry(name):
    """The `ModelEntry` called `name`; unknown names raise a ValueError with the closest."""
    if name not in _REGISTRY:
        if str(name).startswith("maskrcnn") and not _tensorflow_backend():
            raise ValueError(
                f"`name`: {name!r} needs the TensorFlow backend (its RoIAlign and NMS are "
                f"TensorFlow ops); Keras runs on {keras.backend.backend()!r} here. Set "
                f"KERAS_BACKEND=tensorflow before importing keras."
            )
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"`name`: unknown model {name!r}.{hint} `kerasseg.list_models()` lists all "
            f"{len(_REGISTRY)} names."
        )
    return _REGISTRY[name]


def list_models(task=None):
    """Summaries of every registered architecture and preset, optionally of one task."""
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be None or one of {TASKS}; got {task!r}.")
    return [
        entry.summary()
        for entry in sorted(_REGISTRY.values(), key=lambda e: (e.task, e.is_preset, e.name))
        if task is None or entry.task == task
    ]


def _accepted_arguments(builder):
    return [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def load(name, weights="default", **kwargs):
    """Build the model registered as `name`, with weights.

    Args:
        name: an architecture ("unet", "otsu") or a preset ("unet_isbi2012");
            `list_models()` lists them.
        weights: None (random initialisation), the name of one of the entry's named
            weights, or a path to a `.weights.h5` / `.keras` file. By default, presets
            load their shipped weights and architectures start from random weights. With
            `num_classes` given, the file may be made for another class count: every array
            that fits is loaded and the class-count-dependent layers (the head) keep their
            fresh initialisation, for fine-tuning (`kerasseg.weights.load_weights_for_classes`).
        **kwargs: arguments of the architecture's builder (e.g. `num_classes`,
            `input_shape`, `encoder`, `encoder_weights`, `activation`).

    Returns:
        A `keras.Model`; when weights were loaded, `model.weights_report` (a
        `kerasseg.weights.WeightsReport`) says how many arrays came from which file and which
        layers were re-initialised.
    """
    entry = get_entry(name)
    accepted = _accepted_arguments(entry.builder)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"`{name}` does not take the argument(s) {unknown}; accepted: {accepted} and `weights`."
        )
    arguments = {**entry.defaults, **kwargs}
    model = entry.builder(**arguments)
    if weights == "default":
        weights = entry.default_weights
    if weights is None:
        return model
    if isinstance(weights, str) and weights in entry.weights:
        path = weights_lib.fetch(entry.weights[weights])
    elif isinstance(weights, str | Path) and str(weights).endswith(weights_lib.WEIGHT_SUFFIXES):
        path = weights
    else:
        named = sorted(entry.weights)
        raise ValueError(
            f"`weights`: {weights!r} is neither a named weights entry of {name!r} "
            f"({named or 'it has none'}) nor a path ending in "
            f"{' or '.join(weights_lib.WEIGHT_SUFFIXES)}; None gives random weights."
        )
    if "num_classes" in kwargs:  # fine-tuning: a file made for another class count fits too
        report = weights_lib.load_weights_for_classes(
            model,
            path,
            lambda count: entry.builder(**{**arguments, "num_classes": count}),
            kwargs["num_classes"],
        )
    else:
        weights_lib.load_weights_file(model, path)
        count = len(model.weights)
        report = weights_lib.WeightsReport(str(path), loaded=count, total=count)
    model.weights_report = report
    return model


def preprocessing_layer(name, **kwargs):
    """The `ImagePreprocessing` layer that the inputs of `load(name, **kwargs)` need."""
    from kerasseg.layers.preprocessing import ImagePreprocessing

    return ImagePreprocessing(get_entry(name).preprocessing_for(kwargs))


def register_manifest_presets(directory=None):
    """Register the presets listed in `saved_models/manifest.json`."""
    for item in weights_lib.read_manifest(directory):
        if item["architecture"].startswith("maskrcnn") and not _tensorflow_backend():
            continue  # `get_entry` explains that Mask R-CNN needs TensorFlow
        info = weights_lib.WeightsInfo(**item["weights"])
        base = get_entry(item["architecture"])
        arguments = dict(item.get("arguments", {}))
        for key in ("input_shape",):
            if key in arguments:
                arguments[key] = tuple(arguments[key])
        register_model(
            item["name"],
            base.builder,
            task=base.task,
            description=item["description"],
            reference=base.reference,
            input_channels=arguments.get("input_shape", base.default_input_shape)[-1],
            default_input_shape=arguments.get("input_shape", base.default_input_shape),
            num_classes=arguments.get("num_classes", base.num_classes),
            preprocessing=item.get("preprocessing", base.preprocessing),
            weights=[info],
            architecture=base.name,
            defaults=arguments,
            default_weights=info.name,
            overwrite=True,
        )


def _unet_preprocessing(arguments):
    """0..1 images for the original U-Net (no encoder); else what the encoder needs."""
    if arguments.get("encoder") is None and not arguments.get("include_preprocessing"):
        return "unit"
    return _encoder_preprocessing(arguments)


def _encoder_preprocessing(arguments):
    """The input normalisation of an encoder model (default encoder "resnet50"); "none" when
    the model normalises inside (`include_preprocessing=True`)."""
    from kerasseg.models.encoders import get_encoder_spec

    if arguments.get("include_preprocessing"):
        return "none"
    return get_encoder_spec(arguments.get("encoder", "resnet50")).preprocessing


def _classical_models():
    """(name, builder, input channels, classes, description, reference) of each method."""
    from kerasseg.layers import edges, kmeans, local_threshold, meanshift, region, threshold

    scikit = "(scikit-image semantics)"
    table = [
        (
            name,
            threshold.threshold_builder(name),
            1,
            cls.default_classes,
            f"{method} per image {scikit}",
            cls.reference,
        )
        for name, (cls, method) in threshold.BUILDERS.items()
    ]
    return table + [
        (
            "adaptive_threshold",
            local_threshold.adaptive_threshold,
            1,
            2,
            "OpenCV adaptiveThreshold (mean or Gaussian), pixel-exact on uint8",
            "OpenCV cv::adaptiveThreshold",
        ),
        (
            "niblack",
            local_threshold.niblack,
            1,
            2,
            f"Niblack local threshold {scikit}",
            "Niblack 1986, An Introduction to Digital Image Processing",
        ),
        (
            "sauvola",
            local_threshold.sauvola,
            1,
            2,
            f"Sauvola local threshold {scikit}",
            "Sauvola & Pietikainen 2000, Pattern Recognition 33(2)",
        ),
        (
            "kmeans",
            kmeans.kmeans,
            3,
            4,
            "k-means colour clustering per image (k-means++, scikit-learn rules)",
            "Lloyd 1982, IEEE Trans. Inf. Theory 28(2); Arthur & Vassilvitskii 2007",
        ),
        (
            "mean_shift",
            meanshift.mean_shift,
            3,
            None,
            "Mean-shift clustering per image (scikit-learn MeanShift, bin seeding)",
            "Comaniciu & Meer 2002, IEEE TPAMI 24(5)",
        ),
        (
            "sobel",
            edges.sobel,
            1,
            None,
            f"Sobel gradient magnitude {scikit}",
            "Sobel & Feldman 1968",
        ),
        (
            "scharr",
            edges.scharr,
            1,
            None,
            f"Scharr gradient magnitude {scikit}",
            "Scharr 2000, PhD thesis, Univ. Heidelberg",
        ),
        (
            "prewitt",
            edges.prewitt,
            1,
            None,
            f"Prewitt gradient magnitude {scikit}",
            "Prewitt 1970, Picture Processing and Psychopictorics",
        ),
        (
            "laplacian_of_gaussian",
            edges.laplacian_of_gaussian,
            1,
            None,
            "Laplacian of Gaussian (scipy gaussian_laplace semantics)",
            "Marr & Hildreth 1980, Proc. R. Soc. Lond. B 207",
        ),
        (
            "canny",
            edges.canny,
            1,
            2,
            "Canny edges, scikit-image or OpenCV (compat=) semantics",
            "Canny 1986, IEEE TPAMI 8(6)",
        ),
        (
            "region_growing",
            region.region_growing,
            1,
            None,
            "Seeded region growing from (row, col) seeds (scikit-image flood semantics)",
            "Adams & Bischof 1994, IEEE TPAMI 16(6)",
        ),
        (
            "connected_components",
            region.connected_components,
            1,
            None,
            "Connected-component labelling (scikit-image label numbering)",
            "Rosenfeld & Pfaltz 1966, J. ACM 13(4); Wu et al. 2009",
        ),
    ]


def _register_builtins():
    from kerasseg.models.unet import unet

    register_model(
        "unet",
        unet,
        task="semantic",
        description="U-Net, the original or on a pretrained keras.applications encoder",
        reference="Ronneberger et al. 2015, arXiv:1505.04597",
        input_channels=3,
        default_input_shape=(None, None, 3),
        num_classes=1,
        preprocessing=_unet_preprocessing,
        overwrite=True,
    )
    _register_encoder_decoders()
    if _tensorflow_backend():
        _register_maskrcnn()
    for name, builder, channels, classes, description, reference in _classical_models():
        register_model(
            name,
            builder,
            task="classical",
            description=f"{description}, no weights",
            reference=reference,
            input_channels=channels,
            default_input_shape=(None, None, channels),
            num_classes=classes,
            preprocessing="none",
            overwrite=True,
        )


def _register_encoder_decoders():
    """The decoders on keras.applications encoders besides the U-Net, and SegFormer."""
    from kerasseg.models.attention_unet import attention_unet
    from kerasseg.models.deeplab import deeplabv3, deeplabv3plus
    from kerasseg.models.fpn import fpn
    from kerasseg.models.linknet import linknet
    from kerasseg.models.pspnet import pspnet
    from kerasseg.models.unetplusplus import unetplusplus

    for name, builder, description, reference in (
        (
            "unetplusplus",
            unetplusplus,
            "U-Net++: nested dense skip pathways on a pretrained encoder, optional deep "
            "supervision",
            "Zhou et al. 2018, arXiv:1807.10165",
        ),
        (
            "attention_unet",
            attention_unet,
            "Attention U-Net: U-Net decoder with additive attention gates on the encoder skips",
            "Oktay et al. 2018, arXiv:1804.03999",
        ),
        (
            "fpn",
            fpn,
            "FPN (panoptic FPN semantic branch) on a pretrained encoder",
            "Kirillov et al. 2019, arXiv:1901.02446",
        ),
        (
            "linknet",
            linknet,
            "LinkNet on a pretrained encoder, decoder blocks added to its features",
            "Chaurasia & Culurciello 2017, arXiv:1707.03718",
        ),
        (
            "pspnet",
            pspnet,
            "PSPNet: pyramid pooling on the stride-8 features of a pretrained encoder",
            "Zhao et al. 2017, arXiv:1612.01105",
        ),
        (
            "deeplabv3",
            deeplabv3,
            "DeepLabV3: atrous spatial pyramid pooling on a dilated pretrained encoder",
            "Chen et al. 2017, arXiv:1706.05587",
        ),
        (
            "deeplabv3plus",
            deeplabv3plus,
            "DeepLabV3+: DeepLabV3 with a stride-4 decoder, dilated pretrained encoder",
            "Chen et al. 2018, arXiv:1802.02611",
        ),
    ):
        register_model(
            name,
            builder,
            task="semantic",
            description=description,
            reference=reference,
            input_channels=3,
            default_input_shape=(None, None, 3),
            num_classes=1,
            preprocessing=_encoder_preprocessing,
            overwrite=True,
        )
    from kerasseg.models.segformer import preprocessing_rule, segformer

    register_model(
        "segformer",
        segformer,
        task="semantic",
        description="SegFormer: Mix Transformer encoder (MiT-B0..B5, `variant`) and all-MLP "
        "decoder",
        reference="Xie et al. 2021, arXiv:2105.15203",
        input_channels=3,
        default_input_shape=(None, None, 3),
        num_classes=1,
        preprocessing=preprocessing_rule,
        overwrite=True,
    )


def _tensorflow_backend():
    return keras.backend.backend() == "tensorflow"


def _register_maskrcnn():
    """Mask R-CNN's variants (TensorFlow backend only: `kerasseg` imports on any backend)."""
    from kerasseg.models.maskrcnn import VARIANTS

    for name, builder in VARIANTS.items():
        backbone = name.split("_")[1]
        register_model(
            name,
            builder,
            task="instance",
            description=f"Mask R-CNN, {backbone} FPN backbone"
            + (" (v2: BatchNorm, conv box head)" if name.endswith("_v2") else "")
            + ", torchvision-compatible weights",
            reference="He et al. 2017, arXiv:1703.06870; torchvision maskrcnn_resnet50_fpn"
            + ("_v2 (Li et al. 2021, arXiv:2111.11429)" if name.endswith("_v2") else ""),
            input_channels=3,
            default_input_shape=(None, None, 3),
            num_classes=91,
            preprocessing="none",
            overwrite=True,
        )


_register_builtins()
register_manifest_presets()
