"""The model registry: every architecture and preset behind one loader, `load(name)`.

An entry is an architecture (a builder function and its metadata) or a preset (an
architecture, fixed arguments and named weights). This module is a table and nothing
architecture-specific: each architecture registers itself where it is defined, with the
`register_model` decorator (as torchvision's `@register_model()` and keras-hub's
`register_presets`), and `import kerasseg` imports them all before it registers the shipped
presets of `saved_models/manifest.json`.

    @register_model("tiny", task="semantic", description="...", num_classes=2)
    def tiny(num_classes=2, input_shape=(None, None, 3)):
        ...
"""

import ast
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import keras

from kerasseg import weights as weights_lib
from kerasseg.ops.checks import did_you_mean
from kerasseg.preprocessing import MODES, ImagePreprocessing

__all__ = [
    "TASKS",
    "ModelEntry",
    "get_entry",
    "list_models",
    "load",
    "preprocessing_layer",
    "register_manifest_presets",
    "register_model",
]

TASKS = ("semantic", "instance", "classical")
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """Everything the registry knows about one loadable name.

    Attributes:
        name: the snake_case name `load` takes.
        builder: a function, `builder(**arguments)` returns a `keras.Model`.
        task: one of `TASKS`.
        description: one line for listings.
        reference: the publication or source the model follows.
        input_channels: channels of the default input.
        default_input_shape: the input shape the builder makes by default.
        num_classes: classes of the default model (None: data-dependent).
        preprocessing: the `ImagePreprocessing` mode the inputs need, or a function of the
            builder's arguments that returns it.
        weights: {name: `kerasseg.weights.WeightsInfo` or
            `kerasseg.public_weights.PublicWeights`}.
        architecture: for presets, the architecture they instantiate.
        defaults: for presets, the arguments they fix.
        default_weights: for presets, the named weights they load unless told otherwise.
        arguments: the keywords `load` accepts, when the builder's signature does not say (a
            builder that imports its model only when called); None: the signature's.
        backends: the Keras backends the model runs on; None for all.
        class_names: for presets whose classes are not a `kerasseg.datasets` data set's,
            one name per class id (e.g. `kerasseg.class_sets.VOC`'s); None otherwise.
        colours: an (r, g, b) per class id, with `class_names`; None for generic colours.
    """

    name: str
    builder: Callable
    task: str
    description: str
    reference: str
    input_channels: int
    default_input_shape: tuple
    num_classes: int | None
    preprocessing: str | Callable
    weights: dict = dataclasses.field(default_factory=dict)
    architecture: str | None = None
    defaults: dict = dataclasses.field(default_factory=dict)
    default_weights: str | None = None
    arguments: tuple | None = None
    backends: tuple | None = None
    class_names: tuple | None = None
    colours: tuple | None = None

    @property
    def is_preset(self):
        return self.architecture is not None

    def accepted_arguments(self):
        """The keyword arguments of the builder, in order."""
        if self.arguments is not None:
            return tuple(self.arguments)
        return tuple(
            p.name
            for p in inspect.signature(self.builder).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )

    def argument_defaults(self):
        """The builder's default argument values, with the ones a preset fixes."""
        defaults = {
            p.name: p.default
            for p in inspect.signature(self.builder).parameters.values()
            if p.default is not p.empty
        }
        return {**defaults, **self.defaults}

    def check_backend(self):
        """Raise a ValueError when the model cannot run on the current Keras backend."""
        backend = keras.backend.backend()
        if self.backends is not None and backend not in self.backends:
            needed = " or ".join(BACKEND_NAMES.get(b, b) for b in self.backends)
            raise ValueError(
                f"`name`: {self.name!r} needs the {needed} backend (its layers call {needed} "
                f"ops); Keras runs on {backend!r} here. Set KERAS_BACKEND={self.backends[0]} "
                "before importing keras."
            )

    def fetch_weights(self, weights_name=None):
        """The local path of the entry's named weights (default: its default weights),
        downloading (and for public checkpoints converting) them once.

        Raises:
            ValueError: the entry has no such weights, or a file fails its check.
            OSError: the file is not cached and cannot be downloaded.
        """
        weights_name = weights_name or self.default_weights
        if weights_name not in self.weights:
            raise ValueError(
                f"`weights`: {self.name!r} has no weights named {weights_name!r}; it has "
                f"{sorted(self.weights) or 'none'}."
            )
        info = self.weights[weights_name]
        if isinstance(info, weights_lib.WeightsInfo):
            return weights_lib.fetch(info)
        return info.fetch()

    def preprocessing_for(self, arguments=None):
        """The `ImagePreprocessing` mode for a model built with `arguments`."""
        if callable(self.preprocessing):
            return self.preprocessing({**self.defaults, **(arguments or {})})
        return self.preprocessing

    def summary(self, details=False):
        """A plain dict for listings (`list_models`, `kerasseg info`).

        Args:
            details: also "argument_details" (each argument's default and meaning, from the
                builder's Google-style docstring) and "input_contract" (builds the model
                with random weights to read its size rule), for `kerasseg info`.

        Returns:
            A dict of plain values; "arguments" maps each argument the builder documents or
            declares to its default (the preset's value where a preset fixes it).
        """
        first = next(iter(self.weights.values()), None)
        rows = self.argument_details() if details else None
        summary = {
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
            "arguments": _argument_values(rows) if details else self._known_defaults(),
            "preset_arguments": dict(self.defaults),
            "weights": {name: info.as_dict() for name, info in self.weights.items()},
            "dataset": first.dataset if first else "",
            "split": first.split if first else "",
            "metrics": dict(first.metrics) if first else {},
            "backends": list(self.backends) if self.backends else "all",
            "class_names": list(self.class_names) if self.class_names else None,
        }
        if details:
            summary["argument_details"] = rows
            summary["input_contract"] = self.input_contract()
        return summary

    def _known_defaults(self):
        """`argument_defaults` restricted to the accepted arguments, in their order."""
        defaults = self.argument_defaults()
        return {name: defaults[name] for name in self.accepted_arguments() if name in defaults}

    def argument_details(self):
        """One dict per accepted argument: its default and a one-line meaning.

        Meanings come from the "Args:" section of the builder's docstring; an entry that
        reads "as `X`" or "see `X`" (or a docstring that says "see `X` for the arguments")
        takes the entry of `X`, a function or class of the builder's module. Defaults come
        from the signatures (the builder's, then `X`'s), then from a "(default ...)" in the
        meaning; a preset's own values override them.

        Returns:
            A list of {"name", "default" (the value; None when there is none),
            "has_default" (False when neither the signatures nor the docstring give one),
            "default_text" (its repr, or ""), "preset" (True where the preset fixes it),
            "meaning" ("" when undocumented)}.
        """
        docs, signature_defaults = _documentation(self.builder)
        rows = []
        for name in self.accepted_arguments():
            meaning = docs.get(name, "")
            row = {"name": name, "default": None, "has_default": True, "preset": False}
            if name in self.defaults:
                row.update(default=self.defaults[name], preset=True)
            elif name in signature_defaults:
                row["default"] = signature_defaults[name]
            else:
                row.update(_default_in_text(meaning))
            row["default_text"] = repr(row["default"]) if row["has_default"] else ""
            rows.append({**row, "meaning": meaning})
        return rows

    def input_contract(self):
        """What the inputs of `load(name)` must be: channels, values, sizes.

        Builds the model (random weights) to read its size rule.

        Returns:
            A dict: "channels", "inputs" ({input name: shape}), "preprocessing" (the
            `kerasseg.preprocessing.MODES` mode to apply before the model), "values" (one
            line), "normalises_inside" (True when the model holds an `ImagePreprocessing`
            layer and takes 0..255 images), "size_divisor", "size_offset", "min_size" and
            "size_rule" (one line); without the model's backend, "unavailable" says why.
        """
        mode = self.preprocessing_for()
        contract = {"channels": self.input_channels, "preprocessing": mode}
        try:
            self.check_backend()
        except ValueError as error:
            return {**contract, "unavailable": str(error)}
        model = self.builder(**self.defaults)
        inside = [
            layer.mode for layer in model._flatten_layers() if isinstance(layer, ImagePreprocessing)
        ]
        divisor = int(getattr(model, "size_divisor", 1) or 1)
        offset = int(getattr(model, "size_offset", 0) or 0)
        minimum = int(getattr(model, "min_size", 1) or 1)
        return {
            **contract,
            "inputs": {tensor.name.split(":")[0]: tuple(tensor.shape) for tensor in model.inputs},
            "values": _values_line(mode, inside, self.task),
            "normalises_inside": bool(inside),
            "size_divisor": divisor,
            "size_offset": offset,
            "min_size": minimum,
            "size_rule": _size_rule_line(divisor, offset, minimum),
        }


