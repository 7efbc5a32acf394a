"""The documentation cannot drift from the code.

* Every tutorial script in ``docs/tutorials/`` runs to completion (each checks its own results
  with asserts) and is included in a documentation page.
* Every public module of pysnn has an ``automodule`` entry in ``docs/api/``.
* Every generated figure a page shows is drawn by a script that ``docs/conf.py`` runs.
* The examples on the API pages (``docs/api/*.rst``) run.

The Sphinx build itself (``sphinx-build -W``) runs in ``.ci/run``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pysnn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))
PAGES = sorted(DOCS.rglob("*.rst"))


def _page_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in PAGES)


def test_tutorials_exist() -> None:
    assert len(TUTORIALS) >= 12, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYSNN_DOCS_OUT=str(tmp_path))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_is_included(script: Path) -> None:
    pattern = re.compile(
        r"\.\. (?:literalinclude|script-cells):: (?:\.\./tutorials/)?" + re.escape(script.name)
    )
    assert pattern.search(_page_text()), f"no page includes docs/tutorials/{script.name}"


def test_every_public_module_is_documented() -> None:
    documented = set(re.findall(r"\.\. automodule:: ([\w.]+)", _page_text()))
    modules = {"pysnn"} | {
        info.name
        for info in pkgutil.walk_packages(pysnn.__path__, prefix="pysnn.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    missing = sorted(modules - documented)
    assert not missing, f"modules without an automodule entry in docs/api: {missing}"


def test_generated_figures_are_drawn_at_build_time() -> None:
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    shown = set(re.findall(r"/_generated/([\w.-]+\.png)", _page_text()))
    assert shown, "no generated figure found in the pages"
    for name in sorted(shown):
        assert f'"{name}"' in conf, f"{name} is shown but no FIGURE_SCRIPTS entry produces it"
    for script in re.findall(r'\("(\d\d_[\w]+\.py)"', conf):
        assert (DOCS / "tutorials" / script).is_file(), script


API_PAGES = sorted((DOCS / "api").glob("*.rst"))
_CODE_BLOCK = re.compile(r"\n( *)\.\. code-block:: python\n\n((?:\1   .*\n|[ \t]*\n)+)")


@pytest.mark.parametrize("page", API_PAGES, ids=lambda p: p.name)
def test_api_page_examples_run(page: Path) -> None:
    """The examples on an API page run, in order, in one namespace (as a reader would)."""
    namespace: dict = {}
    for match in _CODE_BLOCK.finditer(page.read_text(encoding="utf-8")):
        code = textwrap.dedent(match.group(2))
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, str(page), "exec"), namespace)
