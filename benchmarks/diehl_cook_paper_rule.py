"""Diehl & Cook with the paper's own learning rule (issue 26): the presynaptic-target rule.

The paper (Diehl & Cook 2015, Section 2.3) describes its learning rule as: at each postsynaptic
spike, every input weight of the spiking neuron changes by

.. math:: \\Delta w = \\eta\\, (x_{pre} - x_{tar})\\, (w_{max} - w)^{\\mu}

where :math:`x_{pre}` is the synapse's presynaptic trace (+1 per presynaptic spike, decaying
with 20 ms), :math:`x_{tar}` a target value of it (inputs that rarely precede a spike of the
neuron lose weight) and :math:`\\mu` the weight dependence. Nothing happens at a presynaptic
spike. The authors' released code keeps the constants of this rule (``STDP_offset = 0.4``,
``exp_ee_post = 0.2``, ``nu_ee_post = 0.01``, ``wmax_ee = 1``) but runs another one (the
triplet-style rule of ``rule="triplet"``). pysnn's model runs the pair rule by default.

This script gives the model this rule as a user would, with public names only: a
:class:`~pysnn.learning.LearningRule` subclass whose :meth:`delta` changes the rows of the
neurons that spiked (:meth:`~pysnn.learning.LearningRule.apply_update` with ``rows``), and runs
``examples/mnist_stdp.py`` with it. The weight bounds [0, wmax] of the input connection clamp
the result, as the code's ``wmin=0, wmax=wmax_ee``.

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_paper_rule.py --eta 0.01 --x-tar 0.4 --mu 0.2 -- \\
        --data-dir ../shared/data/mnist --n-train 10000 --n-assign 10000 --n-test 10000 \\
        --batch-size 1 --threads 1 --synapses conductance --seed 0 --quiet --results rule.json
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_stdp  # noqa: E402  (examples/ on the path)

from pysnn.learning import LearningRule, SynapseGroup  # noqa: E402
from pysnn.models.diehl_cook import DiehlCook2015  # noqa: E402


class PresynapticTargetSTDP(LearningRule):
    """The paper's rule: ``Δw = eta (x_pre - x_tar) (wmax - w)^mu`` at each postsynaptic spike
    (rows of the neurons that spiked only), nothing at a presynaptic spike.

    Args:
        eta: learning rate.
        x_tar: target value of the presynaptic trace at a postsynaptic spike.
        mu: exponent of the weight dependence (> 0).
        other arguments: see :class:`~pysnn.learning.LearningRule`.
    """

    def __init__(
        self, *args: Any, eta: float = 0.01, x_tar: float = 0.4, mu: float = 0.2, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if mu <= 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.eta, self.x_tar, self.mu = float(eta), float(x_tar), float(mu)

    def delta(self, group: SynapseGroup, reward: Any) -> Optional[torch.Tensor]:
        s_post = group.post_spikes()  # (B, out)
        fired = s_post.sum(0)
        rows = fired.nonzero().squeeze(1)
        if rows.shape[0] == 0:  # (one host read per step: CPU tensors, a measurement script)
            return None
        conn = group.connection
        w = conn.weight.index_select(0, rows)
        x_pre = group.pre_trace()  # (B, in): the input's additive trace, 20 ms
        # per sample: spikes of the rows times (x_pre - x_tar), reduced over the batch
        corr = s_post.index_select(1, rows).t() @ (x_pre - self.x_tar)
        dw = self.eta * corr * (conn.wmax - w).clamp(min=0.0).pow(self.mu)
        self.apply_update(group, dw * self.batch_factor(s_post.shape[0]), rows)
        return None

    def extra_repr(self) -> str:
        return f"eta={self.eta}, x_tar={self.x_tar}, mu={self.mu}, " + super().extra_repr()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eta", type=float, default=0.01, help="learning rate (code: nu_ee_post)")
    p.add_argument("--x-tar", type=float, default=0.4, help="target trace (code: STDP_offset)")
    p.add_argument("--mu", type=float, default=0.2, help="weight dependence (code: exp_ee_post)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest

    class PaperRule(DiehlCook2015):
        """The model with :class:`PresynapticTargetSTDP` on ``fc`` instead of its rule."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.stdp = PresynapticTargetSTDP(
                connection=self.fc,
                pre=self.inp,
                post=self.exc,
                eta=args.eta,
                x_tar=args.x_tar,
                mu=args.mu,
            )

    mnist_stdp.DiehlCook2015 = PaperRule
    mnist_stdp.main(rest)


if __name__ == "__main__":
    main()
