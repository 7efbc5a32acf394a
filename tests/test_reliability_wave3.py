"""Reliability, wave 3 (issue 25): silent wrong results, crashes and hangs of the newer modules,
each tested as a user hits it (see docs/reliability.rst)."""

from __future__ import annotations

import math

import pytest
import torch

import pysnn
import pysnn.native as native
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, LIFNeuron

PATHS = [pytest.param(True, id="fused"), pytest.param(False, id="torch")]


# ---------------------------------------------------------------------------------------------
# non-finite values reaching a neuron
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("cls", [LIFNeuron, IFNeuron, AdaptiveLIFNeuron])
@pytest.mark.parametrize("bad", [-math.inf, math.inf, math.nan])
def test_non_finite_neuron_input_is_refused_on_both_paths(fused, cls, bad):
    """Was: an input of -inf left v = -inf for good (NaN alone was refused)."""
    neuron = cls(3)
    x = torch.zeros(2, 3)
    with native.enabled(fused), torch.no_grad():
        for _ in range(3):  # the fast step is built after the first general one
            neuron(x)
        kind = {-math.inf: "-inf", math.inf: "inf"}.get(bad, "NaN")
        with pytest.raises(ValueError, match=rf"x contains {kind} \(input to {cls.__name__}"):
            neuron(torch.tensor([[0.0, bad, 0.0], [0.0, 0.0, 0.0]]))
        with pytest.raises(ValueError, match=rf"x contains {kind} \(input to {cls.__name__}"):
            neuron.forward_multistep(torch.full((4, 2, 3), bad))
        assert torch.isfinite(neuron.v).all()
        assert neuron(x).shape == (2, 3) and torch.isfinite(neuron.v).all()


def test_non_finite_check_is_switched_off_with_the_other_value_checks():
    neuron = LIFNeuron(1)
    with pysnn.checks(False), torch.no_grad():
        neuron(torch.tensor([[-math.inf]]))  # the user's choice: not checked
    assert neuron.v.item() == -math.inf


def test_finite_input_whose_sum_overflows_is_accepted():
    """The check sums the input first; an overflowing sum of finite values is not an error."""
    neuron = LIFNeuron(4)
    with torch.no_grad():
        s = neuron(torch.full((2, 4), 3e38))
    assert s.sum() == 8


@pytest.mark.parametrize("bad", [math.nan, -math.inf, math.inf])
def test_inject_v_with_a_non_finite_tensor_is_refused(bad):
    """Was: a NaN or -inf tensor killed the neuron for good (a scalar NaN was refused)."""
    neuron = LIFNeuron(3)
    with torch.no_grad():
        neuron(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"delta contains .*inf|delta contains NaN"):
        neuron.inject_v(torch.tensor([0.0, bad, 1.0]))
    with pytest.raises(ValueError, match="delta must be finite"):
        neuron.inject_v(bad)
    with torch.no_grad():
        neuron(torch.zeros(1, 3))  # nothing pending: the neuron is intact
    assert torch.isfinite(neuron.v).all()


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("bad", [-math.inf, math.inf])
def test_infinite_weight_stops_a_fused_network_run(fused, bad):
    """``run_layers`` (one fused call for T steps) refuses an infinite layer input as the step
    loop does, before the layer steps."""
    from pysnn.models import DiehlCook2015
    from pysnn.multistep import run_layers

    torch.manual_seed(13)
    net = DiehlCook2015(n_neurons=10)
    spikes = (torch.rand(30, 1, 784) < 0.2).float()
    layers, rules = net.step_program()
    with native.enabled(fused):
        run_layers(net.inp, layers, spikes[:2], rules)
        with torch.no_grad():
            net.fc.weight[:, :] = bad
        with pytest.raises(ValueError, match=r"x contains (-?inf|NaN)"):
            with pytest.warns(UserWarning, match="outside"):
                run_layers(net.inp, layers, spikes, rules)
    assert torch.isfinite(net.exc.v).all()