def _values_line(mode, inside, task):
    """One line on the value range the model's inputs need."""
    if inside:
        return (
            f"0..255 images as they are; the model normalises inside "
            f"(ImagePreprocessing {inside[0]!r}: {MODES.get(inside[0], inside[0])})"
        )
    if mode == "none" and task == "classical":
        return "images of the dtype `input_dtype` names (uint8: 0..255), not normalised"
    if mode == "none":
        return "0..255 images as they are: no normalisation before the model"
    return f"normalise 0..255 images first: {mode!r}, {MODES.get(mode, mode)}"


def _size_rule_line(divisor, offset, minimum):
    """One line on the heights and widths the model accepts."""
    if divisor == 1 and offset == 0 and minimum <= 1:
        return "any height and width"
    if offset:
        return f"height and width of {offset} + k * {divisor} px, at least {minimum} px"
    if divisor > 1:
        return f"height and width multiples of {divisor} px, at least {minimum} px"
    return f"any height and width of at least {minimum} px"


def _argument_values(rows):
    """{name: default} of the `argument_details` rows that have a default."""
    return {row["name"]: row["default"] for row in rows if row["has_default"]}


def _default_in_text(meaning):
    """{"default", "has_default"} from a "(default VALUE" in an argument's meaning."""
    found = re.search(r"\(default ([^;:,)]+)", meaning)
    if found is None:
        return {"default": None, "has_default": False}
    text = found.group(1).strip()
    try:
        return {"default": ast.literal_eval(text), "has_default": True}
    except (ValueError, SyntaxError):
        return {"default": text, "has_default": True}


