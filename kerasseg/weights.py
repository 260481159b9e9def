"""Where weights come from, and how they are checked and loaded.

Named weights resolve in one place, `fetch`: a file shipped in `saved_models/` (inside the
installed package), else a cached download in `$KERASSEG_HOME` (default
`$KERAS_HOME/kerasseg`, i.e. `~/.keras/kerasseg`), else a download (with a progress bar)
written to the cache once it matches. Every file is checked against its sha256 before use;
a mismatching file is never loaded. Weight files are `.weights.h5` (HDF5 arrays, no code)
or `.keras` archives loaded with `safe_mode=True`; a `.keras` file holding a Lambda layer
is refused.
"""

import dataclasses
import hashlib
import http.client
import json
import logging
import math
import os
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from kerasseg import files

__all__ = [
    "LOGGER",
    "OPTIMIZER_GROUP",
    "WEIGHT_SUFFIXES",
    "WeightsInfo",
    "WeightsReport",
    "check_keras_archive",
    "download",
    "fetch",
    "home_dir",
    "load_weights_file",
    "load_weights_for_classes",
    "packaged_dir",
    "read_manifest",
    "save_weights_float16",
    "sha256_of",
]

WEIGHT_SUFFIXES = (".weights.h5", ".keras")
LOGGER = logging.getLogger("kerasseg")
# The group of a `.weights.h5` where Keras stores a compiled model's optimizer state.
OPTIMIZER_GROUP = "optimizer"
_TIMEOUT = 60  # seconds a download may wait for the server before it fails


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """A named weights file: what it is, where it comes from, how it was measured."""

    name: str
    file_name: str
    sha256: str
    size: int
    dataset: str = ""
    split: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)
    url: str | None = None
    card: str | None = None

    def as_dict(self):
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


def home_dir():
    """The download cache: $KERASSEG_HOME, else $KERAS_HOME/kerasseg, else ~/.keras/kerasseg."""
    if os.environ.get("KERASSEG_HOME"):
        return Path(os.environ["KERASSEG_HOME"]).expanduser()
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(keras_home).expanduser() / "kerasseg"


def packaged_dir():
    """The `saved_models` folder: inside the installed package, or at the checkout's top."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "saved_models", package.parent / "saved_models"):
        if candidate.is_dir():
            return candidate
    return package / "saved_models"


def read_manifest(directory=None):
    """The shipped presets listed in `saved_models/manifest.json` (a list of dicts)."""
    path = Path(directory or packaged_dir()) / "manifest.json"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["presets"]


def sha256_of(path):
    """The sha256 of the file at `path`, as a hex string."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(path, info):
    return path.is_file() and path.stat().st_size == info.size and sha256_of(path) == info.sha256


def fetch(info, *, progress=True):
    """Local path of the named weights `info`, downloading them once if needed.

    A download is written to the cache under a temporary name and renamed once its size and
    sha256 match (`kerasseg.files.atomic_path`); `progress` shows a bar by KiB meanwhile.

    Raises:
        OSError: the file is not shipped, not cached and cannot be downloaded; the message
            says where to put it by hand.
        ValueError: a downloaded file does not match the expected sha256 (it is deleted).
    """
    shipped = packaged_dir() / info.file_name
    if shipped.is_file():
        if not _matches(shipped, info):
            raise ValueError(
                f"weights {info.name!r}: the shipped file {shipped} does not match its sha256 "
                f"{info.sha256}; the installation is damaged. Reinstall kerasseg."
            )
        return shipped
    cache = home_dir() / "weights"
    cached = cache / info.file_name
    if cached.is_file() and _matches(cached, info):
        return cached
    manual = f"Download it by hand and place it at {cached} (sha256 {info.sha256})."
    if not info.url:
        raise OSError(f"weights {info.name!r}: {info.file_name} is not shipped. {manual}")
    cache.mkdir(parents=True, exist_ok=True)
    if not os.access(cache, os.W_OK):
        raise OSError(
            f"weights {info.name!r}: the cache {cache} is not writable; set KERASSEG_HOME."
        )
    cached.unlink(missing_ok=True)  # a cached file that does not match is never used
    try:
        _download(info, cached, progress)
    except ValueError as error:
        raise ValueError(f"{error} {manual}") from None
    except OSError as error:  # URLError, HTTPError and timeouts are OSErrors
        raise OSError(
            f"weights {info.name!r}: could not download {info.url} ({error}). {manual}"
        ) from error
    return cached


