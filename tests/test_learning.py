"""Tests for pysnn.learning: every rule against closed-form / hand-computed values.

Spikes are imposed with ``Input`` modules on both sides (rules read only ``spikes`` and ``trace``),
in float64 so closed forms match to ~1e-12.
"""

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from pysnn.connection import Connection, Conv2d, Linear
from pysnn.functional.plasticity import conv2d_correlation, pair_stdp_window
from pysnn.learning import (
    MSTDP,
    MSTDPET,
    STDP,
    FedeSTDP,
    Hebbian,
    LearningRule,
    SynapseGroup,
    TripletSTDP,
)
from pysnn.monitor import Monitor
from pysnn.network import SNNNetwork
from pysnn.neuron import Input

DT = torch.float64

TRIPLET = dict(
    a2_plus=5e-3,
    a3_plus=6e-3,
    a2_minus=7e-3,
    a3_minus=4e-3,
    tau_plus=16.8,
    tau_minus=33.7,
    tau_x=101.0,
    tau_y=125.0,
)


def make(
    rule_cls,
    n_pre=1,
    n_post=1,
    delay=0.0,
    tau_pre=20.0,
    tau_post=30.0,
    w0=0.5,
    wmin=-math.inf,
    wmax=math.inf,
    scale_pre=1.0,
    scale_post=1.0,
    **kw,
):
    pre = Input(n_pre, tau_trace=tau_pre, trace_scale=scale_pre).to(DT)
    post = Input(n_post, tau_trace=tau_post, trace_scale=scale_post).to(DT)
    conn = Linear(
        n_pre,
        n_post,
        delay=delay,
        wmin=wmin,
        wmax=wmax,
        init="constant",
        init_kwargs={"val": w0},
        dtype=DT,
    )
    rule = rule_cls(connection=conn, pre=pre, post=post, **kw)
    return pre, conn, post, rule


def trains(T, B, n, events):
    """(T, B, n) float64 spikes with a 1 at each (t, b, i) of ``events``."""
    s = torch.zeros(T, B, n, dtype=DT)
    for t, b, i in events:
        s[t, b, i] = 1.0
    return s


def run(pre, conn, post, rule, pre_s, post_s, rewards=None):
    w0 = conn.weight.detach().clone()
    for t in range(pre_s.shape[0]):
        conn(pre(pre_s[t]))
        post(post_s[t])
        if rewards is None:
            rule.step()
        else:
            rule.step(reward=rewards[t])
    return conn.weight.detach() - w0


def pair(rule_cls, t_pre, t_post, T=None, rewards=None, **kw):
    T = T or max(t_pre, t_post) + 2
    pre, conn, post, rule = make(rule_cls, **kw)
    return run(
        pre,
        conn,
        post,
        rule,
        trains(T, 1, 1, [(t_pre, 0, 0)]),
        trains(T, 1, 1, [(t_post, 0, 0)]),
        rewards,
    )[0, 0].item()


# ------------------------------------------------------------------------------------------ STDP
def stdp_closed_form(dt, nu_pre, nu_post, tau_pre, tau_post, a_pre=1.0, a_post=1.0):
    if dt > 0:
        return nu_post * a_pre * math.exp(-dt / tau_pre)
    if dt < 0:
        return -nu_pre * a_post * math.exp(dt / tau_post)
    return nu_post * a_pre - nu_pre * a_post


@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.5, 2.0)])
def test_stdp_window_matches_exponentials(scales):
    # One presynaptic neuron firing at t0; postsynaptic neuron k fires at t0 + dts[k].
    dts = list(range(-50, 51))
    t0, T = 60, 115
    nu = (3e-3, 5e-3)
    pre, conn, post, rule = make(
        STDP, 1, len(dts), scale_pre=scales[0], scale_post=scales[1], nu=nu
    )
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(T, 1, 1, [(t0, 0, 0)]),
        trains(T, 1, len(dts), [(t0 + d, 0, k) for k, d in enumerate(dts)]),
    )[:, 0]
    expected = torch.tensor(
        [stdp_closed_form(d, nu[0], nu[1], 20.0, 30.0, *scales) for d in dts], dtype=DT
    )
    torch.testing.assert_close(dw, expected, rtol=1e-10, atol=1e-14)
    # the functional closed form agrees too
    ref = pair_stdp_window(torch.tensor(dts, dtype=DT), nu[0], nu[1], 20.0, 30.0, *scales)
    torch.testing.assert_close(dw, ref.to(DT), rtol=1e-10, atol=1e-14)


def test_stdp_single_pairs():
    nu = (1e-2, 2e-2)
    assert pair(STDP, 0, 7, nu=nu) == pytest.approx(2e-2 * math.exp(-7 / 20), rel=1e-12)
    assert pair(STDP, 7, 0, nu=nu) == pytest.approx(-1e-2 * math.exp(-7 / 30), rel=1e-12)
    assert pair(STDP, 3, 3, nu=nu) == pytest.approx(2e-2 - 1e-2, rel=1e-12)


def test_stdp_default_hyperparameters():
    assert STDP(connection=Linear(1, 1), pre=Input(1), post=Input(1)).nu == (1e-4, 1e-2)
    assert pair(STDP, 0, 4) == pytest.approx(1e-2 * math.exp(-4 / 20), rel=1e-12)


def test_stdp_nearest_spike_through_reset_traces():
    pre = Input(1, tau_trace=20.0, trace_mode="reset").to(DT)
    post = Input(1, tau_trace=30.0).to(DT)
    conn = Linear(1, 1, init="constant", init_kwargs={"val": 0.0}).to(DT)
    rule = STDP(connection=conn, pre=pre, post=post, nu=(0.0, 1.0))
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(12, 1, 1, [(0, 0, 0), (4, 0, 0)]),
        trains(12, 1, 1, [(10, 0, 0)]),
    )
    assert dw.item() == pytest.approx(math.exp(-6 / 20), rel=1e-12)  # only the nearest pre spike


# ------------------------------------------------------------------------------------------ delays
def test_delayed_synapse_learns_from_arrival_time():
    nu = (1e-2, 2e-2)
    # pre at 0 arrives at 3; post at 5: potentiation with exp(-2/tau_pre)
    assert pair(STDP, 0, 5, delay=3.0, nu=nu) == pytest.approx(2e-2 * math.exp(-2 / 20), rel=1e-12)
    # post at 1 precedes the arrival at 3: depression with exp(-2/tau_post)
    assert pair(STDP, 0, 1, T=6, delay=3.0, nu=nu) == pytest.approx(
        -1e-2 * math.exp(-2 / 30), rel=1e-12
    )
    # emission and post in the same step: the spike has not arrived yet -> depression later
    assert pair(STDP, 2, 2, T=8, delay=3.0, nu=nu) == pytest.approx(
        -1e-2 * math.exp(-3 / 30), rel=1e-12
    )


def test_delay_many_spikes_in_flight_all_count():
    # three pre spikes in flight on one synapse (delay 5), post at 9: all-to-all sum
    pre, conn, post, rule = make(STDP, delay=5.0, nu=(0.0, 1.0))
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(11, 1, 1, [(0, 0, 0), (1, 0, 0), (2, 0, 0)]),
        trains(11, 1, 1, [(9, 0, 0)]),
    )
    expected = sum(math.exp(-(9 - (t + 5)) / 20) for t in (0, 1, 2))
    assert dw.item() == pytest.approx(expected, rel=1e-12)


