"""The README's Python snippets run as written (so they cannot drift from the API)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    namespace = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    weight_before_learning = namespace["net"].fc.weight
    assert namespace["rule"].connections[0] is namespace["net"].fc
    assert torch.isfinite(weight_before_learning).all()
