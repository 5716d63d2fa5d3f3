"""Every python block of README.md runs, in order, in one namespace."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def python_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_snippets():
    assert len(python_blocks()) >= 4


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for i, block in enumerate(python_blocks()):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "exploits;" in out
    assert (tmp_path / "runs" / "readme" / "member_0").is_dir()
    assert namespace["record"].to_dict()["version"] == 1
