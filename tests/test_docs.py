"""Every python block of the pages under docs/ runs, page by page.

The reference pages (docs/reference/) are generated from the docstrings and
hold no blocks of their own; every other page is a guide whose snippets a
reader copies, so each page's blocks run in order in one namespace, in a
temporary directory.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.parts)


def python_blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_every_page_in_the_nav_exists():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    named = re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.M)
    assert "index.md" in named
    assert [n for n in named if not (ROOT / "docs" / n).is_file()] == []


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=lambda p: p.relative_to(ROOT / "docs").as_posix())
def test_page_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs"}
    for i, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name} python block {i + 1}", "exec"), namespace)  # noqa: S102
