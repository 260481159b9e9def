"""Read torch ``.pth`` / ``.pt`` / ``.bin`` checkpoints with numpy only, refusing any code.

`read_torch_checkpoint` reads the zip format that ``torch.save`` has written since torch 1.6:
one folder ``<archive>/`` holding ``data.pkl`` (the object pickle), ``data/<key>`` (the raw
bytes of each storage), ``byteorder`` (``little`` or ``big``; little when absent, as torch
assumes) and ``version``. Tensors in ``data.pkl`` are calls to
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[,
metadata])`` (``_rebuild_tensor_v3`` adds a ``torch.<dtype>`` argument for dtypes without a
legacy storage class, such as ``uint16``), and each storage is the persistent id
``('storage', <storage class>, key, location, numel)``.

Safety: a pickle runs whatever callable its ``GLOBAL`` opcodes name. The unpickler here
resolves only the globals a state dict needs (`ALLOWED_GLOBALS`) to stand-ins that build
numpy arrays and plain containers, and refuses every other global before anything is
called, so a malicious file cannot run code. This is the idea of torch's own
``weights_only=True`` loader (``torch/_weights_only_unpickler.py``).

It also reads torch's legacy (before 1.6) format, a sequence of pickles followed by the raw
storages (`_read_legacy`), with the same restricted unpickler.

Not read: quantized, sparse and float8 tensors, storage views (torch before 1.0), and
training checkpoints that pickle other objects (optimizers, ``argparse.Namespace``); each
is refused with a one-line message saying how to re-save the file.
"""

import _compat_pickle
import collections
import os
import pickle
import zipfile
import zlib

import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "STORAGE_DTYPES",
    "TORCH_DTYPES",
    "is_legacy_checkpoint",
    "read_torch_checkpoint",
]

_BFLOAT16 = "bfloat16"  # numpy has none: read as uint16, widened to float32 exactly
# torch storage class name -> numpy dtype code of one element (before the byte order).
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexDoubleStorage": "c16",
    "ComplexFloatStorage": "c8",
}
# torch dtype name (the ``torch.<name>`` global of ``_rebuild_tensor_v3``) -> numpy code.
TORCH_DTYPES = {
    "float64": "f8",
    "float32": "f4",
    "float16": "f2",
    "bfloat16": _BFLOAT16,
    "int64": "i8",
    "int32": "i4",
    "int16": "i2",
    "int8": "i1",
    "uint64": "u8",
    "uint32": "u4",
    "uint16": "u2",
    "uint8": "u1",
    "bool": "?",
    "complex128": "c16",
    "complex64": "c8",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_START = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
# What a corrupt data.pkl or entry raises while read (a bad opcode, memo index, argument).
_UNREADABLE = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    TypeError,
    ValueError,
)
_RESAVE = "torch.save(torch.load(f, weights_only=True), f2)"


class _Refused(ValueError):
    """A file's content kerasseg will not read (the message names the file)."""


class _Frozen:
    """Attributes set once at creation: the pickle BUILD opcode cannot alter the object."""

    __slots__ = ()

    def __init__(self, **values):
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key, value):
        raise AttributeError(f"{type(self).__name__} is read-only")


class _Global(_Frozen):
    """What an allowed global resolves to: `name` and the `function` called (None: a marker)."""

    __slots__ = ("name", "function")

    def __call__(self, *args):
        if self.function is None:
            raise TypeError(f"{self.name} is a type marker, not a callable")
        return self.function(*args)


class _Storage(_Frozen):
    """One storage of the archive: its raw bytes and element code (None: untyped bytes)."""

    __slots__ = ("key", "raw", "code")


def _element_dtype(code, byteorder):
    """The numpy dtype the storage bytes are viewed as (bfloat16: its raw uint16 bits)."""
    dtype = np.dtype("u2" if code == _BFLOAT16 else code)
    return dtype.newbyteorder("<" if byteorder == "little" else ">")


def _to_native(view, code):
    """A contiguous, native-order copy of `view`; bfloat16 bits become float32 exactly."""
    if code == _BFLOAT16:
        return (view.astype(np.uint32) << 16).view(np.float32)
    return np.array(view, dtype=view.dtype.newbyteorder("="), order="C")


