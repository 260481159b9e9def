"""The torch-free checkpoint reader against torch itself, and against hostile or broken files."""

import collections
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from kerasseg.convert.torch_pickle import read_torch_checkpoint
from kerasseg.convert.torchvision import load_state_dict


def _write_torch_zip(path, data_pkl, storages=(), byteorder=b"little"):
    """A zip laid out as torch.save writes it: <archive>/data.pkl, data/<key>, byteorder."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", byteorder)
        for key, raw in storages:
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", b"3\n")


def _rewrite(source, destination, change):
    """Copy a zip, replacing entries whose name ends with a key of `change` (None: drop)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(destination, "w") as new:
        for name in old.namelist():
            suffix = next((s for s in change if name.endswith(s)), None)
            data = old.read(name) if suffix is None else change[suffix]
            if data is not None:
                new.writestr(name, data)


def _reference(torch, state):
    """What torch itself reads: its `.numpy()`, bfloat16 through `.float()` (numpy lacks it)."""
    return {
        key: (value.float() if value.dtype == torch.bfloat16 else value).detach().numpy()
        for key, value in state.items()
    }


def _assert_same(actual, expected):
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert actual[key].shape == value.shape, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)
        assert actual[key].flags.c_contiguous and actual[key].flags.writeable, key


def _resnet_like(torch):
    """A torch.nn model shaped like a torchvision ResNet stem, block and classifier.

    torchvision itself cannot be imported beside TensorFlow (its native ops crash the
    process, see test_maskrcnn_parity.py); its state dicts are plain torch.nn ones like this:
    conv and linear weights, BatchNorm weights, running statistics and int64 step counters.
    """
    nn = torch.nn
    block = nn.Sequential(
        collections.OrderedDict(
            conv1=nn.Conv2d(8, 8, 3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(8),
            downsample=nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)),
        )
    )
    return nn.Sequential(
        collections.OrderedDict(
            conv1=nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False),
            bn1=nn.BatchNorm2d(8),
            layer1=nn.Sequential(block),
            fc=nn.Linear(8, 10),
        )
    )


@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory):
    """A torch.nn model's state dict plus one tensor of each dtype and layout, saved."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = _resnet_like(torch)
    model(torch.randn(2, 3, 16, 16))  # training mode: moves the BatchNorm statistics
    state = model.state_dict()
    base = torch.randn(5, 6, dtype=torch.float64)
    state.update(
        float16=torch.randn(3, 2).half(),
        bfloat16=torch.tensor([1.0, -2.5, 0.15625, 3.0e38, -1.0e-40]).to(torch.bfloat16),
        int32=torch.tensor([-(2**31), 7], dtype=torch.int32),
        int16=torch.tensor([-300, 300], dtype=torch.int16),
        int8=torch.tensor([-128, 127], dtype=torch.int8),
        uint8=torch.tensor([0, 255], dtype=torch.uint8),
        uint16=torch.tensor([0, 65535], dtype=torch.uint16),  # torch's _rebuild_tensor_v3
        bool=torch.tensor([[True, False], [False, True]]),
        complex64=torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        base=base,
        strided_view=base[1:, ::2].t(),  # shares base's storage: offset 6, strides (2, 6)
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        parameter=torch.nn.Parameter(torch.randn(4)),
    )
    path = tmp_path_factory.mktemp("torch") / "resnet.pth"
    torch.save(state, path)
    return path, _reference(torch, torch.load(path, weights_only=True))


def test_matches_torch_load_exactly(torch_checkpoint):
    path, expected = torch_checkpoint
    actual = read_torch_checkpoint(path)
    _assert_same(actual, expected)
    # bfloat16 keeps the high 16 bits of a float32: these values are exact in both.
    np.testing.assert_array_equal(actual["bfloat16"][:3], np.float32([1.0, -2.5, 0.15625]))
    assert actual["strided_view"].shape == (3, 4)


def test_load_state_dict_needs_no_torch(torch_checkpoint, monkeypatch):
    path, expected = torch_checkpoint
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError):
        import torch  # noqa: F401
    _assert_same(load_state_dict(path), expected)


def test_big_endian_storages(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"a": torch.tensor([1.5, -2.0, 3.25]), "b": torch.tensor([1, -2, 2**40])}
    torch.save(state, tmp_path / "little.pth")
    # The same file as a big-endian machine writes it: storages "0" (float32), "1" (int64).
    swapped = {
        "/byteorder": b"big",
        "/data/0": np.float32([1.5, -2.0, 3.25]).byteswap().tobytes(),
        "/data/1": np.int64([1, -2, 2**40]).byteswap().tobytes(),
    }
    _rewrite(tmp_path / "little.pth", tmp_path / "big.pth", swapped)
    _assert_same(read_torch_checkpoint(tmp_path / "big.pth"), _reference(torch, state))


def test_wrapped_checkpoints_and_non_dicts(tmp_path):
    torch = pytest.importorskip("torch")
    state = collections.OrderedDict(w=torch.randn(2, 3), n=torch.tensor(4))
    expected = _reference(torch, state)
    torch.save({"model": state, "epoch": 3, "device": torch.device("cpu")}, tmp_path / "a.pt")
    torch.save({"state_dict": state}, tmp_path / "b.pt")
    _assert_same(read_torch_checkpoint(tmp_path / "a.pt"), expected)
    _assert_same(read_torch_checkpoint(tmp_path / "b.pt"), expected)
    torch.save([state["w"]], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt holds a list, not a state dict"):
        read_torch_checkpoint(tmp_path / "list.pt")


class _Payload:
    """Pickles as a call of `function(argument)`, what a malicious checkpoint does."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("how", ["system", "eval"])
