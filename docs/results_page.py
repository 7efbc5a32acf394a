"""The Results page, generated from ``benchmarks/results/*.json`` when the documentation is built.

``docs/conf.py`` calls :func:`write` before Sphinx reads the sources; ``docs/results.rst``
includes what it writes (``docs/_generated/results_tables.rst``). ``tests/test_numbers.py`` uses
the same loaders to check the numbers quoted in the README and the docs against these files.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: Diehl & Cook (2015), Table 1 (literature, not a measurement of this project).
DIEHL_COOK_PAPER = {100: 82.9, 400: 87.0, 1600: 91.9}

#: Full-MNIST runs of ``examples/mnist_stdp.py`` one digit at a time, by (synapses, neurons,
#: epochs): the result files of each seed (seed 0 of the current-based 100 and 400 neuron
#: networks is the file without a seed in its name).
SEED_RUNS = {
    ("current", 100, 1): [
        "mnist_stdp_100_batch1",
        "mnist_stdp_current_100_batch1_seed1",
        "mnist_stdp_current_100_batch1_seed2",
    ],
    ("conductance", 100, 1): [f"mnist_stdp_conductance_100_batch1_seed{s}" for s in range(3)],
    # before 7637b77: theta relaxing towards 0 over the presentations only (BindsNET's)
    ("conductance-theta0", 100, 1): [
        f"mnist_stdp_conductance_100_batch1_seed{s}_theta0" for s in range(3)
    ],
    ("current", 400, 1): ["mnist_stdp_400_batch1"],
    ("conductance", 400, 1): [f"mnist_stdp_conductance_400_batch1_seed{s}" for s in range(3)],
    ("conductance-triplet", 100, 1): ["mnist_stdp_conductance_triplet_100_batch1_seed0"],
    ("current", 1600, 3): ["mnist_stdp_current_1600_batch1_seed0"],
    ("conductance", 1600, 3): ["mnist_stdp_conductance_1600_batch1_seed0"],
    # the authors' code integrates at dt = 0.5 ms (--dt 0.5)
    ("conductance-dt05", 100, 1): [
        f"mnist_stdp_conductance_100_dt05_batch1_seed{s}" for s in range(3)
    ],
    ("conductance-dt05", 1600, 3): ["mnist_stdp_conductance_1600_dt05_batch1_seed0"],
    # seeds 3 and 4 added to the three above: the spread is about 2 points
    ("conductance-dt05-5", 100, 1): [
        f"mnist_stdp_conductance_100_dt05_batch1_seed{s}" for s in range(5)
    ],
    # three passes, as the authors' code trains by default (num_examples = 60000 * 3)
    ("conductance", 100, 3): [f"mnist_stdp_conductance_100_e3_batch1_seed{s}" for s in range(3)],
    ("conductance-dt05", 100, 3): ["mnist_stdp_conductance_100_dt05_e3_batch1_seed0"],
    ("conductance-triplet", 100, 3): [
        f"mnist_stdp_conductance_triplet_100_e3_batch1_seed{s}" for s in range(3)
    ],
    # the code's rule, step and passes together (--rule triplet --dt 0.5 --epochs 3)
    ("conductance-triplet-dt05", 100, 3): [
        f"mnist_stdp_conductance_triplet_100_dt05_e3_batch1_seed{s}" for s in range(3)
    ],
    # and the code's winner-take-all loop (--inhibition-delay 0.5: e2i delayed one step)
    ("conductance-triplet-dt05-loop", 100, 3): [
        f"mnist_stdp_conductance_triplet_100_dt05_e3_loop_batch1_seed{s}" for s in range(3)
    ],
}

#: The authors' model (their released Brian code) in Brian2, C++ standalone, on the example's
#: protocol (``benchmarks/diehl_cook_brian2.py``), by (excitatory neurons, passes).
REFERENCE_RUNS = {
    (100, 1): [f"diehl_cook_brian2_100_seed{s}" for s in range(3)],
    (100, 3): [f"diehl_cook_brian2_100_e3_seed{s}" for s in (0, 2)],
}

#: Row names of :data:`SEED_RUNS` keys that are not a synapse form.
SEED_LABELS = {
    "conductance-theta0": "conductance, theta to 0",
    "conductance-triplet": "conductance, the code's STDP rule",
    "conductance-triplet-dt05": "conductance, the code's STDP rule, dt 0.5 ms",
    "conductance-triplet-dt05-loop": "conductance, the code's STDP rule, dt 0.5 ms and inhibition loop",
    "conductance-dt05": "conductance, dt 0.5 ms (the code's)",
    "conductance-dt05-5": "conductance, dt 0.5 ms, five seeds",
}

#: BindsNET-paper benchmark: the peers of the ratio table, as the README names them.
BINDSNET_PEERS = [
    ("BindsNET 0.3.4", ["bindsnet"]),
    ("Brian2 2.9 (best of Cython runtime / C++ standalone)", ["brian2", "brian2-standalone"]),
    ("Norse 1.1", ["norse"]),
    ("snnTorch 1.0", ["snntorch"]),
    ("plain torch, event-driven (``F.embedding_bag``)", ["torch-event"]),
]
BINDSNET_SIZES = [250, 1000, 2500, 5000, 10000]


@lru_cache(maxsize=None)
def load(name: str):
    """``benchmarks/results/<name>.json``, parsed."""
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def diehl_cook(n_neurons: int) -> Dict[str, float]:
    """The full-MNIST run of ``examples/mnist_stdp.py`` one digit at a time (the paper's protocol):
    accuracies in %, training throughput (digits/s) and training time (min)."""
    r = load(f"mnist_stdp_{n_neurons}_batch1")
    return {
        "all_activity": 100 * r["accuracy_all_activity"],
        "proportion": 100 * r["accuracy_proportion_weighting"],
        "digits_per_s": r["train_samples_per_second"],
        "train_min": r["train_seconds"] / 60,
    }


def _spread(runs: Sequence[dict]) -> Dict[str, float]:
    """Mean, minimum and maximum of both votes over ``runs`` (accuracies in %) and their number."""
    out: Dict[str, float] = {"seeds": len(runs)}
    for key, field in (("proportion", "accuracy_proportion_weighting"),
                       ("all_activity", "accuracy_all_activity")):  # fmt: skip
        values = [100 * r[field] for r in runs]
        out[key] = sum(values) / len(values)
        out[key + "_min"], out[key + "_max"] = min(values), max(values)
    return out


def seed_spread(synapses: str, n_neurons: int, epochs: int) -> Dict[str, float]:
    """Mean, minimum and maximum over the seeds of :data:`SEED_RUNS` (accuracies in %), the
    number of seeds and the training time range (min)."""
    runs = [load(name) for name in SEED_RUNS[(synapses, n_neurons, epochs)]]
    out = _spread(runs)
    minutes = [r.get("train_seconds_all_sessions", r["train_seconds"]) / 60 for r in runs]
    out["train_min_lo"], out["train_min_hi"] = min(minutes), max(minutes)
    return out


def reference_spread(n_neurons: int, epochs: int) -> Dict[str, float]:
    """As :func:`seed_spread` for the authors' model in Brian2 (:data:`REFERENCE_RUNS`); the
    time range (min) is the whole simulation (training, assignment and test)."""
    runs = [load(name) for name in REFERENCE_RUNS[(n_neurons, epochs)]]
    out = _spread(runs)
    minutes = [r["simulation_seconds"] / 60 for r in runs]
    out["sim_min_lo"], out["sim_min_hi"] = min(minutes), max(minutes)
    return out


def bindsnet_paper() -> Dict[str, Dict[str, Dict[int, dict]]]:
    """``results[peer][n]`` of both BindsNET-paper runs (n <= 5000, and n = 10000)."""
    merged: Dict[str, Dict[int, dict]] = {}
    for name in ("bindsnet_paper", "bindsnet_paper_n10000"):
        for peer, by_n in load(name)["results"].items():
            for n, row in by_n.items():
                merged.setdefault(peer, {})[int(n)] = row
    return merged


def bindsnet_ratio(peers: Sequence[str], n: int, mode: str = "step loop") -> float:
    """Peer simulation time / pysnn's (median of the repeats; > 1: pysnn faster), the fastest of
    ``peers``; ``mode`` "step loop" (pysnn's modules) or "multi-step mode" (``pysnn.multistep``)."""
    runs = bindsnet_paper()
    ours = runs["pysnn" if mode == "step loop" else "pysnn-multistep"][n]["sim"]
    return min(runs[p][n]["sim"] for p in peers if n in runs.get(p, {})) / ours


def vogels_abbott() -> List[dict]:
    """Every Vogels-Abbott row (N = 4000, 40 000 and the 400 000 run of the fused loop)."""
    return load("vogels_abbott") + load("vogels_abbott_400k_fused")


def vogels_abbott_sim(model: str, n: int, peer: str) -> float:
    """Seconds for 1 s of biological time (median of the repeats)."""
    (row,) = [r for r in vogels_abbott() if (r["model"], r["n"], r["peer"]) == (model, n, peer)]
    return row["sim"]


def bundled_diehl_cook(synapses: str) -> dict:
    """``examples/mnist_stdp.py [--synapses conductance]`` on the bundled MNIST sample."""
    return load(f"diehl_cook_bundled_{synapses}")


BPTT_FILES = [
    "surrogate_lif_currents",
    "surrogate_lif_spikes",
    "surrogate_lif_t500",
    "surrogate_lif_16384_currents",
    "surrogate_lif_16384",
]
BPTT_PEERS = [
    ("pysnn step loop", "pysnn-step"),
    ("plain torch", "torch"),
    ("snnTorch 1.0", "snntorch"),
    ("Norse 1.1", "norse"),
    ("SpikingJelly 2.0", "spikingjelly"),
]


def bptt(name: str) -> List[dict]:
    """The runs of ``benchmarks/results/<name>.txt`` (``benchmarks/surrogate_lif.py``'s report):
    one dict per setting line and N, ``{"setting", "n", "times": {peer: seconds}, "ratios":
    {peer: peer time / pysnn multi-step}}`` (the ratios the report prints, from unrounded times)."""
    runs: List[dict] = []
    setting = ""
    for line in (RESULTS / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("torch "):
            head, rest = line.split(";", 1)
            threads = head.split(",")[1].strip().replace("1 threads", "1 thread")
            setting = f"{rest.split('; median')[0].strip()}, {threads}"
            continue
        ratio = re.match(r"\s*N=\s*(\d+)\s+(\S+) / pysnn-multi: ([\d.]+)x$", line)
        if ratio and runs and runs[-1]["n"] == int(ratio.group(1)):
            runs[-1]["ratios"][ratio.group(2)] = float(ratio.group(3))
            continue
        m = re.match(r"\s*N=\s*(\d+)\s+(\S+)\s+([\d.]+) s$", line)
        if m:
            n, peer, seconds = int(m.group(1)), m.group(2), float(m.group(3))
            if not runs or (runs[-1]["setting"], runs[-1]["n"]) != (setting, n):
                runs.append({"setting": setting, "n": n, "times": {}, "ratios": {}})
            runs[-1]["times"][peer] = seconds
    return runs


# ----------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: str = "") -> str:
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append(f"   :widths: {widths}")
    out.append("")
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(out) + "\n"


def _seconds(s: float) -> str:
    if s >= 10:
        return f"{s:.0f} s" if s >= 100 else f"{s:.1f} s"
    return f"{s:.2f} s" if s >= 0.1 else f"{s:.3f} s"


def _bptt_ratio(run: dict, peer: str) -> str:
    """The report's own ratio (from unrounded times) where it prints one, else from its times."""
    if peer in run["ratios"]:
        return f"{run['ratios'][peer]:.2f}"
    if peer in run["times"]:
        return f"{run['times'][peer] / run['times']['pysnn-multi']:.2f}"
    return "-"


def _time_memory(row) -> str:
    if row is None:
        return "-"
    memory = row.get("peak_rss_mb")
    return _seconds(row["sim"]) + (f", {memory:.0f} MB" if memory is not None else "")


def tables() -> str:
    """The generated part of the Results page (reStructuredText)."""
    parts: List[str] = []
    add = parts.append

    add("Diehl & Cook (2015), unsupervised STDP on MNIST\n" + "-" * 47 + "\n")
    add(
        "All 60 000 training digits (one epoch, 350 ms per digit, one digit at a time: the "
        "paper's protocol, ``--batch-size 1 --threads 1``), labels assigned on 10 000 training "
        "digits, tested on the 10 000 test digits "
        "(``benchmarks/results/mnist_stdp_{100,400}_batch1.json``), seed 0; the spread over "
        "seeds is in the next table. The paper's numbers are the all-activity vote (its Methods, "
        '"Training and Classification", and the authors\' evaluation script); proportion '
        "weighting is BindsNET's.\n"
    )
    rows = []
    for n in (100, 400):
        r = diehl_cook(n)
        rows.append(
            [
                str(n),
                f"{r['all_activity']:.1f} %",
                f"**{r['proportion']:.1f} %**",
                f"{DIEHL_COOK_PAPER[n]:.1f} %",
                f"{r['digits_per_s']:.0f} digits/s",
                f"{r['train_min']:.1f} min",
            ]
        )
    add(
        _table(
            [
                "excitatory neurons",
                "all-activity vote",
                "proportion weighting",
                "paper",
                "training throughput",
                "training time",
            ],
            rows,
        )
    )
    add(
        "Over seeds, one digit at a time (``--batch-size 1 --threads 1`` on the shared 2-core "
        "machine; ``benchmarks/results/mnist_stdp_*_batch1*.json``): mean (min-max) over the "
        "seeds run; training time over all sessions of a run resumed from checkpoints. The "
        "conductance rows use the pair STDP rule (``--rule pair``, the default) and the "
        "authors' threshold relaxation (``theta_offset`` 20 mV, 150 ms ``rest``, the defaults "
        "with conductance synapses; their three runs shared the 2 cores, hence the times). "
        'The rows "conductance, theta to 0" are the runs before it (theta relaxing towards 0 '
        "over the presentations only, ``--theta-offset 0 --rest 0``); seed 0 of them trained "
        "its first 22 000 digits before conductance synapses ran in the fused loop (the 93 "
        "minutes), seeds 1 and 2 after.\n"
    )
    rows = []
    for (synapses, n, epochs), names in SEED_RUNS.items():
        r = seed_spread(synapses, n, epochs)
        spread = len(names) > 1

        def cell(key: str) -> str:
            text = f"{r[key]:.1f} %"
            return text + (f" ({r[key + '_min']:.1f}-{r[key + '_max']:.1f})" if spread else "")

        minutes = f"{r['train_min_lo']:.0f}" + (
            f"-{r['train_min_hi']:.0f}"
            if round(r["train_min_hi"]) != round(r["train_min_lo"])
            else ""
        )
        rows.append(
            [
                f"{n}, {SEED_LABELS.get(synapses, synapses)}, "
                f"{epochs} epoch{'s' if epochs > 1 else ''}",
                str(len(names)),
                cell("proportion"),
                cell("all_activity"),
                f"{minutes} min",
                f"{DIEHL_COOK_PAPER[n]:.1f} %",
            ]
        )
    add(
        _table(
            ["neurons, synapses, passes", "seeds", "proportion weighting", "all-activity",
             "training time", "paper"],  # fmt: skip
            rows,
        )
    )
    add(
        "The authors' model itself, their released Brian code written again in Brian2 and run as "
        "one C++ standalone program (``benchmarks/diehl_cook_brian2.py``: conductances, their "
        "STDP rule, input delays, unlimited intensity repeats, dt 0.5 ms) on the same protocol, "
        "both votes from ``pysnn.evaluation``; time: the whole run (training, assignment and "
        "test) on one core:\n"
    )
    rows = []
    for (n, epochs), names in REFERENCE_RUNS.items():
        r = reference_spread(n, epochs)
        spread = len(names) > 1

        def ref_cell(key: str) -> str:
            text = f"{r[key]:.1f} %"
            return text + (f" ({r[key + '_min']:.1f}-{r[key + '_max']:.1f})" if spread else "")

        minutes = f"{r['sim_min_lo']:.0f}" + (
            f"-{r['sim_min_hi']:.0f}" if round(r["sim_min_hi"]) != round(r["sim_min_lo"]) else ""
        )
        rows.append(
            [
                f"{n}, {epochs} pass{'es' if epochs > 1 else ''}",
                str(len(names)),
                ref_cell("proportion"),
                ref_cell("all_activity"),
                f"{minutes} min",
                f"{DIEHL_COOK_PAPER[n]:.1f} %",
            ]
        )
    add(
        _table(
            ["neurons, passes", "seeds", "proportion weighting", "all-activity", "time",
             "paper"],  # fmt: skip
            rows,
        )
    )
    add("On the bundled sample (3000 training and 1000 test digits, 100 neurons, batch 16):\n")
    rows = []
    for synapses in ("current", "conductance"):
        try:
            r = bundled_diehl_cook(synapses)
        except FileNotFoundError:
            continue
        rows.append(
            [
                f"``--synapses {synapses}``",
                f"{100 * r['accuracy_all_activity']:.1f} %",
                f"{100 * r['accuracy_proportion_weighting']:.1f} %",
                f"{r['train_samples_per_second']:.1f} digits/s",
            ]
        )
    add(
        _table(["synapses", "all-activity", "proportion weighting", "training"], rows)
        + "\n(``benchmarks/results/diehl_cook_bundled_{current,conductance}.json``, one run each "
        "on the shared 2-core machine, one thread.)\n"
    )
    add(
        ".. figure:: _static/diehl_cook_400_weights.png\n   :width: 90%\n\n"
        "   Receptive fields learned by the 400 excitatory neurons in one epoch of full MNIST "
        "(input weights, 28 x 28 each).\n"
    )
    add(
        ".. figure:: _static/diehl_cook_1600_weights.png\n   :width: 90%\n\n"
        "   Receptive fields of the 1600 excitatory neurons after three passes over full MNIST "
        "(conductance synapses at the authors' dt = 0.5 ms, seed 0: 91.95 %; 13 neurons never "
        "won a digit, against 44 with current-based synapses).\n"
    )
    add(
        ".. figure:: _static/diehl_cook_accuracy_vs_digits.png\n   :width: 90%\n\n"
        "   Running training accuracy against training digits: each point votes on a window "
        "of 250 digits with the labels assigned on the window before. It lags the test "
        "accuracy, the more so the more neurons share the 250 digits (1600 neurons, "
        "current-based: about 60 % here against 89.5 % on the test set; conductance: about "
        "80 % against 91.7 %).\n"
    )

    add("Simulation speed: the BindsNET-paper benchmark\n" + "-" * 46 + "\n")
    add(
        "n Poisson inputs to n LIF neurons, all to all, 1000 steps of 1 ms, no learning, every "
        "simulator in the same run on 2 CPU threads "
        "(``benchmarks/results/bindsnet_paper.json``, ``bindsnet_paper_n10000.json``). "
        "Ratio = peer time / pysnn time (> 1: pysnn faster).\n"
    )
    rows = []
    for mode in ("step loop", "multi-step mode"):
        for label, peers in BINDSNET_PEERS:
            if mode == "multi-step mode" and peers == ["torch-event"]:
                continue
            cells = []
            for n in BINDSNET_SIZES:
                try:
                    cells.append(f"{bindsnet_ratio(peers, n, mode):.2f}")
                except ValueError:
                    cells.append("-")
            rows.append([label, f"pysnn {mode}", *cells])
    add(_table(["peer", "against", *[f"n = {n}" for n in BINDSNET_SIZES]], rows))
    runs = bindsnet_paper()
    rows = []
    for peer in ("pysnn", "pysnn-multistep", "bindsnet", "brian2-standalone", "norse", "snntorch"):
        rows.append(
            [
                f"``{peer}``",
                *[_time_memory(runs[peer].get(n)) for n in BINDSNET_SIZES],
            ]
        )
    add(
        "Simulation time (median of 3) and peak resident memory of the process (not measured "
        "for Brian2 standalone, which runs in a subprocess):\n"
    )
    add(_table(["simulator", *[f"n = {n}" for n in BINDSNET_SIZES]], rows))
    add(
        ".. figure:: ../benchmarks/results/bindsnet_paper.png\n   :width: 90%\n\n"
        "   Simulation time against network size (n <= 5000 run).\n"
    )

    add("Surrogate-gradient training (BPTT): one Linear + LIF layer\n" + "-" * 58 + "\n")
    add(
        "Forward and backward through all steps (``benchmarks/surrogate_lif.py``; one row per "
        "setting and size of ``benchmarks/results/surrogate_lif_*.txt``, each file one run; "
        "which code version each file measured: ``benchmarks/README.md``). pysnn multi-step: "
        "``lif.forward_multistep(fc.forward_multistep(x))``. Ratio = peer time / pysnn "
        "multi-step time (> 1: pysnn faster).\n"
    )
    rows = []
    for name in BPTT_FILES:
        for run in bptt(name):
            ours = run["times"]["pysnn-multi"]
            rows.append(
                [
                    run["setting"],
                    str(run["n"]),
                    _seconds(ours),
                    *[_bptt_ratio(run, peer) for _, peer in BPTT_PEERS],
                ]
            )
    add(_table(["setting", "N", "pysnn multi-step", *[label for label, _ in BPTT_PEERS]], rows))

    add("Recurrent networks: Vogels-Abbott\n" + "-" * 33 + "\n")
    add(
        "CUBA and COBA networks of Brian2's and NEST's benchmarks, 1 s of biological time, one "
        "thread each, same run (``benchmarks/results/vogels_abbott.json``, "
        "``vogels_abbott_400k_fused.json``). pysnn: ``pysnn.multistep.run_recurrent`` (the fused "
        "loop); the Python step loop in brackets.\n"
    )
    rows = []
    for model in ("cuba", "coba"):
        for n in (4000, 40000, 400000):
            by_peer = {r["peer"]: r for r in vogels_abbott() if (r["model"], r["n"]) == (model, n)}
            fused = by_peer["pysnn-fused"]
            loop = f" ({_seconds(by_peer['pysnn']['sim'])})" if "pysnn" in by_peer else ""
            rows.append(
                [
                    model.upper(),
                    f"{n:,}".replace(",", " "),
                    f"**{_seconds(fused['sim'])}**{loop}",
                    _seconds(by_peer["brian2-standalone"]["sim"]),
                    _seconds(by_peer["nest"]["sim"]),
                    f"{fused['net_mb']:.0f} / {by_peer['brian2-standalone']['net_mb']:.0f} / "
                    f"{by_peer['nest']['net_mb']:.0f} MB",
                    f"{fused['stats']['rate']:.2f} / {by_peer['nest']['stats']['rate']:.2f} Hz",
                ]
            )
    add(
        _table(
            [
                "model",
                "N",
                "pysnn",
                "Brian2 2.9 C++ standalone",
                "NEST 3.10",
                "network memory (pysnn / Brian2 / NEST)",
                "rate (pysnn / NEST)",
            ],
            rows,
        )
    )
    for model in ("cuba", "coba"):
        add(
            f".. figure:: ../benchmarks/results/vogels_abbott_{model}_4000_raster.png\n"
            f"   :width: 90%\n\n   {model.upper()}, N = 4000: spike raster.\n"
        )
    return "\n".join(parts)


def write(out: Path) -> Path:
    """Write :func:`tables` to ``out/results_tables.rst`` (only when it changed)."""
    out.mkdir(exist_ok=True)
    path = out / "results_tables.rst"
    text = tables()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path
