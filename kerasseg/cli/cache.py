"""`kerasseg download` and `kerasseg cache`: fetch presets' weights ahead of time, and show
or empty the cache of converted public checkpoints (`kerasseg.public_weights`)."""

from kerasseg import get_entry, public_weights, weights
from kerasseg.cli.common import UsageError
from kerasseg.models.encoders import ENCODER_WEIGHTS

__all__ = ["add_parser", "run_cache", "run_download"]


def add_parser(commands, parents):
    """Add `kerasseg download` and `kerasseg cache` to the subcommands `commands`."""
    parser = commands.add_parser(
        "download",
        parents=parents,
        help="download, verify and convert presets' weights now (for offline use later)",
    )
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="preset names, or encoders' weights: encoder_resnet18_imagenet, "
        "encoder_resnet34_imagenet",
    )
    parser = commands.add_parser(
        "cache", parents=parents, help="list or clear the cached public checkpoints"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list the cached originals and converted files")
    clear = actions.add_parser("clear", help="delete a preset's cached files")
    clear.add_argument("names", nargs="*", metavar="NAME", help="preset names")
    clear.add_argument("--all", action="store_true", help="clear every cached preset")


def run_download(args):
    """Run `kerasseg download` with the parsed command-line `args`: presets, and the
    pretrained encoders' weights by their cache names (`encoder_resnet34_imagenet`)."""
    encoders = {w.preset: w for w in ENCODER_WEIGHTS.values() if w is not None}
    fetches = []
    for name in args.names:
        if name in encoders:
            fetches.append((name, encoders[name].fetch))
            continue
        try:
            entry = get_entry(name)
        except ValueError as error:
            raise UsageError(f"{error} Encoder weights: {sorted(encoders)}.") from None
        if entry.default_weights is None:
            raise UsageError(
                f"{name!r} has no weights to download (an architecture, not a preset)."
            )
        fetches.append((name, entry.fetch_weights))
    for name, fetch in fetches:
        try:
            path = fetch()
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None
        print(f"{name}: {path}")


def run_cache(args):
    """Run `kerasseg cache list|clear` with the parsed command-line `args`."""
    if args.action == "list":
        entries = public_weights.cache_entries()
        print(f"cache: {weights.home_dir()}")
        if not entries:
            print("(empty)")
        for entry in entries:
            parts = [
                f"original {entry['original_bytes'] / 1e6:.1f} MB" if entry["original"] else "",
                f"converted {entry['converted_bytes'] / 1e6:.1f} MB" if entry["converted"] else "",
            ]
            print(f"{entry['preset']}: " + ", ".join(part for part in parts if part))
        return
    if args.all == bool(args.names):
        raise UsageError("cache clear: name the presets to clear, or pass --all (not both).")
    names = [e["preset"] for e in public_weights.cache_entries()] if args.all else args.names
    for name in names:
        try:
            removed = public_weights.clear_cache(name)
        except ValueError as error:
            raise UsageError(str(error)) from None
        print(f"{name}: {len(removed)} file(s) deleted" if removed else f"{name}: not cached")
