"""SparseLinear against the dense Linear with the corresponding zero mask; connectivity builders."""

import math

import pytest
import torch
from torch.nn.utils import prune

from pysnn.connection import Linear
from pysnn.learning import STDP, MSTDPET, Hebbian
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron
from pysnn.sparse import SparseLinear, fixed_indegree, fixed_probability

F64 = torch.float64


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- builders
def test_fixed_probability_statistics_and_reproducibility():
    n_pre, n_post, p = 300, 200, 0.05
    idx = fixed_probability(n_pre, n_post, p, generator=generator(1))
    assert torch.equal(idx, fixed_probability(n_pre, n_post, p, generator=generator(1)))
    mean, std = n_pre * n_post * p, math.sqrt(n_pre * n_post * p * (1 - p))
    assert abs(idx.shape[1] - mean) < 4 * std
    keys = idx[1] * n_post + idx[0]
    assert torch.equal(keys, torch.unique(keys))  # distinct pairs, sorted by pre
    assert int(idx[0].max()) < n_post and int(idx[1].max()) < n_pre
    # every pair equally likely: in-degrees are Binomial(n_pre, p)
    indegree = torch.bincount(idx[0], minlength=n_post).double()
    assert abs(float(indegree.var()) - n_pre * p * (1 - p)) < 0.35 * n_pre * p * (1 - p)
    none = fixed_probability(50, 50, 0.5, autapses=False, generator=generator(2))
    assert not bool((none[0] == none[1]).any())
    assert fixed_probability(10, 10, 0.0).shape == (2, 0)
    assert fixed_probability(10, 7, 1.0).shape == (2, 70)


def test_fixed_indegree():
    idx = fixed_indegree(40, 30, 12, generator=generator(3))
    assert torch.equal(torch.bincount(idx[0], minlength=30), torch.full((30,), 12))
    keys = idx[1] * 30 + idx[0]
    assert torch.equal(keys, torch.unique(keys))
    assert torch.equal(idx, fixed_indegree(40, 30, 12, generator=generator(3)))
    with pytest.raises(ValueError, match="autapses"):
        fixed_indegree(40, 30, 3, autapses=False)
    for k in (29, 20):  # the complement path: draws the partners left out
        dense = fixed_indegree(30, 30, k, autapses=False, generator=generator(4))
        assert torch.equal(torch.bincount(dense[0], minlength=30), torch.full((30,), k))
        assert not bool((dense[0] == dense[1]).any())
        keys = dense[1] * 30 + dense[0]
        assert torch.equal(keys, torch.unique(keys))
    with pytest.raises(ValueError, match="k must be"):
        fixed_indegree(10, 10, 10, autapses=False)
    with pytest.raises(ValueError, match="p must be"):
        fixed_probability(10, 10, 1.5)
    with pytest.raises(TypeError, match="generator"):
        fixed_probability(10, 10, 0.5, generator=0)


def test_memory_is_proportional_to_synapses():
    n = 20_000  # a dense weight would be 4e8 entries
    idx = fixed_indegree(n, n, 6, generator=generator(5))
    conn = SparseLinear(n, n, idx, weight=0.5)
    nnz = conn.nnz
    assert nnz == 6 * n
    tensors = list(conn.parameters()) + list(conn.buffers())
    size = sum(t.numel() * t.element_size() for t in tensors)
    assert size == 4 * nnz + 16 * nnz + 8 * (n + 1) + 8  # weight, indices, row_ptr, delay
    spikes = torch.zeros(1, n)
    spikes[0, [5, 77, 1000]] = 1.0
    with torch.no_grad():
        out = conn(spikes)
    synapse, post = conn.padded_rows()  # the event path's rows, padded to the longest
    assert synapse.shape == post.shape == (n, int(torch.bincount(idx[1]).max()))
    assert synapse.numel() <= conn.MAX_PADDING * nnz
    targets = idx[0][torch.isin(idx[1], torch.tensor([5, 77, 1000]))]
    expected = torch.zeros(n).index_add_(0, targets, torch.full((targets.numel(),), 0.5))
    assert targets.numel() > 0 and torch.equal(out[0], expected)


# ------------------------------------------------------------------------------- propagation
def dense_twin(sparse, delay=0.0, dtype=F64):
    """The dense Linear with the same weights and a zero mask where there is no synapse."""
    dense = Linear(sparse.in_features, sparse.out_features, delay=delay, dtype=dtype)
    with torch.no_grad():
        dense.weight.copy_(sparse.to_dense())
    prune.custom_from_mask(dense, "weight", sparse.mask())
    return dense


