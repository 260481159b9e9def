"""TF-Serving export speed: SavedModels from `kerasseg.export.export` vs in-process Keras.

Usage: python benchmarks/export_serving.py [--size 512] [--repeats 5] [--warmups 2]
           [--batch 4] [--base-filters N] [--sequential] [--json PATH] [--quick]

Model: `kerasseg.load("unet", input_shape=(None, None, 3), num_classes=3)` with random
weights (the original U-Net, 64 base filters, 31 M parameters, unless --base-filters),
exported with `kerasseg.export.export(model, tmp, preprocessing="unit", probabilities=True)`
in float32 and with `compute_dtype="bfloat16"`. `probabilities=True` only adds an output
(the softmax is computed anyway) and lets the script check agreement before timing.

Inputs: deterministic synthetic RGB images (smooth Gaussian blobs plus noise, seeded numpy
RNG, uint8), `size` x `size`; the same pixel values as float32 0..255 for the tensor paths and
as PNG bytes (Pillow, encoded once, outside the timing) for `serving_default`.

Paths, each timed as the median of `repeats` calls after `warmups` calls (the calls of all
paths interleaved round-robin, so that other jobs on a shared machine slow every path alike;
`--sequential` times one path after the other with `timing.median_ms`):
* Keras `model.predict(images / 255, verbose=0)` + numpy argmax (what a user would write
  without an export), and the same with `model.predict_on_batch`;
* the SavedModel loaded with `tf.saved_model.load`, `signatures["serve_tensor"]` (float32
  images 0..255 in; mask and probabilities read back with `.numpy()`) and
  `signatures["serving_default"]` (PNG bytes in: decode, the model per image, mask PNG
  encode; mask and `mask_png_bytes` read back);
* the bfloat16 export's `serve_tensor` (batch 1 only: bfloat16 is slow on this CPU);
* for scale, the PNG work alone: `tf.io.decode_png` of the inputs + `tf.io.encode_png` of
  masks of the same size.
Latency is batch 1 (ms per call), throughput batch `batch` (images per second). Before
timing, the batch-1 outputs are checked: exported probabilities vs softmax(predict), masks of
every path, `mask_png_bytes` decoded, and bfloat16 vs float32 (max |prob diff|, % of mask
pixels equal). "cores used" (process CPU time / wall time) flags contention: a 2-core machine
running nothing else gives about 2 on the model rows.

If `compute_dtype="bfloat16"` fails, the script says so and measures bfloat16 with the model
rebuilt under the global "mixed_bfloat16" policy (its "output" layer stays float32), weights
copied, exported in float32 mode.
"""

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from timing import cpu_seconds, interleaved, median_ms  # noqa: E402

import kerasseg  # noqa: E402
import kerasseg.export  # noqa: E402

NUM_CLASSES = 3