_SECTION = re.compile(r"^(\s*)(Args|Arguments):\s*$")
_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][\w, *]*?)(?:\s*\([^)]*\))?:\s*(.*)$")
_REFERENCE = re.compile(r"^(?:as|see) `([\w.]+)`(?: for the arguments)?[.,;]?\s*(.*)$")
_POINTER = re.compile(r"see `([\w.]+)` for the arguments")


def _args_section(doc):
    """{argument name: its text on one line} of the "Args:" section of a docstring."""
    entries, indent, current = {}, None, None
    for line in (doc or "").splitlines():
        header = _SECTION.match(line)
        if header:
            indent, current = len(header.group(1)), None
            continue
        if indent is None or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            indent = None
            continue
        entry = _ENTRY.match(line.strip()) if current is None or depth <= current[0] else None
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            current = (depth, names)
            for name in names:
                entries[name] = entry.group(2).strip()
        elif current is not None:
            for name in current[1]:
                entries[name] = f"{entries[name]} {line.strip()}".strip()
    return entries


def _documented_objects(target):
    """`target` and, for a class, its constructor and the kerasseg classes it derives from."""
    if not inspect.isclass(target):
        return [target]
    classes = [c for c in target.__mro__ if c.__module__.startswith("kerasseg")]
    return [part for c in classes for part in (c, vars(c).get("__init__")) if part is not None]


def _resolve(name, module):
    """The function or class `name` (dotted after the module) of the module `module`."""
    found = sys.modules.get(module)
    for part in name.split("."):
        found = getattr(found, part, None)
    return found


