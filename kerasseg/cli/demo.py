"""`kerasseg demo`: segment the built-in samples and write overlay PNGs."""

from kerasseg.demo import run_demo

__all__ = ["add_parser", "run"]


def add_parser(commands, parents):
    """Add `kerasseg demo` to the subcommands `commands`."""
    parser = commands.add_parser(
        "demo", parents=parents, help="segment built-in samples, write overlay PNGs"
    )
    parser.add_argument("--out", default="kerasseg-demo", help="output folder")


def run(args):
    """Run `kerasseg demo`: one line per sample and model."""
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