def _download(info, path, progress):
    """Download `info.url` to `path`, written only when its size and sha256 are `info`'s.

    Raises:
        ValueError: the bytes received do not match `info.size` or `info.sha256` (nothing is
            written).
        OSError: the server cannot be reached or answers with an error.
    """

    def verify(received, sha256):
        if received != info.size or sha256 != info.sha256:
            raise ValueError(
                f"weights {info.name!r}: the file downloaded from {info.url} is corrupted or "
                f"truncated ({received} bytes of {info.size}, sha256 "
                f"{'matching' if sha256 == info.sha256 else 'mismatch'}); it was deleted."
            )

    download(info.url, path, size=info.size, verify=verify, progress=progress)


def download(url, path, *, size=None, verify=None, progress=True):
    """Download `url` to `path` atomically, with a progress bar by KiB (on stdout).

    The bytes go to a temporary file beside `path` (`kerasseg.files.atomic_path`), which
    replaces `path` only once `verify(received_bytes, sha256_hex)` has returned; if it
    raises, or the transfer fails, nothing is written. With `size` given, reading stops
    after `size + 1` bytes (a larger file is wrong whatever follows).

    Args:
        url: the address (http, https or file).
        path: the destination.
        size: the expected size in bytes, or None when unknown (the bar then counts KiB).
        verify: a function of (bytes received, sha256 hex digest) that raises when the file
            is wrong; None accepts any file.
        progress: show the bar and a line naming the file.

    Returns:
        The sha256 hex digest of the file written.

    Raises:
        OSError: the server cannot be reached or answers with an error (URLError, HTTPError
            and timeouts are OSErrors).
        Whatever `verify` raises.
    """
    path = Path(path)
    try:
        return _stream(url, path, size, verify, progress)
    except http.client.HTTPException as error:  # e.g. IncompleteRead: the server stopped early
        raise OSError(f"the transfer from {url} broke off ({error!r})") from error


def _stream(url, path, size, verify, progress):
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        length = response.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        expected = size if size is not None else announced
        if progress:
            shown = f" ({expected / 1e6:.1f} MB)" if expected else ""
            print(f"kerasseg: downloading {path.name}{shown} from {url}")
        bar = keras.utils.Progbar(
            max(math.ceil((expected or 0) / 1024), 1) if expected else None,
            verbose=int(bool(progress)),
            unit_name="KiB",
        )
        digest, received = hashlib.sha256(), 0
        with files.atomic_path(path) as temporary, open(temporary, "wb") as f:
            while block := response.read(1 << 16):
                f.write(block)
                digest.update(block)
                received += len(block)
                if size is not None and received > size:
                    break
                bar.update(received // 1024, finalize=False)
            bar.update(math.ceil(received / 1024), finalize=True)
            too_long = size is not None and received > size  # stopped on purpose
            if announced is not None and received < announced and not too_long:
                raise OSError(
                    f"the transfer from {url} broke off after {received} of {announced} bytes"
                )
            if verify is not None:
                verify(received, digest.hexdigest())
    return digest.hexdigest()


def _find_class_names(config, found):
    if isinstance(config, dict):
        if "class_name" in config:
            found.add(config["class_name"])
        for value in config.values():
            _find_class_names(value, found)
    elif isinstance(config, list):
        for value in config:
            _find_class_names(value, found)
    return found


def check_keras_archive(path):
    """Refuse a `.keras` file that is not a Keras archive or that holds a Lambda layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(
            f"`weights`: {path} is not a readable .keras archive ({error})."
        ) from error
    if "Lambda" in _find_class_names(config, set()):
        raise ValueError(
            f"`weights`: {path} contains a Lambda layer, whose code would run on loading; "
            "kerasseg refuses it. Save only the weights (`model.save_weights('x.weights.h5')`)."
        )


def _load_keras_archive(path):
    """The model of a `.keras` file, checked by `check_keras_archive`, loaded safely."""
    check_keras_archive(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise ValueError(f"`weights`: cannot load {path}: {error}") from error


def load_weights_file(model, path):
    """Load weights from a `.weights.h5` or `.keras` file into `model`, checking they fit."""
    path = Path(path)
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise ValueError(
            f"`weights`: unsupported file {path.name!r}; accepted: a path ending in "
            f"{' or '.join(WEIGHT_SUFFIXES)}, a named weights entry, or None."
        )
    if not path.is_file():
        raise FileNotFoundError(f"`weights`: no such file: {path}")
    if path.name.endswith(".keras"):
        _copy_weights(_load_keras_archive(path), model, path)
        return
    mismatch = (
        f"`weights`: {path} does not fit model {model.name!r} (built with the arguments given"
    )
    file_shapes = sorted(_h5_layout(path, path).values())
    model_shapes = sorted(tuple(w.shape) for w in model.weights)
    if file_shapes != model_shapes:
        raise ValueError(
            f"{mismatch}): the file holds {len(file_shapes)} arrays, the model "
            f"{len(model_shapes)}; first difference: "
            f"{_first_difference(file_shapes, model_shapes)}."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as error:
            raise ValueError(f"{mismatch}): {error}") from error
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ValueError(f"{mismatch}): Keras skipped part of it: {skipped[0]}")


def save_weights_float16(model, path):
    """Save `model`'s weights as a `.weights.h5` with float32 arrays stored as float16.

    Half the size of `model.save_weights`; `load_weights` casts the arrays back to the
    variables' float32. For shipping trained weights: check that the metrics hold after
    the round trip (float16 keeps about 3 significant digits).
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"`path` must end in .weights.h5; got {path.name!r}.")
    with tempfile.TemporaryDirectory() as folder:
        full = Path(folder) / "float32.weights.h5"
        model.save_weights(full)
        with h5py.File(full, "r") as source, h5py.File(path, "w") as target:
            _copy_as_float16(source, target)
    return path


