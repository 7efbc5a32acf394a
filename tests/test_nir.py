"""pysnn.nir: NIR export and import, checked against hand computations and, where installed,
against snnTorch and Norse running the same graphs."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pysnn.connection import Conv2d, Linear
from pysnn.network import SNNNetwork, reset_state
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, IzhikevichNeuron, LIFNeuron
from pysnn.readout import LIReadout

nir = pytest.importorskip("nir")
from pysnn.nir import CubaLIF, NIRNetwork, Scale, from_nir, to_nir  # noqa: E402


def run(module, x):
    """``T`` steps of ``module`` on ``x`` ``(T, B, ...)`` from a fresh state."""
    reset_state(module)
    with torch.no_grad():
        return torch.stack([module(step) for step in x])


def spikes_in(seed, shape, steps=40, p=0.3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, *shape, generator=generator) < p).float()


def scaled_(module, factor):
    with torch.no_grad():
        module.weight.mul_(factor)
    return module


def through_file(graph, tmp_path):
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    return nir.read(path)


def dense_net(dt=1.0):
    torch.manual_seed(0)
    return nn.Sequential(
        Input(12, dt),
        scaled_(Linear(12, 16, dt, bias=True), 8.0),
        LIFNeuron(16, dt, tau_v=torch.linspace(5.0, 30.0, 16), thresh=-60.0, refrac=0.0),
        scaled_(Linear(16, 8, dt), 12.0),
        IFNeuron(8, dt, thresh=-62.0, refrac=0.0),  # v_rest -65: written shifted
        scaled_(Linear(8, 6, dt), 3.0),
        CubaLIF(6, dt, tau_syn=3.0, tau_v=8.0, thresh=0.4, gain=1.5),
        Linear(6, 4, dt),
        LIReadout(4, dt, tau_v=10.0, v_rest=0.5),
    )


def layer_outputs(net, x):
    """Outputs of every neuron module of ``net`` over the run (to check they all spike)."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, []).append(o))
        for k, m in enumerate(net)
        if isinstance(m, (LIFNeuron, CubaLIF))
    ]
    out = run(net, x)
    for hook in hooks:
        hook.remove()
    return out, {k: torch.stack(v) for k, v in seen.items()}


@pytest.mark.parametrize("method,time_unit", [("exact", "s"), ("euler", "s"), ("exact", "ms")])
def test_round_trip_through_file_gives_identical_spikes(tmp_path, method, time_unit):
    net = dense_net(dt=0.5)
    x = spikes_in(0, (3, 12))
    expected, layers = layer_outputs(net, x)
    for k, s in layers.items():  # every spiking layer is active, none saturated
        assert 0 < float(s.mean()) < 0.9, k
    graph = through_file(to_nir(net, method=method, time_unit=time_unit), tmp_path)
    back = from_nir(graph, dt=0.5, method=method, time_unit=time_unit)
    assert isinstance(back, NIRNetwork)
    assert torch.equal(run(back, x), expected)
    # and again, from the imported network (its own graph)
    again = to_nir(back, method=method, time_unit=time_unit)
    again = from_nir(again, 0.5, method=method, time_unit=time_unit)
    assert torch.equal(run(again, x), expected)


