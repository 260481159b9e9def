import functools
import http.server
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch._dynamo (imported by transformers) imports triton where it is installed, and triton
# crashes a process that already holds TensorFlow. Torch on the CPU needs no triton, so its
# import is made to fail cleanly instead, for every test module.
sys.modules.setdefault("triton", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The torchvision-reference fixture scripts double as importable modules (their numpy-only
# input and weight generators): `import make_ops_reference`, `import reference_weights`.
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "maskrcnn"))
DATA = Path(os.environ.get("KERASSEG_DATA", REPO.parent / "shared" / "data"))


def randomise_batch_norm(model, seed=0):
    """Moving statistics far from (0, 1), so a training-mode BatchNorm would show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))


def grey_image(height, width, seed):
    """A (height, width) uint8 nuclei image of `kerasseg.samples`."""
    from kerasseg import samples

    image, _ = samples.nuclei(size=max(height, width), seed=seed)
    return np.ascontiguousarray(image[:height, :width])


def rgb_image(height, width, seed):
    """A (height, width, 3) uint8 shapes image of `kerasseg.samples`."""
    from kerasseg import samples

    image, _ = samples.shapes(size=max(height, width), seed=seed)
    return np.ascontiguousarray(image[:height, :width])


def instance_elements(elements):
    """A `tf.data.Dataset` of (image, targets) pairs for `kerasseg.data.instance_dataset`,
    from a list of (float32 (H, W, 3) image, {"boxes", "class_ids", "masks"}) tuples."""
    import tensorflow as tf

    spec = (
        tf.TensorSpec([None, None, 3], tf.float32),
        {
            "boxes": tf.TensorSpec([None, 4], tf.float32),
            "class_ids": tf.TensorSpec([None], tf.int32),
            "masks": tf.TensorSpec([None, None, None], tf.uint8),
        },
    )
    return tf.data.Dataset.from_generator(lambda: iter(elements), output_signature=spec)


def pytest_sessionfinish(session, exitstatus):
    # A run that collected nothing must never look green.
    if session.testscollected == 0:
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def data_dir():
    """../shared/data; skipped when missing, failed in CI (KERASSEG_REQUIRE_DATA=1)."""
    if not DATA.is_dir():
        message = f"real data sets not found at {DATA} (set KERASSEG_DATA)"
        if os.environ.get("KERASSEG_REQUIRE_DATA") == "1":
            pytest.fail(message + " and KERASSEG_REQUIRE_DATA=1")
        pytest.skip(message)
    return DATA


def run_torch_script(script, work, *args):
    """Run the torch side of a torchvision comparison in a child process.

    torchvision's native ops crash in a process that already holds TensorFlow, so `script`
    (Python source; it may `import torch_reference`, tests/fixtures/torch_reference.py) runs
    as `python run_torchvision.py WORK ARGS...` with `work` as its folder, and writes its
    results to `work / "torchvision.npz"`, which is returned as a dict. Skips when torch or
    torchvision (test extra `parity`) is missing.
    """
    import importlib.util
    import subprocess
    import textwrap

    for package in ("torch", "torchvision"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} (test extra `parity`) is not installed")
    path = Path(work) / "run_torchvision.py"
    path.write_text(textwrap.dedent(script))
    fixtures = str(Path(__file__).resolve().parent / "fixtures")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [fixtures, os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(
        [sys.executable, str(path), str(work), *map(str, args)],
        check=True,
        capture_output=True,
        timeout=600,
        env=env,
    )
    return dict(np.load(Path(work) / "torchvision.npz"))


class LocalFileServer:
    """An HTTP server on 127.0.0.1 for the files of the folder `root`, in a daemon thread,
    for the download tests (no network in tests): `url` is its address, `hits` counts the
    requests per path, and the paths in `truncate` are sent half, with the full
    Content-Length (a transfer that breaks off). `httpd.shutdown()` stops it."""

    def __init__(self, root):
        self.hits, self.truncate = {}, set()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in server.truncate:
                    data = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def relative_error(ours, theirs):
    """max |ours - theirs| / max |theirs|: the parity measure of the reference comparisons."""
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def argmax_agreement(ours, theirs):
    """The share of pixels whose highest-scoring class is the same in both."""
    return float(np.mean(np.argmax(ours, -1) == np.argmax(theirs, -1)))