def _copy_as_float16(source, target):
    """Copy an HDF5 group recursively, attributes included, storing float32 data as float16;
    the optimizer state of a compiled model is left out."""
    target.attrs.update(source.attrs)
    for name, node in source.items():
        if name == OPTIMIZER_GROUP and source.name == "/":
            continue
        if isinstance(node, h5py.Group):
            _copy_as_float16(node, target.create_group(name))
        else:
            data = node[()]
            if data.dtype == np.float32:
                data = data.astype(np.float16)
            target.create_dataset(name, data=data).attrs.update(node.attrs)


def _copy_weights(source, model, path):
    src = source.get_weights()
    dst = model.get_weights()
    shapes_src = [w.shape for w in src]
    shapes_dst = [w.shape for w in dst]
    if shapes_src != shapes_dst:
        raise ValueError(
            f"`weights`: {path} holds {len(src)} arrays that do not fit model {model.name!r} "
            f"({len(dst)} arrays); first difference: "
            f"{_first_difference(shapes_src, shapes_dst)}."
        )
    model.set_weights(src)


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"array {i}: file {x} vs model {y}"
    return f"count {len(a)} vs {len(b)}"


@dataclasses.dataclass(frozen=True)
class WeightsReport:
    """Where a model's weights came from, as `kerasseg.load` attaches it (`model.weights_report`).

    Attributes:
        source: the weights file.
        loaded: number of weight arrays taken from it.
        total: number of weight arrays of the model.
        reinitialized: names of the layers left at their fresh initialisation because their
            shapes depend on the class count (empty when everything was loaded).
        source_classes: the class count the file was made for (None when it fits as is).
    """

    source: str
    loaded: int
    total: int
    reinitialized: tuple = ()
    source_classes: int | None = None

    def describe(self):
        """One line for logs and training banners."""
        text = f"{self.loaded} of {self.total} weight arrays from {Path(self.source).name}"
        if self.reinitialized:
            text += (
                f"; re-initialised for the new class count ({self.source_classes} in the "
                f"file): {', '.join(self.reinitialized)}"
            )
        return text


def _h5_layout(path, given=None):
    """{dataset path: shape} of the model arrays of a `.weights.h5`.

    The optimizer state that `save_weights` adds for a compiled model (group `optimizer`)
    is left out: `load_weights` skips it.

    Args:
        path: the `.weights.h5` file.
        given: the file the user gave, when `path` is read on its behalf; an unreadable
            file then raises a ValueError naming it (else the OSError of h5py).
    """
    layout = {}

    def visit(name, node):
        if isinstance(node, h5py.Dataset) and not name.startswith(OPTIMIZER_GROUP + "/"):
            layout[name] = tuple(node.shape)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as error:
        if given is None:
            raise
        raise ValueError(
            f"`weights`: {given} is not a readable HDF5 weights file ({error})."
        ) from error
    return layout


def _source_h5(path, folder):
    """A `.weights.h5` holding the arrays of the weights file `path` (a `.keras` archive is
    loaded safely and its weights saved to `folder`)."""
    if not Path(path).name.endswith(".keras"):
        return Path(path)
    converted = Path(folder) / "source.weights.h5"
    _load_keras_archive(path).save_weights(converted)
    return converted