def test_round_trip_conv_pool_flatten(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(
        scaled_(Conv2d(2, 4, 3, padding=1, bias=True), 6.0),
        LIFNeuron((4, 6, 6), tau_v=10.0, thresh=-62.0, refrac=0.0),
        nn.AvgPool2d(2),
        scaled_(Conv2d(4, 3, 3, padding=1), 10.0),
        IFNeuron((3, 3, 3), thresh=1.0, v_rest=0.0, v_reset=0.0, refrac=0.0),
        nn.AvgPool2d(3, divisor_override=1),  # NIR SumPool2d
        nn.Flatten(),
        scaled_(Linear(3, 5), 2.0),
        LIFNeuron(5, tau_v=20.0, thresh=0.5, v_rest=0.0, v_reset=0.0, refrac=0.0),
    )
    x = spikes_in(2, (2, 2, 6, 6))
    expected = run(net, x)
    assert 0 < float(expected.mean()) < 0.9
    graph = through_file(to_nir(net, input_shape=(2, 6, 6)), tmp_path)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert {"Conv2d", "AvgPool2d", "SumPool2d", "Flatten", "LIF", "IF"} <= set(kinds)
    assert torch.equal(run(from_nir(graph, dt=1.0), x), expected)


class Recurrent(SNNNetwork):
    """``lif(fc(x) + rec(lif's spikes of the previous step))``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = scaled_(Linear(10, 12), 6.0)
        self.lif = LIFNeuron(12, tau_v=15.0, thresh=-60.0, refrac=0.0)
        self.rec = scaled_(Linear(12, 12), 8.0)
        self.out = Linear(12, 3)
        self.readout = LIReadout(3)
        self.add_layer("hidden", self.fc, self.lif)
        self.add_layer("output", self.out, self.readout)

    def forward(self, x):
        current = self.fc(x)
        if self.lif.spikes is not None:
            current = current + self.rec(self.lif.spikes)
        return self.readout(self.out(self.lif(current)))


RECURRENT_EDGES = [
    ("input", "fc"),
    ("fc", "lif"),
    ("lif", "rec"),
    ("rec", "lif"),
    ("lif", "out"),
    ("out", "readout"),
    ("readout", "output"),
]


def test_recurrent_network_round_trip(tmp_path):
    net = Recurrent()
    x = spikes_in(4, (3, 10), steps=50)
    hidden = []
    net.lif.register_forward_hook(lambda m, i, o: hidden.append(o))
    expected = run(net, x)
    with_recurrence = torch.stack(hidden)
    assert 0 < float(with_recurrence.mean()) < 0.9
    net_without = Recurrent()
    net_without.rec.weight.data.zero_()
    assert not torch.equal(run(net_without, x), expected)  # the recurrence matters
    graph = through_file(to_nir(net, edges=RECURRENT_EDGES), tmp_path)
    back = from_nir(graph)
    assert ("rec", "lif") in back.late
    assert torch.equal(run(back, x), expected)
    # the state carried by the recurrent edge follows .double() in the middle of a run
    reset_state(back)
    with torch.no_grad():
        first = [back(step) for step in x[:20]]
        back.double()
        rest = [back(step.double()) for step in x[20:]]
    assert back._previous["rec"].dtype == torch.float64
    resumed = torch.stack(first + [r.float() for r in rest])  # float64 rounding from step 20
    torch.testing.assert_close(resumed, expected, rtol=1e-4, atol=1e-4)


def test_edges_layers_chains_the_registered_layers():
    net = Recurrent()
    graph = to_nir(net, edges="layers")
    assert graph.edges[-1] == ("readout", "output")
    assert ("fc", "lif") in graph.edges and "rec" not in graph.nodes
    net.rec.weight.data.zero_()  # then the chain is the network
    x = spikes_in(5, (2, 10))
    assert torch.equal(run(from_nir(graph), x), run(net, x))


def test_shared_delay_is_a_delay_node(tmp_path):
    torch.manual_seed(6)
    net = nn.Sequential(
        scaled_(Linear(6, 5, delay=3.0), 20.0),
        LIFNeuron(5, tau_v=10.0, thresh=-60.0, refrac=0.0),
    )
    graph = through_file(to_nir(net, time_unit="ms"), tmp_path)
    delay = [n for n in graph.nodes.values() if isinstance(n, nir.Delay)]
    assert len(delay) == 1 and np.allclose(delay[0].delay, 3.0)
    x = spikes_in(7, (2, 6))
    expected = run(net, x)
    assert float(expected[:3].sum()) == 0 and float(expected.sum()) > 0
    back = from_nir(graph, dt=1.0, time_unit="ms")
    assert torch.equal(run(back, x), expected)
    # a Delay per input becomes a per-synapse delay
    graph.nodes["0.delay"].delay = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    per_input = from_nir(graph, dt=1.0, time_unit="ms")
    fc = per_input.nodes["0"]
    assert fc.per_synapse_delay and torch.equal(fc.delay[2], torch.arange(6.0))


def test_threshold_equality_is_kept():
    """pysnn fires at v >= thresh, NIR at v > v_threshold: the exported threshold is the float
    just below, so a neuron sitting exactly on its threshold fires in both."""
    lif = LIFNeuron(1, tau_v=math.inf, v_rest=0.0, v_reset=0.0, thresh=1.0, refrac=0.0)
    graph = to_nir(nn.Sequential(lif), dt=1.0)
    node = graph.nodes["0"]
    assert node.v_threshold[0] < 1.0 and np.float32(node.v_threshold[0]) == np.nextafter(
        np.float32(1.0), np.float32(0.0)
    )
    x = torch.full((3, 1, 1), 0.5)
    assert run(lif, x)[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert run(from_nir(graph), x)[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    # a NIR neuron exactly at v_threshold does not fire
    strict = nir.NIRGraph.from_list(
        nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1))
    )
    assert run(from_nir(strict), x)[:, 0, 0].tolist() == [0.0, 0.0, 1.0]


# ------------------------------------------------------------------ graphs as peers write them


def snntorch_style_graph(weight1, bias1, weight_rec, beta, vthr, dt_s=1e-4):
    """What snnTorch's ``export_to_nir`` writes for ``Linear -> RLeaky`` (a nested graph)."""
    n = weight1.shape[0]
    tau = dt_s / (1 - beta) * np.ones(n)
    lif = nir.LIF(
        tau=tau,
        r=tau / dt_s,
        v_leak=np.zeros(n),
        v_threshold=vthr * np.ones(n),
        v_reset=np.zeros(n),
    )
    sub = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=[n]),
            "lif": lif,
            "w_rec": nir.Linear(weight=weight_rec),
            "output": nir.Output(output_type=[n]),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([weight1.shape[1]])),
            "fc": nir.Affine(weight=weight1, bias=bias1),
            "rlif": sub,
            "output": nir.Output(output_type=np.array([n])),
        },
        edges=[("input", "fc"), ("fc", "rlif"), ("rlif", "output")],
    )