# ---------------------------------------------------------------------------------------------
# rewards and the environment loop
# ---------------------------------------------------------------------------------------------
def _reward_rule(cls):
    from pysnn.connection import Linear
    from pysnn.neuron import Input

    torch.manual_seed(0)
    inp, out = Input(3), LIFNeuron(2, thresh=-64.5)
    fc = Linear(3, 2, init="constant", init_kwargs={"val": 1.0})
    rule = cls(connection=fc, pre=inp, post=out)
    with torch.no_grad():
        for _ in range(3):
            out(fc(inp(torch.ones(2, 3))))
            rule.step()
    return fc, rule


@pytest.mark.parametrize("rule_name", ["MSTDP", "MSTDPET"])
@pytest.mark.parametrize(
    "reward",
    [math.nan, math.inf, torch.tensor(math.nan), torch.tensor([1.0, math.nan])],
    ids=["nan", "inf", "nan-tensor", "nan-per-sample"],
)
def test_non_finite_reward_is_refused_and_the_weights_kept(rule_name, reward):
    """Was: a NaN reward turned every weight into NaN."""
    import pysnn.learning as learning

    fc, rule = _reward_rule(getattr(learning, rule_name))
    before = fc.weight.detach().clone()
    with pytest.raises(ValueError, match=r"reward (must be finite, got (nan|inf)|contains NaN)"):
        with torch.no_grad():
            rule.step(reward=reward)
    assert torch.equal(fc.weight, before)


class _Env:
    """Two steps; the reward of each step and the observation are given."""

    def __init__(self, rewards, obs=(0.0, 1.0)):
        self.rewards, self.obs = list(rewards), obs

    def reset(self, seed=None):
        self.t = 0
        return self.obs, {}

    def step(self, action):
        self.t += 1
        return self.obs, self.rewards[self.t - 1], self.t == len(self.rewards), False, {}


def _loop(env, encode=None, rules=()):
    from pysnn.environment import EnvironmentLoop, count_argmax
    from pysnn.neuron import Input

    encode = encode or (lambda obs: obs.expand(3, *obs.shape))
    return EnvironmentLoop(env, Input(2), encode, count_argmax, rules=list(rules))


def test_nan_reward_on_the_last_step_is_refused_not_returned():
    """Was: ``run`` returned ``[nan]``."""
    with pytest.raises(ValueError, match=r"env.step returned the reward nan at step 1"):
        _loop(_Env([1.0, math.nan])).run(1, quiet=True)
    assert _loop(_Env([1.0, 0.5])).run(1, quiet=True) == [1.5]


@pytest.mark.parametrize(
    "env, error, match",
    [
        (_Env([None, 1.0]), TypeError, r"env.step returned the reward None \(NoneType\) at step 0"),
        (_Env([1.0], obs={"pos": 1.0, "vel": 0.0}), TypeError, r"observation is a dict"),
        (_Env([1.0], obs=["a", "b"]), TypeError, r"observation must be an array of numbers"),
    ],
    ids=["reward-None", "dict-observation", "text-observation"],
)
def test_environment_loop_names_a_bad_reward_or_observation(env, error, match):
    """Was: cryptic TypeErrors from float() and torch.as_tensor."""
    with pytest.raises(error, match=match):
        _loop(env).run(1, quiet=True)


def test_encoder_returning_no_time_step_is_named():
    """Was: ``stack expects a non-empty TensorList``."""
    loop = _loop(_Env([1.0]), encode=lambda obs: obs.expand(0, *obs.shape))
    with pytest.raises(ValueError, match=r"encode returned 0 time steps"):
        loop.run(1, quiet=True)


# ---------------------------------------------------------------------------------------------
# ann_to_snn
# ---------------------------------------------------------------------------------------------
def _ann():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU())


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_calibration_data_is_refused(bad):
    """Was: one inf gave an all-zero first layer (agreement 0 %); NaN rows were skipped."""
    from pysnn.conversion import ann_to_snn

    data = torch.rand(64, 4)
    data[5, 2] = bad
    kind = {math.inf: "inf", -math.inf: "-inf"}.get(bad, "NaN")
    with pytest.raises(ValueError, match=rf"calibration_data contains {kind} in 1 of the 64 rows"):
        ann_to_snn(_ann(), data)


