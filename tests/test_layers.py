"""pysnn.multistep.run_layers: T steps of a network of layers in one fused call, bit for bit
the documented step loop (and DiehlCook2015's forward), with the loop as fallback."""

import pytest
import torch

import pysnn
from pysnn import native
from pysnn.connection import Linear
from pysnn.models import DiehlCook2015
from pysnn.multistep import run_layers
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, LIFNeuron

FUSED = native.available()


def digits(n, steps=350, batch=1, seed=0, rate=0.06):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 784, generator=gen) * rate
    return [(torch.rand(steps, batch, 784, generator=gen) < base[i]).float() for i in range(n)]


def state_of(net):
    """Every tensor of the network's modules' state, and the activity counts."""
    out = {}
    for name, module in net.named_modules():
        for key, value in module._buffers.items():
            if value is not None:
                out[f"{name}.{key}"] = value
        activity = getattr(module, "_activity", None)
        if activity is not None:
            out[f"{name}.activity"] = (activity.steps, activity.events, activity.event)
    out["weight"] = net.fc.weight.detach()
    copy = net.fc._copy.copy
    if copy is not None:
        out["copy"] = copy
    return out


def assert_same_state(a, b):
    sa, sb = state_of(a), state_of(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, equal_nan=True, msg=key)
        else:
            assert sa[key] == sb[key], key


def loop_run(net, spikes):
    """DiehlCook2015.run as T calls of forward (the definition of the result)."""
    with torch.no_grad():
        net.reset_state()
        counts = torch.zeros(spikes.shape[1], net.n_neurons, dtype=net.fc.weight.dtype)
        for x in spikes:
            counts += net(x)
        if net.training:
            net.relax_theta(spikes.shape[0] * net.dt)
            net.fc.normalize(net.norm)
    return counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diehl_cook_run_is_the_forward_loop_bit_for_bit(dtype, fused_calls):
    torch.manual_seed(1)
    a = DiehlCook2015(n_neurons=30).to(dtype)
    b = DiehlCook2015(n_neurons=30).to(dtype)
    b.load_state_dict(a.state_dict())
    for spikes in digits(4, seed=2, rate=0.1):
        spikes = spikes.to(dtype)
        expected = loop_run(a, spikes)
        got = b.run(spikes)
        assert torch.equal(got, expected)
        assert_same_state(a, b)
    assert expected.sum() > 0 and a.exc.theta.sum() > 0  # learning happened
    # the digits crossed "auto" re-counts (every AUTO_INTERVAL steps) and still took the kernel
    assert a.fc._activity.steps < 4 * 350
    if FUSED:
        assert sum(done for done, _ in fused_calls) > 0.9 * 4 * 350
    # frozen: eval mode, a batch of digits at once, no learning
    a.eval(), b.eval()
    spikes = digits(1, batch=5, seed=3, rate=0.1)[0].to(dtype)
    assert torch.equal(b.run(spikes), loop_run(a, spikes))
    assert_same_state(a, b)


def user_network(dtype, delays=(0.0, 0.0, 0.0)):
    """Layers of every kind the kernel takes, a bias, a connection from a later layer; ``delays``
    (ms) of ``c1`` (from the input), ``back`` (from a later layer) and ``c4`` (from an earlier
    one)."""
    torch.manual_seed(4)
    inp = Input(40)
    l1 = AdaptiveLIFNeuron(25, thresh=-55.0, theta_plus=0.5, tau_theta=50.0, refrac=2.0)
    l2 = LIFNeuron(15, thresh=-58.0, tau_v=10.0, trace_mode="reset")
    l3 = IFNeuron(10, thresh=1.0)
    c1 = Linear(40, 25, delay=delays[0], init="uniform", init_kwargs={"a": 0.0, "b": 8.0})
    c2 = Linear(25, 15, bias=True, init="uniform", init_kwargs={"a": 0.0, "b": 6.0})
    c2.propagation = "event"  # (c1 "auto": re-counted every AUTO_INTERVAL steps)
    back = Linear(
        15,
        25,
        delay=delays[1],
        init="uniform",
        init_kwargs={"a": -3.0, "b": 0.0},
        propagation="event",
    )
    c3 = Linear(15, 10, init="uniform", init_kwargs={"a": 0.0, "b": 0.5}, propagation="event")
    c4 = Linear(
        25,
        10,
        delay=delays[2],
        init="uniform",
        init_kwargs={"a": 0.0, "b": 0.3},
        propagation="event",
    )
    rec = Linear(15, 15, init="uniform", init_kwargs={"a": -2.0, "b": 1.0}, propagation="event")
    modules = torch.nn.ModuleList([inp, l1, l2, l3, c1, c2, back, c3, c4, rec]).to(dtype)
    modules.requires_grad_(False)
    layers = [
        (l1, [(c1, inp), (back, l2)]),  # back: l2's spikes of the step before
        (l2, [(c2, l1), (rec, l2)]),  # rec: l2's own spikes of the step before
        (l3, [(c3, l2), (c4, l1)]),
    ]
    return modules, layers