def synthetic_images(count, size, seed):
    """`count` uint8 RGB images: a few smooth coloured blobs on a gradient, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        image = 40 + 60 * (
            xx[..., None] * rng.uniform(0, 1, 3) + yy[..., None] * rng.uniform(0, 1, 3)
        )
        for _ in range(6):
            cy, cx = rng.uniform(0, 1, 2)
            sigma = rng.uniform(0.05, 0.2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            image += blob[..., None] * rng.uniform(-120, 160, 3)
        image += rng.normal(0, 8, image.shape)
        images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return np.stack(images)


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def build_model(base_filters, policy=None):
    kwargs = {} if base_filters is None else {"base_filters": base_filters}
    if policy is None:
        return kerasseg.load("unet", input_shape=(None, None, 3), num_classes=NUM_CLASSES, **kwargs)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        return kerasseg.load("unet", input_shape=(None, None, 3), num_classes=NUM_CLASSES, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def export_bfloat16(model, directory, base_filters):
    """The bfloat16 SavedModel, and how it was made (compute_dtype, or the policy fallback)."""
    try:
        path = kerasseg.export.export(
            model,
            directory / "bf16",
            preprocessing="unit",
            probabilities=True,
            compute_dtype="bfloat16",
        )
        return path, 'export(compute_dtype="bfloat16")', None
    except Exception as error:  # noqa: BLE001 - report any failure, then fall back
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][-200:]}"
        print(f"NOTE: export(compute_dtype='bfloat16') failed: {message}")
        print("      falling back to a copy built under the 'mixed_bfloat16' global policy.")
    copy = build_model(base_filters, policy="mixed_bfloat16")
    copy.set_weights(model.get_weights())
    path = kerasseg.export.export(
        copy, directory / "bf16-policy", preprocessing="unit", probabilities=True
    )
    return path, "model built under mixed_bfloat16 policy, exported as float32", message


def measure(fns, repeats, warmups, sequential=False):
    """{name: (median ms per call, CPU cores used)} for the callables `fns` (name -> fn).

    Each fn is called `warmups` times, then timed `repeats` times. By default the calls are
    interleaved (round-robin, starting one further along each round), so that load from other
    jobs on a shared machine falls on every path alike; `sequential` times one path after the
    other with `timing.median_ms`, as the other scripts do. Cores used = process CPU time /
    wall time over a path's timed calls: about 2 for the model rows on an idle 2-core machine,
    less when another job took CPU time.
    """
    names = list(fns)
    if sequential:
        results = {}
        for name in names:
            for _ in range(warmups - 1):
                fns[name]()
            wall, cpu = time.perf_counter(), cpu_seconds()
            ms = median_ms(fns[name], repeats)  # makes the last warm-up call itself
            results[name] = (ms, (cpu_seconds() - cpu) / (time.perf_counter() - wall))
        return results
    return {
        name: (ms, cores) for name, (ms, cores, _) in interleaved(fns, repeats, warmups).items()
    }


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def check_agreement(model, image, tensor32, bytes32, tensor16):
    """Agreement of the paths' batch-1 outputs with Keras `predict` and with each other."""
    logits = model.predict(image / 255.0, verbose=0)
    probs32, probs16 = tensor32["probabilities"], tensor16["probabilities"]
    png_mask = np.asarray(Image.open(io.BytesIO(bytes32["png"][0])))
    return {
        "serve_tensor f32 vs predict, max |prob diff|": float(
            np.abs(probs32 - softmax(logits)).max()
        ),
        "serve_tensor f32 vs predict, mask pixels equal %": float(
            100 * np.mean(tensor32["mask"] == logits.argmax(-1))
        ),
        "serving_default vs serve_tensor f32, mask pixels equal %": float(
            100 * np.mean(bytes32["mask"] == tensor32["mask"])
        ),
        "mask_png_bytes decodes to mask": bool(np.array_equal(png_mask, bytes32["mask"][0])),
        "bfloat16 vs float32 export, max |prob diff|": float(np.abs(probs16 - probs32).max()),
        "bfloat16 vs float32 export, mean |prob diff|": float(np.abs(probs16 - probs32).mean()),
        "bfloat16 vs float32 export, mask pixels equal %": float(
            100 * np.mean(tensor16["mask"] == tensor32["mask"])
        ),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="batch size for throughput")
    parser.add_argument("--base-filters", type=int, default=None, help="default: 64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--sequential", action="store_true", help="time the paths one after another"
    )
    parser.add_argument("--quick", action="store_true", help="64x64, 2 repeats, 4 filters")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.base_filters = 64, 2, args.base_filters or 4
    if args.warmups < 2:
        parser.error("--warmups must be >= 2 (the first call traces and compiles)")
    started = time.perf_counter()

    images = synthetic_images(args.batch, args.size, args.seed)
    floats = images.astype(np.float32)
    encoded = [png_bytes(image) for image in images]
    model = build_model(args.base_filters)
    base_filters = 64 if args.base_filters is None else args.base_filters
    print(
        f"cpus: {os.cpu_count()}  {platform.processor() or platform.machine()}  "
        f"tensorflow {tf.__version__}  keras {keras.__version__}"
    )
    print(
        f"model: unet, base_filters={base_filters}, {model.count_params():,} parameters, "
        f"{NUM_CLASSES} classes; images {args.size}x{args.size} RGB "
        f"(PNG {np.mean([len(b) for b in encoded]) / 1024:.0f} KiB each); "
        f"median of {args.repeats} after {args.warmups} warm-ups; throughput at batch {args.batch}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f32_path = kerasseg.export.export(
            model, tmp / "f32", preprocessing="unit", probabilities=True
        )
        bf16_path, bf16_mode, bf16_error = export_bfloat16(model, tmp, args.base_filters)
        f32 = tf.saved_model.load(str(f32_path))
        bf16 = tf.saved_model.load(str(bf16_path))

        def predict(n):
            return lambda: model.predict(floats[:n] / 255.0, verbose=0).argmax(-1)

        def predict_on_batch(n):
            return lambda: np.asarray(model.predict_on_batch(floats[:n] / 255.0)).argmax(-1)

        def serve_tensor(loaded, n):
            signature = loaded.signatures["serve_tensor"]

            def call():
                out = signature(images=tf.constant(floats[:n]))
                return {k: v.numpy() for k, v in out.items() if k in ("mask", "probabilities")}

            return call

        def serving_default(n):
            signature = f32.signatures["serving_default"]

            def call():
                out = signature(image_bytes=tf.constant(encoded[:n]))
                return {"mask": out["mask"].numpy(), "png": out["mask_png_bytes"].numpy()}

            return call

        masks = [np.zeros((args.size, args.size, 1), np.uint8) for _ in range(args.batch)]

        def png_only(n):
            @tf.function
            def work(contents, masks):
                decoded = tf.map_fn(
                    tf.io.decode_png, contents, fn_output_signature=tf.TensorSpec(None, tf.uint8)
                )
                out = tf.map_fn(
                    tf.io.encode_png, masks, fn_output_signature=tf.TensorSpec([], tf.string)
                )
                return decoded, out

            contents, batch_masks = tf.constant(encoded[:n]), tf.constant(np.stack(masks[:n]))
            return lambda: [t.numpy() for t in work(contents, batch_masks)]

        paths = [
            ("Keras `model.predict` + argmax (in-process)", predict, True),
            ("Keras `model.predict_on_batch` + argmax (in-process)", predict_on_batch, True),
            ("SavedModel `serve_tensor`, float32", lambda n: serve_tensor(f32, n), True),
            (
                "SavedModel `serving_default` (PNG in, PNG out), float32",
                serving_default,
                True,
            ),
            ("SavedModel `serve_tensor`, bfloat16", lambda n: serve_tensor(bf16, n), False),
            ("PNG decode + mask PNG encode alone (`tf.io`)", png_only, True),
        ]
        throughput = {name for name, _, batched in paths if batched}
        latency_fns = {name: make(1) for name, make, _ in paths}
        # The first warm-up call of each batch-1 path gives the outputs checked here.
        first = {name: fn() for name, fn in latency_fns.items()}
        agreement = check_agreement(model, floats[:1], *(first[name] for name, _, _ in paths[2:5]))
        print("agreement (batch-1 outputs of the first calls):")
        for key, value in agreement.items():
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
        latency = measure(latency_fns, args.repeats, args.warmups - 1, args.sequential)
        batch_fns = {name: make(args.batch) for name, make, _ in paths if name in throughput}
        batched = measure(batch_fns, args.repeats, args.warmups, args.sequential)

    rows = []
    for name, _, _ in paths:
        ms, cores = latency[name]
        rate, cores_batch = None, None
        if name in batched:
            rate = args.batch / batched[name][0] * 1000
            cores_batch = batched[name][1]
        rows.append(
            {
                "path": name,
                "latency_ms": ms,
                "images_per_s": rate,
                "cores_used": [cores, cores_batch],
            }
        )

    base = rows[0]
    print()
    print(
        f"| path | batch 1, ms | vs predict | batch {args.batch}, images/s | time vs predict "
        "| cores used (1 / batch) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = row["latency_ms"] / base["latency_ms"]
        rate = row["images_per_s"]
        rate_text = "-" if rate is None else f"{rate:.2f}"
        ratio_b = "-" if rate is None else f"{base['images_per_s'] / rate:.2f}x"
        cores = " / ".join("-" if c is None else f"{c:.2f}" for c in row["cores_used"])
        print(
            f"| {row['path']} | {row['latency_ms']:.1f} | {ratio:.2f}x | {rate_text} | {ratio_b} "
            f"| {cores} |"
        )
        row["latency_vs_predict"] = ratio
        row["time_vs_predict_batch"] = None if rate is None else base["images_per_s"] / rate
    bf16_ratio = rows[4]["latency_ms"] / rows[2]["latency_ms"]
    print()
    print(f"bfloat16 ({bf16_mode}): batch-1 latency {bf16_ratio:.2f}x float32's")
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.0f} s")

    if args.json:
        result = {
            "settings": {
                "size": args.size,
                "repeats": args.repeats,
                "warmups": args.warmups,
                "batch": args.batch,
                "base_filters": base_filters,
                "parameters": int(model.count_params()),
                "cpus": os.cpu_count(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "bfloat16_mode": bf16_mode,
                "bfloat16_export_error": bf16_error,
                "timing": "sequential" if args.sequential else "interleaved",
            },
            "rows": rows,
            "bfloat16_latency_vs_float32": bf16_ratio,
            "agreement": agreement,
            "seconds": elapsed,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
