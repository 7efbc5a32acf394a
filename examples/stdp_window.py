"""Measure the STDP window of a learning rule by simulation and compare it with the closed form.

One presynaptic ``Input`` neuron fires once at ``t0``; postsynaptic ``Input`` neuron ``k`` fires once
at ``t0 + Δt_k`` (Δt from ``-window`` to ``+window`` ms), so a single run of ``Linear(1, K)``
measures the whole window: ``Δw[k]`` is the weight change of the pair with spike-time difference
``Δt_k = t_post - t_pre``. Prints the values and saves ``stdp_window.png`` to ``--out`` (when
matplotlib is installed).

    python examples/stdp_window.py --rule stdp --out results/
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Tuple

import torch

from pysnn.connection import Linear
from pysnn.functional.plasticity import pair_stdp_window
from pysnn.learning import STDP, Hebbian, TripletSTDP
from pysnn.neuron import Input


@torch.no_grad()  # simulation only: no autograd graph
def measure(
    rule_name: str,
    window: int,
    dt: float,
    tau_pre: float,
    tau_post: float,
    nu_pre: float,
    nu_post: float,
) -> Tuple[torch.Tensor, torch.Tensor, Callable]:
    """Simulate the pairs; return ``(Δt (ms), Δw, closed-form function of Δt)``."""
    steps = int(round(window / dt))
    offsets = torch.arange(-steps, steps + 1)
    t0 = steps + 1
    n_steps = 2 * steps + 3
    k = offsets.numel()
    pre = Input(1, dt=dt, tau_trace=tau_pre).double()
    post = Input(k, dt=dt, tau_trace=tau_post).double()
    conn = Linear(1, k, dt=dt, init="constant", init_kwargs={"val": 0.0}, dtype=torch.float64)
    if rule_name == "stdp":
        rule = STDP(connection=conn, pre=pre, post=post, nu=(nu_pre, nu_post))
        expected = lambda d: pair_stdp_window(d, nu_pre, nu_post, tau_pre, tau_post)  # noqa: E731
    elif rule_name == "hebbian":
        rule = Hebbian(connection=conn, pre=pre, post=post, nu=(nu_pre, nu_post))
        expected = lambda d: torch.where(  # noqa: E731
            d >= 0, nu_post * torch.exp(-d.clamp_min(0) / tau_pre), 0.0 * d
        ) + torch.where(d <= 0, nu_pre * torch.exp(d.clamp_max(0) / tau_post), 0.0 * d)
    elif rule_name == "triplet":
        rule = TripletSTDP(connection=conn, pre=pre, post=post)
        p = rule
        # a single pair: only the pair terms (A2) act, with the rule's own time constants
        expected = lambda d: torch.where(  # noqa: E731
            d >= 0, p.a2_plus * torch.exp(-d.clamp_min(0) / p.tau_plus), 0.0 * d
        ) - torch.where(d <= 0, p.a2_minus * torch.exp(d.clamp_max(0) / p.tau_minus), 0.0 * d)
    else:
        raise ValueError(f"rule must be 'stdp', 'hebbian' or 'triplet', got {rule_name!r}")
    for t in range(n_steps):
        s_pre = torch.zeros(1, 1, dtype=torch.float64)
        s_pre[0, 0] = float(t == t0)
        s_post = (t0 + offsets == t).to(torch.float64).unsqueeze(0)
        conn(pre(s_pre))
        post(s_post)
        rule.step()
    delta_t = offsets.to(torch.float64) * dt
    return delta_t, conn.weight.detach()[:, 0].clone(), expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", choices=("stdp", "hebbian", "triplet"), default="stdp")
    parser.add_argument("--window", type=float, default=50.0, help="largest |Δt| (ms)")
    parser.add_argument("--dt", type=float, default=1.0, help="time step (ms)")
    parser.add_argument("--tau-pre", type=float, default=20.0, help="presynaptic trace tau (ms)")
    parser.add_argument("--tau-post", type=float, default=20.0, help="postsynaptic trace tau (ms)")
    parser.add_argument("--nu-pre", type=float, default=1e-2, help="depression rate nu_pre")
    parser.add_argument("--nu-post", type=float, default=1e-2, help="potentiation rate nu_post")
    parser.add_argument("--out", default=".", help="folder for stdp_window.png")
    args = parser.parse_args()

    delta_t, dw, expected = measure(
        args.rule, args.window, args.dt, args.tau_pre, args.tau_post, args.nu_pre, args.nu_post
    )
    theory = expected(delta_t)
    print(f"{args.rule} window: Δt = t_post - t_pre (ms), measured Δw, closed form")
    for d, w, e in zip(delta_t.tolist(), dw.tolist(), theory.tolist()):
        print(f"{d:8.1f}  {w: .6e}  {e: .6e}")
    err = (dw - theory).abs().max().item()
    print(f"max |measured - closed form| = {err:.3e}")
    if not math.isfinite(err) or err > 1e-9:
        raise SystemExit("measured window differs from the closed form")

    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "stdp_window.png")
    try:
        from pysnn.plotting import plot_stdp_window
    except ImportError:
        plot_stdp_window = None
    if plot_stdp_window is not None:
        plot_stdp_window(delta_t, dw, expected, title=f"{args.rule} window", path=path)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.plot(delta_t.numpy(), theory.numpy(), "r-", label="closed form")
        ax.scatter(delta_t.numpy(), dw.numpy(), s=12, label="measured")
        ax.set_xlabel("Δt = t_post − t_pre (ms)")
        ax.set_ylabel("Δw")
        ax.legend()
        fig.savefig(path)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