def test_per_synapse_delays():
    nu = (1e-2, 2e-2)
    delays = torch.tensor([[1.0], [3.0], [6.0]])
    pre, conn, post, rule = make(STDP, 1, 3, delay=delays, nu=nu)
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(10, 1, 1, [(0, 0, 0)]),
        trains(10, 1, 3, [(4, 0, k) for k in range(3)]),
    )
    expected = torch.tensor(
        [[2e-2 * math.exp(-3 / 20)], [2e-2 * math.exp(-1 / 20)], [-1e-2 * math.exp(-2 / 30)]],
        dtype=DT,
    )
    torch.testing.assert_close(dw, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("B", [3, 8])  # history longer than the batch / not (two code paths)
@pytest.mark.parametrize(
    "rule_cls,kw",
    [
        (STDP, {"nu": (1e-2, 2e-2)}),
        (Hebbian, {"nu": (1e-2, 2e-2)}),
        (TripletSTDP, TRIPLET),
    ],
)
def test_per_synapse_delays_match_separate_shared_delay_connections(B, rule_cls, kw):
    torch.manual_seed(0)
    T = 30
    pre_s = (torch.rand(T, B, 4, dtype=DT) < 0.3).to(DT)
    post_s = (torch.rand(T, B, 2, dtype=DT) < 0.3).to(DT)
    delays = torch.tensor([[2.0, 0.0, 4.0, 1.0], [3.0, 3.0, 0.0, 5.0]])
    pre, conn, post, rule = make(rule_cls, 4, 2, delay=delays, **kw)
    dw = run(pre, conn, post, rule, pre_s, post_s)
    for i in range(2):
        for j in range(4):
            p2, c2, q2, r2 = make(rule_cls, 1, 1, delay=float(delays[i, j]), **kw)
            ref = run(p2, c2, q2, r2, pre_s[:, :, j : j + 1], post_s[:, :, i : i + 1])
            assert dw[i, j].item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize(
    "rule_cls,kw",
    [
        (TripletSTDP, TRIPLET),
        (FedeSTDP, {"lr": 0.1}),
        (MSTDPET, {"gamma": 0.5}),
        (MSTDP, {"gamma": 0.5}),
    ],
)
def test_uniform_per_synapse_delays_equal_shared_delay(rule_cls, kw):
    torch.manual_seed(9)
    T, B = 25, 2
    pre_s = (torch.rand(T, B, 4, dtype=DT) < 0.3).to(DT)
    post_s = (torch.rand(T, B, 3, dtype=DT) < 0.3).to(DT)
    rewards = [1.0 - 0.1 * t for t in range(T)] if rule_cls.takes_reward else None
    results = []
    for delay in (torch.full((3, 4), 2.0), 2.0):
        pre, conn, post, rule = make(rule_cls, 4, 3, delay=delay, **kw)
        results.append(run(pre, conn, post, rule, pre_s, post_s, rewards))
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------------------------------ bounds
def test_hard_bounds_clamp():
    dw = pair(STDP, 0, 1, nu=(10.0, 10.0), w0=0.5, wmin=0.0, wmax=0.8)
    assert 0.5 + dw == pytest.approx(0.8)
    dw = pair(STDP, 1, 0, nu=(10.0, 10.0), w0=0.5, wmin=0.1, wmax=0.8)
    assert 0.5 + dw == pytest.approx(0.1)


def test_soft_bounds():
    kw = dict(nu=(1e-2, 2e-2), w0=0.3, wmin=0.0, wmax=1.0, weight_dependence="soft")
    assert pair(STDP, 0, 5, **kw) == pytest.approx(2e-2 * math.exp(-5 / 20) * 0.7, rel=1e-12)
    assert pair(STDP, 5, 0, **kw) == pytest.approx(-1e-2 * math.exp(-5 / 30) * 0.3, rel=1e-12)
    kw["wmin"] = -1.0
    assert pair(STDP, 5, 0, **kw) == pytest.approx(-1e-2 * math.exp(-5 / 30) * 1.3, rel=1e-12)
    kw.update(mu=2.0, wmin=0.0)
    assert pair(STDP, 0, 5, **kw) == pytest.approx(2e-2 * math.exp(-5 / 20) * 0.49, rel=1e-12)


def test_multiplicative_weight_dependence():
    kw = dict(nu=(1e-2, 2e-2), w0=0.3, wmin=0.1, wmax=1.0, weight_dependence="multiplicative")
    assert pair(STDP, 0, 5, **kw) == pytest.approx(2e-2 * math.exp(-5 / 20), rel=1e-12)
    assert pair(STDP, 5, 0, **kw) == pytest.approx(-1e-2 * math.exp(-5 / 30) * 0.2, rel=1e-12)


def test_soft_bounds_need_finite_bounds():
    with pytest.raises(ValueError, match="weight_dependence='soft'"):
        STDP(connection=Linear(1, 1), pre=Input(1), post=Input(1), weight_dependence="soft")
    with pytest.raises(ValueError, match="multiplicative"):
        STDP(
            connection=Linear(1, 1, wmax=1.0),
            pre=Input(1),
            post=Input(1),
            weight_dependence="multiplicative",
        )


def test_normalisation_after_each_step_and_connection_normalize():
    torch.manual_seed(1)
    pre = Input(5).to(DT)
    post = Input(3).to(DT)
    conn = Linear(5, 3, wmin=0.0, wmax=1.0, init="uniform", init_kwargs={"a": 0.1, "b": 0.9}).to(DT)
    rule = STDP(connection=conn, pre=pre, post=post, nu=(1e-2, 1e-1), norm=2.0)
    run(
        pre,
        conn,
        post,
        rule,
        (torch.rand(10, 2, 5) < 0.5).to(DT),
        (torch.rand(10, 2, 3) < 0.5).to(DT),
    )
    torch.testing.assert_close(conn.weight.sum(1), torch.full((3,), 2.0, dtype=DT))
    conn.normalize(0.5)
    torch.testing.assert_close(conn.weight.sum(1), torch.full((3,), 0.5, dtype=DT))
    conv = Conv2d(2, 3, 3, wmin=0.0, init="uniform", init_kwargs={"a": 0.0, "b": 1.0})
    conv.normalize(4.0)
    torch.testing.assert_close(conv.weight.sum((1, 2, 3)), torch.full((3,), 4.0))


# ------------------------------------------------------------------------------------------ batch
def test_batch_mean_and_sum():
    nu = (1e-2, 2e-2)
    pre_s = trains(8, 2, 1, [(0, 0, 0), (0, 1, 0)])
    post_s = trains(8, 2, 1, [(5, 0, 0)])  # only sample 0 has a post spike
    one = 2e-2 * math.exp(-5 / 20)
    for reduction, expected in (("mean", one / 2), ("sum", one)):
        pre, conn, post, rule = make(STDP, nu=nu, reduction=reduction)
        assert run(pre, conn, post, rule, pre_s, post_s).item() == pytest.approx(
            expected, rel=1e-12
        )


def test_batch_size_change_recreates_rule_state():
    pre, conn, post, rule = make(STDP, delay=2.0, nu=(1e-2, 2e-2))
    run(pre, conn, post, rule, trains(5, 2, 1, [(0, 0, 0)]), trains(5, 2, 1, []))
    assert rule.pre_history.shape == (2, 3, 1)
    for m in (pre, conn, post):
        m.reset_state()
    rule.reset_state()
    dw = run(pre, conn, post, rule, trains(6, 3, 1, [(0, 2, 0)]), trains(6, 3, 1, [(4, 2, 0)]))
    assert rule.pre_history.shape == (3, 3, 1)
    assert dw.item() == pytest.approx(2e-2 * math.exp(-2 / 20) / 3, rel=1e-12)


# ------------------------------------------------------------------------------------------ triplet


def test_triplet_pairs():
    p = TRIPLET
    assert pair(TripletSTDP, 0, 8, **p) == pytest.approx(
        p["a2_plus"] * math.exp(-8 / p["tau_plus"]), rel=1e-12
    )
    assert pair(TripletSTDP, 8, 0, **p) == pytest.approx(
        -p["a2_minus"] * math.exp(-8 / p["tau_minus"]), rel=1e-12
    )


@pytest.mark.parametrize("interaction", ["all-to-all", "nearest"])
def test_triplet_post_pre_post_and_pre_pre_post(interaction):
    p = TRIPLET
    e = math.exp
    # post 0, pre 10, post 20: o2 before the second post spike is exp(-20/tau_y)
    pre, conn, post, rule = make(TripletSTDP, interaction=interaction, **p)
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(22, 1, 1, [(10, 0, 0)]),
        trains(22, 1, 1, [(0, 0, 0), (20, 0, 0)]),
    )
    expected = -p["a2_minus"] * e(-10 / p["tau_minus"]) + e(-10 / p["tau_plus"]) * (
        p["a2_plus"] + p["a3_plus"] * e(-20 / p["tau_y"])
    )
    assert dw.item() == pytest.approx(expected, rel=1e-12)
    # pre 0, pre 5, post 10: all-to-all sums both pre spikes in r1, nearest keeps the last one
    pre, conn, post, rule = make(TripletSTDP, interaction=interaction, **p)
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(12, 1, 1, [(0, 0, 0), (5, 0, 0)]),
        trains(12, 1, 1, [(10, 0, 0)]),
    )
    r1 = e(-5 / p["tau_plus"]) + (e(-10 / p["tau_plus"]) if interaction == "all-to-all" else 0.0)
    assert dw.item() == pytest.approx(r1 * p["a2_plus"], rel=1e-12)
    # post 0, pre 10, pre 15: second depression uses r2 from before its own increment
    pre, conn, post, rule = make(TripletSTDP, interaction=interaction, **p)
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(17, 1, 1, [(10, 0, 0), (15, 0, 0)]),
        trains(17, 1, 1, [(0, 0, 0)]),
    )
    expected = -p["a2_minus"] * e(-10 / p["tau_minus"]) - e(-15 / p["tau_minus"]) * (
        p["a2_minus"] + p["a3_minus"] * e(-5 / p["tau_x"])
    )
    assert dw.item() == pytest.approx(expected, rel=1e-12)


