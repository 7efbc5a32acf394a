"""Sphinx configuration for the pysnn documentation.

Build (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Figures are not committed: before reading the sources, the tutorial scripts that draw them are run
in-process with ``docs/_generated`` as their output folder (each takes about a second).
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout even when pysnn is not installed

import pysnn  # noqa: E402

project = "pysnn"
author = "pysnn contributors"
copyright = "pysnn contributors"
version = release = pysnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# autodoc: real imports, nothing mocked (torch, numpy, tqdm and matplotlib are installed).
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # do not pull torch.nn.Module's docstrings into ours
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, never duplicate attribute entries
napoleon_use_rtype = False

exclude_patterns = ["_build", "_generated", ".gitignore"]
templates_path: list = []
html_static_path: list = []
html_theme = "furo"
html_title = f"pysnn {release}"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# Figures drawn by the tutorial scripts at build time: (script, output files it must write).
FIGURE_SCRIPTS = [
    ("03_neuron_models.py", ["neuron_models.png"]),
    ("04_traces_and_delays.py", ["delays.png"]),
    ("05_learning_rules.py", ["stdp_window.png"]),
    ("06_reward_learning.py", ["mstdpet_weight.png"]),
    ("10_recording_and_plotting.py", ["raster.png", "voltages.png"]),
]


def _generate_figures() -> None:
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    argv = sys.argv
    checks = pysnn.checks_enabled()
    try:
        for script, files in FIGURE_SCRIPTS:
            path = DOCS / "tutorials" / script
            sys.argv = [str(path), str(out)]
            with contextlib.redirect_stdout(io.StringIO()):  # keep the build log for warnings
                runpy.run_path(str(path), run_name="__main__")
            missing = [name for name in files if not (out / name).is_file()]
            if missing:
                raise RuntimeError(f"{script} did not write {missing} into {out}")
    finally:
        sys.argv = argv
        pysnn.set_checks(checks)


if os.environ.get("PYSNN_DOCS_SKIP_FIGURES") != "1":
    _generate_figures()
