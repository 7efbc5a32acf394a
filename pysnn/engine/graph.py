"""Replay a network's step as a CUDA graph: one launch per step instead of one per operation.

A Python loop of steps of small layers spends its time launching kernels, a few microseconds
each and dozens per step, whatever the layer sizes. :class:`GraphedStep` wraps a stateful
module whose ``forward`` is one time step (an :class:`~pysnn.network.SNNNetwork`, a neuron, an
``nn.Sequential`` of pysnn modules) and, on CUDA, records one step with
``torch.cuda.CUDAGraph`` after a few eager warm-up steps. Each later call copies its input into
the graph's input tensor, replays the graph and returns the output.

**State.** A pysnn step reads its state tensors and assigns new ones into the modules' buffers
(and a learning rule's groups' ``state``). A graph reads and writes fixed memory, so the
recorded step ends by copying each new state tensor into the one the step read and pointing the
module's buffer back at it: every replay reads and writes the same tensors, and between calls
the modules hold them as usual (``net.exc.v`` is the state after the last step). Which tensors
are state is seen during the warm-up (those the steps replace).

**Guards**, checked at every call in Python without reading the device:

- the input's shape, dtype and device, and whether ``torch.inference_mode`` is on (another
  batch size: warm up and capture anew);
- every state tensor, constant, parameter, submodule, forward hook and plain attribute of the
  modules is the object captured. A state tensor replaced by one of its shape (a
  ``reset_state()``, eager steps run in between) is copied into the graph's tensor; one that
  cannot be (a connection's history cleared by ``reset_state()``) makes this call run eagerly
  and the next copy. A replaced constant or parameter, ``.to()``, another attribute value
  (``dt``, ``train()``/``eval()``, a pending ``clamp()``) warm up and capture anew;
- no constant buffer was edited in place since the capture (autograd's version counters), else
  capture anew. Parameters (weights) are not guarded by version: the graph reads them from
  their memory, so learning rules and optimisers may edit them between calls, and ``.data``
  edits of weights and constants are seen by the next replay (while recording, modules compute
  values derived from constants inside the step, see :func:`pysnn.stepping.graph_capture`);
- no gradient is wanted (grad mode on and the input or a parameter requiring grad): a replay
  keeps no autograd graph, so that call runs eagerly; run under ``torch.no_grad()``.

**Not graphed**, the step runs eagerly as written, and :attr:`GraphedStep.reason` says why: a
device other than CUDA (on the CPU the object is exactly the eager step), a step whose modules
keep Python state of their own that changes from step to step (a replay would not advance it;
compared between the last two warm-up steps, ignoring the caches each class lists in its
``STEP_CACHES``, see :attr:`pysnn.neuron.Neuron.STEP_CACHES`), a step
that draws random numbers (a Poisson encoder inside the step: the graph's random stream is not
checked against the eager one), a step that returns other than one tensor, and a capture that
fails (a host synchronisation inside the step, for example). Replays make no per-step value
checks (``pysnn.set_checks``): the input is not checked for NaN.

The CUDA graph itself (:class:`CUDAStepGraph`) has not run on a GPU yet: the bookkeeping above
is tested on the CPU with a stand-in for the graph (:class:`StepGraph`) that re-binds the
captured tensors and re-runs the step at each replay, against the plain step loop bit for bit.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter, is_, itemgetter
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
)

import torch
from torch import nn
from torch.autograd.graph import increment_version
from torch.overrides import TorchFunctionMode

from pysnn._checks import checks
from pysnn.learning import LearningRule
from pysnn.stepping import graph_capture, has_forward_hooks

__all__ = ["GraphedStep", "StepGraph", "CUDAStepGraph", "cuda_step_graph", "Binding"]

#: A tensor a recorded step reads through a dict (a module's buffers or parameters, a learning
#: rule's group state): ``(dict, key, tensor)``.
Binding = Tuple[Dict[str, Any], str, torch.Tensor]

#: Plain values compared by value (not identity) between warm-up steps.
_VALUES = (bool, int, float, complex, str, bytes, type(None))
_MISSING = object()
_VERSION = attrgetter("_version")
_inference = torch.is_inference_mode_enabled
#: torch's own entries of a module's ``__dict__`` (the dicts of parameters, buffers, submodules
#: and hooks, whose contents the guards compare themselves), left out of the fast comparison
_TORCH_ENTRIES = frozenset(nn.Module().__dict__) - {"training"}
_MODULE_HOOKS = nn.modules.module


class StepGraph(Protocol):
    """What :class:`GraphedStep` needs of a graph: run warm-up steps, record one step, replay it.

    :class:`CUDAStepGraph` is ``torch.cuda.CUDAGraph``; a test may give a stand-in for another
    device (``GraphedStep(net, graphs=...)``).
    """

    #: Whether :meth:`capture` also runs the step's operations (a CUDA graph records them
    #: without running them: the step is then run by a first replay).
    runs_at_capture: bool

    def warm(self, step: Callable[[], Any]) -> Any:
        """Run ``step`` eagerly (a warm-up before the capture, on the stream the recording
        needs ready); its result."""

    def capture(self, step: Callable[[], None]) -> None:
        """Record ``step`` (a Python function: one step of the network and the write-back of
        its state) for :meth:`replay`."""

    def replay(self, bindings: Sequence[Binding]) -> None:
        """Run the recorded step again. ``bindings``: the tensors it reads through dicts, as
        they were bound at the end of the recording. A replay reads their memory whatever the
        dicts hold now (a CUDA graph does so by construction; a stand-in re-binds them)."""


class CUDAStepGraph:
    """A :class:`StepGraph` on a CUDA device: ``torch.cuda.CUDAGraph``, warmed up and recorded
    on a side stream (as PyTorch's documentation asks), replayed on the current stream.

    Written to PyTorch's documented recipe but not yet run on a GPU (no device was available):
    :class:`GraphedStep`'s bookkeeping around it is tested on the CPU through a stand-in of
    the protocol, and ``tests/test_graphed_step.py`` has the CUDA tests to run on a device.
    """

    runs_at_capture = False

    def __init__(self, device: torch.device) -> None:
        if not isinstance(device, torch.device) or device.type != "cuda":
            raise ValueError(f"device must be a CUDA torch.device, got {device!r}")
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def warm(self, step: Callable[[], Any]) -> Any:
        """Run ``step`` on the side stream, ordered after the current stream's work and before
        its next."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            out = step()
        current.wait_stream(self.stream)
        return out

    def capture(self, step: Callable[[], None]) -> None:
        """Record ``step`` into a new ``torch.cuda.CUDAGraph`` (its own memory pool)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
            step()
        self.graph = graph

    def replay(self, bindings: Sequence[Binding]) -> None:
        """Launch the graph on the current stream (``bindings`` are its memory already)."""
        self.graph.replay()


def cuda_step_graph(device: torch.device) -> Optional[StepGraph]:
    """The default graph factory: a :class:`CUDAStepGraph` for a CUDA device, ``None`` (the step
    runs eagerly) for any other."""
    if device.type == "cuda" and torch.cuda.is_available():
        return CUDAStepGraph(device)
    return None


class _DrawWatch(TorchFunctionMode):
    """Notes the first operation of a step that is given a random generator of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: Optional[str] = None

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.drawn is None and kwargs.get("generator") is not None:
            self.drawn = getattr(func, "__name__", str(func))
        return func(*args, **kwargs)


def _rng_states(device: torch.device) -> List[torch.Tensor]:
    """The default generators' states that a step on ``device`` may advance."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda" and torch.cuda.is_initialized():
        states.append(torch.cuda.get_rng_state(device))
    return states


def _same(a: Any, b: Any) -> bool:
    """Whether two snapshots of an attribute (value, length of a container) are the same."""
    if a is b:
        return True
    (x, n), (y, m) = a, b
    if n != m:
        return False
    return x is y or (type(x) is type(y) and isinstance(x, _VALUES) and x == y)


def _compatible(new: Any, static: torch.Tensor) -> bool:
    """Whether the tensor ``new`` can be copied into ``static`` as it is."""
    return (
        isinstance(new, torch.Tensor)
        and new.shape == static.shape
        and new.dtype == static.dtype
        and new.device == static.device
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


class _Dict:
    """One dict a step reads through, and what it held after the last call.

    ``kind``: ``"attributes"`` (a module's ``__dict__``), ``"buffers"``, ``"parameters"``,
    ``"modules"``, ``"hooks"`` or ``"rule state"`` (a learning rule group's ``state``).
    """

    __slots__ = ("kind", "label", "data", "caches", "snapshot")

    def __init__(self, kind: str, label: str, data: Dict[str, Any], caches: FrozenSet[str]):
        self.kind, self.label, self.data, self.caches = kind, label, data, caches
        self.snapshot: Dict[str, Any] = dict(data)


#: the state slots of a network: (index of the container, key)
Slot = Tuple[int, str]
#: module name -> its attributes as (value, length of a container or None)
Attributes = Dict[str, Dict[str, Tuple[Any, Optional[int]]]]


class GraphedStep:
    """Call a step network through a CUDA graph replay where its step is static.

    ``graphed(x)`` is ``network(x)`` (one step, ``x`` ``(B, ...)`` on the network's device):
    the same output, the same state left in every module. The first ``warmup`` calls run
    eagerly, the next one captures the step, later ones replay it while the guards hold (see
    :mod:`pysnn.engine.graph`). On a device other than CUDA every call runs eagerly.

    Args:
        network: a module whose ``forward(x)`` is one time step of one tensor input, returning
            one tensor.
        warmup: eager steps before a capture (>= 2; the last two are compared to see that the
            step keeps no Python state of its own).
        copy_output: return a copy of the graph's output tensor (as an eager step returns a
            tensor of its own); ``False`` returns the graph's output tensor itself, which the
            next replay overwrites.
        graphs: ``device -> StepGraph or None``, the graph used on a device (default
            :func:`cuda_step_graph`); ``None`` from it runs that device's steps eagerly.

    Attributes:
        reason: why the last call did not replay a graph (warming up, the device, a guard,
            what could not be captured); ``None`` when it did.
        captures: how many times a step was captured.
        replays: how many calls replayed a graph.
        network: the wrapped module.

    Example::

        step = GraphedStep(net)                  # net: an SNNNetwork on "cuda"
        with torch.no_grad():
            for t in range(T):
                out[t] = step(spikes[t])         # captures and replays at the fourth call
        print(step.reason, step.replays)
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        warmup: int = 3,
        copy_output: bool = True,
        graphs: Optional[Callable[[torch.device], Optional[StepGraph]]] = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 2:
            raise ValueError(
                f"warmup must be an int >= 2 (eager steps before a capture), got {warmup!r}"
            )
        if not isinstance(copy_output, bool):
            raise TypeError(f"copy_output must be a bool, got {copy_output!r}")
        if graphs is not None and not callable(graphs):
            raise TypeError(
                f"graphs must be a function device -> StepGraph or None, got {graphs!r}"
            )
        self.network = network
        self.warmup = warmup
        self.copy_output = copy_output
        self._graphs = cuda_step_graph if graphs is None else graphs
        self.reason: Optional[str] = "not called yet"
        self.captures = 0
        self.replays = 0
        self._refused: Optional[str] = None  # why this network is never graphed
        self._forget()

    @property
    def graphed(self) -> bool:
        """Whether a captured graph is kept (the next call replays it if the guards hold)."""
        return self._live

    def __repr__(self) -> str:
        status = "graphed" if self._live else ("eager" if self._refused else "not graphed")
        return (
            f"GraphedStep({type(self.network).__name__}, {status}, captures={self.captures}, "
            f"replays={self.replays}, reason={self.reason!r})"
        )

    # ------------------------------------------------------------------ bookkeeping
    def _forget(self) -> None:
        """Drop the capture and the warm-up (the graph's memory is freed with them)."""
        self._graph: Optional[StepGraph] = None  # of the warm-up cycle or the capture
        self._live = False  # a captured graph may be replayed
        self._cycle: Optional[str] = None  # why this warm-up cycle began (after a capture)
        self._warmed = 0
        # the input's shape, dtype and device, and whether inference mode was on (its tensors
        # cannot be written outside it)
        self._key: Optional[Tuple[torch.Size, torch.dtype, torch.device, bool]] = None
        self._state: Set[Slot] = set()
        self._previous: Optional[Attributes] = None
        self._dicts: List[_Dict] = []
        self._flat_snapshot: List[Any] = []
        self._statics: List[Binding] = []
        self._static_storages: Set[int] = set()
        self._static_x: Optional[torch.Tensor] = None
        self._out: Any = None
        self._bindings: Tuple[Binding, ...] = ()
        self._written: List[torch.Tensor] = []
        self._guarded: List[Tuple[str, torch.Tensor]] = []
        self._guarded_tensors: List[torch.Tensor] = []
        self._versions: List[int] = []
        self._dict_data: List[Dict[str, Any]] = []
        self._lengths: List[int] = []
        # what the fast guard compares by identity: the modules' own attributes (a getter and
        # the module's __dict__ each) and the values of the other dicts (live views)
        self._getters: List[Tuple[Callable[[Dict[str, Any]], Tuple[Any, ...]], Dict]] = []
        self._views: List[Any] = []
        self._problem: Optional[str] = None

    def _named_modules(self) -> List[Tuple[str, nn.Module]]:
        return [(name or type(m).__name__, m) for name, m in self.network.named_modules()]

    def _containers(self) -> List[Tuple[str, Dict[str, Any]]]:
        """The dicts holding tensors that the step may replace (its state): each module's
        buffers and each learning rule group's state, with a label for messages."""
        found: List[Tuple[str, Dict[str, Any]]] = []
        for name, module in self._named_modules():
            found.append((f"{name}.", module._buffers))
            if isinstance(module, LearningRule):
                for i, group in enumerate(module.groups):
                    found.append((f"{name}.groups[{i}].state.", group.state))
        return found

    @staticmethod
    def _slots(containers: List[Tuple[str, Dict[str, Any]]]) -> Dict[Slot, Any]:
        return {(i, key): value for i, (_, d) in enumerate(containers) for key, value in d.items()}

    def _parameters(self) -> Dict[Tuple[str, str], Any]:
        return {(name, k): p for name, m in self._named_modules() for k, p in m._parameters.items()}

    def _attributes(self) -> Attributes:
        """Each module's plain attributes as (value, length of a container or None)."""
        return {
            name: {
                key: (value, len(value) if isinstance(value, (list, dict, set)) else None)
                for key, value in module.__dict__.items()
            }
            for name, module in self._named_modules()
        }

    def _unstable(self, before: Attributes, after: Attributes) -> List[str]:
        """The module attributes (other than the class's ``STEP_CACHES``) that differ between
        two snapshots, as ``module.attribute``."""
        caches = {
            name: getattr(type(m), "STEP_CACHES", frozenset()) for name, m in self._named_modules()
        }
        changed = []
        for name in before.keys() | after.keys():
            a, b = before.get(name, {}), after.get(name, {})
            for key in a.keys() | b.keys():
                if key in caches.get(name, ()):
                    continue
                if key not in a or key not in b or not _same(a[key], b[key]):
                    changed.append(f"{name}.{key}")
        return sorted(changed)

    def _grad_reason(self, x: torch.Tensor) -> Optional[str]:
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.network.parameters())
        ):
            return (
                "a gradient is wanted (grad mode on, and the input or a parameter requires "
                "grad); a replay keeps no autograd graph: the step runs eagerly (run it under "
                "torch.no_grad() to replay it)"
            )
        return None

    def _hook_reason(self) -> Optional[str]:
        for name, module in self._named_modules():
            if has_forward_hooks(module):
                return (
                    f"{name}: a forward hook must see every call (a Monitor, for example): the "
                    "step runs eagerly"
                )
        return None

    # ------------------------------------------------------------------ calls
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One step of the network on ``x`` ``(B, ...)``: its output, replayed where a captured
        graph applies (see the class docstring)."""
        if (
            self._live
            and type(x) is torch.Tensor
            and (x.shape, x.dtype, x.device, _inference()) == self._key
            and not (torch.is_grad_enabled() and self._grad_reason(x))
            and self._holds()
        ):
            self._static_x.copy_(x)
            return self._replay()
        return self._call(x)

    def _holds(self) -> bool:
        """Whether every dict the step reads through holds what it held after the last call,
        no constant was edited in place and no global forward hook was registered."""
        return (
            not (_MODULE_HOOKS._global_forward_hooks or _MODULE_HOOKS._global_forward_pre_hooks)
            and list(map(len, self._dict_data)) == self._lengths
            and all(map(is_, self._values(), self._flat_snapshot))
            and list(map(_VERSION, self._guarded_tensors)) == self._versions
        )

    def _replay(self) -> Any:
        self._graph.replay(self._bindings)
        increment_version(self._written)  # (a replay writes them as an in-place operation)
        self.replays += 1
        self.reason = None
        return self._output()

    def _output(self) -> Any:
        out = self._out
        return out.clone() if self.copy_output and isinstance(out, torch.Tensor) else out

    def _call(self, x: torch.Tensor) -> Any:
        """Every call that does not replay at once: warm-up, capture, reconciliation, eager."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor (one step's input), got {type(x).__name__}")
        if self._refused is not None:
            self.reason = self._refused
            return self._eager(x, recording=False)
        key = (x.shape, x.dtype, x.device, _inference())
        if self._graph is None and key == self._key:  # no graph on this device: said at _start
            return self._eager(x, recording=False)
        transient = self._grad_reason(x) or self._hook_reason()
        if transient is None and torch.compiler.is_compiling():
            transient = "torch.compile is tracing: the step is traced as written"
        if transient is not None:
            self.reason = transient
            return self._eager(x, recording=self._graph is not None)
        if self._live:
            verdict = self._reconcile(key)
            if verdict is None:
                self._static_x.copy_(x)
                return self._replay()
            if self._live:  # the graph is kept: only this call runs eagerly
                self.reason = verdict
                return self._eager(x, recording=True)
            self._start(x, key, verdict)
        elif self._graph is None or key != self._key:
            self._start(x, key, None)
        if self._graph is None:
            return self._eager(x, recording=False)
        if self._warmed < self.warmup:
            return self._warm(x)
        return self._capture(x)

    def _start(self, x: torch.Tensor, key: Tuple[Any, ...], why: Optional[str]) -> None:
        """Begin a warm-up cycle for inputs like ``x`` (dropping any capture); ``why``: what
        made the last capture invalid."""
        self._forget()
        self._graph = self._graphs(x.device)
        self._key = key
        self._cycle = why
        if self._graph is None:
            self.reason = (
                f"{x.device.type} tensors: CUDA graphs record CUDA work only, so the step runs "
                "eagerly (exactly the network's own step)"
            )

    def _eager(self, x: torch.Tensor, recording: bool) -> Any:
        """The network's own step (inside :func:`pysnn.stepping.graph_capture` when a graph is
        kept or prepared, so that the modules stay on the paths it records)."""
        if not recording:
            return self.network(x)
        with graph_capture():
            self._drop_fast_steps()
            return self.network(x)

    def _drop_fast_steps(self) -> None:
        """Send every module back to its general step for a step that is recorded or prepares
        a recording: a fused single step kept from earlier eager steps (a neuron's generated
        kernel) checks its guards in Python, which a replay would not run again, so it must not
        be recorded. Inside :func:`pysnn.stepping.graph_capture` no module builds a new one."""
        for module in self.network.modules():
            if module.__dict__.get("_fast") is not None:
                module.__dict__["_fast"] = None

    # ------------------------------------------------------------------ warm-up and capture
    def _warm(self, x: torch.Tensor) -> Any:
        """One eager warm-up step; notes the state slots it replaces, and after the last one
        whether the step is static (no Python state, no random draws, one tensor out)."""
        before = self._slots(self._containers())  # (held: no module edits its state in place)
        parameters = self._parameters()
        last = self._warmed == self.warmup - 1
        watch = _DrawWatch()
        rng = _rng_states(x.device) if last else []
        with graph_capture():
            self._drop_fast_steps()
            if last:
                with watch:
                    out = self._graph.warm(lambda: self.network(x))
            else:
                out = self._graph.warm(lambda: self.network(x))
        after = self._slots(self._containers())
        self._state |= {
            s for s in before.keys() | after.keys() if before.get(s) is not after.get(s)
        }
        del before, after
        replaced = sorted(
            f"{name}.{key}"
            for (name, key), p in self._parameters().items()
            if parameters.get((name, key)) is not p
        )
        attributes = self._attributes()
        self._warmed += 1
        self.reason = f"warming up ({self._warmed} of {self.warmup} eager steps before a capture)"
        if self._cycle is not None:
            self.reason += f"; capturing anew: {self._cycle}"
        why = None
        if replaced:
            why = f"the step replaces the parameters {', '.join(replaced[:4])}: it runs eagerly"
        elif last:
            if watch.drawn is not None or any(
                not torch.equal(a, b) for a, b in zip(rng, _rng_states(x.device))
            ):
                where = f" ({watch.drawn}, with a generator)" if watch.drawn else ""
                why = (
                    f"the step draws random numbers{where}: a replay's draws are not checked "
                    "against the eager ones, so the step runs eagerly"
                )
            elif not isinstance(out, torch.Tensor):
                why = f"the step returns {type(out).__name__}, not one tensor: it runs eagerly"
            else:
                changed = self._unstable(self._previous, attributes)
                if changed:
                    why = (
                        f"the step changes {', '.join(changed[:4])} from step to step (Python "
                        "state, which a replay would not advance): it runs eagerly"
                    )
        if why is not None:
            self._refuse(why)
        else:
            self._previous = attributes
        return out

    def _refuse(self, why: str) -> None:
        self._forget()
        self._refused = self.reason = why

    def _capture(self, x: torch.Tensor) -> Any:
        """Capture the step; this call's step is its first run."""
        graph = self._graph
        containers = self._containers()
        slots = self._slots(containers)
        statics: List[Binding] = []
        for index, key in sorted(self._state):
            value = slots.get((index, key))
            if not isinstance(value, torch.Tensor):
                label = containers[index][0] + key
                self._refuse(f"the state {label} is {type(value).__name__} after the warm-up")
                return self._eager(x, recording=False)
            owned = value.clone()  # the graph's own memory, aliasing nothing else
            containers[index][1][key] = owned
            statics.append((containers[index][1], key, owned))
        self._statics = statics
        self._static_storages = {t.untyped_storage().data_ptr() for _, _, t in statics}
        self._static_x = x.clone(memory_format=torch.contiguous_format)
        before = self._slots(containers)
        saved = [dict(d) for _, d in containers]
        attributes = self._attributes()
        tracked = [v for v in before.values() if isinstance(v, torch.Tensor)]
        tracked += [p for p in self._parameters().values() if p is not None]
        versions = {id(t): t._version for t in tracked if not t.is_inference()}
        self._problem = None
        try:
            with graph_capture(), checks(False):
                self._drop_fast_steps()
                graph.capture(self._recorded)
        except Exception as error:  # noqa: BLE001 - whatever failed, the step runs eagerly
            if graph.runs_at_capture:
                raise  # the step itself raised, as the eager step would
            self._problem = f"the capture failed ({_first_line(error)})"
        if self._problem is None:
            after = self._slots(containers)
            moved = sorted(
                containers[s[0]][0] + s[1]
                for s in before.keys() | after.keys()
                if s not in self._state and before.get(s) is not after.get(s)
            )
            changed = self._unstable(attributes, self._attributes())
            if moved:
                self._problem = f"the recorded step replaced {', '.join(moved[:4])}"
            elif changed:
                self._problem = f"the recorded step changed {', '.join(changed[:4])}"
        if self._problem is not None:
            problem = f"{self._problem}: the step runs eagerly"
            if graph.runs_at_capture:  # the step ran: its results stand
                out = self._out
                self._refuse(problem)
                return out
            for (_, d), contents in zip(containers, saved):  # undo what the recording replaced
                d.clear()
                d.update(contents)
            self._refuse(problem)
            return self._eager(x, recording=False)
        static_ids = {id(t) for _, _, t in statics}
        self._written = [t for _, _, t in statics] + [
            t
            for t in tracked
            if id(t) not in static_ids and id(t) in versions and t._version != versions[id(t)]
        ]
        written = {id(t) for t in self._written}
        self._guarded = [
            (containers[index][0] + key, value)
            for (index, key), value in self._slots(containers).items()
            if isinstance(value, torch.Tensor)
            and (index, key) not in self._state
            and id(value) not in written
            and not value.is_inference()
        ]
        self._snapshot_dicts(containers)
        self._bindings = tuple(
            (entry.data, key, value)
            for entry in self._dicts
            if entry.kind in ("buffers", "parameters", "rule state")
            for key, value in entry.data.items()
            if isinstance(value, torch.Tensor)
        )
        self._live = True
        self._previous = None  # (the warm-up's snapshot: nothing of it is needed any more)
        self.captures += 1
        if graph.runs_at_capture:
            self.reason = None
            return self._output()
        return self._replay()

    def _recorded(self) -> None:
        """The step a graph records: one step of the network on the static input, then the new
        state copied into the graph's state tensors, which the modules are pointed back at."""
        out = self.network(self._static_x)
        self._out = out
        if not isinstance(out, torch.Tensor):
            self._problem = f"the step returned {type(out).__name__}, not one tensor"
            return
        self._problem = self._write_back()

    def _write_back(self) -> Optional[str]:
        """Copy each replaced state tensor into the graph's; what is wrong if one cannot be."""
        pending = []
        for d, key, static in self._statics:
            new = d.get(key)
            if new is static:
                continue
            if not _compatible(new, static):
                what = "None" if new is None else f"{type(new).__name__} {tuple(new.shape)}"
                return f"the step made its state {key} {what}, unlike {tuple(static.shape)}"
            pending.append((d, key, static, new))
        self._copy_in(pending)
        return None

    def _copy_in(self, pending: List[Tuple[Dict[str, Any], str, torch.Tensor, Any]]) -> None:
        """Copy each new value into its state tensor and point the dict back at it; a value on
        the memory of a state tensor is copied first (it is read before any is written)."""
        sources = []
        for d, key, static, new in pending:
            if new.untyped_storage().data_ptr() in self._static_storages:
                new = new.clone()
            sources.append((d, key, static, new))
        for d, key, static, new in sources:
            static.copy_(new)
            d[key] = static

    def _snapshot_dicts(self, containers: List[Tuple[str, Dict[str, Any]]]) -> None:
        """The dicts the guards compare, as they are now."""
        dicts: List[_Dict] = []
        for name, module in self._named_modules():
            caches = getattr(type(module), "STEP_CACHES", frozenset())
            dicts.append(_Dict("attributes", f"{name}.", module.__dict__, caches))
            dicts.append(_Dict("buffers", f"{name}.", module._buffers, frozenset()))
            dicts.append(_Dict("parameters", f"{name}.", module._parameters, frozenset()))
            dicts.append(_Dict("modules", f"{name}.", module._modules, frozenset()))
            dicts.append(_Dict("hooks", f"{name}.", module._forward_hooks, frozenset()))
            dicts.append(_Dict("hooks", f"{name}.", module._forward_pre_hooks, frozenset()))
        buffers = {id(m._buffers) for _, m in self._named_modules()}
        for label, d in containers:
            if id(d) not in buffers:
                dicts.append(_Dict("rule state", label, d, frozenset()))
        self._dicts = dicts
        self._dict_data = [entry.data for entry in dicts]
        self._views = [e.data.values() for e in dicts if e.kind not in ("attributes", "hooks")]
        self._guarded_tensors = [t for _, t in self._guarded]
        self._refresh()

    def _values(self) -> Iterator[Any]:
        """The values the fast guard compares by identity (see ``_getters``)."""
        attributes = chain.from_iterable([get(data) for get, data in self._getters])
        return chain(attributes, chain.from_iterable(self._views))

    def _refresh(self) -> None:
        """Take the dicts' contents and the constants' versions as they are now."""
        getters = []
        for entry in self._dicts:
            entry.snapshot = dict(entry.data)
            if entry.kind == "attributes":
                keys = [k for k in entry.data if k not in _TORCH_ENTRIES]
                get = itemgetter(*keys) if len(keys) > 1 else (lambda d, k=keys[0]: (d[k],))
                getters.append((get, entry.data))
        self._getters = getters
        self._flat_snapshot = list(self._values())
        self._lengths = list(map(len, self._dict_data))
        self._versions = list(map(_VERSION, self._guarded_tensors))

    # ------------------------------------------------------------------ a guard failed
    def _reconcile(self, key: Tuple[Any, ...]) -> Optional[str]:
        """After a guard failed (no forward hook, no gradient wanted): ``None`` once the state
        is in the graph's tensors and the call may replay; else why not. The capture is
        dropped when the graph no longer applies (``self._live`` false); otherwise only this
        call runs eagerly."""
        if key != self._key:
            self._forget()
            return "the input's shape, dtype or device changed, or inference mode"
        static = {(id(d), k): t for d, k, t in self._statics}
        copies = []
        eager = None
        for entry in self._dicts:
            data, snapshot = entry.data, entry.snapshot
            if len(data) == len(snapshot) and all(map(is_, data.values(), snapshot.values())):
                continue
            for name in data.keys() | snapshot.keys():
                now, then = data.get(name, _MISSING), snapshot.get(name, _MISSING)
                if now is then or (entry.kind == "attributes" and name in entry.caches):
                    continue
                target = static.get((id(data), name))
                if target is None:  # an attribute, constant, parameter, submodule
                    self._forget()
                    return f"{entry.label}{name} changed"
                if now is _MISSING or not _compatible(now, target):
                    eager = (
                        f"the state {entry.label}{name} was cleared or made anew (by "
                        "reset_state(), for example): this step runs eagerly, the next replays"
                    )
                else:
                    copies.append((data, name, target, now))
        edited = [label for (label, t), v in zip(self._guarded, self._versions) if t._version != v]
        if edited:
            self._forget()
            return f"{', '.join(edited[:4])} edited in place"
        if eager is not None:
            return eager
        self._copy_in(copies)
        self._refresh()
        return None