def test_import_snntorch_style_recurrent_graph():
    rng = np.random.default_rng(8)
    w1 = rng.normal(0, 0.6, (7, 5)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 7).astype(np.float32)
    w_rec = rng.normal(0, 0.5, (7, 7)).astype(np.float32)
    beta, vthr = 0.85, 0.7
    graph = snntorch_style_graph(w1, b1, w_rec, beta, vthr)
    x = spikes_in(9, (2, 5), steps=60, p=0.4)
    # snnTorch's RLeaky with reset to zero, by hand:
    # mem = beta * mem + W x + b + W_rec s_prev; s = mem > thr; mem = 0 where s
    mem, s_prev, expected = np.zeros((2, 7)), np.zeros((2, 7)), []
    for xt in x.double().numpy():
        mem = beta * mem + xt @ w1.T.astype(np.float64) + b1 + s_prev @ w_rec.T
        s_prev = (mem > vthr).astype(np.float64)
        mem = np.where(s_prev > 0, 0.0, mem)
        expected.append(s_prev)
    expected = np.stack(expected)
    assert 0.05 < expected.mean() < 0.8
    got = run(from_nir(graph, dt=0.1, method="euler"), x).numpy()
    assert np.array_equal(got, expected)


def test_import_norse_style_graph():
    """Norse writes LIF / CubaLIF / IF with ``r = 1`` and simulates them with forward Euler:
    ``v += dt / tau * (v_leak - v + I)``; its IF adds the input as it is."""
    rng = np.random.default_rng(10)
    w1 = rng.normal(0, 1.0, (6, 4))
    w2 = rng.normal(0, 1.0, (5, 6))
    w3 = np.abs(rng.normal(0, 1.0, (3, 5))) * 0.3
    dt = 1e-3
    tau_mem, tau_syn, v_leak, v_th = 1 / 100, 1 / 200, 0.1, 0.3
    graph = nir.NIRGraph.from_list(
        nir.Affine(weight=w1 * 20, bias=np.zeros(6)),
        nir.LIF(
            tau=np.full(6, tau_mem),
            r=np.ones(6),
            v_leak=np.full(6, v_leak),
            v_threshold=np.full(6, v_th),
            v_reset=np.zeros(6),
        ),
        nir.Affine(weight=w2 * 30, bias=np.zeros(5)),
        nir.CubaLIF(
            tau_mem=np.full(5, tau_mem),
            tau_syn=np.full(5, tau_syn),
            r=np.ones(5),
            v_leak=np.zeros(5),
            v_threshold=np.full(5, v_th),
        ),
        nir.Affine(weight=w3, bias=np.zeros(3)),
        nir.IF(r=np.ones(3), v_threshold=np.full(3, 0.5)),
    )
    x = spikes_in(11, (2, 4), steps=80, p=0.4).double().numpy()
    v1, i2, v2, v3 = np.full((2, 6), v_leak), np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 3))
    layers = []
    for xt in x:
        v1 = v1 + dt / tau_mem * (v_leak - v1 + xt @ (w1 * 20).T)
        s1 = (v1 > v_th) * 1.0
        v1 = np.where(s1 > 0, 0.0, v1)
        i2 = i2 + dt / tau_syn * (-i2 + s1 @ (w2 * 30).T)  # NIR: tau_syn dI/dt = -I + w_in S
        v2 = v2 + dt / tau_mem * (-v2 + i2)
        s2 = (v2 > v_th) * 1.0
        v2 = np.where(s2 > 0, 0.0, v2)
        v3 = v3 + s2 @ w3.T
        s3 = (v3 > 0.5) * 1.0
        v3 = np.where(s3 > 0, 0.0, v3)
        layers.append(s3)
    expected = np.stack(layers)
    assert 0.02 < expected.mean() < 0.8
    net = from_nir(graph, dt=1.0, method="euler")
    got = run(net.double(), torch.from_numpy(x)).numpy()
    assert np.array_equal(got, expected)


