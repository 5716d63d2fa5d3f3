"""Every python block of README.md runs, in order, in one namespace."""

import pathlib
import re
import subprocess
import sys

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


def test_every_keras_pbt_name_in_the_readme_resolves_after_import_keras_pbt():
    # Issue 13: `keras_pbt.runtime.tunable.TunableFloat` and `keras_pbt.tuner.convert`
    # raised AttributeError after a plain `import keras_pbt`.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"`(keras_pbt(?:\.[A-Za-z_]\w*)+)", text)))
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
