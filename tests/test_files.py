"""Atomic writes (kerasseg.files): a kill at any moment leaves the previous file readable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasseg import files

FILES_MODULE = Path(files.__file__)
# A writer that imports only kerasseg/files.py (no TensorFlow), so that it starts fast and
# can be killed at many moments: it rewrites `path` as JSON holding `version` and 4 MB of
# padding, over and over, and announces each finished version on stdout.
WRITER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("files", sys.argv[1])
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
path = sys.argv[2]
for version in range(1, 10**6):
    files.write_json(path, {"version": version, "padding": "x" * (4 << 20)})
    print(version, flush=True)
"""


def _version(path):
    return json.loads(Path(path).read_text())["version"]


def test_kills_at_random_moments_leave_a_complete_file(tmp_path):
    target = tmp_path / "state.json"
    rng = np.random.default_rng(0)
    last = 0
    for _ in range(20):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(FILES_MODULE), str(target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        first = int(writer.stdout.readline())  # one version is complete
        assert first >= 1
        time.sleep(rng.uniform(0.0, 0.05))  # then kill it somewhere inside another write
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
        version = _version(target)  # always complete JSON: one of the finished versions
        assert version >= 1
        last = version
    assert last >= 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
    # Killed writers leave temporary files; they are named so that they can be found.
    assert all(files.PARTIAL_MARK in name for name in leftovers), leftovers
    assert files.remove_partial_files(tmp_path) == sorted(leftovers)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "history.csv"
    files.write_text(target, "epoch\n1\n")
    with pytest.raises(RuntimeError, match="disk"):
        with files.atomic_path(target) as temporary:
            temporary.write_text("epoch\n1\n2")
            raise RuntimeError("disk went away")
    assert target.read_text() == "epoch\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]
    with pytest.raises(OSError, match="nothing was written"):
        with files.atomic_path(target):
            pass
    assert target.read_text() == "epoch\n1\n"


def test_temporary_names_keep_the_ending_keras_needs(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    seen = []
    with files.atomic_path(tmp_path / "best.keras") as temporary:
        seen.append(temporary.name)
        model.save(temporary)  # Keras refuses paths not ending in .keras
    assert seen[0].startswith(".best.partial-") and seen[0].endswith(".keras")
    files.save_weights(model, tmp_path / "x.weights.h5")
    restored = keras.saving.load_model(tmp_path / "best.keras")
    np.testing.assert_array_equal(restored.get_weights()[0], model.get_weights()[0])
    with pytest.raises(ValueError):
        files.write_json(tmp_path / "nan.json", {"loss": float("nan")})
    assert not (tmp_path / "nan.json").exists()


def test_pause_hook_announces_the_replacement(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(files.PAUSE_VARIABLE, "0.01")
    files.write_text(tmp_path / "a.md", "x")
    assert f"about to replace {tmp_path / 'a.md'}" in capsys.readouterr().err
    monkeypatch.delenv(files.PAUSE_VARIABLE)
    assert os.listdir(tmp_path) == ["a.md"]