def test_exact_method_matches_the_closed_form():
    """``method="exact"``: the state at the end of each step is the ODE's solution for pulses of
    area ``x_k * dt`` at the start of each step (LI and CubaLI: no threshold, no reset)."""
    dt, tau, tau_syn, r, w_in, v_leak = 0.5, 4.0, 1.5, 2.0, 3.0, -0.2
    x = torch.randn(30, 1, 1, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    li = nir.NIRGraph.from_list(
        nir.LI(tau=np.full(1, tau), r=np.full(1, r), v_leak=np.full(1, v_leak))
    )
    cuba = nir.NIRGraph.from_list(
        nir.CubaLI(
            tau_syn=np.full(1, tau_syn),
            tau_mem=np.full(1, tau),
            r=np.full(1, r),
            v_leak=np.full(1, v_leak),
            w_in=np.full(1, w_in),
        )
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the modules' constants in float64
    try:
        got_li = run(from_nir(li, dt, time_unit="ms"), x)[:, 0, 0].numpy()
        got_cuba = run(from_nir(cuba, dt, time_unit="ms"), x)[:, 0, 0].numpy()
    finally:
        torch.set_default_dtype(default)
    xs = x[:, 0, 0].numpy()
    for k in range(len(xs)):
        ages = (k + 1 - np.arange(k + 1)) * dt  # time from each pulse to the end of step k
        pulses = xs[: k + 1] * dt
        li_closed = v_leak + np.sum(r * pulses / tau * np.exp(-ages / tau))
        jumps = w_in * pulses / tau_syn  # of the synaptic current
        kernel = r * tau_syn / (tau_syn - tau) * (np.exp(-ages / tau_syn) - np.exp(-ages / tau))
        cuba_closed = v_leak + np.sum(jumps * kernel)
        assert got_li[k] == pytest.approx(li_closed, rel=1e-9, abs=1e-12)
        assert got_cuba[k] == pytest.approx(cuba_closed, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ errors


def test_options_nir_cannot_express_are_refused_or_dropped():
    refractory = nn.Sequential(Linear(3, 2), LIFNeuron(2, refrac=2.0))
    with pytest.raises(ValueError, match=r"'1' \(LIFNeuron\): a refractory period"):
        to_nir(refractory)
    with pytest.warns(UserWarning, match="refractory period.*dropped"):
        graph = to_nir(refractory, unsupported="warn")
    assert isinstance(graph.nodes["1"], nir.LIF)
    per_synapse = nn.Sequential(Linear(3, 2, delay=torch.ones(2, 3)), LIFNeuron(2, refrac=0.0))
    with pytest.raises(ValueError, match="per-synapse delay"):
        to_nir(per_synapse)
    with pytest.warns(UserWarning, match="per-synapse delay.*dropped"):
        to_nir(per_synapse, unsupported="warn")
    with pytest.raises(ValueError, match="Linear only"):
        to_nir(nn.Sequential(Conv2d(1, 1, 3, delay=2.0), LIFNeuron((1, 4, 4), refrac=0.0)))
    cuba = CubaLIF(2)
    cuba.neuron.refrac = 1.0
    with pytest.raises(ValueError, match="CubaLIF.*refractory"):
        to_nir(cuba)


@pytest.mark.parametrize(
    "module,match",
    [
        (AdaptiveLIFNeuron(3), "AdaptiveLIFNeuron"),
        (IzhikevichNeuron(3), "IzhikevichNeuron"),
        (nn.Sequential(Linear(3, 3), nn.ReLU()), "ReLU"),
    ],
)
def test_modules_nir_cannot_express_raise_type_error(module, match):
    with pytest.raises(TypeError, match=match):
        to_nir(module, dt=1.0)


def test_bad_export_arguments():
    net = nn.Sequential(Linear(3, 2), LIFNeuron(2, refrac=0.0))
    for kwargs, match in [
        ({"method": "rk4"}, "method"),
        ({"time_unit": "h"}, "time_unit"),
        ({"unsupported": "ignore"}, "unsupported"),
        ({"dt": -1.0}, "dt"),
        ({"edges": [("input", "nope")]}, "nope"),
        ({"edges": "layers"}, "layers"),
        ({"edges": [("output", "0")]}, "output"),
    ]:
        with pytest.raises(ValueError, match=match):
            to_nir(net, **kwargs)
    with pytest.raises(ValueError, match="different dt"):
        to_nir(nn.Sequential(LIFNeuron(2, 1.0), LIFNeuron(2, 0.5)))
    with pytest.raises(ValueError, match="dt=0.5 ms"):
        to_nir(nn.Sequential(LIFNeuron(2, 1.0, refrac=0.0), LIFNeuron(2, 0.5)), dt=1.0)
    with pytest.raises(ValueError, match="v_rest must be 0"):
        to_nir(LIReadout(2, tau_v=math.inf, v_rest=1.0))
    with pytest.raises(ValueError, match="infinite for some neurons"):
        to_nir(LIFNeuron(2, tau_v=torch.tensor([math.inf, 5.0]), refrac=0.0))
    conv = nn.Sequential(Conv2d(1, 2, 3), LIFNeuron((2, 4, 4), refrac=0.0))
    with pytest.raises(ValueError, match=r"pass input_shape=\(C, H, W\)"):
        to_nir(conv)
    with pytest.raises(ValueError, match="input_shape must be positive"):
        to_nir(conv, input_shape=(1, 0, 6))
    with pytest.raises(ValueError, match="could not infer the graph's shapes"):
        to_nir(conv, input_shape=(1, 9, 9))  # (2, 7, 7) into neurons of shape (2, 4, 4)
    with pytest.raises(ValueError, match="ceil_mode"):
        to_nir(nn.AvgPool2d(2, ceil_mode=True), dt=1.0)
    with pytest.raises(ValueError, match="divisor_override=2"):
        to_nir(nn.AvgPool2d(2, divisor_override=2), dt=1.0)


def test_bad_import_arguments():
    graph = nir.NIRGraph.from_list(
        nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    )
    with pytest.raises(TypeError, match="NIRGraph"):
        from_nir({"nodes": {}})
    with pytest.raises(ValueError, match="dt"):
        from_nir(graph, dt=0.0)
    with pytest.raises(ValueError, match="method"):
        from_nir(graph, method="rk4")
    with pytest.raises(ValueError, match="decay factor"):  # tau = 1 ms < dt with Euler
        from_nir(graph, dt=2.0, method="euler", time_unit="ms")
    with pytest.raises(TypeError, match="Threshold"):
        from_nir(nir.NIRGraph.from_list(nir.Threshold(threshold=np.ones(2))))
    delayed = nir.NIRGraph.from_list(
        nir.Delay(delay=np.full(2, 1.5)), nir.Linear(weight=np.ones((2, 2)))
    )
    with pytest.raises(ValueError, match="whole steps"):
        from_nir(delayed, dt=1.0, time_unit="ms")
    alone = nir.NIRGraph.from_list(nir.Delay(delay=np.full(2, 1.0)))
    with pytest.raises(ValueError, match="Delay only as the delay"):
        from_nir(alone, dt=1.0, time_unit="ms")


def test_scale_module_round_trip():
    scale = nn.Sequential(Scale(torch.tensor([2.0, -1.0])), LIReadout(2, tau_v=5.0))
    graph = to_nir(scale)
    assert isinstance(graph.nodes["0"], nir.Scale)
    x = torch.randn(10, 3, 2, generator=torch.Generator().manual_seed(13))
    assert torch.equal(run(from_nir(graph), x), run(scale, x))


# ------------------------------------------------------------------ peers (bench environment)


def pysnn_lif_net(dt):
    torch.manual_seed(14)
    return nn.Sequential(
        scaled_(Linear(20, 30, dt, bias=True), 1.0),
        LIFNeuron(30, dt, tau_v=1.0, thresh=0.5, v_rest=0.0, v_reset=0.0, refrac=0.0),
        Linear(30, 10, dt),
        CubaLIF(10, dt, tau_syn=0.5, tau_v=2.0, thresh=0.3),
    )


def run_stateful(module, x):
    """Steps of a nirtorch graph module (``forward(x, state) -> (out, state)``)."""
    state, out = None, []
    with torch.no_grad():
        for step in x:
            y, state = module(step, state)
            out.append(y)
    return torch.stack(out)


def test_snntorch_runs_a_pysnn_export_and_pysnn_runs_an_snntorch_export():
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    net = pysnn_lif_net(dt=0.1)  # snnTorch's dt: 1e-4 s
    x = spikes_in(15, (4, 20), steps=60)
    expected = run(net, x)
    assert 0.02 < float(expected.mean()) < 0.8
    theirs = import_from_nir(to_nir(net, method="euler"))
    assert torch.equal(run_stateful(theirs, x), expected)

    from snntorch import utils

    torch.manual_seed(16)
    kwargs = {"init_hidden": True, "reset_mechanism": "zero", "reset_delay": False}
    model = nn.Sequential(
        nn.Linear(20, 30),
        snn.Leaky(beta=torch.full((30,), 0.9), threshold=torch.full((30,), 0.5), **kwargs),
        nn.Linear(30, 10),
        snn.RLeaky(beta=torch.full((10,), 0.8), linear_features=10, threshold=0.5, **kwargs),
    )
    with torch.no_grad():
        utils.reset(model)
        expected = torch.stack([model(step) for step in x])
    assert 0.02 < float(expected.mean()) < 0.8
    graph = export_to_nir(model, x[0], ignore_dims=[0])
    assert torch.equal(run(from_nir(graph, dt=0.1, method="euler"), x), expected)


def test_norse_runs_pysnn_exports():
    pytest.importorskip("norse")
    pytest.importorskip("nirtorch")
    from norse.torch.utils.import_nir import from_nir as norse_from_nir

    x = spikes_in(17, (4, 20), steps=60)
    torch.manual_seed(18)
    if_net = nn.Sequential(
        Linear(20, 30),
        IFNeuron(30, thresh=0.5, v_rest=0.0, v_reset=0.0, refrac=0.0),
        Linear(30, 10),
        IFNeuron(10, thresh=0.5, v_rest=0.0, v_reset=0.0, refrac=0.0),
    )
    cuba_net = nn.Sequential(
        Linear(20, 30),
        CubaLIF(30, 0.1, tau_syn=0.5, tau_v=1.0, thresh=0.3),
        Linear(30, 10),
        CubaLIF(10, 0.1, tau_syn=0.3, tau_v=2.0, thresh=0.3),
    )
    for net, dt_s in ((if_net, 1e-3), (cuba_net, 1e-4)):
        expected = run(net, x)
        assert 0.02 < float(expected.mean()) < 0.8
        theirs = norse_from_nir(to_nir(net, method="euler"), dt=dt_s)
        assert torch.equal(run_stateful(theirs, x), expected)


def test_docs_page_example_runs(tmp_path, monkeypatch):
    """The first code block of docs/nir.rst runs as shown."""
    import pathlib
    import textwrap

    text = (pathlib.Path(__file__).parent.parent / "docs" / "nir.rst").read_text()
    block = text.split(".. code-block:: python\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("   "):
            break
        lines.append(line)
    monkeypatch.chdir(tmp_path)
    exec(compile(textwrap.dedent("\n".join(lines)), "docs/nir.rst", "exec"), {})
    assert (tmp_path / "net.nir").exists()
