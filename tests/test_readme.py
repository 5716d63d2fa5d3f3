"""The README: short, every python block runs, every link and name it gives exists."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_is_short_and_has_the_two_command_quick_start():
    assert len(README.splitlines()) <= 300
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\s+make (\w+)", quick_start, flags=re.M) == ["demo", "test"]


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    import keras

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    blocks = python_blocks()
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "exploits;" in out and "held-out accuracy per member:" in out
    assert sorted(p.name for p in (tmp_path / "runs" / "readme").iterdir()) == [
        f"member_{i}" for i in range(4)]
    assert namespace["schedule"] and namespace["schedule"][0][0] == 0
    assert isinstance(namespace["model"], keras.Model)
    final = namespace["final"]   # the tuner's choose(), the last block's
    assert isinstance(final, namespace["keras_pbt"].FinalChoice) and isinstance(final.model, keras.Model)
    assert sorted(final.scores) == [0, 1, 2, 3]
    assert namespace["cb"].interval.unit == "steps"


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert "docs/population.md" in links
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_every_keras_pbt_name_in_the_readme_and_guides_resolves_after_import_keras_pbt():
    # Issue 13: `keras_pbt.runtime.tunable.TunableFloat` and `keras_pbt.tuner.convert`
    # raised AttributeError after a plain `import keras_pbt`.
    # upgrading.md names the old spellings on purpose.
    guides = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "upgrading.md"]
    pages = [README] + [p.read_text(encoding="utf-8") for p in guides]
    names = sorted({n for text in pages for n in re.findall(r"`(keras_pbt(?:\.[A-Za-z_]\w*)+)", text)})
    assert "keras_pbt.runtime.tunable.TunableFloat" in names and "keras_pbt.tuner.convert" in names
    script = (
        "import functools, sys\n"
        "import keras_pbt\n"
        "for name in sys.argv[1:]:\n"
        "    functools.reduce(getattr, name.split('.')[1:], keras_pbt)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
