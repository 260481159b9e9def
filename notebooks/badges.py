"""The one place that names the GitHub repository of the "Open in Colab" badges.

`python notebooks/badges.py` rewrites the badge line of every notebook's first cell after a
change of `REPOSITORY`; `tests/test_notebooks.py` checks that each badge matches.
"""

import json
import pathlib
import re

REPOSITORY = "kerasseg/kerasseg"
FOLDER = pathlib.Path(__file__).resolve().parent
BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def badge(notebook_name):
    """The Markdown badge that opens `notebooks/<notebook_name>` of REPOSITORY in Colab."""
    url = (
        f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{notebook_name}"
    )
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def notebooks():
    return sorted(FOLDER.glob("*.ipynb"))


def main():
    for path in notebooks():
        notebook = json.loads(path.read_text())
        first = notebook["cells"][0]
        text = "".join(first["source"])
        first["source"] = BADGE_PATTERN.sub(badge(path.name), text).splitlines(keepends=True)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