def test_triplet_nearest_saturates_slow_traces():
    p = TRIPLET
    e = math.exp
    # two posts at 0 and 2 then post at 10 (pre at 5): o2 = exp(-8/ty) + exp(-10/ty) vs exp(-8/ty)
    results = {}
    for interaction in ("all-to-all", "nearest"):
        pre, conn, post, rule = make(TripletSTDP, interaction=interaction, **p)
        results[interaction] = run(
            pre,
            conn,
            post,
            rule,
            trains(12, 1, 1, [(5, 0, 0)]),
            trains(12, 1, 1, [(0, 0, 0), (2, 0, 0), (10, 0, 0)]),
        ).item()
    o1_all = e(-5 / p["tau_minus"]) + e(-3 / p["tau_minus"])
    o1_near = e(-3 / p["tau_minus"])
    pot_all = e(-5 / p["tau_plus"]) * (
        p["a2_plus"] + p["a3_plus"] * (e(-8 / p["tau_y"]) + e(-10 / p["tau_y"]))
    )
    pot_near = e(-5 / p["tau_plus"]) * (p["a2_plus"] + p["a3_plus"] * e(-8 / p["tau_y"]))
    assert results["all-to-all"] == pytest.approx(pot_all - p["a2_minus"] * o1_all, rel=1e-12)
    assert results["nearest"] == pytest.approx(pot_near - p["a2_minus"] * o1_near, rel=1e-12)


def test_triplet_defaults_are_the_visual_cortex_set():
    r = TripletSTDP(connection=Linear(1, 1), pre=Input(1), post=Input(1))
    assert (r.a2_plus, r.a3_plus, r.a2_minus, r.a3_minus) == (5e-10, 6.2e-3, 7e-3, 2.3e-4)
    assert (r.tau_plus, r.tau_minus, r.tau_x, r.tau_y) == (16.8, 33.7, 101.0, 125.0)
    assert r.interaction == "all-to-all"


# ------------------------------------------------------------------------------------------ Hebbian
def test_hebbian_window_and_decay():
    nu = (1e-2, 2e-2)
    assert pair(Hebbian, 0, 6, nu=nu) == pytest.approx(2e-2 * math.exp(-6 / 20), rel=1e-12)
    assert pair(Hebbian, 6, 0, nu=nu) == pytest.approx(1e-2 * math.exp(-6 / 30), rel=1e-12)
    assert pair(Hebbian, 2, 2, nu=nu) == pytest.approx(3e-2, rel=1e-12)
    # decay only (no spikes): w = w0 * exp(-decay * T)
    pre, conn, post, rule = make(Hebbian, w0=0.5, decay=0.01)
    run(pre, conn, post, rule, trains(10, 1, 1, []), trains(10, 1, 1, []))
    assert conn.weight.item() == pytest.approx(0.5 * math.exp(-0.1), rel=1e-12)


# ------------------------------------------------------------------------------------------ MSTDP
def reward_at(T, t, r):
    return [r if k == t else None for k in range(T)]


@pytest.mark.parametrize("r", [1.0, -0.5])
def test_mstdp_pairs_and_reward_sign(r):
    g = 0.05
    T = 12
    dw = pair(MSTDP, 0, 6, T=T, rewards=reward_at(T, 6, r), gamma=g)
    assert dw == pytest.approx(g * r * math.exp(-6 / 20), rel=1e-12)
    dw = pair(MSTDP, 6, 0, T=T, rewards=reward_at(T, 6, r), gamma=g)
    assert dw == pytest.approx(-g * r * math.exp(-6 / 20), rel=1e-12)
    # reward at a step without spikes: no change (MSTDP has no eligibility memory)
    assert pair(MSTDP, 0, 6, T=T, rewards=reward_at(T, 8, r), gamma=g) == 0.0


def test_mstdp_per_sample_reward():
    g = 0.05
    pre_s = trains(8, 2, 1, [(0, 0, 0), (0, 1, 0)])
    post_s = trains(8, 2, 1, [(5, 0, 0), (5, 1, 0)])
    one = g * math.exp(-5 / 20)
    for rew, expected in ((torch.tensor([1.0, -1.0]), 0.0), (torch.tensor([1.0, 0.0]), one / 2)):
        pre, conn, post, rule = make(MSTDP, gamma=g)
        dw = run(pre, conn, post, rule, pre_s, post_s, [rew] * 8)
        assert dw.item() == pytest.approx(expected, abs=1e-15, rel=1e-12)


def test_mstdpet_single_reward_after_pair():
    g, tz = 0.5, 25.0
    T, t_r = 20, 14
    for r in (1.0, -2.0):
        dw = pair(MSTDPET, 0, 6, T=T, rewards=reward_at(T, t_r, r), gamma=g, tau_z=tz)
        expected = g * 1.0 * r * math.exp(-6 / 20) / tz * math.exp(-(t_r - 6) / tz)
        assert dw == pytest.approx(expected, rel=1e-12)


def test_mstdpet_constant_reward_integrates_eligibility():
    g, tz = 0.5, 25.0
    T = 30
    dw = pair(MSTDPET, 0, 6, T=T, rewards=[1.0] * T, gamma=g, tau_z=tz)
    expected = sum(
        g * math.exp(-6 / 20) / tz * math.exp(-(t - 6) / tz) for t in range(6, T)
    )  # pre at 0: P- is 0 then, no depression term
    assert dw == pytest.approx(expected, rel=1e-12)


def test_mstdpet_defaults_and_per_sample_reward():
    r = MSTDPET(connection=Linear(2, 3), pre=Input(2), post=Input(3))
    assert (r.gamma, r.a_plus, r.a_minus, r.tau_plus, r.tau_minus, r.tau_z) == (
        0.01,
        1.0,
        -1.0,
        20.0,
        20.0,
        25.0,
    )
    assert r.eligibility is None
    g, tz, T, t_r = 0.5, 25.0, 12, 9
    pre_s = trains(T, 2, 1, [(0, 0, 0), (0, 1, 0)])
    post_s = trains(T, 2, 1, [(5, 0, 0), (5, 1, 0)])
    one = g * math.exp(-5 / 20) / tz * math.exp(-(t_r - 5) / tz)
    for reduction, scale in (("mean", 0.5), ("sum", 1.0)):
        pre, conn, post, rule = make(
            MSTDPET, gamma=g, tau_z=tz, per_sample_reward=True, reduction=reduction
        )
        dw = run(pre, conn, post, rule, pre_s, post_s, reward_at(T, t_r, torch.tensor([3.0, -1.0])))
        assert dw.item() == pytest.approx(scale * 2.0 * one, rel=1e-12)
        assert rule.eligibility.shape == (2, 1, 1)
    pre, conn, post, rule = make(MSTDPET, gamma=g, tau_z=tz)
    with pytest.raises(ValueError, match="per_sample_reward=True"):
        run(pre, conn, post, rule, pre_s, post_s, [torch.tensor([1.0, 2.0])] * T)
    # scalar reward with shared eligibility: mean over samples
    pre, conn, post, rule = make(MSTDPET, gamma=g, tau_z=tz)
    dw = run(pre, conn, post, rule, pre_s, post_s, reward_at(T, t_r, 2.0))
    assert dw.item() == pytest.approx(2.0 * one, rel=1e-12)
    assert rule.eligibility.shape == (1, 1)


# ------------------------------------------------------------------------------------------ Fede
def fede(w, xhat, lr, w_init, a):
    return lr * (
        math.exp(-(w - w_init)) * (math.exp(xhat) - a)
        - math.exp(w - w_init) * (math.exp(1 - xhat) - a)
    )


