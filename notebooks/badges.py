"""The notebooks' "Open in Colab" badges and install cells, from the one project URL.

The project's URL is named once, in `pyproject.toml` (`[project.urls]`, "Repository"). The
first cell of every notebook ends with a Colab badge that opens the notebook from that
GitHub repository, and the second cell installs kerasseg from it on Colab only. After a
change of the URL, `python notebooks/badges.py` rewrites the badge and the install line of
every notebook (nothing else); `tests/test_project_url.py` checks that they match.
"""

import json
import pathlib
import re
import sys
import tomllib

__all__ = [
    "BADGE_PATTERN",
    "INSTALL_PATTERN",
    "badge",
    "install_line",
    "main",
    "notebooks",
    "project_url",
    "repository",
    "rewritten",
]

FOLDER = pathlib.Path(__file__).resolve().parent
PYPROJECT = FOLDER.parent / "pyproject.toml"
BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
# The install line of the second cell; the extras in brackets, if any, are kept.
INSTALL_PATTERN = re.compile(r'%pip install -q "kerasseg(?P<extras>\[[\w,-]+\])? @ git\+[^"]*"')
GITHUB = re.compile(r"^https://github\.com/(?P<slug>[\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def project_url(pyproject=PYPROJECT):
    """The "Repository" URL of `[project.urls]` in `pyproject.toml`."""
    with open(pyproject, "rb") as f:
        urls = tomllib.load(f).get("project", {}).get("urls", {})
    if "Repository" not in urls:
        raise ValueError(
            f"{pyproject}: [project.urls] has no 'Repository' (it has {sorted(urls)}); add "
            'Repository = "https://github.com/OWNER/NAME", which the notebooks install from.'
        )
    return urls["Repository"]


def repository(url=None):
    """ "OWNER/NAME" of a GitHub URL (default: `project_url()`), as Colab's links need it."""
    url = project_url() if url is None else url
    match = GITHUB.match(url)
    if match is None:
        raise ValueError(
            f"the project URL {url!r} is not a GitHub repository URL "
            "(https://github.com/OWNER/NAME); Colab badges open notebooks from GitHub only."
        )
    return match.group("slug")


def badge(notebook_name, url=None):
    """The Markdown badge that opens `notebooks/<notebook_name>` of the project in Colab."""
    link = (
        f"https://colab.research.google.com/github/{repository(url)}/blob/main/notebooks/"
        f"{notebook_name}"
    )
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_line(extras="", url=None):
    """The notebooks' Colab-only install line: pip from the project's repository."""
    url = project_url() if url is None else url
    return f'%pip install -q "kerasseg{extras} @ git+{url}"'


def notebooks():
    """The notebooks of this folder, sorted by name."""
    return sorted(FOLDER.glob("*.ipynb"))


def rewritten(path, url=None):
    """The text of the notebook `path` with its badge and install line made from `url`."""
    notebook = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    first, install = notebook["cells"][0], notebook["cells"][1]
    title = "".join(first["source"])
    code = "".join(install["source"])
    if not BADGE_PATTERN.search(title) or not INSTALL_PATTERN.search(code):
        raise ValueError(
            f"{path}: the first cell must hold an 'Open In Colab' badge and the second the "
            '`%pip install -q "kerasseg @ git+URL"` line; add them, then run this script again.'
        )
    title = BADGE_PATTERN.sub(lambda _: badge(pathlib.Path(path).name, url), title)
    code = INSTALL_PATTERN.sub(lambda m: install_line(m.group("extras") or "", url), code)
    first["source"] = title.splitlines(keepends=True)
    install["source"] = code.splitlines(keepends=True)
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main():
    """Rewrite the badge and the install line of every notebook; print the changed ones."""
    for path in notebooks():
        text = rewritten(path)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
