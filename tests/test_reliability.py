"""Reliability: wiring with different time steps is refused, checkpoints continue a run exactly,
load without running code and are never left half-written (see docs/reliability.rst)."""

from __future__ import annotations

import os
import random
import subprocess
import warnings
import sys
from pathlib import Path

import pytest
import torch

from pysnn.checkpoint import load_checkpoint, save_checkpoint
from pysnn.connection import Linear
from pysnn.multistep import run_feedforward
from pysnn.network import SNNNetwork
from pysnn.neuron import LIFNeuron

sys.path.insert(0, str(Path(__file__).parent))
from checkpoint_worker import SAMPLES, Net  # noqa: E402

WORKER = Path(__file__).parent / "checkpoint_worker.py"
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# time steps
# ---------------------------------------------------------------------------------------------
def test_add_layer_refuses_different_dt():
    net = SNNNetwork()
    with pytest.raises(ValueError, match=r"connection\.dt = 1 ms and neuron\.dt = 0\.5 ms"):
        net.add_layer("fc", Linear(3, 2, dt=1.0), LIFNeuron(2, dt=0.5))
    assert net.layers == {}  # nothing registered
    net.add_layer("fc", Linear(3, 2, dt=0.5), LIFNeuron(2, dt=0.5))
    net.add_layer("act", torch.nn.Identity(), LIFNeuron(2, dt=0.25))  # no dt: not checked
    assert list(net.layers) == ["fc", "act"]


def test_run_feedforward_refuses_different_dt():
    spikes = torch.ones(4, 1, 3)
    with pytest.raises(ValueError, match=r"connection\.dt = 2 ms and neuron\.dt = 1 ms"):
        run_feedforward(Linear(3, 2, dt=2.0), LIFNeuron(2), spikes)
    fc = Linear(3, 2, dt=0.5, init="constant", init_kwargs={"val": 20.0})
    out = run_feedforward(fc, LIFNeuron(2, dt=0.5), spikes)  # 60 mV/step: fires at once
    assert out.shape == (4, 1, 2) and out[0].sum() == 2


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def _run(net: Net, steps: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([net((torch.rand(2, 12) < 0.3).float()) for _ in range(steps)])


def _trained_net() -> Net:
    torch.manual_seed(1)
    net = Net()
    with torch.no_grad():
        net.fc.weight.uniform_(0.0, 1.0)
    _run(net, 25)  # state, spikes in flight and rule traces are all non-trivial now
    return net


def test_round_trip_continues_the_uninterrupted_run(tmp_path):
    path = tmp_path / "run.pt"
    net = _trained_net()
    assert net.rule.groups[0].state["r2"].abs().sum() > 0 and net.fc.history is not None
    save_checkpoint(path, network=net, extra={"position": 25, "note": "x", "gen": [1.5, None]})
    expected, expected_w = _run(net, 40), net.fc.weight.detach().clone()
    assert expected.sum() > 10  # spikes to compare

    torch.manual_seed(99)  # a different RNG state: the checkpoint restores it
    fresh = Net()
    extra = load_checkpoint(path, network=fresh)
    assert extra == {"position": 25, "note": "x", "gen": [1.5, None]}
    assert torch.equal(_run(fresh, 40), expected)
    assert torch.equal(fresh.fc.weight, expected_w)

    # Control: the weights alone (state_dict) do not continue the run, so the test can fail.
    torch.manual_seed(99)
    weights_only = Net()
    weights_only.load_state_dict(torch.load(path, weights_only=True)["parameters"])
    torch.set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert not torch.equal(_run(weights_only, 40), expected)


def test_state_that_is_none_is_restored_as_none(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, network=Net())  # before the first step: every state buffer is None
    net = _trained_net()
    assert net.lif.v is not None
    load_checkpoint(path, network=net)
    assert net.lif.v is None and net.fc.history is None and net.rule.groups[0].state == {}


def test_rules_outside_the_network(tmp_path):
    path = tmp_path / "run.pt"
    net = _trained_net()
    rule = net.rule
    del net.rule  # now held by nobody but this test
    save_checkpoint(path, network=net, rules=[rule])
    saved = {k: v.clone() for k, v in rule.groups[0].state.items()}
    rule.reset_state()
    with pytest.raises(ValueError, match=r"learning rules \['rules\[0\]'\]"):
        load_checkpoint(path, network=net)
    load_checkpoint(path, network=net, rules=[rule])
    assert saved.keys() == rule.groups[0].state.keys()
    for key, value in saved.items():
        assert torch.equal(rule.groups[0].state[key], value)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"format": "pysnn.checkpoint/1", "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(ValueError, match=r"weights_only=True\) refuses.*Unsupported global"):
        load_checkpoint(path, network=Net())
    assert not marker.exists()  # the object's code never ran