def _documentation(target, depth=0):
    """({name: one-line meaning}, {name: default}) of a function or class, from its
    docstring's "Args:" (following "see `X` for the arguments") and its signature."""
    docs, defaults = {}, {}
    for part in _documented_objects(target):
        doc = inspect.getdoc(part) or ""
        pointer = _POINTER.search(doc)
        if pointer and depth < 3 and not _SECTION.search(doc):
            linked = _resolve(pointer.group(1), part.__module__)
            if linked is not None:
                more_docs, more_defaults = _documentation(linked, depth + 1)
                docs, defaults = {**more_docs, **docs}, {**more_defaults, **defaults}
        for name, text in _args_section(doc).items():
            if name.startswith("**"):
                _keyword_entries(text, docs, defaults)
            else:
                docs.setdefault(name.lstrip("*"), _meaning(text, part.__module__, name, depth))
        if callable(part):
            defaults = {**_signature_defaults(part), **defaults}
    return docs, defaults


def _keyword_entries(text, docs, defaults):
    """The keywords a `**kwargs` entry lists as "`name` (default)": one meaning each."""
    head = text.split("`", 1)[0].split(",")[0].rstrip(" :,;")
    for name, value in re.findall(r"`(\w+)` \(([^)]*)\)", text):
        docs.setdefault(name, f"{head}: `{name}`")
        try:
            defaults.setdefault(name, ast.literal_eval(value))
        except (ValueError, SyntaxError):
            defaults.setdefault(name, value)


def _signature_defaults(function):
    """{parameter: default} of a callable's signature ({} when it has none to read)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def _meaning(text, module, name, depth):
    """The first sentence of an Args entry; "as `X`" entries take X's entry for `name`."""
    reference = _REFERENCE.match(text)
    if reference and depth < 3:
        linked = _resolve(reference.group(1), module)
        if linked is not None:
            found = _documentation(linked, depth + 1)[0].get(name.lstrip("*"), "")
            rest = reference.group(2).strip(" .,;")
            text = f"{found.rstrip('.')}; {rest}." if found and rest else found or text
    return _first_sentence(text)


def _first_sentence(text):
    """`text` on one line, up to its first full stop followed by a capital letter."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(text.split()), maxsplit=1)[0]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name,
    builder=None,
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
    arguments=None,
    backends=None,
    class_names=None,
    colours=None,
    overwrite=False,
):
    """Register an architecture or a preset under `name`.

    Called with a builder, registers it and returns its `ModelEntry`; called without one,
    returns a decorator that registers the function it decorates and returns it unchanged.

    Args:
        name: the snake_case name `load` takes.
        builder: a function, `builder(**arguments)` returns a `keras.Model`.
        weights: a sequence of `kerasseg.weights.WeightsInfo` (files shipped or downloaded
            as they are) or `kerasseg.public_weights.PublicWeights` (public checkpoints,
            converted on first use).
        overwrite: replace an entry of the same name instead of refusing.
        task, description, ..., colours: the `ModelEntry` attributes of the same names.

    Returns:
        The `ModelEntry`, or with no `builder`, a decorator.

    Raises:
        ValueError: a bad name, a taken name, an unknown task or default weights.
        TypeError: a builder that is not callable.
    """
    options = {key: value for key, value in locals().items() if key not in ("name", "builder")}
    if builder is None:

        def decorate(function):
            register_model(name, function, **options)
            return function

        return decorate
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
    del options["overwrite"]
    entry = ModelEntry(
        name=name,
        builder=builder,
        **{
            **options,
            "weights": weights,
            "default_input_shape": tuple(default_input_shape),
            "defaults": dict(defaults or {}),
            "arguments": None if arguments is None else tuple(arguments),
            "backends": None if backends is None else tuple(backends),
            "class_names": None if class_names is None else tuple(class_names),
            "colours": None if colours is None else tuple(tuple(c) for c in colours),
        },
    )
    _REGISTRY[name] = entry
    return entry


def get_entry(name):
    """The `ModelEntry` called `name`; unknown names raise a ValueError with the closest."""
    if name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY, count=5, cutoff=0.3)
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
    entry.check_backend()
    accepted = list(entry.accepted_arguments())
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
        path = entry.fetch_weights(weights)
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

    return ImagePreprocessing(get_entry(name).preprocessing_for(kwargs))


def register_manifest_presets(directory=None):
    """Register the presets listed in `saved_models/manifest.json`."""
    for item in weights_lib.read_manifest(directory):
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
            arguments=base.arguments,
            backends=base.backends,
            overwrite=True,
        )