@pytest.mark.parametrize("norm", ["max", "mean"])
def test_fedestdp_closed_form(norm):
    lr, w_init, a, w0 = 0.1, 0.4, 0.2, 0.5
    pre, conn, post, rule = make(
        FedeSTDP, 2, 1, w0=w0, lr=lr, w_init=w_init, a=a, trace_normalization=norm
    )
    dw = run(
        pre,
        conn,
        post,
        rule,
        trains(11, 1, 2, [(0, 0, 0), (5, 0, 1)]),
        trains(11, 1, 1, [(10, 0, 0)]),
    )
    x = [math.exp(-10 / 20), math.exp(-5 / 20)]
    ref = max(x) if norm == "max" else sum(x) / 2
    expected = [fede(w0, xi / ref, lr, w_init, a) for xi in x]
    torch.testing.assert_close(dw[0], torch.tensor(expected, dtype=DT), rtol=1e-12, atol=0)


def test_fedestdp_zero_traces_give_no_nan():
    lr, w_init, a, w0 = 0.1, 0.5, 0.0, 0.5
    pre, conn, post, rule = make(FedeSTDP, 3, 1, w0=w0, lr=lr, w_init=w_init, a=a)
    dw = run(pre, conn, post, rule, trains(3, 1, 3, []), trains(3, 1, 1, [(1, 0, 0)]))
    assert torch.isfinite(dw).all()
    torch.testing.assert_close(dw[0], torch.full((3,), fede(w0, 0.0, lr, w_init, a), dtype=DT))
    # no post spike: no change
    pre, conn, post, rule = make(FedeSTDP, 3, 1, w0=w0, lr=lr)
    assert (
        run(pre, conn, post, rule, trains(3, 1, 3, [(0, 0, 1)]), trains(3, 1, 1, [])) == 0
    ).all()


# ------------------------------------------------------------------------------------------ Conv2d
def brute_conv_corr(post, pre, wshape, stride, pad, dil, groups):
    """Per kernel position: sum over batch and output positions of post * shifted pre."""
    prep = F.pad(pre, pad)
    c_out, c_g, kh, kw = wshape
    ho, wo = post.shape[2:]
    out = torch.zeros(wshape, dtype=pre.dtype)
    for o in range(c_out):
        gi = o // (c_out // groups)
        for c in range(c_g):
            for i in range(kh):
                for j in range(kw):
                    y0, x0 = i * dil[0], j * dil[1]
                    win = prep[
                        :,
                        gi * c_g + c,
                        y0 : y0 + stride[0] * (ho - 1) + 1 : stride[0],
                        x0 : x0 + stride[1] * (wo - 1) + 1 : stride[1],
                    ]
                    out[o, c, i, j] = (post[:, o] * win).sum()
    return out


