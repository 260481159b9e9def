"""Tiled prediction of large images: time, peak memory, and the blending against MONAI's.

    python benchmarks/tiled.py            # the table of benchmarks/README.md (about 5 min)
    python benchmarks/tiled.py --quick    # 1024 and 2048 only, one repeat: a smoke test

A small random-weight U-Net (depth 3, 8 base filters, 1 input channel, 1 sigmoid output;
total stride 8) predicts synthetic uint8 images (a cell-like texture with noise) of 2048,
4096 and 8192 pixels a side, by tiles of 512 with overlap 0.25 and batches of 4
(`kerasseg.inference.tiling.predict_tiled`) and, where it fits, whole
(`kerasseg.inference.predict_image`). Every case runs in a fresh Python process, so its peak
resident memory (`ru_maxrss`) is its own; the tiled rows are timed after one warm-up window
batch (the compiled function is traced once per window shape), the whole-image rows after a
full warm-up call at the same size.

The blending is then timed on its own with an identity model on a 4096x4096 image: ours (a
callable returning its input) against MONAI's `sliding_window_inference` with a torch
identity, for the same tile, overlap and batch; both must give the image back. MONAI runs in a
process without TensorFlow. Without MONAI (`pip install monai`) its rows are skipped.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

TILE, OVERLAP, BATCH = 512, 0.25, 4
WHOLE_LIMIT_BYTES = 12 * 1024**3  # whole-image prediction is skipped above this estimate

__all__ = ["main", "synthetic_image"]


def synthetic_image(size, seed=0):
    """A (size, size) uint8 cell-like texture with noise, built band by band (no float copy
    of the whole image)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = np.empty((size, size), np.uint8)
    x = np.arange(size, dtype=np.float32)[None, :]
    for top in range(0, size, 512):
        y = np.arange(top, min(top + 512, size), dtype=np.float32)[:, None]
        cells = np.sin(x / 11 + 3 * np.sin(y / 37)) * np.cos(y / 13 + 2 * np.sin(x / 29))
        noise = rng.normal(0, 20, (y.shape[0], size)).astype(np.float32)
        image[top : top + y.shape[0]] = np.clip(128 + 80 * cells + noise, 0, 255)
    return image


def _peak_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _small_unet():
    import keras

    import kerasseg

    keras.utils.set_random_seed(0)
    return kerasseg.load(
        "unet", input_shape=(None, None, 1), num_classes=1, depth=3, base_filters=8
    )


def _time(function, repeats):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _child_model(kind, size, repeats):
    """Tiled ("tiled", "tiled_labels") or whole-image ("whole") prediction of the U-Net."""
    from kerasseg.inference import predict_image
    from kerasseg.inference.tiling import predict_tiled, window_count

    model = _small_unet()
    image = synthetic_image(size)
    setup = _peak_mb()
    if kind == "whole":
        predict_image(model, image)  # traces the function for this size
        seconds = _time(lambda: predict_image(model, image), repeats)
        windows = 1
    else:
        keep = kind == "tiled"
        arguments = dict(tile=TILE, overlap=OVERLAP, batch_size=BATCH, keep_probabilities=keep)
        predict_tiled(model, image[:TILE, :TILE], **arguments)  # traces the window batch
        seconds = _time(lambda: predict_tiled(model, image, **arguments), repeats)
        windows = window_count(size, size, model, tile=TILE, overlap=OVERLAP)
    return dict(seconds=seconds, windows=windows, setup_mb=setup, peak_mb=_peak_mb())


class _Identity:
    """A model that returns its input (the blending alone is timed)."""

    size_divisor = 1

    def __call__(self, images):
        return images


def _child_identity(blend, size, repeats):
    import numpy as np

    from kerasseg.inference.tiling import tiled_probability_bands, window_count

    image = synthetic_image(size)
    setup = _peak_mb()
    output = np.empty((size, size, 1), np.float32)

    def run():
        bands = tiled_probability_bands(
            _Identity(), image, tile=TILE, overlap=OVERLAP, batch_size=BATCH, blend=blend
        )
        for top, bottom, band in bands:
            output[top:bottom] = band

    seconds = _time(run, repeats)
    error = float(np.abs(output[..., 0] - image).max())
    windows = window_count(size, size, tile=TILE, overlap=OVERLAP)
    return dict(seconds=seconds, windows=windows, setup_mb=setup, peak_mb=_peak_mb(), error=error)


