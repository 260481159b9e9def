"""Encoder-decoder inference speed and parameter counts: kerasseg vs segmodels-keras.

Usage: python benchmarks/architectures.py [--height 360] [--width 480] [--batch 8]
           [--repeats 5] [--warmups 2] [--architectures unet,fpn,...]
           [--encoders resnet50,mobilenet_v2] [--precisions float32,xla,bfloat16]
           [--variants segformer=b0] [--json PATH] [--quick]

Models: every semantic encoder-decoder architecture registered in kerasseg when the script
runs (`kerasseg.list_models(task="semantic")`, architectures whose builder takes an `encoder`,
or a `variant`-like argument for those with their own encoder such as SegFormer's MiT), unless
`--architectures` names them; each on every encoder of `--encoders` (keras.applications
names as kerasseg spells them). Built with `kerasseg.load(name, weights=None, encoder=...,
encoder_weights=None, num_classes=12, input_shape=(H, W, 3))`: random weights, logits out,
defaults otherwise. The peer is segmodels-keras (`pip install segmodels-keras`, the Keras 3
fork of qubvel's segmentation_models: Unet, FPN, Linknet, PSPNet), built on the same
encoder (`encoder_weights=None, classes=12, activation="linear"`, its defaults otherwise).
A missing segmodels-keras leaves the peer columns empty.

Sizes: every model gets the same fixed input shape as its peer. Where the requested size does
not fit a network (kerasseg's `model.size_divisor`: 32 for the U-Net, FPN and LinkNet on these
encoders; segmodels: 32, and 48 = 6 x 8 for its PSPNet), both get the nearest size that fits
both (ties go up), shown in the `input` column and marked with `*`.

Paths, the same for both libraries: `tf.function(lambda x: model(x, training=False))` on a
constant batch (`batch` synthetic images, seeded normal noise), output read back with
`.numpy()` (what `predict_on_batch` does, without its per-call overhead); `xla` is the same
function with `jit_compile=True` on the float32 model; `bfloat16` is a copy of the model built
under the global "mixed_bfloat16" policy with the float32 weights copied in, not XLA-compiled.
For each architecture and encoder the paths of both libraries are timed together with
`timing.interleaved` (round-robin after `warmups` calls; the first, tracing call is made
before that and checked): the median of `repeats` calls, in images per second. `ratio` =
kerasseg images/s / segmodels images/s (> 1: kerasseg is faster).

Checked before timing: both libraries give (batch, H, W, 12) outputs; for each library the
XLA and bfloat16 outputs against its float32 output (max |difference| relative to max
|logit|, and % of pixels with the same argmax class). Random weights, so the two libraries'
outputs are not compared by value.
"""

