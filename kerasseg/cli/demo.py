"""`kerasseg demo`: segment the built-in samples and write a page and a contact sheet."""

from pathlib import Path

from kerasseg.demo import run_demo, short_score

__all__ = ["add_parser", "run"]


def add_parser(commands, parents):
    """Add `kerasseg demo` to the subcommands `commands`."""
    parser = commands.add_parser(
        "demo",
        parents=parents,
        help="segment built-in samples; write index.html, contact_sheet.png, results.json",
    )
    parser.add_argument("--out", default="kerasseg-demo", help="output folder")


def run(args):
    """Run `kerasseg demo`: one line per model with its score on each sample, then the page."""
    results = run_demo(args.out)
    lines = {}
    for r in results:
        lines.setdefault(r["model"], []).append(f"{r['sample']} {short_score(r)}")
    width = max(len(name) for name in lines)
    for name, scores in lines.items():
        print(f"{name:<{width}}  " + "; ".join(scores))
    page = (Path(args.out) / "index.html").resolve()
    print(f"page: {page}")
    print(f"contact sheet and results.json in {Path(args.out).resolve()}")