def _child_monai(mode, size, repeats):
    sys.modules["tensorflow"] = None  # MONAI imports TensorFlow only for optional features
    import numpy as np
    import torch
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import sliding_window_inference

    torch.set_num_threads(os.cpu_count())
    image = torch.from_numpy(synthetic_image(size).astype(np.float32))[None, None]
    setup = _peak_mb()
    result = {}

    def run():
        with torch.no_grad():
            result["output"] = sliding_window_inference(
                image, TILE, BATCH, lambda x: x, OVERLAP, mode
            )

    seconds = _time(run, repeats)
    error = float((result["output"] - image).abs().max())
    interval = int(TILE * (1 - OVERLAP))  # MONAI's scan interval rule
    windows = len(dense_patch_slices((size, size), (TILE, TILE), (interval, interval)))
    return dict(seconds=seconds, windows=windows, setup_mb=setup, peak_mb=_peak_mb(), error=error)


def _run(kind, size, repeats):
    """Runs one case in a fresh process; returns its dict of figures."""
    command = [sys.executable, __file__, "--child", kind, str(size), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"case {kind} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _has_monai():
    import importlib.util

    return importlib.util.find_spec("monai") is not None


def _model_table(sizes, repeats):
    rows = []
    whole_peak = {}
    for size in sizes:
        cases = [("tiled", f"tiled {TILE}, overlap {OVERLAP}, batch {BATCH}")]
        if size == sizes[-1]:
            cases.append(("tiled_labels", "tiled, labels only (`keep_probabilities=False`)"))
        cases.append(("whole", "whole image (`predict_image`)"))
        for kind, label in cases:
            if kind == "whole" and size // 2 in whole_peak:
                estimate = 4 * whole_peak[size // 2] * 1024**2
                if estimate > WHOLE_LIMIT_BYTES:
                    rows.append(
                        f"| {size}x{size} | {label} | - | skipped: about "
                        f"{estimate / 1024**3:.0f} GB (4x the {size // 2} peak) | - | - | - |"
                    )
                    continue
            figures = _run(kind, size, repeats if size < 8192 else max(1, repeats - 1))
            if kind == "whole":
                whole_peak[size] = figures["peak_mb"]
            megapixels = size * size / 1e6
            rows.append(
                f"| {size}x{size} | {label} | {figures['windows']} | {figures['seconds']:.2f} | "
                f"{figures['seconds'] / megapixels:.3f} | {figures['peak_mb']:.0f} | "
                f"{figures['peak_mb'] - figures['setup_mb']:.0f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)  # progress
    header = (
        "| image | prediction | windows | median s | s / megapixel | peak RSS MB | "
        "peak above setup MB |\n|---|---|---|---|---|---|---|"
    )
    return "\n".join([header, *rows])


def _blend_table(size, repeats):
    cases = [
        ("identity_" + blend, f"kerasseg, {blend}") for blend in ("cosine", "gaussian", "constant")
    ]
    if _has_monai():
        cases += [("monai_constant", "MONAI, constant"), ("monai_gaussian", "MONAI, gaussian")]
    figures = {kind: _run(kind, size, repeats) for kind, _ in cases}
    reference = figures.get("monai_gaussian", figures[cases[0][0]])["seconds"]
    rows = [
        f"| {label} | {figures[kind]['windows']} | {figures[kind]['seconds']:.2f} | "
        f"{figures[kind]['seconds'] / reference:.2f}x | {figures[kind]['peak_mb']:.0f} | "
        f"{figures[kind]['peak_mb'] - figures[kind]['setup_mb']:.0f} | "
        f"{figures[kind]['error']:.1e} |"
        for kind, label in cases
    ]
    header = (
        f"| blending of an identity model, {size}x{size} | windows | median s | "
        f"vs {'MONAI gaussian' if _has_monai() else cases[0][1]} | peak RSS MB | "
        "peak above setup MB | max abs error |\n|---|---|---|---|---|---|---|"
    )
    note = "" if _has_monai() else "\nMONAI is not installed (`pip install monai`): no MONAI rows."
    return "\n".join([header, *rows]) + note


def _child(kind, size, repeats):
    if kind.startswith("identity_"):
        figures = _child_identity(kind.removeprefix("identity_"), size, repeats)
    elif kind.startswith("monai_"):
        figures = _child_monai(kind.removeprefix("monai_"), size, repeats)
    else:
        figures = _child_model(kind, size, repeats)
    print(json.dumps(figures))


def _load():
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 and 2048, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument(
        "--blend-repeats", type=int, default=7, help="timed runs per identity-blending case"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, size, repeats = args.child
        return _child(kind, int(size), int(repeats))
    sizes = (1024, 2048) if args.quick else (2048, 4096, 8192)
    repeats = 1 if args.quick else args.repeats
    start = time.perf_counter()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {_load()} at the start",
        flush=True,
    )
    print(_model_table(sizes, repeats), flush=True)
    print()
    blend_repeats = 1 if args.quick else args.blend_repeats
    print(_blend_table(sizes[-1] if args.quick else 4096, blend_repeats), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s in all; load average {_load()} at the end")


if __name__ == "__main__":
    main()
