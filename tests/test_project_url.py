"""One project URL: `[project.urls]` in pyproject.toml. The notebooks' Colab badges and
install cells and the README's Install and Notebooks sections take it from there."""

import json
import re
import sys
import tomllib

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "notebooks"))
import badges  # noqa: E402

NOTEBOOKS = badges.notebooks()


def _urls():
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]


def _section(text, title):
    """The body of the README's `## title` section (up to the next `## `)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_pyproject_names_one_github_repository():
    urls = _urls()
    assert urls["Repository"] == urls["Homepage"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", urls["Repository"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_badge_and_install_cell_use_the_project_url(path):
    url = _urls()["Repository"]
    slug = url.removeprefix("https://github.com/")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    title = "".join(notebook["cells"][0]["source"])
    install = "".join(notebook["cells"][1]["source"])
    expected = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{path.name}"
    assert f"]({expected})" in title
    assert re.search(rf'%pip install -q "kerasseg(\[[\w,-]+\])? @ git\+{re.escape(url)}"', install)
    # Nothing else to rewrite: the file is what `python notebooks/badges.py` writes.
    assert path.read_text(encoding="utf-8") == badges.rewritten(path), (
        "run `python notebooks/badges.py`"
    )


def test_badges_follow_a_changed_url(tmp_path):
    path = tmp_path / NOTEBOOKS[0].name
    path.write_text(NOTEBOOKS[0].read_text(encoding="utf-8"), encoding="utf-8")
    text = badges.rewritten(path, url="https://github.com/someone/fork")
    assert "colab.research.google.com/github/someone/fork/blob/main/notebooks/" in text
    assert "git+https://github.com/someone/fork" in text
    assert _urls()["Repository"] not in text
    with pytest.raises(ValueError, match="not a GitHub repository URL"):
        badges.rewritten(path, url="https://gitlab.com/someone")


def test_readme_install_and_notebooks_sections_use_the_project_url():
    url = _urls()["Repository"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = _section(readme, "Install")
    assert f'pip install "kerasseg @ git+{url}"' in install
    notebooks = _section(readme, "Notebooks")
    for path in NOTEBOOKS:
        assert badges.badge(path.name) in notebooks, f"README's Notebooks: badge of {path.name}"
    for section in (install, notebooks):
        found = set(re.findall(r"github\.com/([\w.-]+/[\w.-]+?)(?=[/\"')\s]|\.git)", section))
        assert found <= {url.removeprefix("https://github.com/")}, found