def test_sequential_subclass_with_its_own_forward_is_refused():
    """Was: a residual nn.Sequential subclass was converted as a plain chain."""
    from torch import nn

    from pysnn.conversion import ann_to_snn

    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    model = Residual(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match="Residual, an nn.Sequential subclass with its own"):
        ann_to_snn(model, torch.rand(16, 4))
    nested = nn.Sequential(Residual(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2), nn.ReLU())
    with pytest.raises(ValueError, match=r"(?s)model.0 .*Residual subclasses a torch layer"):
        ann_to_snn(nested, torch.rand(16, 4))

    class Named(nn.Sequential):  # a subclass that keeps Sequential's forward: converted
        pass

    snn = ann_to_snn(nn.Sequential(Named(nn.Linear(4, 4), nn.ReLU())), torch.rand(16, 4) + 0.1)
    assert snn.scores(torch.rand(2, 4), steps=4).shape == (2, 4)


def test_relu_subclass_with_another_forward_is_refused():
    """Was: converted as a ReLU."""
    from torch import nn

    from pysnn.conversion import ann_to_snn

    class Shifted(nn.ReLU):
        def forward(self, x):
            return torch.relu(x - 1.0)

    model = nn.Sequential(nn.Linear(4, 3), Shifted())
    with pytest.raises(ValueError, match=r"model.1 .*Shifted subclasses a torch layer"):
        ann_to_snn(model, torch.rand(16, 4))


def test_nan_weight_is_named_not_blamed_on_the_activations():
    """Was: 'layer 1 has no positive activation on calibration_data'."""
    from pysnn.conversion import ann_to_snn

    model = _ann()
    with torch.no_grad():
        model[2].weight[1, 3] = math.nan
    with pytest.raises(ValueError, match=r"model.2.weight contains NaN or infinite values \(1 of"):
        ann_to_snn(model, torch.rand(16, 4))


# ---------------------------------------------------------------------------------------------
# ConductanceSynapse
# ---------------------------------------------------------------------------------------------
def test_conductance_synapse_refuses_a_negative_conductance():
    """Was: accepted; the excitatory synapse then inhibited."""
    from pysnn.synapse import ConductanceSynapse

    lif = LIFNeuron(3)
    syn = ConductanceSynapse(lif, e_rev=0.0)
    with pytest.raises(
        ValueError, match=r"x holds negative values \(1 of 6, down to -0.5\).*wmin=0"
    ):
        syn(torch.tensor([[0.1, -0.5, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"x contains NaN \(input to ConductanceSynapse"):
        syn(torch.tensor([[0.1, math.nan, 0.0], [0.0, 0.0, 0.0]]))
    with torch.no_grad():
        lif(syn(torch.full((2, 3), 0.1)))  # non-negative: fine
    with pysnn.checks(False):  # off with the other value checks
        syn(torch.full((2, 3), -0.1))


@pytest.mark.parametrize("e_rev", [0.0, -80.0])
def test_large_conductance_moves_v_at_most_to_the_reversal_potential(e_rev):
    """Was: a large input carried v far past E_rev (first-order step with k g > 1)."""
    from pysnn.synapse import ConductanceSynapse

    lif = LIFNeuron(2, tau_v=10.0, v_rest=-65.0, thresh=50.0)  # no spike in the way
    syn = ConductanceSynapse(lif, tau_syn=5.0, e_rev=e_rev)
    with torch.no_grad():
        lif(torch.zeros(1, 2))
        v0 = lif.v.clone()
        x = syn(torch.tensor([[1000.0, 0.01]]))
    assert (v0 + x)[0, 0] == pytest.approx(e_rev)  # at most to E_rev (was far past it)
    a, k = syn.kernels()
    assert x[0, 1] == pytest.approx(float(0.01 * k * (e_rev - v0[0, 1])))  # small g: unchanged


# ---------------------------------------------------------------------------------------------
# NIR
# ---------------------------------------------------------------------------------------------
def _lif_node(n, **kw):
    import numpy as np

    nir = pytest.importorskip("nir")
    values = dict(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    values.update(kw)
    return nir.LIF(**values)


def test_nir_edge_into_the_input_node_is_refused():
    """Was: the edge was dropped silently."""
    import numpy as np

    nir = pytest.importorskip("nir")
    from pysnn.nir import from_nir

    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2])),
            "fc": nir.Linear(weight=np.ones((2, 2))),
            "lif": _lif_node(2),
            "output": nir.Output(output_type=np.array([2])),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output"), ("lif", "input")],
        type_check=False,
    )
    with pytest.raises(ValueError, match=r"edge \('lif', 'input'\) goes into the Input node"):
        from_nir(graph)


