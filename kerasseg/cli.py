"""The `kerasseg` command: list models, show one, run the demo."""

import argparse
import json
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="kerasseg", description="Keras segmentation model zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list architectures and presets")
    listing.add_argument("--task", choices=("semantic", "instance", "classical"))
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = commands.add_parser("info", help="show everything the registry knows about a model")
    info.add_argument("name")
    demo = commands.add_parser("demo", help="segment built-in samples, write overlay PNGs")
    demo.add_argument("--out", default="kerasseg-demo", help="output folder")
    return parser


def _table(rows):
    header = ("name", "kind", "task", "classes", "description")
    lines = [header] + [
        (r["name"], r["kind"], r["task"], str(r["num_classes"]), r["description"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    import kerasseg
    from kerasseg.demo import run_demo

    if args.command == "list":
        rows = kerasseg.list_models(task=args.task)
        print(json.dumps(rows, indent=2, default=str) if args.json else _table(rows))
    elif args.command == "info":
        try:
            entry = kerasseg.get_entry(args.name)
        except ValueError as error:
            print(f"kerasseg: {error}", file=sys.stderr)
            return 2
        print(json.dumps(entry.summary(), indent=2, default=str))
    elif args.command == "demo":
        results = run_demo(args.out)
        for r in results:
            if "error" in r:
                outcome = f"no result: {r['error']}"
            elif r["foreground_iou"] is None:
                outcome = f"(multi-class)  {r['overlay']}"
            else:
                outcome = f"foreground IoU {r['foreground_iou']:.3f}  {r['overlay']}"
            print(f"{r['sample']:<10} {r['model']:<16} {outcome}")
        print(f"overlays and results.json written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
