"""Diehl & Cook (2015) as the authors' code builds it, simulated by Brian2 (issue 26).

A reference measurement, not a pysnn model: the authors' released Brian 1 network
(``peter-u-diehl/stdp-mnist``, ``Diehl&Cook_spiking_MNIST.py``) written again in Brian2 and run
as one C++ standalone program, so that pysnn's ``examples/mnist_stdp.py`` can be compared with
the reference simulator on the same protocol. It answers the question the 100-neuron gap of
issue 26 leaves open: does the authors' model itself reach the paper's 82.9 % at 100 neurons?

The model, with the source of each part (all from the authors' script unless said otherwise):

- input: 784 Poisson neurons at ``pixel / 8 * intensity`` Hz, intensity 2 (at most 63.75 Hz),
  for 350 ms, then 150 ms of silence; a digit that made fewer than 5 excitatory spikes in its
  350 ms is shown again with the intensity raised by 1 (+31.9 Hz at most), without limit;
- excitatory neurons (n): ``dv/dt = ((-65 mV - v) + ge (0 mV - v) + gi (-100 mV - v)) / 100 ms``,
  ``dge/dt = -ge / 1 ms``, ``dgi/dt = -gi / 2 ms``; threshold ``v > theta - 72 mV`` (theta
  starts at 20 mV, so -52 mV), reset to -65 mV, refractory 5 ms; ``theta += 0.05 mV`` per spike
  and ``dtheta/dt = -theta / 1e7 ms`` during training, fixed while testing;
- the code's spike condition also asks ``timer > 5 ms`` with ``dtimer/dt = 100.0`` reset to 0 at
  a spike. Brian 1 keeps every value in SI units (the script even imports ``brian_no_units``),
  so the timer runs 100 times faster than time and passes 5 ms 0.05 ms after a spike, inside
  the refractory period: it locks nothing out, and it is left out here. (The Brian 2 ports,
  e.g. Brian2's ``examples/frompapers/Diehl_Cook_2015.py``, write ``dtimer/dt = 0.1``, a 50 ms
  lockout.)
- inhibitory neurons (n): rest -60 mV, tau 10 ms, threshold -40 mV, reset -45 mV, refractory
  2 ms, inhibitory reversal -85 mV, same ``ge`` / ``gi`` decays;
- connections: input -> excitatory all-to-all, weights ``(U(0, 1) + 0.01) * 0.3``, delays
  ``U(0, 10)`` ms; excitatory -> inhibitory one-to-one, 10.4; inhibitory -> excitatory all but
  the own neuron, 17.0 (weights add to the conductance ``ge`` / ``gi`` of the target);
- learning (input -> excitatory only): traces ``pre`` (20 ms), ``post1`` (20 ms), ``post2``
  (40 ms), each set to 1 at a spike; at a presynaptic spike ``w -= 0.0001 * post1``; at a
  postsynaptic spike ``w += 0.01 * pre * post2`` (post2 read before it is set); ``w`` clipped
  to [0, 1]; before each presentation (training only) each neuron's input weights are scaled to
  sum to 78;
- dt 0.5 ms, forward Euler (Brian 1 integrates these non-linear equations with Euler);
- protocol: ``--n-train`` training digits in order, ``--epochs`` times; then, plasticity off,
  the first ``--n-assign`` training digits assign each neuron the class it fires most for,
  and ``--n-test`` test digits are classified with the paper's vote (all-activity: the class
  whose assigned neurons fire most on average) and with BindsNET's proportion weighting, both
  from ``pysnn.evaluation`` (the votes ``examples/mnist_stdp.py`` reports).

Brian2 semantics where Brian 1's differ or are unknown: presynaptic STDP updates arrive with
the synaptic delay (Brian2's ``on_pre`` pathway), and the order of operations within a step is
Brian2's default schedule.

The presentation loop runs inside the simulation: a one-neuron controller counts the spikes of
each 350 ms window and, at the start of the next 500 ms window, moves on to the next digit or
raises the intensity; a C++ function feeds the pixels and stops the run when the phase's last
digit is done; the weight sums for the normalisation are kept up to date at each weight change.

Ablations towards pysnn's ``DiehlCook2015`` (each off by default): ``--no-delays``,
``--max-repeats 5``, ``--reset-state`` (membranes, conductances and traces reset before each
presentation) and ``--fast-inhibition`` (the inhibitory neurons step right after the excitatory
spikes of the same step: inhibition reaches the other excitatory neurons one step after a spike,
as in pysnn's loop, instead of two).

Needs Brian2 and a C++ compiler (``.venv-bench``, see benchmarks/README.md), and torch + pysnn
for the votes. Example (100 neurons, full MNIST, one pass, seed 0)::

    python benchmarks/diehl_cook_brian2.py --data-dir ../shared/data/mnist --n-neurons 100 \\
        --n-train 60000 --epochs 1 --n-assign 10000 --n-test 10000 --seed 0 \\
        --results benchmarks/results/diehl_cook_brian2_100_seed0.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import brian2 as b2
import numpy as np
import torch
from brian2 import ms, mV

from pysnn.evaluation import accuracy, all_activity, assign_labels, proportion_weighting

WINDOW_MS = 500.0  # 350 ms presentation + 150 ms rest
PRESENT_MS = 350.0
NORM = 78.0


def load_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file (gzip or plain) as a uint8 array (images: ``(N, 784)``)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[2:4], "big")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape[0], -1) if ndim > 1 else arr


#: The traces of the authors' STDP rule (input -> excitatory synapses), Brian2 equations.
STDP_TRACES = """w : 1
dpre/dt = -pre / (20*ms) : 1 (event-driven)
dpost1/dt = -post1 / (20*ms) : 1 (event-driven)
dpost2/dt = -post2 / (40*ms) : 1 (event-driven)"""


def inhibition(exc: b2.NeuronGroup, v_init: float, one_step: bool):
    """The authors' inhibitory neurons and winner-take-all loop behind ``exc``.

    Inhibitory neurons (as many as ``exc``): rest -60 mV, tau 10 ms, threshold -40 mV, reset
    -45 mV, refractory 2 ms, inhibitory reversal -85 mV, membranes starting at ``v_init`` mV;
    ``exc -> inh`` one-to-one (+10.4 to ``ge``), ``inh -> exc`` to all but the partner (+17.0 to
    ``gi``). With ``one_step`` the inhibitory neurons step right after the excitatory spikes of
    the same step, so inhibition reaches the other excitatory neurons one step after a spike
    (pysnn's loop) instead of two (Brian's schedule, the code's). Returns ``(inh, e2i, i2e)``.
    """
    inh = b2.NeuronGroup(
        len(exc),
        """dv/dt = ((-60*mV - v) + ge * (0*mV - v) + gi * (-85*mV - v)) / (10*ms)
            : volt (unless refractory)
        dge/dt = -ge / (1*ms) : 1
        dgi/dt = -gi / (2*ms) : 1""",
        threshold="v > -40*mV",
        reset="v = -45*mV",
        refractory=2 * ms,
        method="euler",
        name="inh",
    )
    inh.v = v_init * mV
    e2i = b2.Synapses(exc, inh, on_pre="ge_post += 10.4", name="exc_inh")
    e2i.connect(j="i")
    i2e = b2.Synapses(inh, exc, on_pre="gi_post += 17.0", name="inh_exc")
    i2e.connect(condition="i != j")
    if one_step:
        inh.state_updater.when, inh.state_updater.order = "after_synapses", 0
        inh.thresholder["spike"].when, inh.thresholder["spike"].order = "after_synapses", 1
        inh.resetter["spike"].when, inh.resetter["spike"].order = "after_synapses", 2
        i2e.pre.when, i2e.pre.order = "after_synapses", 3
    return inh, e2i, i2e


def find(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(f"--data-dir: no {stem}[.gz] in {data_dir}")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder of the MNIST IDX files")
    p.add_argument("--n-neurons", type=int, default=100)
    p.add_argument("--n-train", type=int, default=60000, help="training digits per pass")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training digits")
    p.add_argument("--n-assign", type=int, default=10000, help="first N training digits")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-delays",
        action="store_true",
        help="ablation: no input -> excitatory delays (pysnn's model has none)",
    )
    p.add_argument(
        "--reset-state",
        action="store_true",
        help="ablation: reset membranes, conductances and STDP traces at each presentation's "
        "start (pysnn's model does instead of simulating the rest)",
    )
    p.add_argument(
        "--fast-inhibition",
        action="store_true",
        help="ablation: the inhibitory neurons step right after the excitatory spikes of the "
        "same step, so inhibition reaches the excitatory neurons one step after a spike "
        "(pysnn's model) instead of two",
    )
    p.add_argument(
        "--max-repeats",
        type=int,
        default=None,
        help="ablation: show a digit again at most this often (pysnn's example: 5; the code: "
        "no limit); the last presentation counts whatever its spikes",
    )
    p.add_argument("--build-dir", type=Path, default=None, help="C++ project (default: tmp)")
    p.add_argument("--results", type=Path, default=None, help="JSON file to write")
    args = p.parse_args(argv)
    for name in ("n_neurons", "n_train", "epochs", "n_assign", "n_test"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    wall0 = time.perf_counter()
    train_x = load_idx(find(args.data_dir, "train-images-idx3-ubyte"))
    train_y = load_idx(find(args.data_dir, "train-labels-idx1-ubyte"))
    test_x = load_idx(find(args.data_dir, "t10k-images-idx3-ubyte"))
    test_y = load_idx(find(args.data_dir, "t10k-labels-idx1-ubyte"))
    n_train = min(args.n_train, len(train_x))
    n_assign = min(args.n_assign, len(train_x))
    n_test = min(args.n_test, len(test_x))

    # The digit sequence: training passes (in order, as the authors' code), assignment, test.
    seq = np.concatenate(
        [
            np.tile(np.arange(n_train), args.epochs),
            np.arange(n_assign),
            len(train_x) + np.arange(n_test),
        ]
    ).astype(np.int32)
    labels = np.concatenate([train_y, test_y])[seq].astype(np.int64)
    phase_end = np.cumsum([n_train * args.epochs, n_assign, n_test])

    build_dir = args.build_dir or Path(f"/tmp/dc_brian2_{args.n_neurons}_{args.seed}")
    build_dir = build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    images_file = build_dir / "images.u8"
    seq_file = build_dir / "sequence.i32"
    np.concatenate([train_x, test_x]).astype(np.uint8).tofile(images_file)
    seq.tofile(seq_file)

    b2.set_device("cpp_standalone", directory=str(build_dir), build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0
    b2.defaultclock.dt = 0.5 * ms
    b2.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n, n_in = args.n_neurons, train_x.shape[1]

    # pixel(k, i): pixel i of the k-th digit of the sequence. stop_at(j, j_stop): stops the run
    # (Brian2's Network::_globally_stopped) once digit j_stop is reached; returns 1 then.
    support = f"""
    #include <cstdio>
    #include <cstdlib>
    static unsigned char* _dc_images = 0;
    static int* _dc_seq = 0;
    static long _dc_seq_len = 0;
    static void _dc_load() {{
        FILE* f = fopen("{images_file}", "rb");
        fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
        _dc_images = (unsigned char*)malloc(size);
        if (fread(_dc_images, 1, size, f) != (size_t)size) exit(3);
        fclose(f);
        f = fopen("{seq_file}", "rb");
        fseek(f, 0, SEEK_END); size = ftell(f); fseek(f, 0, SEEK_SET);
        _dc_seq = (int*)malloc(size); _dc_seq_len = size / sizeof(int);
        if (fread(_dc_seq, 1, size, f) != (size_t)size) exit(3);
        fclose(f);
    }}
    double dc_pixel(double k, int i) {{
        if (!_dc_images) _dc_load();
        long kk = (long)k;
        if (kk < 0 || kk >= _dc_seq_len) return 0.0;
        return (double)_dc_images[(long)_dc_seq[kk] * {n_in} + i];
    }}
    """

    @b2.implementation("cpp", support, name="dc_pixel")
    @b2.check_units(k=1, i=1, result=1)
    def pixel(k, i):
        raise NotImplementedError("C++ standalone only")

    stop_support = """
    #include "network.h"
    double dc_stop_at(double j, double j_stop) {
        if (j >= j_stop) { Network::_globally_stopped = true; return 1.0; }
        return 0.0;
    }
    """

    @b2.implementation("cpp", stop_support, name="dc_stop_at")
    @b2.check_units(j=1, j_stop=1, result=1)
    def stop_at(j, j_stop):
        raise NotImplementedError("C++ standalone only")

    ctrl = b2.NeuronGroup(
        1,
        """j : 1
        intensity : 1
        cnt : 1
        rep : 1
        tstart : second
        j_stop : 1
        plastic_c : 1
        stopped : 1""",
        name="controller",
    )
    ctrl.j, ctrl.intensity, ctrl.cnt, ctrl.j_stop, ctrl.plastic_c = -1, 2, 5, len(seq), 1
    # At the start of each 500 ms window: next digit if the last window made >= 5 spikes,
    # else the same digit one intensity step higher. Plasticity is on for the training digits.
    max_repeats = -1 if args.max_repeats is None else args.max_repeats
    ctrl.run_regularly(
        f"""ok = cnt >= 5 or rep == {max_repeats}
        rep = (1 - int(ok)) * (rep + 1)
        j = j + int(ok)
        intensity = int(ok) * 2 + (1 - int(ok)) * (intensity + 1)
        cnt = 0
        tstart = t
        plastic_c = int(j < N_PLASTIC)
        stopped = stop_at(j, j_stop)""".replace("N_PLASTIC", str(phase_end[0])),
        dt=WINDOW_MS * ms,
        when="start",
        order=0,
        name="controller_window",
    )

    inp = b2.NeuronGroup(
        n_in,
        """rate : Hz
        j_in : 1 (linked)
        intensity_in : 1 (linked)
        tstart_in : second (linked)""",
        threshold=f"t - tstart_in < {PRESENT_MS - 0.25} * ms and rand() < rate * dt",
        name="input",
    )
    zeros = np.zeros(n_in, dtype=int)
    inp.j_in = b2.linked_var(ctrl, "j", index=zeros)
    inp.intensity_in = b2.linked_var(ctrl, "intensity", index=zeros)
    inp.tstart_in = b2.linked_var(ctrl, "tstart", index=zeros)
    inp.run_regularly(
        "rate = pixel(j_in, i) / 8.0 * intensity_in * Hz",
        dt=WINDOW_MS * ms,
        when="start",
        order=1,
        name="input_window",
    )

    exc = b2.NeuronGroup(
        n,
        """dv/dt = ((-65*mV - v) + ge * (0*mV - v) + gi * (-100*mV - v)) / (100*ms)
            : volt (unless refractory)
        dge/dt = -ge / (1*ms) : 1
        dgi/dt = -gi / (2*ms) : 1
        dtheta/dt = -plastic * theta / (1e7*ms) : volt
        wsum : 1
        plastic : 1
        plastic_c : 1 (linked)""",
        threshold="v > theta - 72*mV",
        reset="v = -65*mV; theta += plastic * 0.05*mV",
        refractory=5 * ms,
        method="euler",
        name="exc",
    )
    exc.v, exc.theta = -105 * mV, 20 * mV
    exc.plastic = 1
    exc.plastic_c = b2.linked_var(ctrl, "plastic_c", index=np.zeros(n, dtype=int))
    exc.run_regularly(
        "plastic = plastic_c", dt=WINDOW_MS * ms, when="start", order=2, name="plasticity"
    )
    inh, e2i, i2e = inhibition(exc, -100.0, args.fast_inhibition)

    syn = b2.Synapses(
        inp,
        exc,
        STDP_TRACES,
        on_pre="""ge_post += w
        pre = 1.0
        w_old = w
        w = clip(w - plastic_post * 0.0001 * post1, 0, 1)
        wsum_post += w - w_old""",
        on_post="""w_old = w
        w = clip(w + plastic_post * 0.01 * pre * post2, 0, 1)
        wsum_post += w - w_old
        post1 = 1.0
        post2 = 1.0""",
        name="input_exc",
    )
    syn.connect(i=np.repeat(np.arange(n_in), n), j=np.tile(np.arange(n), n_in))
    w0 = (rng.random((n_in, n)) + 0.01) * 0.3  # (pre, post), the authors' random weights
    syn.w = w0.ravel()  # synapse k = (pre k // n, post k % n)
    delays = rng.random(n_in * n) * 10 * ms
    syn.delay = 0 * ms if args.no_delays else delays
    exc.wsum = w0.sum(0)
    # Before each presentation (training only): each neuron's input weights sum to 78.
    syn.run_regularly(
        f"w = w * (plastic_post * {NORM} / wsum_post + (1 - plastic_post))",
        dt=WINDOW_MS * ms,
        when="start",
        order=3,
        name="normalise",
    )
    exc.run_regularly(
        f"wsum = plastic * {NORM} + (1 - plastic) * wsum",
        dt=WINDOW_MS * ms,
        when="start",
        order=4,
        name="normalise_sum",
    )
    if args.reset_state:
        for group, rest in ((exc, -65), (inh, -60)):
            group.run_regularly(
                f"v = {rest}*mV\nge = 0\ngi = 0", dt=WINDOW_MS * ms, when="start", order=5
            )
        syn.run_regularly("pre = 0\npost1 = 0\npost2 = 0", dt=WINDOW_MS * ms, when="start", order=5)
    counter = b2.Synapses(
        exc,
        ctrl,
        on_pre=f"cnt_post += 1.0 * int(t - tstart_post < {PRESENT_MS - 0.25} * ms)",
        name="counter",
    )
    counter.connect(j="0")
    spikes = b2.SpikeMonitor(exc, name="exc_spikes")
    windows = b2.StateMonitor(
        ctrl,
        ["j", "intensity", "rep"],
        record=0,
        dt=WINDOW_MS * ms,
        when="start",
        order=1,
        name="windows",
    )
    net = b2.Network(b2.collect())
    # One run: the controller stops it after the last test digit (4 windows per digit at most).
    net.run((len(seq) + 1) * 4 * WINDOW_MS * ms)
    t_build = time.perf_counter()
    b2.device.build(directory=str(build_dir), compile=True, run=False, debug=False)
    t_compiled = time.perf_counter()
    b2.device.run(directory=str(build_dir), with_output=False)
    t_ran = time.perf_counter()

    # The weight sums kept at each weight change must be the sums of the final weights.
    w_final = np.asarray(syn.w[:]).reshape(n_in, n)
    if not np.allclose(np.asarray(exc.wsum[:]), w_final.sum(0), rtol=1e-9, atol=1e-9):
        raise RuntimeError("tracked weight sums differ from the weights")
    theta_mv = np.asarray(exc.theta[:] / mV)
    np.savez_compressed(build_dir / "final.npz", w=w_final, theta_mv=theta_mv)

    # Windows: digit j of the sequence shown at intensity; the run of each window decides.
    win_j = np.asarray(windows.j[0], dtype=np.int64)
    win_t = np.asarray(windows.t / ms)
    sp_i = np.asarray(spikes.i, dtype=np.int64)
    sp_t = np.asarray(spikes.t / ms)
    win_idx = np.floor(sp_t / WINDOW_MS + 1e-9).astype(np.int64)
    in_present = (sp_t - win_idx * WINDOW_MS) < PRESENT_MS - 0.25
    counts = np.zeros((len(win_t), n))
    np.add.at(counts, (win_idx[in_present], sp_i[in_present]), 1.0)
    # rep: presentations of the digit before this window's (after the controller's decision).
    win_rep = np.asarray(windows.rep[0], dtype=np.int64)
    accepted = (counts.sum(1) >= 5) | (win_rep == max_repeats)
    # Cross-check against the controller: an accepted window moves to the next digit.
    moved = np.diff(win_j) == 1
    if not np.array_equal(moved, accepted[:-1]):
        raise RuntimeError("controller windows and recorded spikes disagree")
    done = accepted & (win_j >= 0) & (win_j < len(seq))
    digit_counts = np.zeros((len(seq), n))
    digit_counts[win_j[done]] = counts[done]
    if done.sum() != len(seq) or len(np.unique(win_j[done])) != len(seq):
        raise RuntimeError(f"{done.sum()} digits finished, expected {len(seq)}: raise budget")
    repeated = ~accepted & (win_j >= 0) & (win_j < len(seq))
    bounds = np.concatenate([[0], phase_end])
    phases = ("train", "assign", "test")
    repeats = {
        name: int((repeated & (win_j >= lo) & (win_j < hi)).sum())
        for name, lo, hi in zip(phases, bounds[:-1], bounds[1:])
    }
    spikes_per_digit = {
        name: float(digit_counts[lo:hi].sum(1).mean())
        for name, lo, hi in zip(phases, bounds[:-1], bounds[1:])
    }

    a0, a1 = phase_end[0], phase_end[1]
    assign_counts = torch.as_tensor(digit_counts[a0:a1])
    test_counts = torch.as_tensor(digit_counts[a1:])
    assignments, proportions, _ = assign_labels(assign_counts, torch.as_tensor(labels[a0:a1]), 10)
    y_test = torch.as_tensor(labels[a1:])
    acc_all = accuracy(all_activity(test_counts, assignments, 10), y_test)
    acc_prop = accuracy(proportion_weighting(test_counts, assignments, proportions, 10), y_test)
    result = {
        "simulator": f"brian2 {b2.__version__} cpp_standalone (1 thread)",
        "model": "the authors' code (peter-u-diehl/stdp-mnist), see the script's docstring",
        "n_neurons": n,
        "dt_ms": 0.5,
        "seed": args.seed,
        "delays": not args.no_delays,
        "max_repeats": args.max_repeats,
        "reset_state": args.reset_state,
        "fast_inhibition": args.fast_inhibition,
        "n_train": n_train,
        "epochs": args.epochs,
        "n_assign": n_assign,
        "n_test": n_test,
        "accuracy_all_activity": acc_all,
        "accuracy_proportion_weighting": acc_prop,
        "repeated_presentations": repeats,
        "windows": int(len(win_t)),
        "spikes_per_digit": spikes_per_digit,
        "silent_neurons": int((assignments < 0).sum()),
        "theta_mv_mean": float(theta_mv.mean()),
        "codegen_seconds": t_build - wall0,
        "compile_seconds": t_compiled - t_build,
        "simulation_seconds": t_ran - t_compiled,
        "wall_seconds": time.perf_counter() - wall0,
        "machine": platform.processor() or platform.machine(),
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]),
    }
    print(json.dumps(result, indent=1))
    save_results(args.results, result)
    return result


def save_results(path: Optional[Path], result: dict) -> None:
    """Write ``result`` as JSON to ``path`` (its folder made), unless ``path`` is ``None``."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