def hand_loop(modules, spikes):
    """The step loop of run_layers' docstring, written out for user_network."""
    inp, l1, l2, l3, c1, c2, back, c3, c4, rec = modules
    out = []
    for x in spikes:
        inp(x)
        current = c1(inp.spikes)
        if l2.spikes is not None:
            current = current + back(l2.spikes)
        s1 = l1(current)
        current = c2(l1.spikes)
        if l2.spikes is not None:
            current = current + rec(l2.spikes)
        s2 = l2(current)
        s3 = l3(c3(l2.spikes) + c4(l1.spikes))
        out.append((s1, s2, s3))
    return [torch.stack(group) for group in zip(*out)]


@pytest.mark.parametrize("delays", [(0.0, 0.0, 0.0), (2.0, 1.0, 3.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_user_network_batch_raster_bit_for_bit(dtype, delays, fused_calls):
    """Spikes and every state (with delays: the rings, their positions, the arriving spikes)
    as the hand-written loop of the modules leaves them, batch 3."""
    ma, layers_a = user_network(dtype, delays)
    mb, layers_b = user_network(dtype, delays)
    spikes = (torch.rand(150, 3, 40, generator=torch.Generator().manual_seed(5)) < 0.04).to(dtype)
    with torch.no_grad():
        expected = hand_loop(ma, spikes)
        got = run_layers(mb[0], layers_b, spikes, record=[mb[1], mb[2], mb[3]])
    for e, g in zip(expected, got):
        assert g.shape == e.shape and g.dtype == dtype
        assert torch.equal(g, e)
    assert all(e.sum() > 0 for e in expected)  # every layer fires
    for x, y in zip(ma, mb):
        for key, value in x._buffers.items():
            if value is not None:
                assert torch.equal(value, y._buffers[key]), (type(x).__name__, key)
    if FUSED:
        assert sum(done for done, _ in fused_calls) >= 100
    # counts of a second run continuing from that state
    more = (torch.rand(50, 3, 40, generator=torch.Generator().manual_seed(6)) < 0.04).to(dtype)
    with torch.no_grad():
        expected = hand_loop(ma, more)[2].sum(0)
        got = run_layers(mb[0], layers_b, more, record=[mb[3]], counts=True)[0]
    assert torch.equal(got, expected)


def test_hooks_and_disabled_kernels_run_the_loop(fused_calls):
    torch.manual_seed(7)
    a, b = DiehlCook2015(n_neurons=20), DiehlCook2015(n_neurons=20)
    b.load_state_dict(a.state_dict())
    seen = []
    b.inh.register_forward_hook(lambda m, i, o: seen.append(o.sum()))
    spikes = digits(1, steps=60, seed=8, rate=0.1)[0]
    assert torch.equal(b.run(spikes), loop_run(a, spikes))
    assert len(seen) == 60 and not fused_calls  # the hook saw every step
    assert_same_state(a, b)
    c = DiehlCook2015(n_neurons=20)
    c.load_state_dict(b.state_dict())
    with native.enabled(False):  # (restores the setting: PYSNN_NATIVE=0 keeps them off)
        got = c.run(spikes)
    assert torch.equal(got, loop_run(a, spikes)) and not fused_calls


def test_kept_reference_is_not_written():
    torch.manual_seed(9)
    a, b = DiehlCook2015(n_neurons=20), DiehlCook2015(n_neurons=20)
    b.load_state_dict(a.state_dict())
    spikes = digits(2, steps=80, seed=10, rate=0.1)
    loop_run(a, spikes[0]), b.run(spikes[0])
    kept_a, kept_b = a.exc.v, b.exc.v
    before = kept_b.clone()
    with torch.no_grad():
        for x in spikes[1]:
            a(x)
        layers, rules = b.step_program()
        run_layers(b.inp, layers, spikes[1], rules)
    assert torch.equal(kept_b, before) and torch.equal(kept_a, before)
    assert torch.equal(a.exc.v, b.exc.v) and not torch.equal(b.exc.v, before)


def test_nan_input_raises_the_loops_error_after_the_same_steps(fused_calls):
    torch.manual_seed(11)
    a, b = DiehlCook2015(n_neurons=20), DiehlCook2015(n_neurons=20)
    b.load_state_dict(a.state_dict())
    spikes = digits(1, steps=100, seed=12, rate=0.1)[0]
    spikes[70, 0, 5] = float("nan")
    with pysnn.checks(True):
        with pytest.raises(ValueError, match=r"x contains NaN \(input to Input"):
            loop_run(a, spikes)
        with pytest.raises(ValueError, match=r"x contains NaN \(input to Input"):
            b.run(spikes)
    assert_same_state(a, b)
    if FUSED:  # the kernel found it, before the input's step
        assert fused_calls[-1][1] == 0


def test_nan_weight_raises_before_the_layer_steps(fused_calls):
    torch.manual_seed(13)
    a, b = DiehlCook2015(n_neurons=20), DiehlCook2015(n_neurons=20)
    b.load_state_dict(a.state_dict())
    spikes = digits(1, steps=100, seed=14, rate=0.2)[0]
    loop_run(a, spikes[:10]), b.run(spikes[:10])
    # an input silent for 50 steps, then active: its NaN weight reaches a fused step
    late = (spikes[:50, 0].sum(0) == 0) & (spikes[50:, 0].sum(0) > 0)
    j = int(late.nonzero()[0])
    message = r"x contains NaN( or an infinity)? \(input to AdaptiveLIFNeuron"
    with pysnn.checks(True), torch.no_grad():
        for net in (a, b):
            net.fc.weight[3, j] = float("nan")
        with pytest.raises(ValueError, match=message):
            for x in spikes:
                a(x)
        with pytest.raises(ValueError, match=message):
            layers, rules = b.step_program()
            run_layers(b.inp, layers, spikes, rules)
    assert_same_state(a, b)
    if FUSED:  # the kernel found it, before the excitatory layer's step
        assert fused_calls[-1][1] == 1


def test_arguments_are_checked():
    net = DiehlCook2015(n_neurons=5)
    layers, rules = net.step_program()
    spikes = torch.zeros(3, 1, 784)
    with pytest.raises(ValueError, match="pre must be input or a neuron of layers"):
        run_layers(net.inp, [(net.exc, [(net.fc, net.inh)])], spikes)
    with pytest.raises(ValueError, match=r"layers\[0\] must be a \(neuron, incoming\) pair"):
        run_layers(net.inp, [net.exc], spikes)
    with pytest.raises(ValueError, match="at least one"):
        run_layers(net.inp, [], spikes)
    with pytest.raises(ValueError, match="may appear once"):
        run_layers(net.inp, layers + [layers[0]], spikes)
    with pytest.raises(ValueError, match=r"record\[0\] is not a neuron of layers"):
        run_layers(net.inp, layers, spikes, record=[net.inp])
    with pytest.raises(TypeError, match=r"rules\[0\] must be a learning rule"):
        run_layers(net.inp, layers, spikes, rules=["stdp"])
    with pytest.raises(ValueError, match=r"spikes must be a \(T, B, ...\) tensor with T >= 1"):
        run_layers(net.inp, layers, torch.zeros(0, 1, 784))
    with pytest.raises(ValueError, match=r"\(connection, pre, synapse\) triple"):
        run_layers(net.inp, [(net.exc, [(net.fc,)])], spikes)
    with pytest.raises(TypeError, match="the synapse must be a module"):
        run_layers(net.inp, [(net.exc, [(net.fc, net.inp, "syn")])], spikes)


# ---- conductance synapses (the paper's form of Diehl & Cook) in the fused loop ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conductance_diehl_cook_run_is_the_forward_loop_bit_for_bit(dtype, fused_calls):
    """With ConductanceSynapse modules between connections and neurons, run() (run_layers, the
    synapses stepped inside the fused C loop) leaves the spikes, every state (conductances,
    voltages, thresholds, traces), the STDP-trained weights and their copies exactly as T calls
    of forward do, over several digits with normalisation."""
    torch.manual_seed(21)
    a = DiehlCook2015(n_neurons=30, synapses="conductance").to(dtype)
    b = DiehlCook2015(n_neurons=30, synapses="conductance").to(dtype)
    b.load_state_dict(a.state_dict())
    for spikes in digits(4, steps=200, seed=22, rate=0.12):
        spikes = spikes.to(dtype)
        expected = loop_run(a, spikes)
        got = b.run(spikes)
        assert torch.equal(got, expected)
        assert_same_state(a, b)
        for name in ("syn_input", "syn_inh", "syn_e2i"):
            assert torch.equal(getattr(a, name).g, getattr(b, name).g), name
    assert expected.sum() > 0 and not torch.equal(
        a.fc.weight, DiehlCook2015(n_neurons=30).fc.weight
    )
    if FUSED:  # the synapses did not keep the network off the fused loop
        assert sum(done for done, _ in fused_calls) > 150 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_authors_loop_and_rule_run_is_the_forward_loop_bit_for_bit(dtype, fused_calls):
    """The authors' winner-take-all loop (``e2i`` delayed one step), rule and step: run() pushes
    the excitatory spikes through e2i's ring inside the fused loop and leaves the spikes, the
    ring, its position, the arriving spikes and every other state as T calls of forward."""
    kwargs = dict(n_neurons=30, dt=0.5, synapses="conductance", rule="triplet")

    def make(delay):  # (the same initial weights; a state dict would carry the delay along)
        torch.manual_seed(23)
        return DiehlCook2015(**kwargs, inhibition_delay=delay).to(dtype)

    a, b, undelayed = make(0.5), make(0.5), make(0.0)
    assert torch.equal(undelayed.fc.weight, a.fc.weight) and undelayed.e2i.max_delay == 0
    differ = False
    for spikes in digits(3, steps=300, seed=24, rate=0.04):
        spikes = spikes.to(dtype)
        expected = loop_run(a, spikes)
        got = b.run(spikes)
        assert torch.equal(got, expected)
        assert_same_state(a, b)
        assert a.e2i._buffers["history"] is not None
        differ |= not torch.equal(undelayed.run(spikes), got)
    assert expected.sum() > 0 and differ  # (the delay changes the result)
    if FUSED:  # the delayed e2i did not keep the network off the fused loop
        assert sum(done for done, _ in fused_calls) > 0.9 * 3 * 300


def _conductance_layers(seed=0, n=12, subclass=None):
    from pysnn.synapse import ConductanceSynapse

    torch.manual_seed(seed)
    inp, exc = Input(40), LIFNeuron(n, thresh=-55.0, tau_v=20.0, refrac=2.0)
    fc = Linear(40, n, wmin=0.0, wmax=1.0, init="uniform", init_kwargs={"a": 0.0, "b": 0.6})
    syn = (subclass or ConductanceSynapse)(exc, tau_syn=torch.linspace(1.0, 5.0, n), e_rev=0.0)
    return inp, exc, fc, syn


def _conductance_loop(inp, exc, fc, syn, spikes):
    out = []
    with torch.no_grad():
        for x in spikes:
            out.append(exc(syn(fc(inp(x)))))
    return torch.stack(out)


def test_conductance_layer_per_neuron_constants_bit_for_bit(fused_calls):
    a, b = _conductance_layers(3), _conductance_layers(3)
    spikes = (torch.rand(120, 2, 40, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    expected = _conductance_loop(*a, spikes)
    inp, exc, fc, syn = b
    with torch.no_grad():
        got = run_layers(inp, [(exc, [(fc, inp, syn)])], spikes, record=[exc])[0]
    assert torch.equal(got, expected) and expected.sum() > 0
    assert torch.equal(a[3].g, syn.g) and torch.equal(a[1].v, exc.v)
    if FUSED:
        assert sum(done for done, _ in fused_calls) > 50


def test_conductance_layer_with_its_own_step_is_not_fused(fused_calls):
    """A subclass of ConductanceSynapse with its own step is called as written, every step."""
    from pysnn.synapse import ConductanceSynapse

    class Doubled(ConductanceSynapse):
        def step(self, x):
            return 2 * super().step(x)

    a, b = _conductance_layers(5, subclass=Doubled), _conductance_layers(5, subclass=Doubled)
    spikes = (torch.rand(60, 1, 40, generator=torch.Generator().manual_seed(6)) < 0.3).float()
    expected = _conductance_loop(*a, spikes)
    inp, exc, fc, syn = b
    with torch.no_grad():
        got = run_layers(inp, [(exc, [(fc, inp, syn)])], spikes, record=[exc])[0]
    assert torch.equal(got, expected) and torch.equal(a[3].g, syn.g)
    assert fused_calls == []


@pytest.mark.filterwarnings("ignore:Linear. weight values outside")
def test_a_negative_conductance_raises_as_in_the_loop(fused_calls):
    """With value checks on, a negative weight into a conductance synapse keeps the run on the
    modules, so the synapse refuses the negative conductance exactly as the loop does."""
    a, b = _conductance_layers(7), _conductance_layers(7)
    spikes = (torch.rand(60, 1, 40, generator=torch.Generator().manual_seed(8)) < 0.5).float()
    for net in (a, b):
        with torch.no_grad():
            _conductance_loop(*net, spikes[:5])
            net[2].weight[0, :] = -0.5
    with pysnn.checks(True):
        with pytest.raises(ValueError, match="negative one would reverse the driving force"):
            _conductance_loop(*a, spikes[5:])
        inp, exc, fc, syn = b
        with pytest.raises(ValueError, match="negative one would reverse the driving force"):
            with torch.no_grad():
                run_layers(inp, [(exc, [(fc, inp, syn)])], spikes[5:])
    assert torch.equal(a[3].g, syn.g) and torch.equal(a[1].v, exc.v)


def test_a_silent_presynaptic_group_still_decays_the_conductance():
    """(connection, pre, synapse) with pre that has not spiked yet in this batch: the synapse
    steps with zero conductance (its state decays), as DiehlCook2015.forward does."""
    from pysnn.synapse import ConductanceSynapse

    inp, exc = Input(3), LIFNeuron(2)
    other = LIFNeuron(2)
    fc, lat = Linear(3, 2, init="constant", init_kwargs={"val": 0.5}), Linear(2, 2)
    syn, syn_lat = ConductanceSynapse(exc, tau_syn=2.0), ConductanceSynapse(exc, tau_syn=2.0)
    syn_lat._prepare(torch.zeros(1, 2))
    syn_lat.g.fill_(1.0)
    with torch.no_grad():
        run_layers(
            inp,
            [(exc, [(fc, inp, syn), (lat, other, syn_lat)]), (other, [])],
            torch.zeros(1, 1, 3),
        )
    assert torch.allclose(syn_lat.g, torch.full((1, 2), float(torch.exp(torch.tensor(-0.5)))))


class _PostOnlyRule(pysnn.learning.LearningRule):
    """A user's own rule (public names only): at a postsynaptic spike, the spiking neurons'
    weights move by ``eta (x_pre - 0.4)``."""

    def delta(self, group, reward):
        s_post = group.post_spikes()
        return 0.01 * (s_post.t() @ (group.pre_trace() - 0.4)) * self.batch_factor(len(s_post))


def test_a_user_rule_in_the_network_loop_is_the_forward_loop_bit_for_bit():
    """A user's LearningRule subclass is not a built-in rule with a kernel: run_layers steps it
    (it used to fail asking it for the built-in rules' settings)."""
    torch.manual_seed(5)
    a, b = DiehlCook2015(n_neurons=20), DiehlCook2015(n_neurons=20)
    b.load_state_dict(a.state_dict())
    for net in (a, b):
        net.stdp = _PostOnlyRule(connection=net.fc, pre=net.inp, post=net.exc)
    assert pysnn.learning.fused_one_sample(b.stdp) is None
    before = a.fc.weight.detach().clone()
    for spikes in digits(3, seed=6, rate=0.1):
        assert torch.equal(b.run(spikes), loop_run(a, spikes))
        assert_same_state(a, b)
    assert not torch.equal(a.fc.weight, before)  # the rule learned


def _delayed_layer(delay=2.0):
    torch.manual_seed(0)
    inp, neuron = Input(20), LIFNeuron(10, thresh=-60.0)
    conn = Linear(20, 10, delay=delay, init="uniform", init_kwargs={"a": 0.0, "b": 8.0})
    conn.requires_grad_(False)
    return inp, neuron, conn


def test_a_delayed_connection_used_twice_runs_the_loops_pushes(fused_calls):
    """A delayed connection listed twice is pushed twice a step by the loop (each push moves its
    ring on): the fused call is not used for it, and the spikes are the loop's."""
    x = (torch.rand(50, 1, 20, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    inp, neuron, conn = _delayed_layer()
    with torch.no_grad():
        got = run_layers(inp, [(neuron, [(conn, inp), (conn, inp)])], x, record=[neuron])[0]
    inp, neuron, conn = _delayed_layer()
    expected = []
    with torch.no_grad():
        for xt in x:
            inp(xt)
            expected.append(neuron(conn(inp.spikes) + conn(inp.spikes)))
    assert torch.equal(got, torch.stack(expected)) and got.sum() > 0
    assert not fused_calls


def test_a_delayed_connection_in_inference_mode():
    """Under torch.inference_mode (the ring an inference tensor) the spikes of torch.no_grad's
    run, which is fused."""
    x = (torch.rand(50, 1, 20, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    inp, neuron, conn = _delayed_layer()
    with torch.no_grad():
        expected = run_layers(inp, [(neuron, [(conn, inp)])], x, record=[neuron])[0]
    inp, neuron, conn = _delayed_layer()
    with torch.inference_mode():
        got = run_layers(inp, [(neuron, [(conn, inp)])], x, record=[neuron])[0]
    assert torch.equal(got, expected) and got.sum() > 0
