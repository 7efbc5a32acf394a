"""Numbers quoted in the README and the docs are the numbers in ``benchmarks/results/*.json``.

Each entry of ``QUOTES`` marks one quote: the file that quotes it and a function that writes the
quoted text from the results files (``docs/results_page.py`` loads them). The test fails when the
text written from the results is not in the file: a quote changed by hand, or a results file
re-measured without updating its quotes. To quote a new measured number, add its entry here.
The BPTT reports (``surrogate_lif_*.txt``) are read as ``docs/results_page.py`` reads them; other
text reports are not checked.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("results_page", ROOT / "docs" / "results_page.py")
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

README = "README.md"
BENCH = "benchmarks/README.md"


def _dc_row(n: int) -> str:  # README's Diehl & Cook table, paper's protocol
    r = R.diehl_cook(n)
    return (
        f"| {r['all_activity']:.1f} % | **{r['proportion']:.1f} %** | {R.DIEHL_COOK_PAPER[n]:.1f} % "
        f"| {r['digits_per_s']:.0f} digits/s | {r['train_min']:.1f} min |"
    )


def _dc_bench(n: int) -> str:  # benchmarks/README's end-to-end sentence
    r = R.diehl_cook(n)
    return f"{r['proportion']:.1f} % in {r['train_min']:.1f} min"


def _bindsnet_row(label: str, peers: List[str], mode: str) -> str:
    cells = " | ".join(f"{R.bindsnet_ratio(peers, n, mode):.2g}" for n in R.BINDSNET_SIZES)
    return f"| {label} | {mode} | {cells} |"


def _seeds(synapses: str, n: int, epochs: int) -> str:  # README's spread table
    r = R.seed_spread(synapses, n, epochs)
    return (
        f"| {r['proportion']:.1f} % ({r['proportion_min']:.1f}-{r['proportion_max']:.1f}) "
        f"| {r['all_activity']:.1f} % ({r['all_activity_min']:.1f}-{r['all_activity_max']:.1f}) |"
    )


def _reference(n: int, epochs: int) -> str:  # README: the authors' model in Brian2
    r = R.reference_spread(n, epochs)

    def cell(key: str) -> str:
        spread = f" ({r[key + '_min']:.1f}-{r[key + '_max']:.1f})" if r["seeds"] > 1 else ""
        return f"{r[key]:.1f} %{spread}"

    return f"| {cell('proportion')} | {cell('all_activity')} |"


def _digit() -> str:  # README: one digit spike for spike (benchmarks/diehl_cook_brian2_digit.py)
    runs = R.load("diehl_cook_brian2_digit")["runs"]
    code, one, ours = (
        runs[k] for k in ("brian2 (code's latency)", "brian2 (one-step latency)", "pysnn")
    )
    top, dw = "top_neuron_spikes_per_digit", "net_weight_change_per_digit"
    return (
        f"fire {code[top]:.1f} times per digit, against {one[top]:.1f} with the loop one step "
        f"shorter as in pysnn's model ({ours[top]:.1f} in pysnn itself), and the input weights "
        f"grow by {code[dw]:.2f} per digit against {one[dw]:.2f} ({ours[dw]:.2f} in pysnn)"
    )


def _one(synapses: str, n: int, epochs: int) -> str:
    r = R.seed_spread(synapses, n, epochs)
    return f"| {r['proportion']:.1f} % | {r['all_activity']:.1f} % | {r['train_min_lo']:.0f} min |"


def _ratio(x: float) -> str:  # the README's ratio tables: 2 significant digits, 1 decimal from 10
    return f"{x:.1f}" if x >= 10 else f"{x:.2g}"


def _bindsnet_readme(label: str, peers: List[str], mode: str) -> str:
    cells = " | ".join(_ratio(R.bindsnet_ratio(peers, n, mode)) for n in R.BINDSNET_SIZES)
    return f"| {label} | {mode} | {cells} |"


def _va(model: str, n: int) -> str:
    def s(peer: str) -> str:
        x = R.vogels_abbott_sim(model, n, peer)
        return f"{x:.3f} s" if x < 0.1 else (f"{x:.2f} s" if x < 10 else f"{x:.1f} s")

    size = f"{n:,}".replace(",", " ") if n >= 10000 else str(n)
    return f"| {model.upper()} | {size} | **{s('pysnn-fused')}** | {s('brian2-standalone')} | {s('nest')} |"


def _bundled(synapses: str) -> str:
    r = R.bundled_diehl_cook(synapses)
    return (
        f"     - {100 * r['accuracy_all_activity']:.1f} %\n"
        f"     - {100 * r['accuracy_proportion_weighting']:.1f} %\n"
        f"     - {r['train_samples_per_second']:.1f} digits/s"
    )


def _bptt_summary() -> str:  # README's BPTT sentence: ranges over the 2-thread reports
    peers, sj_dense, sj_other = [], [], []
    for name in ("surrogate_lif_currents", "surrogate_lif_spikes", "surrogate_lif_t500"):
        runs = R.bptt(name)
        for run in runs:
            peers += [run["ratios"][p] for p in ("torch", "snntorch", "norse")]
            dense = "currents" in run["setting"] and run["n"] >= 4096
            (sj_dense if dense else sj_other).append(run["ratios"]["spikingjelly"])
    (big,) = R.bptt("surrogate_lif_16384_currents")
    peers += [big["ratios"][p] for p in ("torch", "snntorch", "norse")]
    sj_dense.append(big["ratios"]["spikingjelly"])
    return (
        f"is {min(peers):.1f}-{max(peers):.1f}× faster than\nsnnTorch, Norse and plain torch; "
        f"against SpikingJelly's multi-step mode it is on par with dense\ncurrents at N ≥ 4096 "
        f"({min(sj_dense):.2f}-{max(sj_dense):.2f}×) and {min(sj_other):.2f}-{max(sj_other):.2f}× "
        "faster otherwise"
    )


def _lockout() -> (
    str
):  # README: the Brian 2 ports' spike lockout (benchmarks/diehl_cook_lockout.py)
    runs = R.load("diehl_cook_lockout_10k")["runs"]

    def pct(key: str) -> str:
        return f"{100 * runs[key]['accuracy_proportion_weighting']:.1f} %"

    lockout = pct("lockout 50 ms (Brian 2 ports)")
    return (
        f"with the lockout {lockout}, with a 50 ms refractory period\n"
        f"{pct('refractory 50 ms')}, without either {pct('none (the model)')}"
    )


def _latency() -> str:  # README: the authors' inhibition latency (benchmarks/diehl_cook_latency.py)
    runs = R.load("diehl_cook_latency_10k")["runs"]
    delayed = runs["e2i delayed one step (authors' latency)"]["accuracy_proportion_weighting"]
    model = runs["none (the model)"]["accuracy_proportion_weighting"]
    return f"`e2i`, `benchmarks/diehl_cook_latency.py`): {100 * delayed:.1f} % against {100 * model:.1f} %"


def _latency_triplet() -> str:  # README: the code's rule with the code's loop, 10 000 digits
    with_loop = R.load("diehl_cook_latency_triplet_dt05_10k")["accuracy_proportion_weighting"]
    without = R.load("mnist_stdp_conductance_triplet_100_dt05_10k_seed0")
    return (
        f"reaches {100 * with_loop:.1f} % after 10 000 digits (seed 0) against\n"
        f"{100 * without['accuracy_proportion_weighting']:.1f} % without, level with the reference"
    )


def _delay_cost() -> str:  # README: the delayed e2i in the fused loop against the module loop
    ratio = R.load("diehl_cook_delay_cost")["ratio_to_fused_delay"]
    return (
        f"as fast as without the delay: {1 / ratio['no delay, fused']:.2f}x the time per digit, "
        f"against {ratio['inhibition_delay=dt, module loop']:.1f}x through the loop"
    )


def _vote() -> str:  # README: the paper's vote (all-activity) against the seed table
    def all_activity(key: Tuple[str, int, int]) -> float:
        return R.seed_spread(*key)["all_activity"]

    conductance_100 = [k for k in R.SEED_RUNS if k[0].startswith("conductance") and k[1] == 100]
    short = R.DIEHL_COOK_PAPER[100] - max(all_activity(k) for k in conductance_100)
    current = R.seed_spread("current", 100, 1)
    below = R.DIEHL_COOK_PAPER[100] - current["all_activity_min"]
    return (
        f"100 current-based ones on the mean (one seed of three {below:.1f} points\nshort), "
        f"1600 neurons reach {all_activity(('conductance-dt05', 1600, 3)):.1f} % against "
        f"{R.DIEHL_COOK_PAPER[1600]:.1f} % "
        f"(one seed), and 100 conductance-based neurons\nstay {short:.1f} points or more short"
    )


BINDSNET = "BindsNET 0.3.4"
BRIAN2 = "Brian2 2.9 (best of Cython runtime / C++ standalone)"

#: (file that quotes, what it must quote, written from the results files)
QUOTES: List[Tuple[str, Callable[[], str]]] = [
    (README, lambda: _dc_row(100)),
    (README, lambda: _dc_row(400)),
    (
        README,
        lambda: f"**{R.diehl_cook(100)['proportion']:.1f} %\nwith 100 neurons (paper 82.9 %) and "
        f"{R.diehl_cook(400)['proportion']:.1f} % with 400 (paper 87.0 %)**",
    ),
    (BENCH, lambda: _dc_bench(100)),
    (BENCH, lambda: _dc_bench(400)),
    (README, lambda: _bindsnet_readme(BINDSNET, ["bindsnet"], "step loop")),
    (README, lambda: _bindsnet_readme(BINDSNET, ["bindsnet"], "multi-step mode")),
    (README, lambda: _bindsnet_readme(BRIAN2, ["brian2", "brian2-standalone"], "step loop")),
    (README, lambda: _bindsnet_readme(BRIAN2, ["brian2", "brian2-standalone"], "multi-step mode")),
    (README, lambda: _bindsnet_readme("Norse 1.1", ["norse"], "step loop")),
    (README, lambda: _bindsnet_readme("snnTorch 1.0", ["snntorch"], "step loop")),
    (README, lambda: _va("cuba", 4000)),
    (README, lambda: _va("cuba", 40000)),
    (README, lambda: _va("coba", 4000)),
    (README, lambda: _va("coba", 40000)),
    (
        README,
        lambda: f"At N = 400 000, pysnn takes {R.vogels_abbott_sim('cuba', 400000, 'pysnn-fused'):.1f} s "
        f"(CUBA) and {R.vogels_abbott_sim('coba', 400000, 'pysnn-fused'):.1f} s (COBA). Brian2 "
        f"standalone takes {R.vogels_abbott_sim('cuba', 400000, 'brian2-standalone'):.1f} s and\n"
        f"{R.vogels_abbott_sim('coba', 400000, 'brian2-standalone'):.1f} s, and NEST "
        f"{R.vogels_abbott_sim('cuba', 400000, 'nest'):.0f} s and "
        f"{R.vogels_abbott_sim('coba', 400000, 'nest'):.0f} s",
    ),
    (README, _bptt_summary),
    (README, lambda: _seeds("conductance", 100, 1)),
    (README, lambda: _seeds("conductance-theta0", 100, 1)),
    (README, lambda: _seeds("current", 100, 1)),
    (README, lambda: _one("current", 1600, 3)),
    (README, lambda: _one("conductance", 1600, 3)),
    (README, lambda: _seeds("conductance-dt05", 100, 1)),
    (README, lambda: _one("conductance-dt05", 1600, 3)),
    (README, lambda: _seeds("conductance", 400, 1)),
    (README, lambda: _one("conductance-triplet", 100, 1)),
    (README, lambda: _seeds("conductance-triplet", 100, 3)),
    (README, _lockout),
    (README, _latency),
    (README, _vote),
    (README, lambda: _reference(100, 1)),
    (README, _digit),
    (README, _latency_triplet),
    (README, lambda: _reference(100, 3)),
    (README, lambda: _seeds("conductance", 100, 3)),
    (README, lambda: _one("conductance-dt05", 100, 3)),
    (README, lambda: _seeds("conductance-dt05-5", 100, 1)),
    (README, lambda: _seeds("conductance-triplet-dt05", 100, 3)),
    (README, lambda: _seeds("conductance-triplet-dt05-loop", 100, 3)),
    (README, _delay_cost),
    ("docs/synapses.rst", lambda: _bundled("current")),
    ("docs/synapses.rst", lambda: _bundled("conductance")),
]


@pytest.mark.parametrize("index", range(len(QUOTES)))
def test_quoted_number_matches_results(index: int) -> None:
    path, expected = QUOTES[index]
    text = (ROOT / path).read_text(encoding="utf-8")
    quote = expected()
    assert quote in text, f"{path} should quote, from benchmarks/results:\n{quote}"


def test_results_page_builds_from_the_results_files() -> None:
    tables = R.tables()
    for n in (100, 400):
        assert f"**{R.diehl_cook(n)['proportion']:.1f} %**" in tables
    assert "bindsnet_paper.png" in tables and "vogels_abbott_cuba_4000_raster.png" in tables
