"""pysnn: spiking neural networks native to PyTorch.

Neurons and connections are ``torch.nn.Module``s that carry their own state; a network is an
:class:`~pysnn.network.SNNNetwork` whose ``forward`` is one simulation step.
"""

from pysnn._checks import checks, checks_enabled, set_checks

__version__ = "0.1.0"

__all__ = ["__version__", "checks", "checks_enabled", "set_checks"]