def _class_dependent(model, probe, folder):
    """(h5 paths, layer names) of the arrays whose shapes differ between `model` and
    `probe`, the same architecture built for another class count, and the path of the
    `.weights.h5` of `model` that this writes into `folder`."""
    model_file, probe_file = Path(folder) / "model.weights.h5", Path(folder) / "probe.weights.h5"
    model.save_weights(model_file)
    probe.save_weights(probe_file)
    ours, theirs = _h5_layout(model_file), _h5_layout(probe_file)
    if set(ours) != set(theirs) or len(model.weights) != len(probe.weights):
        raise ValueError("the architecture changes with the class count beyond its head")
    paths = {key for key in ours if ours[key] != theirs[key]}
    layers = []
    for mine, other in zip(model.weights, probe.weights, strict=True):
        if tuple(mine.shape) != tuple(other.shape):
            layer = mine.path.rsplit("/", 1)[0]
            if layer not in layers:
                layers.append(layer)
    return paths, layers, model_file


def load_weights_for_classes(model, path, build_for_classes, num_classes):
    """Load a weights file made for another class count: everything that fits, a fresh head.

    The arrays whose shapes depend on the class count (the classifier of an encoder-decoder
    or SegFormer; Mask R-CNN's box classifier, box regressor and mask logits) keep their
    fresh initialisation; every other array must fit exactly. This is fine-tuning to new
    classes as keras-hub's `from_preset(num_classes=N)` and torchvision's Mask R-CNN
    tutorial do it.

    Args:
        model: the model built for `num_classes`.
        path: a `.weights.h5` or `.keras` file of the same architecture, any class count.
        build_for_classes: `f(k)` building the same architecture for `k` classes; used to
            find which arrays depend on the class count.
        num_classes: the class count `model` was built for.

    Returns:
        A `WeightsReport` (also logged on the "kerasseg" logger when layers are re-initialised).

    Raises:
        ValueError: the file is not this architecture (beyond the class count).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`weights`: no such file: {path}")
    total = len(model.weights)
    with tempfile.TemporaryDirectory() as folder:
        source = _source_h5(path, folder)
        file_layout = _h5_layout(source, path)
        if sorted(file_layout.values()) == sorted(tuple(w.shape) for w in model.weights):
            load_weights_file(model, source)
            return WeightsReport(str(path), total, total)
        mismatch = f"`weights`: {path} does not fit model {model.name!r}"
        try:
            probe = build_for_classes(num_classes + 1)
        except (TypeError, ValueError):
            probe = build_for_classes(num_classes - 1)
        try:
            dependent, layers, merged = _class_dependent(model, probe, folder)
        except ValueError as error:
            raise ValueError(f"{mismatch}: {error}.") from None
        del probe
        model_layout = _h5_layout(merged)
        if set(file_layout) != set(model_layout):
            extra = sorted(set(file_layout) ^ set(model_layout))
            raise ValueError(
                f"{mismatch}: it holds other layers (first difference: {extra[0]}); it is not "
                "the same architecture with other arguments."
            )
        differing = {key for key in model_layout if model_layout[key] != file_layout[key]}
        beyond = sorted(differing - dependent)
        if beyond:
            raise ValueError(
                f"{mismatch} beyond the class count: {beyond[0]} is {file_layout[beyond[0]]} in "
                f"the file and {model_layout[beyond[0]]} in the model; build the model with "
                "the arguments the file was made with."
            )
        source_classes = _class_count(file_layout, model_layout, differing, num_classes)
        with h5py.File(source, "r") as given, h5py.File(merged, "r+") as target:
            for key in model_layout:
                if key not in differing:
                    target[key][...] = given[key][()]
        load_weights_file(model, merged)
    report = WeightsReport(
        str(path),
        loaded=total - sum(1 for w in model.weights if w.path.rsplit("/", 1)[0] in layers),
        total=total,
        reinitialized=tuple(layers),
        source_classes=source_classes,
    )
    LOGGER.warning("kerasseg: %s; train them before use.", report.describe())
    return report


def _class_count(file_layout, model_layout, differing, num_classes):
    """The class count of the file: the last dimension of a differing array whose size in
    the model is `num_classes` (a classifier), else None."""
    for key in sorted(differing):
        if model_layout[key] and model_layout[key][-1] == num_classes:
            return int(file_layout[key][-1])
    return None