def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, how):
    def payload(sentinel):
        if how == "system":
            return _Payload(os.system, f"touch '{sentinel}'")
        return _Payload(eval, f"open({str(sentinel)!r}, 'w').close()")

    # Control: plain pickle runs this payload and creates its sentinel.
    pickle.loads(pickle.dumps({"x": payload(tmp_path / "control")}, protocol=2))
    assert (tmp_path / "control").exists()

    sentinel = tmp_path / "sentinel"
    _write_torch_zip(tmp_path / "evil.pth", pickle.dumps({"x": payload(sentinel)}, protocol=2))
    name = f"{os.system.__module__}.system" if how == "system" else "builtins.eval"
    message = rf"evil\.pth: kerasseg refuses to load {name}: not a tensor or plain container"
    with pytest.raises(ValueError, match=message):
        read_torch_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=message):
        load_state_dict(tmp_path / "evil.pth")
    assert not sentinel.exists()


def test_files_that_are_not_torch_zips(tmp_path):
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(ValueError, match=r"plain\.pth is a plain pickle, not a torch\.save zip"):
        read_torch_checkpoint(tmp_path / "plain.pth")
    (tmp_path / "text.pth").write_text("hello, not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth is not a torch checkpoint: neither a zip"):
        read_torch_checkpoint(tmp_path / "text.pth")

    _write_torch_zip(tmp_path / "ok.pth", pickle.dumps({"n": 1}, protocol=2))
    assert read_torch_checkpoint(tmp_path / "ok.pth") == {"n": np.asarray(1)}
    whole = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.pth is a truncated or corrupt zip archive"):
        read_torch_checkpoint(tmp_path / "cut.pth")
    _rewrite(tmp_path / "ok.pth", tmp_path / "nopkl.pth", {"/data.pkl": None})
    with pytest.raises(ValueError, match=r"nopkl\.pth: the zip archive holds no .*data\.pkl"):
        read_torch_checkpoint(tmp_path / "nopkl.pth")
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "missing.pth")


def test_broken_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.arange(6.0)}, tmp_path / "ok.pth")

    raw = bytearray((tmp_path / "ok.pth").read_bytes())
    at = bytes(raw).index(np.arange(6.0, dtype=np.float32).tobytes())
    raw[at + 5] ^= 0xFF  # one storage byte flipped: the zip's CRC no longer matches
    (tmp_path / "flipped.pth").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flipped\.pth: the checkpoint could not be read"):
        read_torch_checkpoint(tmp_path / "flipped.pth")

    _rewrite(tmp_path / "ok.pth", tmp_path / "nodata.pth", {"/data/0": None})
    with pytest.raises(ValueError, match=r"storage '0' but the archive has no entry"):
        read_torch_checkpoint(tmp_path / "nodata.pth")
    _rewrite(tmp_path / "ok.pth", tmp_path / "short.pth", {"/data/0": bytes(8)})
    with pytest.raises(ValueError, match=r"storage '0' holds 8 bytes but its record says 6"):
        read_torch_checkpoint(tmp_path / "short.pth")


def test_tensor_reaching_past_its_storage(tmp_path):
    torch = pytest.importorskip("torch")

    class Storage:
        pass

    class Tensor:  # offset 2 + 3 elements needs 5 of the storage's 4
        def __reduce__(self):
            args = (Storage(), 2, (3,), (1,), False, collections.OrderedDict())
            return torch._utils._rebuild_tensor_v2, args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    class Buffer(list):
        write = list.append

    buffer = Buffer()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    _write_torch_zip(tmp_path / "past.pth", b"".join(buffer), [("0", bytes(16))])
    with pytest.raises(ValueError, match=r"needs 5 elements of storage '0', which holds 4"):
        read_torch_checkpoint(tmp_path / "past.pth")


def test_legacy_files_read_without_torch(tmp_path, monkeypatch):
    """torch's legacy (before 1.6) format: read without torch, equal to torch.load; a
    truncated legacy file and code in its pickle are refused."""
    torch = pytest.importorskip("torch")
    state = collections.OrderedDict(
        w=torch.arange(6, dtype=torch.float32).reshape(2, 3),
        n=torch.tensor(3),
        half=torch.linspace(-1, 1, 5, dtype=torch.float16),
        bf16=torch.tensor([1.0, -2.5, 0.15625], dtype=torch.bfloat16),
        view=torch.arange(20, dtype=torch.int32).reshape(4, 5)[1:, ::2],
    )
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    expected = _reference(torch, torch.load(path, weights_only=True))
    monkeypatch.setitem(sys.modules, "torch", None)
    _assert_same(load_state_dict(path), expected)
    whole = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[:-10])
    with pytest.raises(ValueError, match=r"cut\.pth: storage .* the file is truncated"):
        read_torch_checkpoint(tmp_path / "cut.pth")
    sentinel = tmp_path / "ran"
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    evil = b"".join(pickle.dumps(part, protocol=2) for part in header)
    evil += pickle.dumps({"x": _Payload(os.system, f"touch '{sentinel}'")}, protocol=2)
    (tmp_path / "evil.pth").write_bytes(evil)
    with pytest.raises(ValueError, match=r"evil\.pth: kerasseg refuses to load"):
        read_torch_checkpoint(tmp_path / "evil.pth")
    assert not sentinel.exists()