class _RunsCode:
    """Unpickling calls ``Path(marker).touch()``: code run by loading the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_extra_that_could_not_be_loaded_is_refused_at_save(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(TypeError, match=r"extra\['hist'\]\[1\] is a builtins.set"):
        save_checkpoint(path, network=Net(), extra={"hist": [1, {2}]})
    with pytest.raises(TypeError, match="extra must be a dict"):
        save_checkpoint(path, network=Net(), extra=[1])
    assert not path.exists() and os.listdir(tmp_path) == []


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "run.pt"
    save_checkpoint(good, network=Net())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        load_checkpoint(cut, network=Net())
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a pysnn checkpoint"):
        load_checkpoint(other, network=Net())


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    net = _trained_net()
    save_checkpoint(path, network=net, extra={"position": 1})
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")  # written, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, network=net, extra={"position": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before  # the old checkpoint, untouched
    assert os.listdir(tmp_path) == ["run.pt"]  # no temporary file left behind
    assert load_checkpoint(path, network=Net())["position"] == 1


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    reference = tmp_path / "reference.pt"
    run = [sys.executable, str(WORKER)]
    subprocess.run(run + [str(tmp_path / "ref_ckpt.pt"), str(reference)], env=env, check=True)
    checkpoint, result = tmp_path / "ckpt.pt", tmp_path / "result.pt"
    rng, kills = random.Random(13), 0
    while not result.exists():
        assert kills <= 20, "the run never finished"
        proc = subprocess.Popen(
            run + [str(checkpoint), str(result)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        if kills < 3:
            try:
                proc.wait(timeout=rng.uniform(0.05, 0.6))
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL: no cleanup, possibly in the middle of a save
                kills += 1
        proc.wait()
        proc.stdout.close()
        if checkpoint.exists():  # always a complete checkpoint
            assert 0 < load_checkpoint(checkpoint, network=Net())["position"] <= SAMPLES
    assert kills >= 1, "no kill landed during training: make the delays shorter"
    assert torch.equal(torch.load(result), torch.load(reference))
    assert not torch.equal(torch.load(result), torch.zeros(5, 12))


def test_multistep_refuses_an_empty_sequence():
    """``forward_multistep`` with T = 0 steps: a ValueError naming the argument and ``T >= 1``
    (it used to fail with an IndexError deep inside), for neurons and connections."""
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 4\) with T >= 1"):
        LIFNeuron(4).forward_multistep(torch.zeros(0, 2, 4))
    for delay in (0.0, 2.0):
        with pytest.raises(ValueError, match=r"spikes must have shape \(T, B, 3\) with T >= 1"):
            Linear(3, 2, delay=delay).forward_multistep(torch.zeros(0, 1, 3))


# ---------------------------------------------------------------------------------------------
# checkpoint integrity (issue 25)
# ---------------------------------------------------------------------------------------------
def _saved_with_known_weight(tmp_path):
    net = Net()
    with torch.no_grad():
        net.fc.weight.copy_(torch.linspace(0.01, 0.6, 60).reshape(5, 12))
    path = tmp_path / "run.pt"
    save_checkpoint(path, network=net)
    return net, path


def test_flipped_byte_in_the_weight_data_is_refused(tmp_path):
    """One bit flipped in the stored weight bytes (a damaged disk): was loaded, weight off by 1e36."""
    net, path = _saved_with_known_weight(tmp_path)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(net.fc.weight.detach().numpy().tobytes())
    assert at > 0
    data[at + 4 * 7 + 3] ^= 0x40  # the exponent of weight[0, 7]: 0.1 -> ~3e37
    path.write_bytes(bytes(data))
    fresh = Net()
    with pytest.raises(ValueError, match=rf"{path}.* is corrupt: the SHA-256"):
        load_checkpoint(path, network=fresh)


def test_every_truncation_and_foreign_file_is_a_value_error_naming_the_path(tmp_path):
    _, path = _saved_with_known_weight(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for end in sorted({0, 1, 10, 100, 1000, len(data) - 1, *range(0, len(data), 97)}):
        cut.write_bytes(data[:end])
        with pytest.raises(ValueError, match=str(cut)):
            load_checkpoint(cut, network=Net())
    foreign = {
        "text.pt": b"epoch 3, loss 0.1\n",  # was KeyError: 101
        "random.pt": bytes(random.Random(0).randrange(256) for _ in range(4096)),
        "list.pt": None,
    }
    for name, content in foreign.items():
        other = tmp_path / name
        if content is None:
            torch.save([1, 2], other)
        else:
            other.write_bytes(content)
        with pytest.raises(ValueError, match=str(other)):
            load_checkpoint(other, network=Net())
    with pytest.raises(FileNotFoundError):  # a missing file is not a corrupt one
        load_checkpoint(tmp_path / "missing.pt", network=Net())


def test_checkpoint_without_a_checksum_loads_with_a_warning(tmp_path):
    _, path = _saved_with_known_weight(tmp_path)
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]  # as saved by pysnn before the checksum
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="without a checksum"):
        load_checkpoint(path, network=Net())


def test_resume_at_another_batch_size_warns_that_the_state_is_discarded(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, network=_trained_net())  # run with a batch of 2
    fresh = Net()
    load_checkpoint(path, network=fresh)
    with pytest.warns(UserWarning, match=r"for a batch of 2, but it now runs a batch of 3"):
        with torch.no_grad():
            fresh(torch.zeros(3, 12))
    same = Net()  # the same batch size: silent, and the hooks are gone after the first step
    load_checkpoint(path, network=same)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(same, 3)
    assert not any(m._forward_pre_hooks for m in same.modules())
    again = Net()  # reset_state() first: starting afresh on purpose, silent
    load_checkpoint(path, network=again)
    again.reset_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            again(torch.zeros(3, 12))
