"""The backend registry (pysnn.backends): selection by preference and by what each backend
accepts, a user's own backend, the environment variable, and bad input."""

import os
import subprocess
import sys
import types

import pytest
import torch

from pysnn import backends, native
from pysnn.functional.lif import lif_parameters, lif_trace_step, lif_trace_steps
from pysnn.functional.trace import trace_parameters
from pysnn.neuron import LIFNeuron


def _params(n=6):
    p = lif_parameters(
        torch.full((n,), 20.0),
        torch.tensor(-65.0),
        torch.tensor(-70.0),
        torch.tensor(-52.0),
        torch.tensor(2.0),
        1.0,
    )
    tp = trace_parameters(torch.tensor(20.0), torch.tensor(1.0), "additive", 1.0)
    return p, tp


def _state(b=3, n=6):
    return -65.0 + torch.zeros(b, n), torch.zeros(b, n, dtype=torch.int64), torch.zeros(b, n)


class Recorder:
    """A backend of one's own: the C kernels behind a counter, for CPU tensors."""

    def __init__(self):
        self.calls = []

    def usable(self, *tensors, differentiable=False):
        return native.usable(*tensors, differentiable=differentiable)

    def lif_steps(self, *args, **kwargs):
        self.calls.append("lif_steps")
        return native.lif_steps(*args, **kwargs)


@pytest.fixture
def recorder():
    if not native.available():
        pytest.skip("the recording backend runs the C kernels (PYSNN_NATIVE=0 here)")
    r = Recorder()
    backends.register("recorder", r)
    yield r
    backends._backends.pop("recorder", None)
    backends._providers.clear()


def test_default_preference_and_names():
    assert backends.preference() == ("c", "triton")
    assert {"c", "triton"} <= set(backends.registered())
    assert backends.get("c") is native
    if native.available():
        assert backends.name_of(backends.select("lif_steps", torch.zeros(2, 3))) == "c"
    assert backends.name_of(None) == "torch"


def test_cpu_tensors_never_go_to_the_gpu_backend_by_default():
    """By default Triton is tried only for its own devices: a CPU tensor goes to C or torch."""
    with backends.prefer("triton"):
        assert backends.select("lif_steps", torch.zeros(2, 3)) is None or (
            os.environ.get("TRITON_INTERPRET") == "1"
        )


def test_torch_preference_runs_the_reference_operations(recorder):
    """Under "torch" no backend runs, and the values are those of the fused kernels."""
    p, tp = _params()
    x = torch.rand(8, 3, 6) * 20
    with backends.prefer("recorder"):
        fused = lif_trace_steps(x, *_state(), p, tp)
    assert recorder.calls == ["lif_steps"]
    with backends.prefer("torch"):
        assert backends.select("lif_steps", x) is None
        assert lif_trace_steps(x, *_state(), p, tp) is None  # (no fused call: steps run)
        v, r, tr = _state()
        spikes = []
        for t in range(8):
            s, v, r, tr = lif_trace_step(x[t], v, r, tr, p, tp)
            spikes.append(s)
    assert recorder.calls == ["lif_steps"]
    assert torch.equal(torch.stack(spikes), fused[0])
    assert torch.equal(v, fused[1]) and torch.equal(r, fused[2]) and torch.equal(tr, fused[3])


def test_a_registered_backend_runs_where_preferred(recorder):
    p, tp = _params()
    x = torch.rand(3, 6) * 20
    lif_trace_step(x, *_state(), p, tp)
    assert recorder.calls == []  # not in the preference
    with backends.prefer(["recorder", "c"]):
        assert backends.preference() == ("recorder", "c")
        lif_trace_step(x, *_state(), p, tp)
        assert backends.name_of(backends.select("lif_steps", x)) == "recorder"
        # what its usable refuses goes to the next one: a float16 tensor to none
        assert backends.select("lif_steps", x.half()) is None
    assert recorder.calls == ["lif_steps"]
    assert backends.preference() == ("c", "triton")


def test_the_preference_reaches_neurons_and_their_fast_steps(recorder):
    """A neuron's steps follow the preference: under "recorder" every step goes through it (the
    C backend's own single-step kernel is not used)."""
    lif = LIFNeuron(6)
    x = torch.rand(3, 6) * 20
    with torch.no_grad(), backends.prefer("recorder"):
        for _ in range(4):
            lif(x)
    assert recorder.calls == ["lif_steps"] * 4


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        backends.set_preference("cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        backends.get("nope")
    with pytest.raises(ValueError, match="name must be"):
        backends.register("torch", Recorder())
    with pytest.raises(TypeError, match="usable"):
        backends.register("x", types.SimpleNamespace(lif_steps=lambda: None))
    with pytest.raises(TypeError, match="provides none"):
        backends.register("x", types.SimpleNamespace(usable=lambda *t, **k: True))
    assert backends.preference() == ("c", "triton")


@pytest.mark.parametrize("value, expected", [("torch", "()"), ("c", "('c',)"), ("auto", None)])
def test_the_environment_variable_sets_the_preference(value, expected):
    env = dict(os.environ, PYSNN_BACKEND=value)
    out = subprocess.run(
        [sys.executable, "-c", "from pysnn import backends; print(backends.preference())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == (expected or "('c', 'triton')")


def test_a_bad_environment_variable_names_itself():
    env = dict(os.environ, PYSNN_BACKEND="gpu")
    result = subprocess.run(
        [sys.executable, "-c", "import pysnn.neuron"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "PYSNN_BACKEND names an unknown backend 'gpu'" in (
        result.stderr
    )


def test_explain_names_the_backend():
    from pysnn.connection import Linear
    from pysnn.engine import explain
    from pysnn.network import SNNNetwork

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc = Linear(4, 6)
            self.lif = LIFNeuron(6)

        def forward(self, x):
            return self.lif(self.fc(x))

    e = explain(Net(), torch.rand(5, 2, 4))
    assert e.fused
    assert e.backends["lif"] == ("c" if native.available() else "torch")
    with backends.prefer("torch"):
        assert explain(Net(), torch.rand(5, 2, 4)).backends["lif"] == "torch"


def test_cpu_work_never_imports_triton():
    """Importing Triton costs a second and ~70 MB: CPU tensors never load the GPU backend
    (outside Triton's interpreter)."""
    code = (
        "import sys, torch\n"
        "from pysnn.neuron import LIFNeuron\n"
        "from pysnn.engine import explain\n"
        "n = LIFNeuron(10)\n"
        "with torch.no_grad():\n"
        "    [n(torch.rand(2, 10)) for _ in range(5)]\n"
        "explain(torch.nn.Sequential(n), torch.rand(3, 2, 10))\n"
        "print('triton' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYSNN_BACKEND")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_prefer_is_scoped_to_its_thread_and_block():
    """Recording a step switches to the torch operations in a prefer block: another thread
    running meanwhile keeps its own preference (as torch.no_grad is per thread)."""
    import threading

    before = backends.preference()
    inside, seen = threading.Event(), []
    release = threading.Event()

    def other():
        with backends.prefer("torch"):
            inside.set()
            release.wait(10)
            seen.append(backends.preference())

    worker = threading.Thread(target=other)
    worker.start()
    assert inside.wait(10)
    assert backends.preference() == before  # this thread is not affected
    release.set()
    worker.join(10)
    assert seen == [()]
    with backends.prefer("torch"):
        with backends.prefer("c"):
            assert backends.preference() == ("c",)
        assert backends.preference() == ()
    assert backends.preference() == before
