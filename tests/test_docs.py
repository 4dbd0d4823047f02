"""docs/engine.md stays complete and true: every public name is documented, the example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import durable
import durable._errors
import durable.web

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "engine.md"

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
TREE_ENTRY = re.compile(r"^(├── |└── )?(\w+)")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def inline_code_identifiers(text: str) -> set[str]:
    """Identifiers inside the inline code spans of ``text`` (fenced blocks left out)."""
    prose = FENCE.sub("", text)
    return {name for span in INLINE_CODE.findall(prose) for name in IDENTIFIER.findall(span)}


def section(text: str, number: int) -> str:
    """The body of the ``## <number>.`` section."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/engine.md has no section '## {number}.'"
    return match.group(0)


def fenced(text: str, language: str) -> str:
    """The first fenced block of ``language`` in ``text``."""
    for lang, body in FENCE.findall(text):
        if lang == language:
            return str(body)
    raise AssertionError(f"no ```{language} block found")


def error_tree(text: str) -> str:
    """The exception tree: the block that starts with ``DurableError``."""
    for lang, body in FENCE.findall(text):
        if lang == "text" and body.startswith("DurableError\n"):
            return str(body)
    raise AssertionError("docs/engine.md has no exception tree")


@pytest.mark.parametrize("name", durable.__all__)
def test_every_public_name_of_durable_is_documented_as_code(name: str) -> None:
    assert name in inline_code_identifiers(doc_text()), f"durable.{name} is not mentioned as `code` in docs/engine.md"


@pytest.mark.parametrize("name", durable.web.__all__)
def test_every_public_name_of_durable_web_is_documented_as_code(name: str) -> None:
    assert name in inline_code_identifiers(doc_text()), f"durable.web.{name} is not mentioned as `code` in docs/engine.md"


def test_the_error_tree_is_the_one_of_the_code() -> None:
    docstring = durable._errors.__doc__
    assert docstring is not None
    tree = error_tree(doc_text())
    assert "\n".join("    " + line for line in tree.splitlines()) in docstring, "the tree differs from durable/_errors.py"
    names = [match.group(2) for line in tree.splitlines() if (match := TREE_ENTRY.match(line))]
    root, *children = names
    exported = {name for name in durable.__all__ if isinstance(getattr(durable, name), type)}
    exceptions = {name for name in exported if issubclass(getattr(durable, name), BaseException)}
    assert set(names) == exceptions
    assert getattr(durable, root).__bases__ == (Exception,)
    for name in children:
        bases = getattr(durable, name).__bases__
        expected = (BaseException,) if name == "RunCancelled" else (getattr(durable, root),)
        assert bases == expected, f"{name} derives from {bases}"


def test_the_example_of_section_1_runs_and_prints_what_the_doc_shows(tmp_path: Path) -> None:
    one = section(doc_text(), 1)
    script = tmp_path / "hello.py"
    script.write_text(fenced(one, "python"), encoding="utf-8")
    db = tmp_path / "data" / "hello.db"
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # this checkout's durable
    done = subprocess.run(
        [sys.executable, str(script), str(db)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == fenced(one, "text")
    assert done.stderr == ""
    assert db.exists()  # the example used the path it was given
