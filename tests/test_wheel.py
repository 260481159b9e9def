"""A wheel built from the repository carries saved_models/ and loads presets when installed."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile

import numpy as np
import pytest
from conftest import REPO
from test_registry import _write_preset

pytestmark = pytest.mark.slow


def _copy_repository(target):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


def test_wheel_installs_into_a_fresh_venv_and_loads_a_shipped_preset(tmp_path):
    source = tmp_path / "repo"
    _copy_repository(source)
    model = _write_preset(source / "saved_models", name="unet_wheel_test")
    (source / "saved_models" / "unet_wheel_test.md").write_text("# test card\n")
    x = np.random.rand(1, 16, 16, 1).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))

    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("kerasseg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for package in ("kerasseg", "kerasseg/data", "kerasseg/layers", "kerasseg/models"):
        for path in (REPO / package).glob("*.py"):
            assert f"{package}/{path.name}" in names, f"{package}/{path.name} missing from wheel"
    assert "kerasseg/saved_models/manifest.json" in names
    assert "kerasseg/data/camvid_files.json" in names
    assert "kerasseg/saved_models/unet_wheel_test.weights.h5" in names
    assert "kerasseg/saved_models/unet_wheel_test.md" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The fresh venv gets TensorFlow and Keras from this environment, kerasseg only from
    # the wheel (a path in a .pth file does not run that path's own .pth files).
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    script = textwrap.dedent(f"""
        import numpy as np, kerasseg
        assert kerasseg.__file__.startswith({str(env_dir)!r}), kerasseg.__file__
        model = kerasseg.load("unet_wheel_test")
        y = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_array_equal(y, np.load({str(tmp_path / "expected.npy")!r}))
        assert len(kerasseg.datasets.camvid_files()["files"]) == 936
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERASSEG_HOME")}
    env["KERASSEG_HOME"] = str(tmp_path / "empty-cache")  # nothing cached: the wheel's file
    result = subprocess.run(
        [str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    listing = subprocess.run(
        [str(env_dir / "bin" / "kerasseg"), "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "unet_wheel_test" in listing.stdout, listing.stderr[-2000:]
