"""Every python block of the pages under docs/ runs, page by page.

The reference pages (docs/reference/) are generated from the docstrings and
hold no blocks of their own; every other page is a guide whose snippets a
reader copies, so each page's blocks run in order in one namespace, in a
temporary directory.
"""

import importlib
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


def reference_entries():
    """The `::: dotted.path` entries of the API reference pages, resolved to objects."""
    entries = {}
    for page in sorted((ROOT / "docs" / "reference").glob("*.md")):
        for path in re.findall(r"^:::\s*([\w.]+)\s*$", page.read_text(encoding="utf-8"), flags=re.M):
            parts = path.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
                break
            entries[path] = obj
    return entries


def test_every_public_name_has_a_reference_entry():
    import keras_pbt

    documented = {id(obj) for obj in reference_entries().values()}
    missing = [n for n in keras_pbt.__all__ if id(getattr(keras_pbt, n)) not in documented]
    assert missing == [], f"add a `::: module.{missing[0]}` entry to a page of docs/reference/"
    assert len(keras_pbt.__all__) >= 50