def test_nir_chain_of_1500_nodes_imports_and_runs():
    """Was: RecursionError."""
    import numpy as np

    nir = pytest.importorskip("nir")
    from pysnn.nir import from_nir

    nodes = {"input": nir.Input(input_type=np.array([2]))}
    names = [f"s{i}" for i in range(1500)]
    for name in names:
        nodes[name] = nir.Scale(scale=np.ones(2))
    nodes["output"] = nir.Output(output_type=np.array([2]))
    chain = ["input"] + names + ["output"]
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])), type_check=False)
    net = from_nir(graph)
    assert net.order == names
    assert torch.equal(net(torch.tensor([[1.0, 2.0]])), torch.tensor([[1.0, 2.0]]))


def test_nir_affine_not_matching_the_next_node_is_named():
    """Was: a torch size error at the first step naming no node."""
    import numpy as np

    nir = pytest.importorskip("nir")
    from pysnn.nir import from_nir

    graph = nir.NIRGraph(  # as nir.read gives it: not type-checked
        nodes={
            "input": nir.Input(input_type=np.array([2])),
            "affine": nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3)),
            "lif": _lif_node(4),
            "output": nir.Output(output_type=np.array([4])),
        },
        edges=[("input", "affine"), ("affine", "lif"), ("lif", "output")],
        type_check=False,
    )
    message = r"node 'affine' \(Linear\) outputs 3 values per sample but node 'lif' \(LIFNeuron\)"
    with pytest.raises(ValueError, match=message):
        from_nir(graph)


@pytest.mark.parametrize(
    "node_kind, field, value",
    [
        ("Scale", "scale", math.nan),
        ("LIF", "r", math.inf),
        ("CubaLIF", "w_in", math.inf),
        ("Linear", "weight", -math.inf),
        ("Affine", "bias", math.nan),
    ],
)
def test_nir_import_refuses_non_finite_values(node_kind, field, value):
    """Was: accepted; every value downstream NaN or infinite."""
    import numpy as np

    nir = pytest.importorskip("nir")
    from pysnn.nir import from_nir

    n = 2
    if node_kind == "Scale":
        node = nir.Scale(scale=np.array([1.0, value]))
    elif node_kind == "LIF":
        node = _lif_node(n, r=np.array([1.0, value]))
    elif node_kind == "CubaLIF":
        node = nir.CubaLIF(
            tau_syn=np.full(n, 0.01),
            tau_mem=np.full(n, 0.02),
            r=np.ones(n),
            v_leak=np.zeros(n),
            v_threshold=np.ones(n),
            w_in=np.array([1.0, value]),
        )
    elif node_kind == "Linear":
        node = nir.Linear(weight=np.array([[1.0, value], [0.0, 1.0]]))
    else:
        node = nir.Affine(weight=np.eye(2), bias=np.array([0.0, value]))
    graph = nir.NIRGraph.from_list(node, _lif_node(n))
    with pytest.raises(
        ValueError, match=rf"node '\w+' \({node_kind}\): {field} holds 1 non-finite"
    ):
        from_nir(graph)


