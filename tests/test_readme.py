"""README's Python API example runs as written."""
from __future__ import annotations

import dataclasses
import re

from meshcli import records
from meshcli.methods import dekr

from conftest import REPO


def python_blocks(markdown: str, section: str) -> list[str]:
    body = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks((REPO / "README.md").read_text(), "Python API")
    # a small DEKR input keeps the test fast; the example is otherwise run as written, from a copy's root
    monkeypatch.setattr(dekr, "record_for", lambda m, v: dataclasses.replace(records.record_for(m, v), input_size=128))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("PoseResult (") and ", 17, 3)" in printed[0]
    written, failures = printed[1].rsplit(" ", 1)
    assert sorted(written.strip("[]").replace("'", "").split(", ")) == [
        "coco_000000000785.coco.json", "coco_000000000785.jpg", "coco_000000000785.npz"] and failures == "[]"
    assert printed[2] == "dekr 1 True"
