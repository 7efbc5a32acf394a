"""Local learning rules: measure the STDP window, then train a layer by name.

Part 1 builds one presynaptic Input neuron that fires once and K postsynaptic Input neurons that
fire once each, at ``t_pre + dt_k``; one run of ``STDP`` on ``Linear(1, K)`` measures the whole
window, which is compared with the closed form ``pair_stdp_window`` and drawn into
``stdp_window.png`` (output folder: first argument, else ``$PYSNN_DOCS_OUT``, else a new
temporary folder).

Part 2 trains a two-layer network with rules given layer names and held by the network (so
``net.reset_state()``, ``net.eval()``, ``net.to(...)`` reach them), and shows ``grad=True``,
which hands the update to a torch optimiser.

Part 3 writes a new rule (Oja's) on the public hooks of ``LearningRule`` and checks one step by
hand.

    python docs/tutorials/05_learning_rules.py [OUT_DIR]
"""

import os
import sys
import tempfile
from pathlib import Path

import torch

from pysnn.connection import Linear
from pysnn.functional.plasticity import pair_stdp_window
from pysnn.learning import STDP, Hebbian, LearningRule, SynapseGroup, TripletSTDP
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron
from pysnn.plotting import plot_stdp_window

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

# ---------------------------------------------------------------- 1. the STDP window
NU_PRE, NU_POST, TAU = 1e-2, 1e-2, 20.0  # depression / potentiation rates, trace tau (ms)
offsets = torch.arange(-40, 41, 2)  # dt = t_post - t_pre (ms), dt = 1 ms steps
K, t_pre = offsets.numel(), 41
pre = Input(1, tau_trace=TAU).double()
post = Input(K, tau_trace=TAU).double()
syn = Linear(1, K, init="constant", init_kwargs={"val": 0.0}, dtype=torch.float64)
rule = STDP(connection=syn, pre=pre, post=post, nu=(NU_PRE, NU_POST))
for t in range(2 * t_pre + 1):
    # The per-step order every rule expects: pre neuron, connection, post neuron, rule.step().
    syn(pre(torch.tensor([[float(t == t_pre)]], dtype=torch.float64)))
    post((t_pre + offsets == t).double().unsqueeze(0))
    rule.step()
dw = syn.weight.detach()[:, 0]
theory = pair_stdp_window(offsets.double(), NU_PRE, NU_POST, TAU, TAU)
print(f"max |measured - closed form| = {(dw - theory).abs().max():.2e}")
assert torch.allclose(dw, theory, atol=1e-12)
for d in (-10, -2, 0, 2, 10):
    print(f"  dt = {d:+3d} ms: dw = {float(dw[offsets == d]):+.5f}")

plot_stdp_window(
    offsets.double(),
    dw,
    expected=lambda d: pair_stdp_window(d, NU_PRE, NU_POST, TAU, TAU),
    title="pysnn.learning.STDP: measured window and closed form",
    path=OUT / "stdp_window.png",
    dpi=80,
)
print(f"saved {OUT / 'stdp_window.png'}")


# ---------------------------------------------------------------- 2. rules on a network
class TwoLayer(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.inp = Input(20)
        self.fc1 = Linear(20, 10, wmin=0.0, wmax=8.0, init="uniform", init_kwargs={"a": 2, "b": 6})
        self.lif1 = LIFNeuron(10)
        self.fc2 = Linear(10, 5, wmin=0.0, wmax=8.0, init="uniform", init_kwargs={"a": 2, "b": 6})
        self.lif2 = LIFNeuron(5)
        self.add_layer("fc1", self.fc1, self.lif1)
        self.add_layer("fc2", self.fc2, self.lif2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif2(self.fc2(self.lif1(self.fc1(self.inp(x)))))


net = TwoLayer()
# Layer names: connection="fc1" is that layer's Linear, post defaults to its neuron; pre names
# the module (or layer) whose spikes feed it. Rules are modules: held as attributes, they show in
# the network's repr and follow its reset_state(), train()/eval() and .to()/.double().
net.stdp = STDP(network=net, connection="fc1", pre="inp", nu=(1e-4, 1e-2))
net.triplet = TripletSTDP(network=net, connection="fc2", pre="fc1")  # pre = layer fc1's neurons
net.hebb = Hebbian(connections=[(net.fc1, net.inp, net.lif1)], nu=1e-4, decay=1e-3, enabled=False)
print(net)

w0 = net.fc1.weight.detach().clone()
x = (torch.rand(100, 8, 20) < 0.05).float()  # 100 steps, a batch of 8 samples
with torch.no_grad():
    for step in x:
        net(step)
        net.stdp.step()  # updates are averaged over the batch (reduction="mean")
        net.triplet.step()
        net.hebb.step()  # disabled: does nothing
print(
    f"fc1 weight change: mean {float((net.fc1.weight.detach() - w0).mean()):+.4f} mV, "
    f"all within [wmin, wmax]: {bool(((net.fc1.weight >= 0) & (net.fc1.weight <= 8)).all())}"
)

# grad=True: the rule writes -dw into weight.grad and leaves the weight alone, so a torch
# optimiser applies it (SGD with lr=1 reproduces the in-place update).
net.reset_state()  # neurons, connections and the rules' traces
rule = STDP(network=net, connection="fc1", pre="inp", grad=True)
optimizer = torch.optim.SGD([net.fc1.weight], lr=1.0)
optimizer.zero_grad()
with torch.no_grad():
    for step in x[:50]:
        net(step)
        rule.step()  # accumulates into net.fc1.weight.grad
optimizer.step()
net.fc1.clamp_()  # bounds are the user's job with grad=True
print(f"grad=True: |weight.grad| summed = {float(net.fc1.weight.grad.abs().sum()):.4f}")


# ---------------------------------------------------------------- 3. a rule of your own
class Oja(LearningRule):
    """Oja's rule on traces: dw_ij = eta * mean_b y_bi (x_bj - y_bi w_ij), with y the post trace
    and x the presynaptic trace at the synapse (through the delays)."""

    def __init__(self, connection=None, pre=None, post=None, *, eta: float = 1e-3, **kwargs):
        super().__init__(connection, pre, post, **kwargs)
        self.eta = eta

    def delta(self, group: SynapseGroup, reward: None) -> torch.Tensor:
        y, x = group.post_trace(), group.pre_trace()  # (B, out), (B, in) for a shared delay
        hebb = group.correlate(y, x)  # sum_b y_bi x_bj in the weight's layout
        decay = (y * y).sum(0).unsqueeze(1) * group.connection.weight
        return self.eta * (hebb - decay) * self.batch_factor(y.shape[0])


pre3, post3 = Input(4).double(), Input(2).double()
syn3 = Linear(4, 2, init="uniform", init_kwargs={"a": 0, "b": 1}, dtype=torch.float64)
oja = Oja(connection=syn3, pre=pre3, post=post3, eta=0.1)
w_before = syn3.weight.detach().clone()
x3, y3 = (torch.rand(3, 4) < 0.5).double(), (torch.rand(3, 2) < 0.5).double()
syn3(pre3(x3))
post3(y3)
oja.step()  # first step: the traces equal the spikes
by_hand = 0.1 * (y3.t() @ x3 - (y3 * y3).sum(0).unsqueeze(1) * w_before) / 3
assert torch.allclose(syn3.weight.detach() - w_before, by_hand, atol=1e-12)
print(f"{oja}: one step matches the hand computation")