CONV_CASES = [
    dict(kernel_size=3, stride=1, padding=0, dilation=1, groups=1, pad=(0, 0, 0, 0)),
    dict(kernel_size=3, stride=2, padding=1, dilation=1, groups=1, pad=(1, 1, 1, 1)),
    dict(kernel_size=(2, 3), stride=1, padding="same", dilation=1, groups=2, pad=(1, 1, 0, 1)),
    dict(kernel_size=2, stride=1, padding=1, dilation=2, groups=2, pad=(1, 1, 1, 1)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_conv2d_stdp_matches_brute_force(case, delay):
    torch.manual_seed(2)
    case = dict(case)
    pad = case.pop("pad")
    conv = Conv2d(2, 4, delay=delay, init="constant", init_kwargs={"val": 0.1}, **case).to(DT)
    B, H, W, T = 2, 6, 7, 6
    out_shape = conv(torch.zeros(B, 2, H, W, dtype=DT)).shape[1:]
    conv.reset_state()
    pre = Input((2, H, W), tau_trace=10.0).to(DT)
    post = Input(tuple(out_shape), tau_trace=15.0).to(DT)
    nu = (1e-2, 2e-2)
    rule = STDP(connection=conv, pre=pre, post=post, nu=nu, reduction="sum")
    pre_s = (torch.rand(T, B, 2, H, W) < 0.3).to(DT)
    post_s = (torch.rand(T, B, *out_shape) < 0.3).to(DT)
    expected = torch.zeros_like(conv.weight)
    traces, spikes = [], []
    w0 = conv.weight.detach().clone()
    d = int(delay)
    wargs = (tuple(conv.weight.shape), conv.stride, pad, conv.dilation, conv.groups)
    for t in range(T):
        conv(pre(pre_s[t]))
        post(post_s[t])
        rule.step()
        traces.append(pre.trace.clone())
        spikes.append(pre.spikes.clone())
        x_pre = traces[t - d] if t >= d else torch.zeros_like(pre.trace)
        a_pre = spikes[t - d] if t >= d else torch.zeros_like(pre.trace)
        expected += nu[1] * brute_conv_corr(post.spikes, x_pre, *wargs)
        expected -= nu[0] * brute_conv_corr(post.trace, a_pre, *wargs)
    torch.testing.assert_close(conv.weight.detach() - w0, expected, rtol=1e-10, atol=1e-13)


def test_conv2d_per_sample_correlation():
    torch.manual_seed(3)
    pre = torch.rand(3, 4, 6, 6, dtype=DT)
    post = torch.rand(3, 6, 3, 3, dtype=DT)
    args = ((6, 2, 3, 3), 2, 1, 1, 2)
    per = conv2d_correlation(post, pre, *args, per_sample=True)
    assert per.shape == (3, 6, 2, 3, 3)
    for b in range(3):
        torch.testing.assert_close(
            per[b], conv2d_correlation(post[b : b + 1], pre[b : b + 1], *args)
        )
    torch.testing.assert_close(per.sum(0), conv2d_correlation(post, pre, *args))


def test_conv2d_mstdpet_and_fede_run():
    torch.manual_seed(4)
    conv = Conv2d(2, 3, 3, padding=1, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.5})
    pre, post = Input((2, 5, 5)), Input((3, 5, 5))
    rules = [
        MSTDPET(connection=conv, pre=pre, post=post, per_sample_reward=True, gamma=1.0),
        FedeSTDP(connection=conv, pre=pre, post=post, lr=0.01),
        TripletSTDP(connection=conv, pre=pre, post=post),
    ]
    for t in range(5):
        conv(pre((torch.rand(2, 2, 5, 5) < 0.4).float()))
        post((torch.rand(2, 3, 5, 5) < 0.4).float())
        rules[0].step(reward=torch.tensor([1.0, -1.0]))
        rules[1].step()
        rules[2].step()
    assert rules[0].eligibility.shape == (2, 3, 2, 3, 3)
    assert torch.isfinite(conv.weight).all()
    assert not torch.equal(conv.weight, torch.full_like(conv.weight, 0.5))


def test_fedestdp_conv_matches_brute_force():
    torch.manual_seed(5)
    conv = Conv2d(2, 2, 2, stride=1, padding=0, init="constant", init_kwargs={"val": 0.3}).to(DT)
    pre, post = Input((2, 3, 3)).to(DT), Input((2, 2, 2)).to(DT)
    lr, w_init, a = 0.1, 0.5, 0.1
    rule = FedeSTDP(connection=conv, pre=pre, post=post, lr=lr, w_init=w_init, a=a, reduction="sum")
    conv(pre((torch.rand(1, 2, 3, 3) < 0.5).to(DT)))
    post(torch.zeros(1, 2, 2, 2, dtype=DT))
    rule.step()
    conv(pre((torch.rand(1, 2, 3, 3) < 0.5).to(DT)))
    post_s = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]]], dtype=DT)
    post(post_s)
    w_before = conv.weight.detach().clone()
    rule.step()
    x = pre.trace[0]
    expected = torch.zeros_like(w_before)
    for o in range(2):
        for y in range(2):
            for xx in range(2):
                if post_s[0, o, y, xx] == 0:
                    continue
                patch = x[:, y : y + 2, xx : xx + 2]
                xhat = patch / patch.max() if patch.max() > 0 else torch.zeros_like(patch)
                for c in range(2):
                    for i in range(2):
                        for j in range(2):
                            expected[o, c, i, j] += fede(
                                w_before[o, c, i, j].item(), xhat[c, i, j].item(), lr, w_init, a
                            )
    torch.testing.assert_close(conv.weight.detach() - w_before, expected, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------------ modules
class Net(SNNNetwork):
    def __init__(self, delay=0.0):
        super().__init__()
        self.inp = Input(3, tau_trace=20.0)
        self.fc = Linear(3, 2, delay=delay, init="constant", init_kwargs={"val": 0.5})
        self.out = Input(2, tau_trace=30.0)
        self.add_layer("fc1", self.fc, self.out)

    def forward(self, x, y):
        self.fc(self.inp(x))
        return self.out(y)


def net_run(net, rule, pre_s, post_s, rewards=None):
    for t in range(pre_s.shape[0]):
        net(pre_s[t], post_s[t])
        rule.step() if rewards is None else rule.step(reward=rewards[t])


def test_rule_survives_double_mid_sequence():
    torch.manual_seed(6)
    pre_s = (torch.rand(12, 2, 3) < 0.4).double()
    post_s = (torch.rand(12, 2, 2) < 0.4).double()
    results = []
    for switch in (0, 5):
        net = Net(delay=2.0)
        if switch == 0:
            net.double()
        rule = TripletSTDP(network=net, connection="fc1", pre="inp", **TRIPLET)
        rule2 = STDP(network=net, connection="fc1", pre="inp", nu=(1e-2, 2e-2))
        for t in range(12):
            if t == switch and switch:
                net.double()
            dt = torch.float64 if t >= switch else torch.float32
            net(pre_s[t].to(dt), post_s[t].to(dt))
            rule.step()
            rule2.step()
        assert net.fc.weight.dtype == torch.float64
        assert rule.r1.dtype == torch.float64 and rule2.pre_history.dtype == torch.float64
        results.append(net.fc.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
    assert not torch.equal(results[0], torch.full_like(results[0], 0.5))


def test_rule_held_by_network_registers_none_of_its_modules_and_names_resolve():
    net = Net()
    keys = list(net.state_dict())
    rule = STDP(network=net, connection="fc1", pre="inp")
    net.rule = rule
    assert rule.groups[0].connection is net.fc and rule.groups[0].post is net.out
    assert rule.groups[0].pre is net.inp
    assert any(m is rule for m in net.modules())  # a submodule of the network ...
    assert list(rule.children()) == [] and list(rule.state_dict()) == []  # ... holding nothing
    assert len(list(net.parameters())) == 1
    assert list(net.state_dict()) == keys
    with pytest.raises(ValueError, match="neither a layer"):
        STDP(network=net, connection="fc1", pre="nope")
    with pytest.raises(TypeError, match="network="):
        STDP(connection="fc1", pre="inp")


def test_learning_switched_off_by_eval_and_enabled():
    pre_s = trains(8, 1, 3, [(0, 0, 0)]).float()
    post_s = trains(8, 1, 2, [(4, 0, 1)]).float()
    net = Net()
    rule = STDP(network=net, connection="fc1", pre="inp", nu=(1e-2, 1e-2))
    net.eval()
    net_run(net, rule, pre_s, post_s)
    assert torch.equal(net.fc.weight, torch.full((2, 3), 0.5))
    net.train()
    rule.enabled = False
    net.reset_state()
    net_run(net, rule, pre_s, post_s)
    assert torch.equal(net.fc.weight, torch.full((2, 3), 0.5))
    rule.enabled = True
    net.reset_state()
    net_run(net, rule, pre_s, post_s)
    assert net.fc.weight[1, 0].item() == pytest.approx(0.5 + 1e-2 * math.exp(-4 / 20), rel=1e-6)


def test_one_rule_trains_several_connections():
    torch.manual_seed(7)
    pre_s = (torch.rand(15, 2, 3) < 0.4).to(DT)
    post_s = (torch.rand(15, 2, 2) < 0.4).to(DT)
    a, b = Net().double(), Net(delay=3.0).double()
    rule = MSTDPET(connections=[(a.fc, a.inp, a.out), (b.fc, b.inp, b.out)], gamma=0.3)
    ref_a, ref_b = Net().double(), Net(delay=3.0).double()
    ra = MSTDPET(connection=ref_a.fc, pre=ref_a.inp, post=ref_a.out, gamma=0.3)
    rb = MSTDPET(connection=ref_b.fc, pre=ref_b.inp, post=ref_b.out, gamma=0.3)
    for t in range(15):
        for n in (a, b, ref_a, ref_b):
            n(pre_s[t], post_s[t])
        for r in (rule, ra, rb):
            r.step(reward=1.0)
    torch.testing.assert_close(a.fc.weight, ref_a.fc.weight)
    torch.testing.assert_close(b.fc.weight, ref_b.fc.weight)
    assert not torch.equal(a.fc.weight, b.fc.weight)


def test_grad_mode_feeds_an_optimizer():
    torch.manual_seed(8)
    pre_s = (torch.rand(10, 2, 3) < 0.5).to(DT)
    post_s = (torch.rand(10, 2, 2) < 0.5).to(DT)
    ref, net = Net().double(), Net().double()
    r_ref = STDP(network=ref, connection="fc1", pre="inp", nu=(1e-2, 2e-2))
    r_grad = STDP(network=net, connection="fc1", pre="inp", nu=(1e-2, 2e-2), grad=True)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    for t in range(10):
        ref(pre_s[t], post_s[t])
        net(pre_s[t], post_s[t])
        r_ref.step()
        opt.zero_grad()
        w = net.fc.weight.detach().clone()
        r_grad.step()
        assert torch.equal(net.fc.weight, w)
        opt.step()
    torch.testing.assert_close(net.fc.weight, ref.fc.weight)


def test_monitor_reads_rule_state():
    pre, conn, post, rule = make(MSTDPET)
    mon = Monitor(rule, ("eligibility", "p_plus"))
    for t in range(4):
        conn(pre(torch.ones(1, 1, dtype=DT)))
        post(torch.ones(1, 1, dtype=DT))
        rule.step()
        mon.record()
    assert mon.get("eligibility").shape == (4, 1, 1)
    assert mon.get("p_plus").shape == (4, 1, 1)


# ------------------------------------------------------------------------------------------ errors
def test_argument_errors():
    c, p, q = Linear(2, 3), Input(2), Input(3)
    with pytest.raises(ValueError, match="reduction"):
        STDP(connection=c, pre=p, post=q, reduction="max")
    with pytest.raises(ValueError, match="tau_plus"):
        TripletSTDP(connection=c, pre=p, post=q, tau_plus=0.0)
    with pytest.raises(ValueError, match="tau_z"):
        MSTDPET(connection=c, pre=p, post=q, tau_z=-1.0)
    with pytest.raises(ValueError, match="interaction"):
        TripletSTDP(connection=c, pre=p, post=q, interaction="nearest-neighbour")
    with pytest.raises(ValueError, match="weight_dependence"):
        STDP(connection=c, pre=p, post=q, weight_dependence="hard")
    with pytest.raises(TypeError, match="nu"):
        STDP(connection=c, pre=p, post=q, nu=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="post has shape"):
        STDP(connection=c, pre=p, post=Input(4))
    with pytest.raises(TypeError, match="connection must be"):
        STDP(connection=torch.nn.Linear(2, 3), pre=p, post=q)
    with pytest.raises(ValueError, match="pre is required"):
        STDP(connection=c, post=q)
    with pytest.raises(ValueError, match="norm cannot"):
        STDP(connection=c, pre=p, post=q, grad=True, norm=1.0)
    with pytest.raises(ValueError, match="trace_normalization"):
        FedeSTDP(connection=c, pre=p, post=q, trace_normalization="min")
    rule = STDP(connection=c, pre=p, post=q)
    with pytest.raises(RuntimeError, match="after the neurons"):
        rule.step()
    c(p(torch.zeros(1, 2)))
    q(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="takes no reward"):
        rule.step(reward=1.0)
    m = MSTDP(connection=c, pre=p, post=q)
    with pytest.raises(ValueError, match="reward must be"):
        m.step(reward=torch.ones(2, 2))
    with pytest.raises(TypeError, match="reward must be"):
        m.step(reward="good")


# ------------------------------------------------------------------------------------------ a rule
# held by the network: one reset, .to()/.double(), train()/eval(), repr, state_dict, deepcopy
class RewardNet(SNNNetwork):
    def __init__(self, n_in=1, n_out=1, delay=0.0):
        super().__init__()
        self.inp = Input(n_in, tau_trace=20.0)
        self.fc = Linear(n_in, n_out, delay=delay, init="constant", init_kwargs={"val": 0.5})
        self.out = Input(n_out, tau_trace=30.0)
        self.rule = MSTDPET(connection=self.fc, pre=self.inp, post=self.out, gamma=0.5, tau_z=25.0)

    def forward(self, x, y):
        self.fc(self.inp(x))
        return self.out(y)


class STDPNet(Net):
    def __init__(self):
        super().__init__()
        self.stdp = STDP(network=self, connection="fc1", pre="inp", nu=(1e-2, 1e-2))


def reward_run(net, pre_s, post_s, rewards=None):
    for t in range(pre_s.shape[0]):
        net(pre_s[t], post_s[t])
        net.rule.step(reward=None if rewards is None else rewards[t])


def test_net_reset_clears_eligibility_so_a_reward_on_the_next_silent_step_changes_nothing():
    net = RewardNet().double()
    reward_run(net, trains(5, 1, 1, [(0, 0, 0)]), trains(5, 1, 1, [(3, 0, 0)]))  # no reward
    assert net.rule.eligibility.item() > 0
    w = net.fc.weight.detach().clone()
    kept = copy.deepcopy(net)  # control: reset only the neurons and the connection
    for module in (kept.inp, kept.fc, kept.out):
        module.reset_state()
    net.reset_state()
    silent = torch.zeros(1, 1, dtype=DT)
    for n in (net, kept):
        n(silent, silent)  # first (silent) step of the next sample, rewarded
        n.rule.step(reward=1.0)
    assert torch.equal(net.fc.weight, w)
    assert net.rule.p_plus.item() == 0 and net.rule.eligibility.item() == 0
    # without the rule's reset the old pairing's eligibility would be paid out
    left_over = 0.5 * math.exp(-3 / 20) / 25.0 * math.exp(-2 / 25)
    assert (kept.fc.weight - w).item() == pytest.approx(left_over, rel=1e-12)


def test_net_reset_reaches_rules_in_module_containers():
    class Held(Net):
        def __init__(self):
            super().__init__()
            triple = (self.fc, self.inp, self.out)
            self.listed = torch.nn.ModuleList([MSTDPET(connections=[triple])])
            self.named = torch.nn.ModuleDict({"mstdp": MSTDP(connections=[triple])})
            self.chain = torch.nn.Sequential(TripletSTDP(connections=[triple], **TRIPLET))

    net = Held()
    rules = [net.listed[0], net.named["mstdp"], net.chain[0]]
    for x in trains(4, 2, 3, [(0, 0, 1), (1, 1, 2)]).float():
        net(x, torch.ones(2, 2))
        for rule in rules:
            rule.step(reward=0.5) if rule.takes_reward else rule.step()
    assert all(rule.groups[0].state for rule in rules)
    net.reset_state()
    assert not any(rule.groups[0].state for rule in rules)


def test_rule_state_follows_network_double_and_learning_continues():
    torch.manual_seed(6)
    T = 12
    pre_s = (torch.rand(T, 2, 3) < 0.4).double()
    post_s = (torch.rand(T, 2, 2) < 0.4).double()
    rewards = [1.0 - 0.15 * t for t in range(T)]
    results = []
    for switch in (0, 5):
        net = RewardNet(3, 2, delay=2.0)
        if switch == 0:
            net.double()
        for t in range(T):
            if t == switch and switch:
                state = net.rule.groups[0].state
                assert {v.dtype for v in state.values()} == {torch.float32}
                net.double()  # converts the rule's state now, not at its next step
                assert set(state) == {"p_plus", "p_minus", "eligibility"}
                assert {v.dtype for v in state.values()} == {torch.float64}
                w_switch = net.fc.weight.detach().clone()
            dt = torch.float64 if t >= switch else torch.float32
            net(pre_s[t].to(dt), post_s[t].to(dt))
            net.rule.step(reward=rewards[t])
        results.append(net.fc.weight.detach().clone())
    assert net.rule.eligibility.dtype == torch.float64
    assert not torch.equal(results[1], w_switch)  # learning continued after the switch
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_eval_train_and_call_form_of_a_rule_held_by_network():
    pre_s = trains(8, 1, 3, [(0, 0, 0)]).float()
    post_s = trains(8, 1, 2, [(4, 0, 1)]).float()
    net = STDPNet()
    net.eval()
    assert not net.stdp.training
    net_run(net, net.stdp, pre_s, post_s)
    assert torch.equal(net.fc.weight, torch.full((2, 3), 0.5))
    net.train()
    net.stdp.eval()  # the connection still trains: the rule's own mode stops it
    assert net.fc.training
    net.reset_state()
    net_run(net, net.stdp, pre_s, post_s)
    assert torch.equal(net.fc.weight, torch.full((2, 3), 0.5))
    net.stdp.train()
    net.reset_state()
    calls = []
    net.stdp.register_forward_hook(lambda module, args, output: calls.append(1))
    for t in range(8):
        net(pre_s[t], post_s[t])
        net.stdp()  # the call form: same as step(), and runs forward hooks
    assert len(calls) == 8
    assert net.fc.weight[1, 0].item() == pytest.approx(0.5 + 1e-2 * math.exp(-4 / 20), rel=1e-6)


def test_repr_shows_the_rule():
    text = repr(STDPNet())
    assert "(stdp): STDP(nu=(0.01, 0.01), weight_dependence=None, reduction='mean'" in text
    assert "connections=1)" in text
    assert "tau_z=25.0" in repr(RewardNet())


def test_state_dict_keys_and_round_trip_with_a_rule():
    torch.manual_seed(3)
    net = STDPNet()
    assert list(net.state_dict()) == list(Net().state_dict())  # the rule adds no key
    net_run(
        net, net.stdp, (torch.rand(10, 2, 3) < 0.5).float(), (torch.rand(10, 2, 2) < 0.5).float()
    )
    assert not torch.equal(net.fc.weight, torch.full((2, 3), 0.5))
    fresh = STDPNet()
    fresh.load_state_dict(net.state_dict())
    assert torch.equal(fresh.fc.weight, net.fc.weight)
    assert fresh.stdp.groups[0].connection is fresh.fc


def test_deepcopy_and_pickle_rebind_the_rule_to_the_copied_modules():
    net = RewardNet(delay=1.0).double()
    reward_run(net, trains(4, 1, 1, [(0, 0, 0)]), trains(4, 1, 1, [(2, 0, 0)]))
    w = net.fc.weight.detach().clone()
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        g = clone.rule.groups[0]
        assert g.connection is clone.fc and g.pre is clone.inp and g.post is clone.out
        assert torch.equal(clone.rule.eligibility, net.rule.eligibility)
        assert clone.rule.eligibility is not net.rule.eligibility
        silent = torch.zeros(1, 1, dtype=DT)
        clone(silent, silent)
        clone.rule.step(reward=1.0)
        assert not torch.equal(clone.fc.weight, w)
        assert torch.equal(net.fc.weight, w)  # the original is untouched


# ------------------------------------------------------------------------------------------ a rule
# written by a user with the public hooks only
class BCM(LearningRule):
    r"""BCM with a sliding threshold: :math:`\Delta w_{ij} = \eta\, y_i (y_i - \theta_i)\, x_{ij}`,
    :math:`y` a rule-owned trace of the post spikes (``tau_y``), :math:`x` the presynaptic trace at
    the synapse, then :math:`\theta \leftarrow \theta e^{-dt/\tau_\theta} + (1 - e^{-dt/\tau_\theta})
    y^2`."""

    state_names = ("y", "theta")

    def __init__(self, connection=None, pre=None, post=None, *, eta, tau_y, tau_theta, **kwargs):
        super().__init__(connection, pre, post, **kwargs)
        self.eta, self.tau_y, self.tau_theta = eta, tau_y, tau_theta

    def delta(self, group: SynapseGroup, reward):
        y = group.own_trace("y", group.post_spikes(), self.tau_y)
        theta = group.zeros_or("theta", y.shape, y)
        phi = y * (y - theta)
        dw = group.correlate(phi, group.pre_trace()) * (self.eta * self.batch_factor(y.shape[0]))
        decay = math.exp(-group.dt / self.tau_theta)
        group.state["theta"] = theta * decay + (1.0 - decay) * y * y
        return dw


def test_user_defined_rule_on_the_public_hooks_matches_hand_computation():
    T, B, n_in, n_out, eta, tau_y, tau_th = 12, 2, 2, 2, 0.05, 10.0, 2.0
    pre_s = trains(T, B, n_in, [(0, 0, 0), (2, 0, 1), (1, 1, 0), (5, 1, 1), (6, 0, 0)])
    post_s = trains(T, B, n_out, [(3, 0, 0), (4, 0, 0), (6, 0, 1), (7, 1, 0), (8, 1, 1), (9, 1, 1)])
    pre, conn, post, rule = make(
        BCM, n_in, n_out, delay=1.0, eta=eta, tau_y=tau_y, tau_theta=tau_th
    )
    dw = run(pre, conn, post, rule, pre_s, post_s)
    # by hand, in plain floats: pre trace (tau 20 ms) read one step late through the delay
    x = [[0.0] * n_in for _ in range(B)]
    x_prev = [[0.0] * n_in for _ in range(B)]
    y = [[0.0] * n_out for _ in range(B)]
    th = [[0.0] * n_out for _ in range(B)]
    expected = [[0.0] * n_in for _ in range(n_out)]
    k = math.exp(-1 / tau_th)
    for t in range(T):
        x_syn = [row[:] for row in x_prev] if t >= 1 else [[0.0] * n_in for _ in range(B)]
        x = [
            [x[b][j] * math.exp(-1 / 20) + pre_s[t, b, j].item() for j in range(n_in)]
            for b in range(B)
        ]
        x_prev = x
        y = [
            [y[b][i] * math.exp(-1 / tau_y) + post_s[t, b, i].item() for i in range(n_out)]
            for b in range(B)
        ]
        for i in range(n_out):
            for j in range(n_in):
                expected[i][j] += (
                    eta / B * sum(y[b][i] * (y[b][i] - th[b][i]) * x_syn[b][j] for b in range(B))
                )
        th = [[th[b][i] * k + (1 - k) * y[b][i] ** 2 for i in range(n_out)] for b in range(B)]
    expected = torch.tensor(expected, dtype=DT)
    assert (expected > 0).any() and (expected < 0).any()  # both sides of the threshold
    torch.testing.assert_close(dw, expected, rtol=1e-12, atol=1e-15)
    assert rule.theta.shape == (B, n_out)
    torch.testing.assert_close(rule.theta, torch.tensor(th, dtype=DT), rtol=1e-12, atol=0)


def test_rule_without_delta_and_connection_without_weight_fail_clearly():
    class Incomplete(LearningRule):
        pass

    pre, conn, post, rule = make(Incomplete)
    conn(pre(torch.zeros(1, 1, dtype=DT)))
    post(torch.zeros(1, 1, dtype=DT))
    with pytest.raises(NotImplementedError, match="must implement delta"):
        rule.step()
    weightless = Linear(2, 3)
    del weightless.weight
    with pytest.raises(TypeError, match="no weight"):
        STDP(connection=weightless, pre=Input(2), post=Input(3))


@pytest.mark.parametrize("delay", [2.0, torch.tensor([[2.0, 0.0, 3.0], [1.0, 4.0, 2.0]])])
def test_reading_the_delayed_pre_trace_twice_in_a_step_changes_nothing(delay):
    class Curious(STDP):
        def delta(self, g, reward):
            first = g.pre_trace()  # read before STDP reads it again
            dw = super().delta(g, reward)
            torch.testing.assert_close(g.pre_trace(), first, rtol=0, atol=0)
            return dw

    torch.manual_seed(11)
    pre_s = (torch.rand(15, 2, 3) < 0.4).to(DT)
    post_s = (torch.rand(15, 2, 2) < 0.4).to(DT)
    results = [
        run(*make(cls, 3, 2, delay=delay, nu=(1e-2, 2e-2)), pre_s, post_s)
        for cls in (STDP, Curious)
    ]
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ a
# connection written by a user: any Connection with an (out, in) weight trains as a Linear
class UserDense(Connection):
    """All-to-all connection written on the public API: ``I_i = sum_j w_ij s_j(t - d_ij)``."""

    def __init__(self, n_in, n_out, delay=0.0):
        super().__init__(n_in, n_out, 1.0, delay, delay_shape=(n_out, n_in), wmin=0.0, wmax=1.0)
        self.weight = torch.nn.Parameter(torch.empty(n_out, n_in, dtype=DT))
        self.reset_parameters()

    def propagate(self, arriving):  # (N, in) shared delay, (N, out, in) per-synapse delays
        if arriving.dim() == 2:
            return arriving @ self.weight.t()
        return (arriving * self.weight).sum(-1)


@pytest.mark.parametrize(
    "delay", [0.0, 2.0, torch.tensor([[0.0, 1.0, 3.0, 2.0], [2.0, 0.0, 1.0, 4.0], [1.0] * 4])]
)
@pytest.mark.parametrize("weight_dependence", [None, "soft"])
def test_stdp_trains_a_user_connection_with_an_out_in_weight_like_a_linear(
    delay, weight_dependence
):
    torch.manual_seed(5)
    w0 = torch.rand(3, 4, dtype=DT)
    pre_s = (torch.rand(40, 2, 4) < 0.3).to(DT)
    post_s = (torch.rand(40, 2, 3) < 0.3).to(DT)
    results = []
    for conn in (UserDense(4, 3, delay), Linear(4, 3, delay=delay, wmin=0.0, wmax=1.0, dtype=DT)):
        with torch.no_grad():
            conn.weight.copy_(w0)
            # with fixed weights the two connections deliver the same input
            current = torch.stack([conn(step) for step in pre_s])
        conn.reset_state()
        pre, post = Input(4).to(DT), Input(3).to(DT)
        rule = STDP(conn, pre, post, nu=(5e-3, 4e-3), weight_dependence=weight_dependence)
        results.append((current, run(pre, conn, post, rule, pre_s, post_s)))
    (current_user, dw_user), (current_linear, dw_linear) = results
    assert current_linear.abs().sum() > 0
    torch.testing.assert_close(current_user, current_linear, rtol=1e-12, atol=1e-14)
    assert (dw_linear > 0).any() and (dw_linear < 0).any()  # both STDP terms at work
    torch.testing.assert_close(dw_user, dw_linear, rtol=1e-12, atol=1e-14)


def test_rules_reject_connections_whose_weight_layout_they_cannot_train():
    class Diagonal(Connection):
        def __init__(self, n):
            super().__init__(n, n)
            self.weight = torch.nn.Parameter(torch.ones(n))

        def propagate(self, arriving):
            return arriving * self.weight

    class PerInputDelay(UserDense):
        def __init__(self, n_in, n_out, delay):
            Connection.__init__(self, n_in, n_out, 1.0, delay, delay_shape=(n_in,))
            self.weight = torch.nn.Parameter(torch.ones(n_out, n_in, dtype=DT))

    with pytest.raises(ValueError, match=r"Diagonal has .* weight of shape \(3,\): learning rules"):
        STDP(Diagonal(3), Input(3), Input(3))
    with pytest.raises(ValueError, match=r"delays of shape \(2,\): .* delay_shape=\(3, 2\)"):
        STDP(PerInputDelay(2, 3, torch.tensor([1.0, 2.0])), Input(2), Input(3))
    with pytest.raises(ValueError, match=r"post has shape \(2,\) but the UserDense expects \(3,\)"):
        STDP(UserDense(2, 3), Input(2), Input(2))
    with pytest.raises(TypeError, match="must be a pysnn.connection.Connection"):
        STDP(torch.nn.Linear(2, 3), Input(2), Input(3))


@pytest.mark.parametrize("shape", [(1, 3), (3, 1)])
def test_stdp_same_step_pair_on_a_linear_with_one_output_or_input(shape):
    """With one row or column the event copy must not alias the weight (updates applied once)."""
    n_out, n_in = shape  # float32: the event path keeps its presynaptic-major weight copy
    pre, post = Input(n_in), Input(n_out)
    conn = Linear(n_in, n_out, init="constant", init_kwargs={"val": 0.5}, propagation="event")
    rule = STDP(conn, pre, post, nu=(1e-3, 2e-3))
    spikes_pre, spikes_post = torch.zeros(3, 1, n_in), torch.zeros(3, 1, n_out)
    spikes_pre[1, 0, 0] = spikes_post[1, 0, 0] = 1.0
    with torch.no_grad():  # no autograd: the event path builds the copy
        dw = run(pre, conn, post, rule, spikes_pre, spikes_post)
    torch.testing.assert_close(dw[0, 0], torch.tensor(2e-3 - 1e-3))  # nu_post - nu_pre


def test_synapse_group_neuron_state_and_state_or():
    from pysnn.neuron import LIFNeuron

    pre, conn, post = Input(2), Linear(2, 3), LIFNeuron(3, v_rest=-70.0)
    rule = STDP(conn, pre, post)
    group = rule.groups[0]
    with pytest.raises(RuntimeError, match="has no v yet"):
        group.post_state("v")
    with pytest.raises(AttributeError, match="has no state 'w'"):
        group.post_state("w")
    with torch.no_grad():
        post(conn(pre(torch.zeros(4, 2))))
    assert group.post_state("v") is post.v and torch.equal(post.v, torch.full((4, 3), -70.0))
    assert group.pre_state("trace") is pre.trace
    # state_or: the initial value when missing or of another shape, else the stored state
    start = torch.full((4, 3), 2.0)
    assert group.state_or("u", start) is start
    group.state["u"] = torch.ones(4, 3, dtype=torch.float64)
    got = group.state_or("u", start)
    assert got.dtype == torch.float32 and torch.equal(got, torch.ones(4, 3))
    assert group.state_or("u", torch.zeros(2, 3)).shape == (2, 3)  # a new batch size


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_one_sample_stdp_fused_equals_torch_ops_and_keeps_the_event_copy(dtype, delay):
    """At batch 1 STDP changes only the rows of neurons that spiked or fired recently, in one
    fused pass on the CPU (weight and event copy together): bit-identical to the torch
    operations (``PYSNN_NATIVE=0``), and (without delay) equal to ``nu_post s x_pre - nu_pre
    x_post a`` per step, clamped, computed here independently in float64."""
    import pysnn.native as native

    def run(fused):
        torch.manual_seed(4)
        pre, post = Input(30).to(dtype), Input(8).to(dtype)
        conn = Linear(30, 8, delay=delay, wmin=0.0, wmax=0.05, propagation="event").to(dtype)
        with torch.no_grad():
            conn.weight.uniform_(0.0, 0.05)
        rule = STDP(connection=conn, pre=pre, post=post, nu=(3e-3, 5e-3))
        g = torch.Generator().manual_seed(5)
        weights, expected = [], []
        with native.enabled(fused), torch.no_grad():
            for _ in range(40):
                x = (torch.rand(1, 30, generator=g) < 0.3).to(dtype)
                s = (torch.rand(1, 8, generator=g) < 0.2).to(dtype)
                conn(pre(x))
                post(s)
                w0 = conn.weight.detach().double().clone()
                a, x_pre = conn.arriving_spikes().double(), rule.groups[0].pre_trace().double()
                dw = 5e-3 * s.double().t() @ x_pre - 3e-3 * post.trace.double().t() @ a
                expected.append((w0 + dw).clamp(0.0, 0.05))
                rule.step()
                weights.append(conn.weight.detach().clone())
                if fused and native.available():  # the copy followed every update
                    assert torch.equal(conn._copy.copy, conn.weight.detach().t())
        return weights, expected

    fused, expected = run(True)
    reference, _ = run(False)
    assert all(torch.equal(a, b) for a, b in zip(fused, reference))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for got, want in zip(fused, expected if delay == 0 else []):  # (the delayed trace is the
        torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)  # rule's to read)
    assert not torch.equal(fused[0], fused[-1])  # the weights did learn


def test_stdp_fused_step_follows_every_change_exactly(monkeypatch):
    """One-sample STDP steps run the fused kernel (one call each, from the rule's ``delta``);
    through a new learning rate, in-place, ``.data`` and swapped weight writes, new bounds,
    ``enabled``, ``eval()``/``train()`` and a batch of two, every step's weights equal the torch
    path's."""
    import pysnn.native as native

    taken = []
    call = native.STDPRowsKernel.__call__
    monkeypatch.setattr(
        native.STDPRowsKernel, "__call__", lambda self, *a: taken.append(1) or call(self, *a)
    )

    def run(fused):
        torch.manual_seed(6)
        pre, post = Input(30), Input(8)
        conn = Linear(30, 8, wmin=0.0, wmax=0.05, propagation="event")
        with torch.no_grad():
            conn.weight.uniform_(0.0, 0.05)
        rule = STDP(connection=conn, pre=pre, post=post, nu=(3e-3, 5e-3))
        g = torch.Generator().manual_seed(7)
        weights = []
        with native.enabled(fused), torch.no_grad():
            for t in range(60):
                if t == 10:
                    rule.nu_post = 2e-2
                if t == 15:
                    conn.weight.data.mul_(0.5)
                    conn.weight.mul_(0.9)
                if t == 20:
                    conn.wmax = 0.03
                if t == 36:
                    conn.weight.data = torch.rand(8, 30, generator=g) * 0.03
                if t in (25, 28):
                    rule.enabled = t == 28
                if t in (30, 33):
                    rule.train(t == 33)
                batch = 2 if 40 <= t < 45 else 1
                x = (torch.rand(batch, 30, generator=g) < 0.3).float()
                s = (torch.rand(batch, 8, generator=g) < 0.2).float()
                conn(pre(x))
                post(s)
                if t == 50:  # a write between the forward pass and the rule: the copy is stale
                    conn.weight.data[:, :5] = 0.01
                rule.step()
                weights.append(conn.weight.detach().clone())
                if fused and native.available() and conn._copy.copy is not None:
                    if conn._copy._in_sync(conn.weight):
                        assert torch.equal(conn._copy.copy, conn.weight.detach().t())
        return weights

    fused = run(True)
    fast_steps = len(taken)
    reference = run(False)
    assert all(torch.equal(a, b) for a, b in zip(fused, reference))
    assert not torch.equal(fused[0], fused[-1])
    if native.available():
        assert fast_steps > 30


def test_one_sample_kernels_follow_the_backend_preference_and_shape(monkeypatch):
    """The rules' one-sample kernels are kept per (shape, dtype, preference): under
    ``prefer("torch")`` a step that ran on the C kernel runs the torch operations (no kernel
    call), with the same weights; a weight of another shape gets a kernel of its own."""
    import pysnn.native as native
    from pysnn import backends
    from pysnn.functional import plasticity

    calls = []
    call = native.STDPRowsKernel.__call__
    monkeypatch.setattr(
        native.STDPRowsKernel, "__call__", lambda self, *a: calls.append(self) or call(self, *a)
    )

    def steps(n_out, preference):
        torch.manual_seed(2)
        pre, post = Input(30), Input(n_out)
        conn = Linear(30, n_out, wmin=0.0, wmax=0.05, propagation="event")
        rule = STDP(connection=conn, pre=pre, post=post, nu=(3e-3, 5e-3))
        g = torch.Generator().manual_seed(3)
        with backends.prefer(preference), torch.no_grad():
            for _ in range(20):
                conn(pre((torch.rand(1, 30, generator=g) < 0.3).float()))
                post((torch.rand(1, n_out, generator=g) < 0.3).float())
                rule.step()
        return conn.weight.detach().clone()

    on_c = steps(8, "auto")
    if not native.available():
        return
    assert len(calls) == 20
    assert torch.equal(steps(8, "torch"), on_c) and len(calls) == 20
    steps(9, "auto")
    assert len(calls) == 40 and calls[-1] is not calls[0]
    assert calls[-1] is plasticity.stdp_rows_kernel(torch.zeros(9, 30))


def test_a_rule_step_under_grad_mode_runs_once_and_changes_no_graph():
    """``LearningRule.forward`` under grad mode steps every group once, without autograd (a
    subclass that overrides ``forward`` and calls ``super()`` is not entered twice)."""
    calls = []

    class Counted(STDP):
        def forward(self, reward=None):
            calls.append(1)
            super().forward(reward)

    pre, post = Input(6), Input(4)
    conn = Linear(6, 4, wmin=0.0, wmax=1.0)
    rule = Counted(connection=conn, pre=pre, post=post)
    before = conn.weight.detach().clone()
    assert torch.is_grad_enabled() and conn.weight.requires_grad
    conn(pre(torch.ones(1, 6)))
    post(torch.ones(1, 4))
    rule.step()
    assert calls == [1] and rule.groups[0]._step == 1
    assert not torch.equal(conn.weight.detach(), before) and conn.weight.grad is None
    assert conn.weight.grad_fn is None and conn.weight.is_leaf
