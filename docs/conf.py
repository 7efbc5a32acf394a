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
import re
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout even when pysnn is not installed

import pysnn  # noqa: E402
import torch  # noqa: E402

project = "pysnn"
author = "pysnn contributors"
copyright = "pysnn contributors"
version = release = pysnn.__version__

sys.path.insert(0, str(DOCS / "_ext"))
extensions = [
    "script_cells",  # docs/_ext: tutorial scripts shown cell by cell with their output
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# autodoc: real imports, nothing mocked (torch, numpy, tqdm and matplotlib are installed).
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# A re-exported object (pysnn.multistep.run_layers from pysnn.engine.layers) gets its [source] link
# where it is defined only: following imports sent the source page's back-link to an anchor of
# the re-exporting page that does not exist.
viewcode_follow_imported_members = False
autodoc_inherit_docstrings = False  # do not pull torch.nn.Module's docstrings into ours
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

# API pages show no private names: a private base class is shown as its public bases, and
# references to private helpers in docstrings ("(``_FastLIFStep``)", "see :meth:`_apply`") are
# dropped. Return types are shown where they say something: never "None", never a private class.
_PRIVATE = r"(?:``|:\w+:`~?)[\w.]*?\b_[A-Za-z]\w*(?:\(\))?(?:``|`)"
_PRIVATE_REFERENCES = [
    re.compile(r"\s*\((?:see\s+|as given to\s+)?" + _PRIVATE + r"\)"),  # "(see ``_X``)"
    re.compile(r",\s*see\s+" + _PRIVATE),  # ", see ``_X``"
]


def _public_bases(bases: list) -> list:
    public = []
    for base in bases:
        if base.__name__.startswith("_") and base.__module__.startswith("pysnn"):
            public.extend(b for b in _public_bases(list(base.__bases__)) if b not in public)
        elif base not in public:
            public.append(base)
    return public


def _process_bases(app, name, obj, options, bases: list) -> None:
    bases[:] = _public_bases(bases)


def _drop_private_references(app, what, name, obj, options, lines: list) -> None:
    text = "\n".join(lines)
    for pattern in _PRIVATE_REFERENCES:
        text = pattern.sub("", text)
    lines[:] = text.split("\n")


def _drop_uninformative_return(app, what, name, obj, options, signature, return_annotation):
    annotations = app.env.current_document.autodoc_annotations.get(name, {})
    returned = annotations.get("return", "")
    if returned == "None" or re.search(r"(?:^|\.)_[A-Za-z]", returned):
        annotations.pop("return")


def setup(app) -> None:
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("autodoc-process-docstring", _drop_private_references)
    app.connect("autodoc-process-signature", _drop_uninformative_return)


napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, never duplicate attribute entries
napoleon_use_rtype = False

exclude_patterns = ["_build", "_generated", ".gitignore"]
templates_path: list = []
html_static_path = ["_static"]
# Equations render offline: MathJax 3.2.2 bundled in _static/mathjax (Apache-2.0, see its README),
# SVG output with the fonts inside the one file, no CDN.
mathjax_path = "mathjax/tex-svg-full.js"
html_theme = "furo"
# Code at 75 % of the text size (furo: 81 %), so that the scripts' 100-character lines fit.
html_theme_options = {"light_css_variables": {"code-font-size": "var(--font-size--small--3)"}}
html_title = f"pysnn {release}"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# Figures drawn by the tutorial scripts at build time: (script, output files it must write).
FIGURE_SCRIPTS = [
    ("03_neuron_models.py", ["neuron_models.png"]),
    ("04_traces_and_delays.py", ["delays.png"]),
    ("05_learning_rules.py", ["stdp_window.png"]),
    ("06_reward_learning.py", ["mstdpet_weight.png"]),
    ("08_gradient_training.py", ["gradient_training.png"]),
    ("10_recording_and_plotting.py", ["raster.png", "voltages.png"]),
]


def _generate_figures() -> None:
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    argv = sys.argv
    checks = pysnn.checks_enabled()
    grad = torch.is_grad_enabled()  # scripts may switch autograd off globally
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small examples: one thread, as tests/test_docs.py runs them
    try:
        for script, files in FIGURE_SCRIPTS:
            path = DOCS / "tutorials" / script
            sys.argv = [str(path), str(out)]
            torch.set_grad_enabled(True)  # as in a fresh interpreter
            with contextlib.redirect_stdout(io.StringIO()):  # keep the build log for warnings
                runpy.run_path(str(path), run_name="__main__")
            missing = [name for name in files if not (out / name).is_file()]
            if missing:
                raise RuntimeError(f"{script} did not write {missing} into {out}")
    finally:
        sys.argv = argv
        pysnn.set_checks(checks)
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)


if os.environ.get("PYSNN_DOCS_SKIP_FIGURES") != "1":
    _generate_figures()

# The Results page: tables generated from benchmarks/results/*.json (docs/results_page.py).
sys.path.insert(0, str(DOCS))
import results_page  # noqa: E402

results_page.write(DOCS / "_generated")
