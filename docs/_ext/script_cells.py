"""``.. script-cells::``: a tutorial script shown cell by cell, each cell followed by its output.

A tutorial in ``docs/tutorials/`` stays one runnable script (``tests/test_docs.py`` runs it);
lines ``# %%`` split it into cells (the convention of Jupytext, VS Code and sphinx-gallery). At
build time the script is run once, cell after cell in one namespace, as ``__main__`` with
``docs/_generated`` as its output folder (shown as ``OUT_DIR``), and what each cell prints is
captured. A page shows a
range of cells::

    .. script-cells:: 13_custom_modules.py
       :cells: 1-3

(cells numbered from 0, the part before the first ``# %%``; ``:cells:`` omitted: all of them).
An exception in a cell fails the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

MARKER = re.compile(r"^# %%.*$", re.M)
_RUNS: Dict[Path, List[Tuple[str, str]]] = {}


def split_cells(source: str) -> List[str]:
    """The cells of a script: the text between ``# %%`` lines (marker lines dropped)."""
    parts = MARKER.split(source)
    return [part.strip("\n") for part in parts]


def run_cells(path: Path, out_dir: Path) -> List[Tuple[str, str]]:
    """``(code, printed output)`` of every cell, running the script once per build."""
    path = path.resolve()
    if path in _RUNS:
        return _RUNS[path]
    import pysnn
    import torch

    cells = split_cells(path.read_text(encoding="utf-8"))
    namespace = {"__name__": "__main__", "__file__": str(path)}
    argv, cwd, checks = sys.argv, os.getcwd(), pysnn.checks_enabled()
    grad, dtype, threads = (
        torch.is_grad_enabled(),
        torch.get_default_dtype(),
        torch.get_num_threads(),
    )
    out_dir.mkdir(exist_ok=True)
    results = []
    try:
        # a fresh interpreter's global state, as when the script runs on its own
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
        torch.set_num_threads(1)  # small examples: one thread, as tests/test_docs.py runs them
        sys.argv = [str(path), str(out_dir)]
        os.chdir(path.parents[2])  # the repository root, as tests/test_docs.py runs it
        for index, code in enumerate(cells):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code + "\n", f"{path.name}, cell {index}", "exec"), namespace)
            # the build's output folder is the script's OUT_DIR argument, not a path to show
            results.append((code, buffer.getvalue().replace(str(out_dir), "OUT_DIR")))
    finally:
        sys.argv = argv
        os.chdir(cwd)
        pysnn.set_checks(checks)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    _RUNS[path] = results
    return results


def _cell_range(spec: str, count: int) -> List[int]:
    if not spec:
        return list(range(count))
    first, _, last = spec.partition("-")
    stop = int(last) if last else int(first)
    if not 0 <= int(first) <= stop < count:
        raise ValueError(f"cells {spec!r} out of range: the script has cells 0-{count - 1}")
    return list(range(int(first), stop + 1))


class ScriptCells(SphinxDirective):
    required_arguments = 1
    option_spec = {"cells": directives.unchanged}

    def run(self) -> List[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        path = Path(path)
        self.env.note_dependency(rel)
        out_dir = Path(self.env.srcdir) / "_generated"
        try:
            cells = run_cells(path, out_dir)
            indices = _cell_range(self.options.get("cells", ""), len(cells))
        except Exception as exc:  # the build fails with the script's error
            raise self.error(f"script-cells: {path.name}: {type(exc).__name__}: {exc}")
        result: List[nodes.Node] = []
        for index in indices:
            code, output = cells[index]
            if code.strip():
                block = nodes.literal_block(code, code, language="python")
                block["classes"].append("script-cell")
                result.append(block)
            if output.strip():
                label = nodes.paragraph()
                label += nodes.strong(text="Output:")
                label["classes"].append("script-cell-output-label")
                shown = nodes.literal_block(output.rstrip(), output.rstrip(), language="text")
                shown["classes"].append("script-cell-output")
                result += [label, shown]
        return result


def setup(app):
    app.add_directive("script-cells", ScriptCells)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