def _is_index(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Reader:
    """The state of one file: its zip archive, prefix, byte order and storages read so far."""

    def __init__(self, path, archive, prefix, byteorder):
        self.path, self.archive, self.prefix, self.byteorder = path, archive, prefix, byteorder
        self.raw = {}

    def fail(self, message):
        return _Refused(f"{self.path}: {message}")

    def storage(self, record):
        """Resolve a persistent id ``('storage', type, key, location, numel)`` to a `_Storage`."""
        if not (isinstance(record, tuple) and len(record) == 5 and record[0] == "storage"):
            raise self.fail(f"data.pkl holds the persistent id {record!r}, not a storage record")
        _, kind, key, _location, numel = record  # every location is read to the CPU
        if not (isinstance(kind, _Global) and kind.name in _STORAGE_CODES):
            raise self.fail(f"storage record {record!r} names no storage type")
        if not (isinstance(key, str) and _is_index(numel)):
            raise self.fail(f"storage record {record!r} has a bad key or element count")
        code = _STORAGE_CODES[kind.name]
        if key not in self.raw:
            name = f"{self.prefix}/data/{key}"
            try:
                self.raw[key] = np.frombuffer(self.archive.read(name), dtype=np.uint8)
            except KeyError:
                raise self.fail(
                    f"data.pkl refers to storage {key!r} but the archive has no entry {name}; "
                    "the file is incomplete: download or save it again"
                ) from None
        itemsize = 1 if code is None else _element_dtype(code, "little").itemsize
        if self.raw[key].size < numel * itemsize:
            raise self.fail(
                f"storage {key!r} holds {self.raw[key].size} bytes but its record says {numel} "
                f"elements of {itemsize} bytes; the file is truncated or corrupt"
            )
        return _Storage(key=key, raw=self.raw[key][: numel * itemsize], code=code)

    def tensor(self, storage, offset, size, stride, code=None):
        """The numpy array of ``storage[offset]`` viewed with `size` and `stride` (copied)."""
        if not isinstance(storage, _Storage):
            raise self.fail(f"a tensor is built from a {type(storage).__name__}, not a storage")
        code = storage.code if code is None else code
        if code is None:
            raise self.fail(f"storage {storage.key!r} is untyped and its tensor names no dtype")
        ok = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
        if not (ok and _is_index(offset) and all(map(_is_index, size + stride))):
            raise self.fail(
                f"a tensor of storage {storage.key!r} has offset {offset!r}, size {size!r}, "
                f"stride {stride!r}; expected non-negative ints, as many strides as sizes"
            )
        dtype = _element_dtype(code, self.byteorder)
        if storage.raw.size % dtype.itemsize:
            raise self.fail(
                f"storage {storage.key!r} holds {storage.raw.size} bytes, not a whole number "
                f"of {dtype.itemsize}-byte elements"
            )
        elements = storage.raw.view(dtype)
        if 0 in size:
            return _to_native(np.zeros(size, dtype=dtype), code)
        need = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if need > elements.size:
            raise self.fail(
                f"a tensor of size {size}, stride {stride} and offset {offset} needs {need} "
                f"elements of storage {storage.key!r}, which holds {elements.size}; "
                "the file is truncated or corrupt"
            )
        view = np.lib.stride_tricks.as_strided(
            elements[offset:],
            shape=size,
            strides=tuple(s * dtype.itemsize for s in stride),
            writeable=False,
        )
        return _to_native(view, code)


def _rebuild_tensor_v2(reader):
    def rebuild(storage, offset, size, stride, _requires_grad, _hooks, _metadata=None):
        return reader.tensor(storage, offset, size, stride)

    return rebuild


def _rebuild_tensor_v3(reader):
    def rebuild(storage, offset, size, stride, _requires_grad, _hooks, dtype, _metadata=None):
        if not (isinstance(dtype, _Global) and dtype.name in _DTYPE_CODES):
            raise reader.fail(f"a tensor names the dtype {dtype!r}; accepted: torch.<dtype>")
        return reader.tensor(storage, offset, size, stride, _DTYPE_CODES[dtype.name])

    return rebuild


def _rebuild_parameter(reader):
    # `_rebuild_parameter_with_state` adds the Python attributes of a Parameter subclass,
    # which are not weights; a numpy array has no place for them.
    def rebuild(data, _requires_grad, _hooks, _state=None):
        if not isinstance(data, np.ndarray):
            raise reader.fail(f"a parameter wraps a {type(data).__name__}, not a tensor")
        return data

    return rebuild


def _device(reader):
    def device(kind, index=None):
        if not isinstance(kind, str) or not (index is None or _is_index(index)):
            raise reader.fail(f"torch.device{(kind, index)!r} is not a device name")
        return kind if index is None else f"{kind}:{index}"

    return device


def _ordered_dict(_reader):
    return collections.OrderedDict


_STORAGE_CODES = {f"torch.{name}": code for name, code in STORAGE_DTYPES.items()}
_STORAGE_CODES["torch.storage.UntypedStorage"] = None  # raw bytes; the tensor names its dtype
_DTYPE_CODES = {f"torch.{name}": code for name, code in TORCH_DTYPES.items()}
# The only globals a file may name: "module.name" -> factory of its stand-in (None: a marker).
ALLOWED_GLOBALS = {
    "collections.OrderedDict": _ordered_dict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.device": _device,
    **dict.fromkeys(_STORAGE_CODES, None),
    **dict.fromkeys(_DTYPE_CODES, None),
}


class _Unpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` and the archive's storages."""

    def __init__(self, file, reader):
        super().__init__(file)
        self.reader = reader

    def find_class(self, module, name):
        # Protocol-2 pickles spell Python 3 names the Python 2 way (`__builtin__.eval`); the
        # standard unpickler maps them back the same way before it imports anything.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full not in ALLOWED_GLOBALS:
            raise self.reader.fail(
                f"kerasseg refuses to load {full}: not a tensor or plain container; this file "
                "may run code. If it is a training checkpoint, save its state dict alone with "
                "torch.save(checkpoint['model'], f2)"
            )
        factory = ALLOWED_GLOBALS[full]
        return _Global(name=full, function=None if factory is None else factory(self.reader))

    def persistent_load(self, pid):
        return self.reader.storage(pid)


class _LegacyReader(_Reader):
    """The storages of a legacy file: first collected from the object pickle (their type
    and size), then read from after it, for a second unpickling that builds the tensors."""

    def __init__(self, path):
        super().__init__(path, None, "", "little")
        self.records = {}  # storage key -> (element code, element count)
        self.collecting = True

    def storage(self, record):
        """Resolve ``('storage', type, key, location, numel, view)`` to a `_Storage`."""
        if not (isinstance(record, tuple) and len(record) == 6 and record[0] == "storage"):
            raise self.fail(f"the pickle holds the persistent id {record!r}, not a storage record")
        _, kind, key, _location, numel, view = record
        if not (isinstance(kind, _Global) and kind.name in _STORAGE_CODES):
            raise self.fail(f"storage record {record!r} names no storage type")
        if not (isinstance(key, str) and _is_index(numel)) or _STORAGE_CODES[kind.name] is None:
            raise self.fail(f"storage record {record!r} has a bad key, type or element count")
        if view is not None:
            raise self.fail(f"storage {key!r} is a view (torch before 1.0), which is not read")
        code = _STORAGE_CODES[kind.name]
        if self.collecting:
            self.records[key] = (code, numel)
            return _Storage(key=key, raw=np.zeros(0, np.uint8), code=code)
        raw = self.raw.get(key)
        itemsize = _element_dtype(code, "little").itemsize
        if raw is None or raw.size < numel * itemsize:
            raise self.fail(
                f"storage {key!r} is missing or short; the file is truncated or corrupt"
            )
        return _Storage(key=key, raw=raw[: numel * itemsize], code=code)

    def tensor(self, storage, offset, size, stride, code=None):
        if self.collecting:  # only the storages' records matter in the first pass
            return np.zeros(0, np.uint8)
        return super().tensor(storage, offset, size, stride, code)


def _read_legacy(path, file):
    """The object of a legacy (before 1.6) torch file: pickles of the magic number, the
    protocol version, the system's info and the object, then the list of storage keys, then
    each storage as an 8-byte little-endian element count and its raw bytes."""
    reader = _LegacyReader(path)

    def load():
        return _Unpickler(file, reader).load()

    if load() != _LEGACY_MAGIC or load() != _LEGACY_PROTOCOL:
        raise reader.fail("not a torch legacy file: wrong magic number or protocol version")
    info = load()
    if not (isinstance(info, dict) and info.get("little_endian", True) is True):
        raise reader.fail("a legacy file written on a big-endian machine is not read")
    start = file.tell()
    load()  # first pass: the storages' records
    keys = load()
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise reader.fail("the list of storage keys is not a list of names")
    for key in keys:
        if key not in reader.records:
            raise reader.fail(f"storage {key!r} is listed but no tensor uses it")
        code, _ = reader.records[key]
        count = int.from_bytes(file.read(8), "little")
        size = count * _element_dtype(code, "little").itemsize
        data = file.read(size)
        if len(data) != size:
            raise reader.fail(
                f"storage {key!r} should hold {size} bytes, the file has {len(data)} left; "
                "the file is truncated: download or save it again"
            )
        reader.raw[key] = np.frombuffer(data, dtype=np.uint8)
    file.seek(start)
    reader.collecting = False
    return load()


def is_legacy_checkpoint(path):
    """Whether `path` starts like torch's legacy (before 1.6) pickle format.

    Args:
        path: the file.

    Returns:
        True for the legacy format.
    """
    with open(path, "rb") as file:
        return file.read(len(_LEGACY_START)).startswith(_LEGACY_START)


def _open_archive(path):
    """The zip archive of `path`, or a one-line error saying what the file is instead."""
    with open(path, "rb") as file:
        start = file.read(len(_LEGACY_START))
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        if start.startswith(b"PK"):
            raise _Refused(
                f"{path} is a truncated or corrupt zip archive ({error}); download or save it again"
            ) from None
        if start.startswith(b"\x80"):
            raise _Refused(
                f"{path} is a plain pickle, not a torch.save zip checkpoint; save the state "
                f"dict with torch.save (torch >= 1.6), e.g. {_RESAVE}"
            ) from None
        raise _Refused(
            f"{path} is not a torch checkpoint: neither a zip archive (torch.save since torch "
            f"1.6) nor a pickle; it starts with {start[:8]!r}"
        ) from None


def _unpickle(path, archive):
    """The object pickled in `archive`'s ``<folder>/data.pkl``, tensors as numpy arrays."""
    names = archive.namelist()
    prefix = names[0].split("/", 1)[0] if names else ""  # torch reads the first entry's folder
    if f"{prefix}/data.pkl" not in names:
        raise _Refused(f"{path}: the zip archive holds no {prefix}/data.pkl; not a torch.save file")
    byteorder = "little"  # what torch assumes when the record is absent (files before 2.0)
    if f"{prefix}/byteorder" in names:
        byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise _Refused(f"{path}: byteorder record {byteorder!r}; expected little or big")
    reader = _Reader(path, archive, prefix, byteorder)
    with archive.open(f"{prefix}/data.pkl") as file:
        return _Unpickler(file, reader).load()


def _state_dict_of(obj, path):
    """`obj` as a flat ``{name: array}``; wrapped checkpoints (``{"model": ...}``) unwrapped."""
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for wrapper in ("model", "state_dict"):  # training checkpoints wrap the state dict
            if isinstance(obj.get(wrapper), dict):
                return _state_dict_of(obj[wrapper], path)
    if not isinstance(obj, dict):
        raise _Refused(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _Refused(f"{path}: state dict key {key!r} is a {type(key).__name__}, not a str")
        if not isinstance(value, (np.ndarray, bool, int, float)):
            raise _Refused(
                f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor or "
                "a number"
            )
        out[key] = np.asarray(value)
    return out


def read_torch_checkpoint(path):
    """Read a ``torch.save`` checkpoint as ``{name: numpy array}``, without torch.

    Reads the state dict at the top of the file, or under ``"model"`` / ``"state_dict"``
    when the top level holds no tensor (training checkpoints). Arrays are contiguous copies
    in native byte order with torch's dtypes, except bfloat16, which numpy lacks: it becomes
    float32, exactly (its 16 bits are the high half of a float32). Plain numbers in the state
    dict become 0-d arrays. The pickle may name only `ALLOWED_GLOBALS`; anything else is
    refused before it is called.

    The format is the one of ``torch.serialization._save`` (torch >= 1.6); see the PyTorch
    "Serialization semantics" notes, https://pytorch.org/docs/stable/notes/serialization.html

    Args:
        path: a ``.pth`` / ``.pt`` / ``.bin`` file written by ``torch.save``.

    Returns:
        A dict ``{name: numpy array}`` in the file's order.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a torch checkpoint (plain pickle,
            truncated or corrupt zip, missing ``data.pkl`` or storage), names a global
            outside `ALLOWED_GLOBALS`, or holds no state dict. The message names the file.
    """
    path = os.fspath(path)
    try:
        if is_legacy_checkpoint(path):
            with open(path, "rb") as file:
                obj = _read_legacy(path, file)
        else:
            with _open_archive(path) as archive:
                obj = _unpickle(path, archive)
    except _Refused:
        raise
    except _UNREADABLE as error:
        raise _Refused(
            f"{path}: the checkpoint could not be read ({type(error).__name__}: {error}); the "
            "file is corrupt or not a state dict: download or save it again"
        ) from None
    return _state_dict_of(obj, path)
