"""`kerasseg train` on a user's own folders, tried as a hostile user would: masks in the usual
formats, runs repeated, resumed with other arguments, run twice at once, killed inside a
save, absurd numbers, and every failure as one line."""

import csv
import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg import cli, files, training
from kerasseg.inference import predict_image

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "unet", "--model-arg", "base_filters=4", "--model-arg", "depth=2"]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _write_pairs(root, count, make_mask, seed):
    """Grey 64x64 images with a bright disk, and masks `make_mask(disk)`, as PNG files."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:64, :64]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        centre, radius = rng.integers(20, 44, 2), rng.integers(8, 16)
        disk = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
        image = rng.integers(0, 80, (64, 64)).astype(np.uint8) + 150 * disk.astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{index:02d}.png")
        Image.fromarray(make_mask(disk)).save(root / "masks" / f"{index:02d}.png")
    return ["--images", str(root / "images"), "--masks", str(root / "masks")]


def _binary_255(disk):
    return (disk * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    train = _write_pairs(root / "train", 8, _binary_255, seed=0)
    val = _write_pairs(root / "val", 4, _binary_255, seed=1)
    return {"train": train, "val": ["--val-images", val[1], "--val-masks", val[3]]}


def _train(folders, out, *extra, epochs=2):
    return [
        "train",
        *TINY,
        *folders["train"],
        *folders["val"],
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        *extra,
    ]


def _snapshot(folder):
    """{relative path: (mtime_ns, sha256)} of every file under `folder`."""
    result = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, digest)
    return result


def _history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_error_line(text, command="train"):
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"kerasseg {command}: ")]
    assert errors and "Traceback" not in text, text
    return errors[-1]


# ------------------------------------------------------------------------- masks


def test_binary_0_255_masks_train_a_real_model(data_dir, tmp_path, capsys):
    """The ISBI 2012 labels are 0/255 files: the user's usual binary masks."""
    root = data_dir / "isbi2012-membrane"
    out = tmp_path / "run"
    argv = [
        "train", *TINY, "--model-arg", 'activation="sigmoid"',
        "--images", str(root / "train" / "image"), "--masks", str(root / "train" / "label"),
        "--out", str(out), "--input-size", "128", "128", "--epochs", "2",
        "--steps-per-epoch", "6", "--batch-size", "4", "--lr", "3e-3",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "masks: 25 files, values {0: 22 %, 255: 78 %}" in err
    assert "binary, value 255 taken as class 1" in err
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["class_map"] == {"0": 0, "255": 1}
    assert run["model_arguments"].get("num_classes", 1) == 1  # a sigmoid head
    # Not the perfect score of a model that only ever saw class 0.
    assert float(_history(out / "history.csv")[0]["mean_iou"]) < 0.9
    model = keras.saving.load_model(out / "final.keras")
    image = np.asarray(Image.open(root / "test" / "00.png"), np.float32)
    labels, _ = predict_image(model, image)
    # About 78 % of a slice is interior; a model that saw only class 0 predicts none of it.
    assert labels.mean() > 0.5, labels.mean()


def test_values_a_model_cannot_learn_are_refused_before_training(tmp_path, capsys):
    def with_seven(disk):
        mask = disk.astype(np.uint8)
        mask[0, 0] = 7
        return mask

    seven = _write_pairs(tmp_path / "seven", 6, with_seven, seed=2)
    out = tmp_path / "run"
    argv = ["train", *TINY, *seven, "--out", str(out), "--epochs", "1"]
    assert cli.main([*argv, "--num-classes", "2"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "{7}" in line and "00.png" in line and "--class-map 0:0,1:1,7:2" in line
    assert not out.exists()  # refused before anything was written
    assert cli.main(argv) == 2  # without a count: neither ids 0..K-1 nor a binary pair
    assert "--class-map 0:0,1:1,7:2" in _one_error_line(capsys.readouterr().err)
    # With the class map it suggests, or 7 as the ignore label, it trains.
    assert cli.main([*argv, "--ignore-label", "7"]) == 0
    assert json.loads((out / "run.json").read_text())["ignore_label"] == 7


def test_class_count_comes_from_the_masks(tmp_path, capsys):
    def three(disk):
        mask = disk.astype(np.uint8)
        mask[:8] = 2  # a third class, e.g. cars next to road
        return mask

    data = _write_pairs(tmp_path / "three", 6, three, seed=3)
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, *data, "--out", str(out), "--epochs", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["model_arguments"]["num_classes"] == 3
    assert keras.saving.load_model(out / "final.keras").output_shape[-1] == 3
    assert cli.main(["train", *TINY, *data, "--out", str(tmp_path / "r2"),
                     "--num-classes", "2"]) == 2  # fmt: skip
    assert "{2}" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------- runs


def test_a_complete_run_is_left_alone_and_more_epochs_continue(folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train(folders, out)) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert cli.main(_train(folders, out)) == 0
    captured = capsys.readouterr()
    assert "is complete (2 epochs; asked for 2); nothing to do" in captured.err
    assert "0 epoch(s) trained now" in captured.out
    assert _snapshot(out) == before
    assert cli.main(_train(folders, out, epochs=3)) == 0
    assert "resuming at epoch 3 of 3" in capsys.readouterr().err
    rows = _history(out / "history.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert json.loads((out / "run.json").read_text())["epochs"] == 3


def test_a_resume_with_other_arguments_is_refused_before_writing(folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train(folders, out, epochs=1)) == 0
    capsys.readouterr()
    before = _snapshot(out)
    changed = _train(folders, out, epochs=3)
    changed[changed.index("base_filters=4")] = "base_filters=8"
    assert cli.main(changed) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "base_filters=4" in line and "base_filters=8" in line
    assert _snapshot(out) == before
    # The Python path refuses it too, naming the argument.
    images = np.zeros((2, 32, 32, 1), "float32")
    data = tf.data.Dataset.from_tensors((images, np.zeros((2, 32, 32, 1), "int32")))
    common = dict(
        output_dir=tmp_path / "python",
        epochs=1,
        model_arguments=dict(base_filters=4, depth=2, input_shape=(None, None, 1)),
        monitor="loss",
        verbose=0,
    )
    training.train("unet", data, **common)
    before = _snapshot(tmp_path / "python")
    with pytest.raises(ValueError, match=r"resumed with these: learning_rate: 0\.001 -> 0\.01\. "):
        training.train("unet", data, learning_rate=1e-2, **dict(common, epochs=2))
    assert _snapshot(tmp_path / "python") == before


def test_second_process_is_refused_and_a_kill_inside_a_save_keeps_the_old_model(
    folders, tmp_path, capsys
):
    out = tmp_path / "run"
    assert cli.main(_train(folders, out, epochs=1)) == 0
    capsys.readouterr()
    models = {name: (out / name).read_bytes() for name in ("best.keras", "final.keras")}
    argv = [sys.executable, "-m", "kerasseg.cli", *_train(folders, out, epochs=3)]
    log = tmp_path / "second.log"
    with open(log, "w") as stream:
        second = subprocess.Popen(
            argv,
            env=_env(**{files.PAUSE_VARIABLE: ".keras:120"}),
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while "about to replace" not in log.read_text() and time.monotonic() < deadline:
            assert second.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert "about to replace" in log.read_text(), log.read_text()[-3000:]
        # While it is inside the save, a second training into the same folder is refused.
        assert cli.main(_train(folders, out, epochs=3)) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"is in use by pid {second.pid}" in line
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    for name, content in models.items():  # the previous versions, complete and loadable
        assert (out / name).read_bytes() == content, name
        keras.saving.load_model(out / name)
    # The dead process's lock is stale: the next call takes the folder over and finishes.
    assert cli.main(_train(folders, out, epochs=3)) == 0
    assert "resuming at epoch 2 of 3" in capsys.readouterr().err
    assert [row["epoch"] for row in _history(out / "history.csv")] == ["1", "2", "3"]
    assert not [p for p in out.rglob("*") if files.PARTIAL_MARK in p.name]


# ------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "flag, value", [("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--epochs", "0")]
)
def test_absurd_numbers_are_refused_up_front(folders, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_status:
        cli.main([*_train(folders, tmp_path / "run"), flag, value])
    assert exit_status.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_nan_loss_stops_with_the_epoch_and_claims_no_file(folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train(folders, out, "--lr", "1e30", epochs=3)) == 1
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "loss became nan at epoch 1 of 3, batch" in line and "no model was saved" in line
    assert "saved" not in captured.out and not (out / "best.keras").exists()
    assert not (out / "final.keras").exists() and not (out / "checkpoint").exists()


def _dataset(images, masks):
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)


def test_python_train_checks_numbers_labels_and_returns_numbers(tmp_path):
    images = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 1)).astype("float32")
    masks = (images > 0.5).astype("int32")
    arguments = dict(base_filters=4, depth=2, input_shape=(None, None, 1))
    common = dict(output_dir=tmp_path / "run", epochs=1, model_arguments=arguments, verbose=0)
    for bad in (float("nan"), -1.0, 0.0, "0.1", True):
        with pytest.raises(ValueError, match="learning_rate"):
            training.train("unet", _dataset(images, masks), learning_rate=bad, **common)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        training.train("unet", _dataset(images, masks), steps_per_epoch=0, **common)
    assert not (tmp_path / "run").exists()
    # A label 255 reaching a 2-class model stops training, although a loss would skip it.
    with pytest.raises(ValueError, match=r"a training batch holds values other .* 255"):
        training.train("unet", _dataset(images, masks * 255), monitor="loss", **common)
    with pytest.raises(training.TrainingDiverged, match=r"became nan at epoch 1 of 1, batch "):
        training.train("unet", _dataset(images, masks), monitor="loss", learning_rate=1e30,
                       **dict(common, output_dir=tmp_path / "nan"))  # fmt: skip
    run = training.train("unet", _dataset(images, masks), monitor="loss",
                         **dict(common, output_dir=tmp_path / "ok"))  # fmt: skip
    assert run.trained_epochs == 1 and run.history[0]["epoch"] == 1
    assert all(isinstance(v, float) and math.isfinite(v)
               for k, v in run.history[0].items() if k != "epoch")  # fmt: skip
    assert json.loads((tmp_path / "ok" / "best.json").read_text())["epoch"] == 1


# ------------------------------------------------------------------------- one-line errors


def test_cli_failures_are_one_line(folders, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "note.txt"
    a_file.write_text("x")
    for out, message in (
        (a_file, "is a file, not a folder"),
        (a_file / "run", "cannot create the run folder"),
    ):
        assert cli.main(_train(folders, out)) == 2
        assert message in _one_error_line(capsys.readouterr().err)

    def read_only(source, target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    monkeypatch.setattr(files.os, "replace", read_only)
    assert cli.main(_train(folders, tmp_path / "ro")) == 2
    assert os.strerror(errno.EROFS) in _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    with pytest.raises(OSError):  # --debug: the exception itself, with its traceback
        monkeypatch.setattr(files.os, "replace", read_only)
        cli.main([*_train(folders, tmp_path / "ro2"), "--debug"])
    monkeypatch.undo()
    capsys.readouterr()

    # Evaluation of masks that the model's classes do not cover.
    model = tmp_path / "binary.keras"
    assert cli.main(_train(folders, tmp_path / "m", epochs=1)) == 0
    (tmp_path / "m" / "final.keras").rename(model)

    def three(disk):
        mask = disk.astype(np.uint8)
        mask[:4] = 2
        return mask

    data = _write_pairs(tmp_path / "three", 2, three, seed=4)
    capsys.readouterr()
    argv = ["evaluate", "--model", str(model), *data, "--out", str(tmp_path / "report")]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert "{2}" in line and "2-class model" in line
    # 0/255 masks against a binary model are understood as in training.
    assert cli.main(["evaluate", "--model", str(model), *folders["train"],
                     "--out", str(tmp_path / "report")]) == 0  # fmt: skip
    assert "255 taken as class 1" in capsys.readouterr().err
