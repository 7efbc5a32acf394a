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
    net = namespace["net"]
    assert net.stdp.connections[0] is net.fc
    assert torch.isfinite(net.fc.weight).all()
    assert net.lif.v is not None and net.lif.spikes.abs().sum() == 0  # the closing reset ran
    assert "stdp" in repr(net) and not any(k.startswith("stdp") for k in net.state_dict())