def test_nir_export_refuses_non_finite_values():
    """Was: a NaN Scale and an infinite weight were written."""
    from torch import nn

    pytest.importorskip("nir")
    from pysnn.connection import Linear
    from pysnn.nir import Scale, to_nir

    with pytest.raises(ValueError, match=r"node '0' \(Scale\): scale holds 1 non-finite"):
        to_nir(nn.Sequential(Scale(torch.tensor([1.0, math.nan])), LIFNeuron(2, refrac=0.0)))
    fc = Linear(2, 2)
    with torch.no_grad():
        fc.weight[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"node '0' \(Linear\): weight holds 1 non-finite"):
        to_nir(nn.Sequential(fc, LIFNeuron(2, refrac=0.0)))


# ---------------------------------------------------------------------------------------------
# SparseLinear
# ---------------------------------------------------------------------------------------------
def test_sparse_linear_refuses_boolean_indices():
    """Was: a bool tensor was read as indices 0 and 1."""
    from pysnn.sparse import SparseLinear

    mask = torch.tensor([[True, False, True], [False, True, True]])
    with pytest.raises(TypeError, match=r"got a bool tensor.*mask.nonzero\(\).t\(\)"):
        SparseLinear(3, 3, indices=mask)
    fc = SparseLinear(3, 2, indices=mask.nonzero().t())  # the recipe in the message
    assert torch.equal(fc.mask().bool(), mask)


@pytest.mark.parametrize("key, value", [("post_index", 99), ("pre_index", -1)])
def test_sparse_linear_load_state_dict_refuses_out_of_range_indices(key, value):
    """Was: accepted, and the forward failed later."""
    from pysnn.sparse import SparseLinear, fixed_probability

    fc = SparseLinear(
        4, 3, indices=fixed_probability(4, 3, 0.5, generator=torch.Generator().manual_seed(0))
    )
    state = fc.state_dict()
    state[key] = state[key].clone()
    state[key][0] = value
    before = {k: v.clone() for k, v in fc.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"SparseLinear state_dict.*indices must be in \[0, [34]\)"
    ):
        fc.load_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in fc.state_dict().items())  # nothing loaded
    good = SparseLinear(
        4, 3, indices=fixed_probability(4, 3, 0.5, generator=torch.Generator().manual_seed(0))
    )
    good.load_state_dict(before)


def test_fixed_probability_with_more_pairs_than_int64_holds():
    """Was: ``fixed_probability(2**32, 2**32, 1e-12)`` raised an overflow error (here with
    p = 1e-17: about 184 synapses, not 1.8e7, to stay fast)."""
    from pysnn.sparse import fixed_probability

    indices = fixed_probability(2**32, 2**32, 1e-17, generator=torch.Generator().manual_seed(1))
    assert indices.shape[0] == 2 and 100 <= indices.shape[1] <= 300  # Binomial(2**64, 1e-17)
    post, pre = indices
    assert (post < 2**32).all() and (pre < 2**32).all() and (post >= 0).all()
    keys = [(int(a), int(b)) for a, b in zip(pre, post)]
    assert keys == sorted(set(keys))  # sorted by (pre, post), each pair once


# ---------------------------------------------------------------------------------------------
# TraceMaxPool2d, MNIST reader
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 0}, r"kernel_size must be an int >= 1 .*got 0"),
        ({"kernel_size": (2, -1)}, r"kernel_size must be an int >= 1"),
        ({"kernel_size": 2, "stride": 0}, r"stride must be an int >= 1"),
        ({"kernel_size": 2, "padding": -1}, r"padding must be an int >= 0"),
        ({"kernel_size": 2, "padding": 2}, r"padding must be at most half"),
        ({"kernel_size": 2, "dilation": 0}, r"dilation must be an int >= 1"),
        ({"kernel_size": 2.0}, r"kernel_size must be an int"),
    ],
)
def test_trace_max_pool_refuses_bad_windows_at_construction(kwargs, match):
    """Was: ``TraceMaxPool2d(0)`` was accepted and failed at forward."""
    from pysnn.pooling import TraceMaxPool2d

    with pytest.raises(ValueError, match=match):
        TraceMaxPool2d(**kwargs)