def per_synapse_delays(idx, n_out, n_in, seed):
    steps = torch.randint(0, 5, (idx.shape[1],), generator=generator(seed)).to(F64)
    dense = torch.zeros(n_out, n_in, dtype=F64).index_put((idx[0], idx[1]), steps)
    return steps, dense


@pytest.mark.parametrize("delay", ["none", "shared", "per-synapse"])
def test_same_input_as_the_masked_dense_linear(delay):
    torch.manual_seed(0)
    idx = fixed_probability(30, 20, 0.2, generator=generator(6))
    idx = idx[:, torch.randperm(idx.shape[1])]  # any order of the index list
    weight = torch.randn(idx.shape[1], dtype=F64)
    if delay == "per-synapse":
        d_sparse, d_dense = per_synapse_delays(idx, 20, 30, 7)
    else:
        d_sparse = d_dense = 0.0 if delay == "none" else 3.0
    sparse = SparseLinear(30, 20, idx, delay=d_sparse, weight=weight, dtype=F64)
    assert torch.equal(sparse.to_dense()[idx[0], idx[1]], weight)  # order of indices kept
    dense = dense_twin(sparse, d_dense)
    x = (torch.rand(25, 3, 30) < 0.3).to(F64)
    with torch.no_grad():
        a = torch.stack([sparse(s) for s in x])
        b = torch.stack([dense(s) for s in x])
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert a.abs().sum() > 0
        sparse.reset_state()
        torch.testing.assert_close(sparse.forward_multistep(x), a, rtol=0, atol=1e-12)


