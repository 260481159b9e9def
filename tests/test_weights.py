import hashlib
import http.server
import re
import threading
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg import registry, weights
from kerasseg.weights import WeightsInfo


def _tiny_unet(**kwargs):
    return kerasseg.load("unet", base_filters=4, depth=2, input_shape=(None, None, 1), **kwargs)


@pytest.fixture
def weights_file(tmp_path):
    model = _tiny_unet()
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    return model, path


class _Server:
    """Serves files from a folder on 127.0.0.1; `truncate` cuts bodies short."""

    def __init__(self, root):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                server.requests += 1
                if server.truncate_to is None:
                    return super().do_GET()
                body = (Path(root) / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))  # promises the whole file
                self.end_headers()
                self.wfile.write(body[: server.truncate_to])

        self.requests = 0
        self.truncate_to = None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, weights_file, monkeypatch):
    model, path = weights_file
    root = tmp_path / "www"
    root.mkdir()
    (root / "tiny.weights.h5").write_bytes(path.read_bytes())
    server = _Server(root)
    home = tmp_path / "home"
    monkeypatch.setenv("KERASSEG_HOME", str(home))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urllib caches proxies in it
    data = path.read_bytes()
    info = WeightsInfo(
        name="tiny",
        file_name="tiny.weights.h5",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        url=f"{server.url}/tiny.weights.h5",
    )
    registry.register_model(
        "tiny_unet_test",
        lambda: _tiny_unet(),
        task="semantic",
        description="test",
        weights=[info],
        architecture="unet",
        default_weights="tiny",
        overwrite=True,
    )
    yield model, info, server, root, home
    server.close()
    registry._REGISTRY.pop("tiny_unet_test", None)


def test_download_once_verified_then_cached(served):
    model, info, server, _, home = served
    x = np.random.rand(1, 16, 16, 1).astype("float32")
    loaded = kerasseg.load("tiny_unet_test")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert (home / "weights" / "tiny.weights.h5").is_file()
    kerasseg.load("tiny_unet_test")
    assert server.requests == 1  # second load used the cache