def test_trace_max_pool_dtype_message_names_the_dtypes_once():
    """Was: '... (dtype int64), got int64'."""
    from pysnn.pooling import TraceMaxPool2d

    with pytest.raises(TypeError) as info:
        TraceMaxPool2d(2)(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    assert str(info.value) == (
        "spikes must be a floating-point tensor for TraceMaxPool2d, got torch.int64"
    )


def test_mnist_header_whose_size_product_wraps_is_refused_naming_the_file(tmp_path):
    """Was: dims (4, 2**31, 2**31) wrapped the int64 size product to 0, passed the check and
    failed in reshape without naming the file."""
    from pysnn.datasets.mnist import read_idx

    path = tmp_path / "t10k-images-idx3-ubyte"
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (4, 2**31, 2**31))
    path.write_bytes(header)
    with pytest.raises(
        ValueError,
        match=rf"{path}: IDX size mismatch: header declares shape \(4, 2147483648, 2147483648\)",
    ):
        read_idx(path)


# ---------------------------------------------------------------------------------------------
# crashes and hangs: an empty batch, Unroll with T = 0
# ---------------------------------------------------------------------------------------------
def _empty_batch_cases():
    from pysnn.connection import Linear
    from pysnn.multistep import run_feedforward
    from pysnn.neuron import Input

    def after_a_batch():
        n = LIFNeuron(3)
        for _ in range(3):  # the fast step is built: then a batch of 0
            n(torch.zeros(2, 3))
        return n(torch.zeros(0, 3))

    return {
        "LIFNeuron": (lambda: LIFNeuron(3)(torch.zeros(0, 3)), (0, 3)),
        "AdaptiveLIFNeuron": (lambda: AdaptiveLIFNeuron(3)(torch.zeros(0, 3)), (0, 3)),
        "IFNeuron": (lambda: IFNeuron(3)(torch.zeros(0, 3)), (0, 3)),
        "Input": (lambda: Input(3)(torch.zeros(0, 3)), (0, 3)),
        "LIF.forward_multistep": (
            lambda: LIFNeuron(3).forward_multistep(torch.zeros(4, 0, 3)),
            (4, 0, 3),
        ),
        "run_feedforward": (
            lambda: run_feedforward(Linear(3, 2), LIFNeuron(2), torch.zeros(5, 0, 3)),
            (5, 0, 2),
        ),
        "after a batch of 2": (after_a_batch, (0, 3)),
    }


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("case", list(_empty_batch_cases()))
def test_empty_batch_gives_an_empty_result_on_both_paths(fused, case):
    """Was: ``ZeroDivisionError`` in pysnn.native on the fused path (the torch path gave
    shape (0, n))."""
    run, shape = _empty_batch_cases()[case]
    with native.enabled(fused), torch.no_grad():
        assert tuple(run().shape) == shape


def test_empty_batch_through_a_fused_network_run():
    from pysnn.models import DiehlCook2015
    from pysnn.multistep import run_layers

    net = DiehlCook2015(n_neurons=5)
    layers, rules = net.step_program()
    with torch.no_grad():
        run_layers(net.inp, layers, torch.zeros(5, 0, 784), rules)
    assert net.exc.v.shape == (0, 5)


@pytest.mark.parametrize("multistep", [True, False])
def test_unroll_with_no_time_step_is_named(multistep):
    """Was: a torch stack error."""
    from torch import nn

    from pysnn.connection import Linear
    from pysnn.multistep import Unroll

    net = nn.Sequential(Linear(3, 2), LIFNeuron(2))
    with pytest.raises(ValueError, match=r"x must be time first \(T, B, \.\.\.\) with T >= 1"):
        Unroll(net, multistep=multistep)(torch.zeros(0, 4, 3))
    encoded = Unroll(net, encoder=nn.Identity(), multistep=multistep)
    with pytest.raises(ValueError, match=r"got \(0, 4, 3\) \(from the encoder\)"):
        encoded(torch.zeros(0, 4, 3))
    assert Unroll(net, multistep=multistep)(torch.zeros(2, 4, 3)).shape == (2, 4, 2)