def test_unequal_rows_use_the_csr_gather_and_loads_rebuild_the_rows():
    """A hub (one presynaptic neuron with every synapse it can have) makes padded rows wasteful:
    the CSR gather runs instead, with the same result; a load with other indices is seen."""
    torch.manual_seed(2)
    hub = torch.stack((torch.arange(40), torch.zeros(40, dtype=torch.int64)))
    idx = torch.cat((hub, fixed_indegree(30, 40, 1, generator=generator(12))[:, 1:]), dim=1)
    idx = torch.unique(idx[1] * 40 + idx[0])
    idx = torch.stack((idx % 40, idx // 40))
    sparse = SparseLinear(30, 40, idx, weight=torch.randn(idx.shape[1], dtype=F64), dtype=F64)
    assert sparse.padded_rows() is None
    dense = dense_twin(sparse)
    x = (torch.rand(10, 4, 30) < 0.3).to(F64)
    x[:, :, 0] = 1.0
    with torch.no_grad():
        for s in x:
            torch.testing.assert_close(sparse(s), dense(s), rtol=0, atol=1e-12)
    other = fixed_indegree(30, 40, 2, generator=generator(13))
    twin = SparseLinear(30, 40, other, weight=torch.randn(80, dtype=F64), dtype=F64)
    state = twin.state_dict()
    small = SparseLinear(30, 40, fixed_indegree(30, 40, 2, generator=generator(14)), dtype=F64)
    with torch.no_grad():
        small(x[0])  # builds its padded rows
        small.load_state_dict(state)
        torch.testing.assert_close(small(x[1]), twin(x[1]), rtol=0, atol=1e-12)


def test_an_in_place_edit_of_the_indices_rebuilds_the_padded_rows():
    """The padded rows are kept under Stamps of the index buffers: an in-place edit of the
    connectivity is seen at the next step (they were kept for the same post_index object).
    Synapses (post, pre) (0, 0), (1, 0), (2, 1), weights 1, 2, 3; both inputs spike. After
    moving the second synapse to post 2: post 0 gets 1, post 1 nothing, post 2 gets 2 + 3."""
    idx = torch.tensor([[0, 1, 2], [0, 0, 1]])
    conn = SparseLinear(2, 3, idx, weight=torch.tensor([1.0, 2.0, 3.0]))
    x = torch.ones(1, 2)
    with torch.no_grad():
        assert conn(x).tolist() == [[1.0, 2.0, 3.0]]
        assert conn.padded_rows() is not None
        conn.post_index[1] = 2
        assert conn(x).tolist() == [[1.0, 0.0, 5.0]]


def test_gradient_through_the_synapses():
    idx = fixed_probability(10, 6, 0.5, generator=generator(8))
    sparse = SparseLinear(10, 6, idx, dtype=F64)
    dense = dense_twin(sparse)
    x = torch.rand(4, 10, dtype=F64, requires_grad=True)
    sparse(x).pow(2).sum().backward()
    grad_x, grad_w = x.grad.clone(), sparse.weight.grad.clone()
    x.grad = None
    dense(x).pow(2).sum().backward()
    torch.testing.assert_close(grad_x, x.grad)
    torch.testing.assert_close(grad_w, dense.weight_orig.grad[idx[0], idx[1]][_order(idx)])


def test_gradient_through_per_synapse_delays():
    """dL/ds_t[j] = sum over the synapses k of j of w_k c[t + d_k, post_k], for
    L = sum_t,i c[t, i] out_t[i]: by hand, at the zero entries of the input too."""
    idx = torch.tensor([[0, 1, 2, 1], [0, 0, 1, 2]])  # (post, pre)
    steps = [2, 0, 1, 3]
    weight = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=F64)
    conn = SparseLinear(3, 3, idx, delay=torch.tensor(steps, dtype=F64), weight=weight, dtype=F64)
    spikes = (torch.rand(8, 2, 3) < 0.4).to(F64).requires_grad_(True)
    c = torch.randn(8, 2, 3, dtype=F64)
    out = torch.stack([conn(s) for s in spikes])
    (out * c).sum().backward()
    by_hand = torch.zeros(8, 2, 3, dtype=F64)
    for t in range(8):
        for k in range(4):
            if t + steps[k] < 8:
                by_hand[t, :, idx[1, k]] += weight[k] * c[t + steps[k], :, idx[0, k]]
    torch.testing.assert_close(spikes.grad, by_hand)
    assert bool((by_hand[spikes.detach() == 0] != 0).any())  # zero entries get a gradient


def _order(idx):
    """Stored (pre-sorted) order of the synapses of an index list."""
    return torch.argsort(torch.argsort(idx[1] * 1000 + idx[0]))


# ------------------------------------------------------------------------------- learning
class Pair(SNNNetwork):
    def __init__(self, conn):
        super().__init__()
        self.inp = Input(30).double()
        self.conn = conn
        self.lif = LIFNeuron(20, thresh=-63.0, tau_v=10.0, refrac=2.0).double()

    def forward(self, x):
        return self.lif(self.conn(self.inp(x)))


@pytest.mark.parametrize(
    "rule, delay",
    [
        ("stdp", "shared"),
        ("stdp", "per-synapse"),
        ("stdp-soft-norm", "none"),
        ("hebbian", "per-synapse"),
        ("mstdpet", "shared"),
    ],
)
def test_same_spikes_and_weight_changes_as_the_masked_dense_linear(rule, delay):
    torch.manual_seed(1)
    idx = fixed_indegree(30, 20, 9, generator=generator(9))
    if delay == "per-synapse":
        d_sparse, d_dense = per_synapse_delays(idx, 20, 30, 10)
    else:
        d_sparse = d_dense = 0.0 if delay == "none" else 2.0
    weight = torch.rand(idx.shape[1], dtype=F64) * 1.5
    bounds = dict(wmin=0.0, wmax=2.0)
    sparse = SparseLinear(30, 20, idx, delay=d_sparse, weight=weight, dtype=F64, **bounds)
    dense = dense_twin(sparse, d_dense)
    dense.wmin, dense.wmax = 0.0, 2.0
    nets = [Pair(sparse), Pair(dense)]
    rules = []
    for net in nets:
        args = (net.conn, net.inp, net.lif)
        if rule == "stdp":
            rules.append(STDP(*args, nu=(2e-3, 5e-3)))
        elif rule == "stdp-soft-norm":
            rules.append(STDP(*args, nu=(2e-3, 5e-3), weight_dependence="soft", norm=6.0))
        elif rule == "hebbian":
            rules.append(Hebbian(*args, nu=(1e-3, 2e-3)))
        else:
            rules.append(MSTDPET(*args))
    x = (torch.rand(60, 2, 30) < 0.25).to(F64)
    spikes = [[], []]
    with torch.no_grad():
        for t, s in enumerate(x):
            for k, (net, learn) in enumerate(zip(nets, rules)):
                spikes[k].append(net(s))
                learn.step(1.0 if t % 7 == 0 else None) if rule == "mstdpet" else learn.step()
    s_sparse, s_dense = torch.stack(spikes[0]), torch.stack(spikes[1])
    assert torch.equal(s_sparse, s_dense)
    assert 0 < s_sparse.sum() < s_sparse.numel() / 2
    change = sparse.to_dense() - torch.zeros(20, 30, dtype=F64).index_put((idx[0], idx[1]), weight)
    assert change.abs().sum() > 1e-3  # it learned
    torch.testing.assert_close(sparse.to_dense(), dense.weight, rtol=0, atol=1e-12)
    assert torch.equal(dense.weight * (1 - sparse.mask()), torch.zeros(20, 30, dtype=F64))


# ------------------------------------------------------------------------------- module
def test_module_behaviour():
    idx = fixed_probability(8, 5, 0.5, generator=generator(11))
    conn = SparseLinear(8, 5, idx, delay=1.0, wmin=-1.0, wmax=1.0, init="uniform")
    assert float(conn.weight.detach().min()) >= 0.0 and float(conn.weight.detach().max()) <= 1.0
    state = conn.state_dict()
    assert {"weight", "post_index", "pre_index", "row_ptr", "delay_steps"} <= set(state)
    twin = SparseLinear(8, 5, idx, delay=1.0, weight=0.0)
    twin.load_state_dict(state)
    assert torch.equal(twin.weight, conn.weight)
    conn.double()
    assert conn.weight.dtype == F64 and conn.post_index.dtype == torch.int64
    with torch.no_grad():
        conn(torch.ones(2, 8, dtype=F64))
        conn.normalize(3.0)
    sums = torch.zeros(5, dtype=F64).index_add(0, conn.post_index, conn.weight)
    has_input = torch.bincount(conn.post_index, minlength=5) > 0
    torch.testing.assert_close(sums[has_input], torch.full_like(sums[has_input], 3.0))
    conn.reset_state()
    assert conn.history is None


def test_errors():
    idx = torch.tensor([[0, 1], [2, 3]])
    with pytest.raises(TypeError, match="indices"):
        SparseLinear(4, 2, idx.float())
    with pytest.raises(ValueError, match=r"shape \(2, nnz\)"):
        SparseLinear(4, 2, idx[0])
    with pytest.raises(ValueError, match="presynaptic indices must be in"):
        SparseLinear(3, 2, idx)
    with pytest.raises(ValueError, match="more than once"):
        SparseLinear(4, 2, torch.tensor([[0, 0], [2, 2]]))
    with pytest.raises(ValueError, match="weight must be"):
        SparseLinear(4, 2, idx, weight=torch.ones(3))
    with pytest.raises(ValueError, match="outside"):
        SparseLinear(4, 2, idx, weight=2.0, wmax=1.0)
    with pytest.raises(ValueError, match="delay must be"):
        SparseLinear(4, 2, idx, delay=torch.ones(3))
    with pytest.raises(ValueError, match="init"):
        SparseLinear(4, 2, idx, init="kaiming_uniform")
    conn = SparseLinear(4, 2, idx)
    with pytest.raises(ValueError, match="correlate needs"):
        conn.correlate(torch.ones(1, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match="shape"):
        conn(torch.ones(1, 5))


def test_indices_already_in_order_are_taken_without_a_sort_and_not_aliased():
    """Indices sorted by (pre, post), as ``fixed_probability`` gives them, build the same
    connection as the same synapses in any order (weights and per-synapse delays follow their
    synapse), without keeping a reference to the caller's tensor."""
    g = torch.Generator().manual_seed(3)
    ordered = fixed_probability(30, 20, 0.2, generator=g)
    keys = ordered[1] * 20 + ordered[0]
    assert bool((keys[1:] > keys[:-1]).all())  # the case under test: already in order
    nnz = ordered.shape[1]
    weight = torch.rand(nnz, generator=g)
    delay = torch.randint(0, 4, (nnz,), generator=g).float()
    shuffle = torch.randperm(nnz, generator=g)
    a = SparseLinear(30, 20, ordered.clone(), weight=weight, delay=delay)
    b = SparseLinear(30, 20, ordered[:, shuffle], weight=weight[shuffle], delay=delay[shuffle])
    for name in ("post_index", "pre_index", "row_ptr", "weight", "delay_steps"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    given = ordered.clone()
    c = SparseLinear(30, 20, given, weight=weight)
    given.zero_()  # the caller reuses its tensor: the connection keeps its synapses
    assert torch.equal(c.post_index, a.post_index) and torch.equal(c.pre_index, a.pre_index)