import argparse
import gc
import inspect
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# segmodels-keras picks its Keras from SM_FRAMEWORK ("keras" = Keras 3, its default).
os.environ.setdefault("SM_FRAMEWORK", "keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved  # noqa: E402

import kerasseg  # noqa: E402
from kerasseg.registry import get_entry  # noqa: E402

tf.get_logger().setLevel("ERROR")  # each path is its own tf.function: no retracing warnings

NUM_CLASSES = 12  # CamVid-like
PRECISIONS = ("float32", "xla", "bfloat16")
PRECISION_TITLES = {"float32": "float32", "xla": "XLA float32", "bfloat16": "bfloat16"}
LIBRARIES = ("kerasseg", "segmodels")
# The order of the table; other registered architectures follow alphabetically.
KNOWN_ORDER = (
    "unet",
    "unetplusplus",
    "attention_unet",
    "linknet",
    "fpn",
    "pspnet",
    "deeplabv3",
    "deeplabv3plus",
    "segformer",
)
# Arguments that choose the own encoder of architectures without an `encoder` argument.
VARIANT_ARGUMENTS = ("variant", "backbone", "encoder_variant", "model_size")
# segmodels-keras class names, and the size its models need: (divisor, fixed shape needed).
PEERS = {"unet": "Unet", "fpn": "FPN", "linknet": "Linknet", "pspnet": "PSPNet"}
PEER_DIVISOR = {"unet": 32, "fpn": 32, "linknet": 32, "pspnet": 48}  # PSPNet: 6 x 8


def import_segmodels():
    try:
        import segmodels_keras
    except ImportError as error:
        print(f"NOTE: segmodels-keras is not installed ({error}); peer columns stay empty.")
        print("      pip install segmodels-keras  (--no-deps if it would change keras)")
        return None
    return segmodels_keras


def accepted_arguments(name):
    parameters = inspect.signature(get_entry(name).builder).parameters.values()
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def variant_argument(name):
    """(argument, default) that picks the own encoder of `name`, or None."""
    parameters = inspect.signature(get_entry(name).builder).parameters
    for argument in VARIANT_ARGUMENTS:
        if argument in parameters:
            default = parameters[argument].default
            return argument, None if default is inspect.Parameter.empty else default
    return None


def registered_architectures():
    """The semantic encoder-decoder architectures registered now, in table order."""
    names = []
    for summary in kerasseg.list_models(task="semantic"):
        name = summary["name"]
        if summary["kind"] != "architecture":
            continue
        if "encoder" in accepted_arguments(name) or variant_argument(name):
            names.append(name)
    rank = {name: i for i, name in enumerate(KNOWN_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def cases(architectures, encoders, variants):
    """(architecture, build arguments, encoder label) of every row."""
    rows = []
    for name in architectures:
        accepted = accepted_arguments(name)
        if "encoder" in accepted:
            for encoder in encoders:
                rows.append((name, {"encoder": encoder}, encoder or "none"))
            continue
        found = variant_argument(name)
        if found is None:  # named on the command line: build with its defaults
            rows.append((name, {}, "default"))
            continue
        argument, default = found
        for value in variants.get(name, [default]):
            label = f"{argument}={value}"
            if name == "segformer":
                label = f"MiT ({label})"
            rows.append((name, {} if value is None else {argument: value}, label))
    return rows


def kerasseg_arguments(name, arguments, shape):
    accepted = accepted_arguments(name)
    kwargs = {"num_classes": NUM_CLASSES, "input_shape": shape, **arguments}
    if "encoder_weights" in accepted and arguments.get("encoder", "") is not None:
        kwargs["encoder_weights"] = None
    return kwargs


def build_kerasseg(name, arguments, shape, policy=None):
    with dtype_policy(policy):
        return kerasseg.load(name, weights=None, **kerasseg_arguments(name, arguments, shape))


def peer_encoder(segmodels, arguments):
    """segmodels' name of the same keras.applications encoder ("mobilenet_v2" ->
    "mobilenetv2"), or None where it has none."""
    encoder = arguments.get("encoder")
    if segmodels is None or encoder is None:
        return None
    name = encoder.replace("_", "")
    return name if name in segmodels.get_available_backbone_names() else None


def build_segmodels(segmodels, name, encoder, shape, policy=None):
    with dtype_policy(policy):
        return getattr(segmodels, PEERS[name])(
            encoder,
            input_shape=shape,
            classes=NUM_CLASSES,
            activation="linear",
            encoder_weights=None,
        )


class dtype_policy:  # noqa: N801 - used as a context manager
    """Set the global dtype policy while building (None: leave it)."""

    def __init__(self, policy):
        self.policy = policy

    def __enter__(self):
        self.previous = keras.config.dtype_policy().name
        if self.policy is not None:
            keras.config.set_dtype_policy(self.policy)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


def fits(size, divisor, offset=0, minimum=1):
    return size >= minimum and (size - offset) % divisor == 0


def common_size(requested, rules):
    """The size nearest to `requested` that every (divisor, offset, minimum) rule accepts
    (ties go to the larger size)."""
    for step in range(0, 4 * requested + 1):
        for size in (requested + step, requested - step):
            if size > 0 and all(fits(size, *rule) for rule in rules):
                return size
    raise ValueError(f"no size near {requested} fits {rules}")


def size_rules(name, arguments, peer):
    """The kerasseg model's (divisor, offset, minimum), from a model with a free size, and
    the peer's (divisor, 0, divisor)."""
    probe = build_kerasseg(name, arguments, (None, None, 3))
    rule = (
        getattr(probe, "size_divisor", 1),
        getattr(probe, "size_offset", 0),
        getattr(probe, "min_size", 1),
    )
    del probe
    rules = [rule]
    if peer is not None:
        rules.append((PEER_DIVISOR[name], 0, PEER_DIVISOR[name]))
    return rules


def predictor(model, jit_compile):
    function = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    return lambda x: function(x).numpy()


def compare(reference, other):
    """Agreement of `other` with `reference` (logits): relative max |diff|, % same argmax."""
    reference = np.asarray(reference, np.float32)
    other = np.asarray(other, np.float32)
    scale = float(np.abs(reference).max()) or 1.0
    return {
        "max_rel_diff": float(np.abs(other - reference).max()) / scale,
        "argmax_equal_pct": float(100 * np.mean(other.argmax(-1) == reference.argmax(-1))),
    }


def short_error(error):
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[-1][:160]}"


def run_case(name, arguments, label, args, segmodels):
    """Build, check and time one row; returns its result dict."""
    started = time.perf_counter()
    encoder = peer_encoder(segmodels, arguments) if name in PEERS else None
    result = {"architecture": name, "encoder": label, "notes": [], "peer_encoder": encoder}
    rules = size_rules(name, arguments, encoder)
    height, width = (common_size(s, rules) for s in (args.height, args.width))
    result["input"] = [height, width]
    result["size_rules"] = [list(r) for r in rules]
    shape = (height, width, 3)
    x = tf.constant(
        np.random.default_rng(args.seed).standard_normal((args.batch, *shape), np.float32)
    )

    builders = {"kerasseg": lambda policy: build_kerasseg(name, arguments, shape, policy)}
    if encoder is not None:
        builders["segmodels"] = lambda policy: build_segmodels(
            segmodels, name, encoder, shape, policy
        )
    fns, outputs, params = {}, {}, {}
    for library, build in builders.items():
        try:
            model = build(None)
        except Exception as error:  # noqa: BLE001 - report, keep the other rows
            result["notes"].append(f"{library} build failed: {short_error(error)}")
            continue
        params[library] = int(model.count_params())
        for precision in args.precisions:
            try:
                if precision == "bfloat16":
                    copy = build("mixed_bfloat16")
                    copy.set_weights(model.get_weights())
                    fn = predictor(copy, jit_compile=False)
                else:
                    fn = predictor(model, jit_compile=precision == "xla")
                outputs[library, precision] = fn(x)  # traces (and compiles) the function
            except Exception as error:  # noqa: BLE001
                result["notes"].append(f"{library} {precision} failed: {short_error(error)}")
                continue
            fns[library, precision] = fn
    result["params"] = params

    checks = {}
    expected = (args.batch, height, width, NUM_CLASSES)
    for (library, precision), out in outputs.items():
        if tuple(out.shape) != expected:
            result["notes"].append(
                f"{library} {precision} output shape {tuple(out.shape)} != {expected}"
            )
        if precision != "float32" and (library, "float32") in outputs:
            checks[f"{library} {precision} vs float32"] = compare(outputs[library, "float32"], out)
    result["agreement"] = checks
    result["output_shapes"] = {f"{k[0]} {k[1]}": list(v.shape) for k, v in outputs.items()}
    del outputs
    result["setup_seconds"] = time.perf_counter() - started  # builds, traces, XLA compiles

    timings = interleaved(
        {f"{lib} {prec}": (lambda fn=fn: fn(x)) for (lib, prec), fn in fns.items()},
        args.repeats,
        args.warmups,
    )
    result["timings"] = {
        path: {
            "median_ms": ms,
            "images_per_s": args.batch / ms * 1000,
            "cores_used": cores,
            "walls_s": walls,
        }
        for path, (ms, cores, walls) in timings.items()
    }
    result["seconds"] = time.perf_counter() - started
    del fns
    keras.backend.clear_session()
    gc.collect()
    return result


def cpu_info():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, flags


def fmt_rate(result, path):
    timing = result["timings"].get(path)
    return "-" if timing is None else f"{timing['images_per_s']:.2f}"


def fmt_ratio(result, precision):
    timings = result["timings"]
    ours, theirs = timings.get(f"kerasseg {precision}"), timings.get(f"segmodels {precision}")
    if ours is None or theirs is None:
        return "-"
    return f"{ours['images_per_s'] / theirs['images_per_s']:.2f}x"


def print_table(results, args):
    header = ["architecture", "encoder", "input", "params kerasseg", "params segmodels"]
    for precision in args.precisions:
        title = PRECISION_TITLES[precision]
        header += [f"{title} kerasseg img/s", f"{title} segmodels img/s", f"{title} ratio"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for result in results:
        size = "x".join(str(s) for s in result["input"])
        if result["input"] != [args.height, args.width]:
            size += "*"
        params = result["params"]
        cells = [
            result["architecture"],
            result["encoder"],
            size,
            f"{params['kerasseg']:,}" if "kerasseg" in params else "-",
            f"{params['segmodels']:,}" if "segmodels" in params else "-",
        ]
        for precision in args.precisions:
            cells += [
                fmt_rate(result, f"kerasseg {precision}"),
                fmt_rate(result, f"segmodels {precision}"),
                fmt_ratio(result, precision),
            ]
        print("| " + " | ".join(cells) + " |")


def print_agreement(results):
    shapes = [n for r in results for n in r["notes"] if "output shape" in n]
    print(
        "\noutput shapes: "
        + ("mismatches, see the notes" if shapes else "(batch, H, W, 12) on every path built")
    )
    if not any(r["agreement"] for r in results):
        return
    print("\n| architecture | encoder | check | max rel. diff | argmax equal % |")
    print("|---|---|---|---|---|")
    for result in results:
        for check, values in result["agreement"].items():
            print(
                f"| {result['architecture']} | {result['encoder']} | {check} "
                f"| {values['max_rel_diff']:.2e} | {values['argmax_equal_pct']:.2f} |"
            )


def parse_list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_variants(items):
    variants = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise argparse.ArgumentTypeError(f"--variants wants ARCH=V1[,V2]; got {item!r}")
        variants[name.strip()] = parse_list(values)
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2, help="after the first, tracing call")
    parser.add_argument(
        "--architectures",
        type=parse_list,
        default=None,
        help="comma-separated kerasseg names (default: every registered encoder-decoder)",
    )
    parser.add_argument(
        "--encoders",
        type=parse_list,
        default=None,
        help="comma-separated kerasseg encoder names (default resnet50,mobilenet_v2; "
        "'none' = the original U-Net)",
    )
    parser.add_argument(
        "--precisions",
        type=parse_list,
        default=list(PRECISIONS),
        help=f"comma-separated subset of {','.join(PRECISIONS)}",
    )
    parser.add_argument(
        "--variants",
        action="append",
        default=[],
        help="ARCH=V1[,V2]: variants of an architecture with its own encoder "
        "(e.g. segformer=b0,b2; default: the builder's default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 96x96, batch 1, 1 repeat, 1 warm-up, mobilenet_v2 only",
    )
    args = parser.parse_args()
    if args.quick:
        args.height, args.width, args.batch, args.repeats, args.warmups = 96, 96, 1, 1, 1
        args.encoders = args.encoders or ["mobilenet_v2"]
    args.encoders = args.encoders or ["resnet50", "mobilenet_v2"]
    args.encoders = [None if e.lower() == "none" else e for e in args.encoders]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; choose from {PRECISIONS}")
    try:
        variants = parse_variants(args.variants)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    registered = registered_architectures()
    architectures = args.architectures or registered
    for name in architectures:
        try:
            get_entry(name)
        except ValueError as error:  # names the closest registered ones
            parser.error(f"--architectures: {error}")

    segmodels = import_segmodels()
    model, flags = cpu_info()
    amx = "amx_bf16" in flags
    print(
        f"cpu: {model}, {os.cpu_count()} cores; AMX-BF16: {'yes' if amx else 'no'}, "
        f"AVX512-BF16: {'yes' if 'avx512_bf16' in flags else 'no'}; tensorflow "
        f"{tf.__version__}, keras {keras.__version__}, kerasseg {kerasseg.__version__}, "
        f"segmodels-keras {getattr(segmodels, '__version__', 'not installed')}"
    )
    print(
        f"registered encoder-decoders: {', '.join(registered)}; timing: "
        f"{', '.join(a for a in architectures)} on {', '.join(str(e) for e in args.encoders)}"
    )
    print(
        f"batch {args.batch} at {args.height}x{args.width}, {NUM_CLASSES} classes, random "
        f"weights; median of {args.repeats} after {args.warmups} warm-ups (+1 tracing call); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    results = []
    for name, arguments, label in cases(architectures, args.encoders, variants):
        try:
            result = run_case(name, arguments, label, args, segmodels)
        except Exception as error:  # noqa: BLE001 - report and go on with the next row
            print(f"  {name} / {label}: FAILED {short_error(error)}", flush=True)
            results.append(
                {
                    "architecture": name,
                    "encoder": label,
                    "input": [args.height, args.width],
                    "params": {},
                    "timings": {},
                    "agreement": {},
                    "notes": [f"failed: {short_error(error)}"],
                }
            )
            continue
        results.append(result)
        cores = ", ".join(
            f"{path} {t['images_per_s']:.2f} img/s ({t['cores_used']:.2f} cores)"
            for path, t in result["timings"].items()
        )
        print(
            f"  {name} / {label} at {result['input'][0]}x{result['input'][1]}: {cores}; "
            f"{result['seconds']:.0f} s ({result['setup_seconds']:.0f} s building and "
            f"tracing); load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for note in result["notes"]:
            print(f"    note: {note}", flush=True)

    print()
    print_table(results, args)
    footnotes = []
    if any(r["input"] != [args.height, args.width] for r in results):
        footnotes.append(
            f"* requested {args.height}x{args.width} does not fit: the nearest size that both "
            "libraries accept (kerasseg: multiples of the model's `size_divisor`; segmodels: "
            "32, 48 for PSPNet), the same for both."
        )
    footnotes.append(
        "ratio = kerasseg images/s / segmodels images/s (> 1: kerasseg faster); "
        "bfloat16 = built under 'mixed_bfloat16', no XLA; "
        f"this CPU {'has' if amx else 'has no'} AMX-BF16."
    )
    for note in footnotes:
        print(note)
    print_agreement(results)
    notes = [(r["architecture"], r["encoder"], n) for r in results for n in r["notes"]]
    if notes:
        print()
        for name, label, note in notes:
            print(f"note: {name} / {label}: {note}")
    elapsed = time.perf_counter() - started
    per_row = statistics.median([r.get("seconds", 0) for r in results]) if results else 0
    print(f"\ntotal {elapsed:.0f} s ({per_row:.0f} s median per row)")

    if args.json:
        settings = {
            key: getattr(args, key)
            for key in ("height", "width", "batch", "repeats", "warmups", "precisions", "seed")
        }
        settings.update(
            encoders=args.encoders,
            architectures=architectures,
            cpu=model,
            cpus=os.cpu_count(),
            amx_bf16=amx,
            tensorflow=tf.__version__,
            keras=keras.__version__,
            segmodels_keras=getattr(segmodels, "__version__", None),
        )
        payload = {"settings": settings, "rows": results, "seconds": elapsed}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