def test_corrupted_download_is_rejected_and_deleted(served):
    _, info, server, root, home = served
    data = bytearray((root / "tiny.weights.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "tiny.weights.h5").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted or truncated.*deleted.*place it at"):
        kerasseg.load("tiny_unet_test")
    assert not (home / "weights" / "tiny.weights.h5").exists()


def test_truncated_download_is_rejected(served):
    _, info, server, _, home = served
    server.truncate_to = info.size // 2
    with pytest.raises((OSError, ValueError), match="place it at"):
        kerasseg.load("tiny_unet_test")
    assert not (home / "weights" / "tiny.weights.h5").exists()


def test_truncated_file_with_matching_length_header_fails_hash(served):
    _, info, server, root, home = served
    data = (root / "tiny.weights.h5").read_bytes()
    (root / "tiny.weights.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        kerasseg.load("tiny_unet_test")
    assert not (home / "weights" / "tiny.weights.h5").exists()


def test_longer_download_is_rejected_without_reading_it_all(served):
    _, info, server, root, home = served
    data = (root / "tiny.weights.h5").read_bytes()
    (root / "tiny.weights.h5").write_bytes(data + bytes(1 << 20))  # 1 MiB of trailing zeros
    with pytest.raises(ValueError, match=r"corrupted or truncated \(\d+ bytes of \d+") as error:
        kerasseg.load("tiny_unet_test")
    received = int(re.search(r"\((\d+) bytes of", str(error.value)).group(1))
    assert info.size < received < info.size + (1 << 20)  # stopped soon after the expected size
    assert not (home / "weights" / "tiny.weights.h5").exists()


def test_corrupted_cache_is_replaced(served):
    model, info, server, _, home = served
    cached = home / "weights" / "tiny.weights.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not weights")
    kerasseg.load("tiny_unet_test")
    assert weights.sha256_of(cached) == info.sha256 and server.requests == 1


def test_unreachable_server_says_where_to_put_the_file(served):
    _, info, server, _, home = served
    server.close()
    with pytest.raises(OSError, match=rf"could not download.*place it at {home}"):
        kerasseg.load("tiny_unet_test")


def test_named_weights_without_url_or_file():
    info = WeightsInfo(name="x", file_name="absent.weights.h5", sha256="0" * 64, size=1)
    with pytest.raises(OSError, match="not shipped.*place it at"):
        weights.fetch(info)


def test_shipped_file_with_wrong_hash_is_never_loaded(monkeypatch, tmp_path, weights_file):
    _, path = weights_file
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "tiny.weights.h5").write_bytes(path.read_bytes())
    monkeypatch.setattr(weights, "packaged_dir", lambda: shipped)
    info = WeightsInfo(
        name="tiny", file_name="tiny.weights.h5", sha256="0" * 64, size=path.stat().st_size
    )
    with pytest.raises(ValueError, match="does not match its sha256"):
        weights.fetch(info)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("KERASSEG_HOME", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert weights.home_dir() == tmp_path / "kerasseg"
    monkeypatch.setenv("KERASSEG_HOME", str(tmp_path / "elsewhere"))
    assert weights.home_dir() == tmp_path / "elsewhere"


def test_weights_path_round_trip(weights_file):
    model, path = weights_file
    x = np.random.rand(1, 16, 16, 1).astype("float32")
    loaded = _tiny_unet(weights=str(path))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_keras_file_as_weights(tmp_path):
    model = _tiny_unet()
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.rand(1, 16, 16, 1).astype("float32")
    loaded = _tiny_unet(weights=path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mismatching_weights_file(weights_file, tmp_path):
    _, path = weights_file
    with pytest.raises(ValueError, match=r"`weights`: .* does not fit model"):
        kerasseg.load(
            "unet", base_filters=8, depth=2, input_shape=(None, None, 1), weights=str(path)
        )
    keras_path = tmp_path / "other.keras"
    kerasseg.load("unet", base_filters=8, depth=2).save(keras_path)
    with pytest.raises(ValueError, match=r"`weights`: .* do not fit model"):
        _tiny_unet(weights=keras_path)


def test_weights_saved_with_optimizer_state(tmp_path):
    """`save_weights` of a compiled, trained model adds the optimizer's arrays; they are
    not part of the model, so the file loads as Keras's own `load_weights` loads it."""
    import h5py

    model = _tiny_unet(num_classes=1, activation="sigmoid")
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16, 1), dtype=np.float32)
    model.fit(x, (x > 0.5).astype("float32"), epochs=1, verbose=0)
    path = tmp_path / "trained.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r") as f:
        assert weights.OPTIMIZER_GROUP in f
    reference = _tiny_unet(num_classes=1, activation="sigmoid")
    reference.load_weights(path)
    loaded = _tiny_unet(num_classes=1, activation="sigmoid", weights=str(path))
    for got, expected in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    half = weights.save_weights_float16(model, tmp_path / "half.weights.h5")
    with h5py.File(half, "r") as f:
        assert weights.OPTIMIZER_GROUP not in f
    np.testing.assert_allclose(
        _tiny_unet(num_classes=1, activation="sigmoid", weights=str(half)).predict(x, verbose=0),
        model.predict(x, verbose=0),
        atol=1e-2,
    )


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".h5", ".npz"])
def test_unsupported_weights_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle: must never be opened
    with pytest.raises(ValueError, match=r"`weights`.*\.weights\.h5 or \.keras"):
        _tiny_unet(weights=str(path))


def test_unreadable_weights_files(tmp_path):
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="`weights`"):
        _tiny_unet(weights=str(corrupt))
    not_zip = tmp_path / "corrupt.keras"
    not_zip.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable .keras archive"):
        _tiny_unet(weights=str(not_zip))
    with pytest.raises(FileNotFoundError, match="no such file"):
        _tiny_unet(weights=str(tmp_path / "missing.weights.h5"))


def test_keras_file_with_lambda_is_refused(tmp_path):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="contains a Lambda layer"):
        _tiny_unet(weights=str(path))


def test_unknown_named_weights():
    with pytest.raises(ValueError, match=r"`weights`: 'imagenet' is neither a named weights"):
        kerasseg.load("unet", weights="imagenet")


def test_float16_storage_loads_as_float32(weights_file, tmp_path):
    import h5py

    model, _ = weights_file
    half = weights.save_weights_float16(model, tmp_path / "half.weights.h5")
    stored = []
    with h5py.File(half, "r") as f:
        f.visititems(lambda _, o: stored.append(o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert len(stored) == len(model.weights) and set(stored) == {np.dtype(np.float16)}
    reloaded = kerasseg.load(
        "unet", base_filters=4, depth=2, input_shape=(None, None, 1), weights=str(half)
    )
    assert all(w.dtype == "float32" for w in reloaded.weights)
    for got, stored in zip(reloaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, stored.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match=r"`path` must end in \.weights\.h5"):
        weights.save_weights_float16(model, tmp_path / "half.h5")
