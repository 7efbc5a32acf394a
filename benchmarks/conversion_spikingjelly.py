"""ANN-to-SNN conversion: pysnn's ``ann_to_snn`` against SpikingJelly's ``ann2snn`` in one run.

Both convert the same trained CNN of ``examples/mnist_conversion.py`` (batch norms folded, each
ReLU replaced by IF neurons with threshold 1 and reset by subtraction, layer-wise 99.9th
percentile threshold balancing on the same calibration images) and simulate it for ``--steps``
steps on the same test images, the image as a constant input current. SpikingJelly's converted
network ends with the last ``Linear`` (no neuron), whose outputs summed over the steps are the
class scores: the same as pysnn's ``readout="potential"`` with ``v_init=0`` (SpikingJelly's IF
neurons start at 0), the first row. Also shown: pysnn's defaults (``v_init=0.5``) with both
readouts. Printed: test accuracy at each T, and the simulation time per step of each (ratio =
SpikingJelly time / pysnn time, > 1: pysnn faster), all measured in this run. pysnn is timed
through ``ConvertedSNN.scores``, which computes the constant first-layer current once per
input; SpikingJelly's evaluation loop (as in its ``cnn_mnist.py`` example) calls the whole
network every step. SpikingJelly estimates the percentile per calibration batch with a momentum of
0.1; pysnn takes it over all calibration activations, so the scales differ slightly.

Run in the peer environment (see README.md here), with a model saved by the example::

    python examples/mnist_conversion.py --data-dir ../shared/data/mnist --save-model cnn.pt
    .venv-bench/bin/python benchmarks/conversion_spikingjelly.py --model cnn.pt \\
        --data-dir ../shared/data/mnist --n-test 2000

Without ``--model`` a CNN is trained for one epoch on the bundled MNIST sample first.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn.conversion import ann_to_snn  # noqa: E402


def load_example():
    spec = importlib.util.spec_from_file_location(
        "mnist_conversion", REPO / "examples" / "mnist_conversion.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BATCH = 250


def run_spikingjelly(net: torch.nn.Module, reset: Callable[[], None], x, y, marks):
    """Accuracy (%) after each T in ``marks`` and seconds per step, summing ``net(x)`` over the
    steps (SpikingJelly's evaluation loop) on batches of ``x``."""
    correct, elapsed, batch = torch.zeros(len(marks)), 0.0, BATCH
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            reset()
            total, k = 0.0, 0
            begin = time.perf_counter()
            for t in range(1, marks[-1] + 1):
                total = total + net(xb)
                if t == marks[k]:
                    correct[k] += float((total.argmax(1) == yb).sum())
                    k += 1
            elapsed += time.perf_counter() - begin
    steps = marks[-1] * ((len(x) + batch - 1) // batch)
    return (100.0 * correct / len(x)).tolist(), elapsed / steps


def main(argv=None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="state_dict saved by the example")
    p.add_argument("--data-dir", default=None, help="full MNIST (default: bundled sample)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-calibration", type=int, default=1000)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--output",
        default=str(REPO / "benchmarks" / "results" / "conversion_spikingjelly.md"),
        help="markdown report ('' for none)",
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    pysnn.set_checks(False)

    stand_ins = []
    try:
        import requests  # noqa: F401
    except ImportError:  # used only by ann2snn.utils.download_url (checkpoint downloads)
        sys.modules["requests"] = types.ModuleType("requests")
        stand_ins.append("requests")
    from spikingjelly.activation_based import ann2snn, functional

    for name in stand_ins:
        del sys.modules[name]

    example = load_example()
    opts = example.parse_args(
        ["--epochs", "1"] + (["--data-dir", args.data_dir] * bool(args.data_dir))
    )
    x_train, y_train, x_test, y_test = example.load_data(opts)
    x_test, y_test = x_test[: args.n_test], y_test[: args.n_test]
    model = example.make_cnn()
    if args.model:
        model.load_state_dict(torch.load(args.model))
    else:
        example.train(model, x_train, y_train, opts)
    model.eval()
    calibration = x_train[: args.n_calibration]
    with torch.no_grad():
        ann = 100.0 * int((model(x_test).argmax(1) == y_test).sum()) / len(y_test)
    marks = [t for t in (2**k for k in range(2, 20)) if t <= args.steps]
    header = (
        f"torch {torch.__version__}, {args.threads} thread(s); {len(x_test)} test images, "
        f"{len(calibration)} calibration images; ANN {ann:.2f} %"
        + (f"; stand-in modules for SpikingJelly's import: {stand_ins}" if stand_ins else "")
    )
    print(header)

    results = {}
    configurations = (
        ("pysnn potential, v_init=0", "potential", 0.0),
        ("pysnn potential, v_init=.5", "potential", 0.5),
        ("pysnn spikes, v_init=.5", "spikes", 0.5),
    )
    for name, readout, v_init in configurations:
        snn = ann_to_snn(model, calibration, readout=readout, v_init=v_init)
        snn.scores(x_test[:BATCH], 4)  # warm-up, not timed
        correct, elapsed = torch.zeros(len(marks)), 0.0
        for begin in range(0, len(x_test), BATCH):
            start = time.perf_counter()
            scores = snn.scores(x_test[begin : begin + BATCH], marks)  # (len(marks), B, 10)
            elapsed += time.perf_counter() - start
            correct += (scores.argmax(2) == y_test[begin : begin + BATCH]).sum(1).float()
        steps = marks[-1] * ((len(x_test) + BATCH - 1) // BATCH)
        results[name] = ((100.0 * correct / len(x_test)).tolist(), elapsed / steps)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(calibration, y_train[: args.n_calibration]), batch_size=100
    )
    recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%")
    sj = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(model)).eval()
    run_spikingjelly(sj, lambda: functional.reset_net(sj), x_test[:BATCH], y_test[:BATCH], [4])
    results["SpikingJelly 2.0 ann2snn"] = run_spikingjelly(
        sj, lambda: functional.reset_net(sj), x_test, y_test, marks
    )

    sj_time = results["SpikingJelly 2.0 ann2snn"][1]
    lines = [
        f"# ANN-to-SNN conversion: pysnn against SpikingJelly\n\n{header}\n\n"
        f"`{' '.join(['python', *sys.argv])}`\n",
        "test accuracy (%) after T steps:\n",
        "| T | " + " | ".join(results) + " |",
        "|---:|" + "---:|" * len(results),
        *(
            f"| {t} | " + " | ".join(f"{acc[k]:.2f}" for acc, _ in results.values()) + " |"
            for k, t in enumerate(marks)
        ),
        f"\nsimulation time per step, batch of {BATCH} (ratio: SpikingJelly / this):\n",
        "| | ms per step | ratio |",
        "|---|---:|---:|",
        *(
            f"| {name} | {seconds * 1e3:.2f} | {sj_time / seconds:.2f} |"
            for name, (_, seconds) in results.items()
        ),
    ]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report, encoding="utf-8")
        print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
