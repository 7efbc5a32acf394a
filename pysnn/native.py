r"""Fused CPU kernels: neuron steps, traces and event-driven products, compiled on first use.

A LIF step written with torch operations is about a dozen small kernels (leak, refractory mask,
input, threshold, reset, counter, trace), each paying torch's dispatch overhead of a few µs: at a
few hundred neurons that overhead, not arithmetic, is the cost of a step. This module replaces
them, on the CPU and when no gradient is needed, by **one** C loop that does exactly the same
floating-point operations in the same order (results are bit-identical; the tests compare both
paths), and that can also run ``T`` steps in one call
(:meth:`pysnn.neuron.Neuron.forward_multistep`). Likewise for a trace update and for the
event-driven product of a :class:`~pysnn.connection.Linear` (:func:`linear_event`,
which reads only the weight rows of the inputs that are non-zero, cache-blocked for many rows).

The C source (``pysnn/csrc/kernels.c``, plain C11, no Python or torch headers) is compiled once
per machine with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into a cache
directory, ``$PYSNN_CACHE_DIR`` or ``~/.cache/pysnn`` (under ``$XDG_CACHE_HOME`` if set; relative
or empty values are ignored), and loaded with :mod:`ctypes`. The folder must be private (created
with mode 0700; one that another user could write into is refused with a warning, and a private
temporary folder is used); a library is loaded only if it is this user's, not writable by others,
and its SHA-256 and size match the record of its build (source hash, compiler, flags) stored
beside it, else it is rebuilt with a warning (a truncated or altered file is never loaded). Large kernels split their work over ``torch.get_num_threads()``
threads: torch's own OpenMP workers where torch runs on GNU OpenMP (the kernels are then built
with ``-fopenmp`` and share the ``libgomp`` torch loaded), else POSIX threads. Where that is impossible (no compiler, unsupported platform) or unwanted
(``PYSNN_NATIVE=0`` in the environment, or :func:`set_enabled`), every neuron silently uses its
torch implementation, with identical results; :func:`status` says which path is in use and why.

Modules never call this module: they call the functional layer (:mod:`pysnn.functional`), which
uses a fused kernel only when all of the following hold: the state is on the CPU, in float32 or
float64, contiguous; no tensor involved requires a gradient (except where the functional layer
wraps a kernel and its backward kernel, :func:`lif_backward`, in an autograd Function: ``T`` LIF
steps under backpropagation through time, and the event-driven product of a multi-step block);
and the code is not being traced by ``torch.compile`` (which then traces the torch operations: a clean fall-back, see the performance
guide for its cost). Otherwise the torch operations run, so autograd, ``torch.compile``, other
devices and dtypes behave as usual. The kernels update the arrays they are given in place; the
kernels read the old state and write the new state into new tensors, so a module's state tensors
are *replaced* every step on every path (a reference kept to ``neuron.v`` keeps that step's
value).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from pysnn._files import write_atomic
from pysnn.backends import stdp_rows_fit

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from pysnn.functional.lif import LIFParameters
    from pysnn.functional.trace import TraceParameters

__all__ = [
    "available",
    "status",
    "set_enabled",
    "enabled",
    "usable",
    "lif_steps",
    "LIFStepKernel",
    "lif_step_kernel",
    "TraceStepKernel",
    "AdaptiveLIFStepKernel",
    "adaptive_lif_step_kernel",
    "trace_step_kernel",
    "lif_backward",
    "trace_step",
    "linear_event",
    "transposed",
    "row_update_",
    "stdp_rows_",
    "STDPRowsKernel",
    "stdp_rows_kernel",
    "TripletKernel",
    "triplet_kernel",
    "recurrent_steps",
]

_SOURCE = Path(__file__).resolve().parent / "csrc" / "kernels.c"
_FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-pthread", "-ffp-contract=off")
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_reason: Optional[str] = None  # why the kernels are unavailable; None while untried or loaded
_tried = False
# the C functions, once loaded
_lif_f32 = _lif_f64 = _trace_f32 = _trace_f64 = _linear_f32 = _linear_f64 = None
_block_f32 = _block_f64 = _transpose_f32 = _transpose_f64 = _update_f32 = _update_f64 = None
_backward_f32 = _backward_f64 = _lif_inplace_f32 = _lif_inplace_f64 = None
_theta_f32 = _theta_f64 = _stdp_f32 = _stdp_f64 = _recurrent_f32 = _recurrent_f64 = None
_layers_f32 = _layers_f64 = _triplet_f32 = _triplet_f64 = None
_enabled = os.environ.get("PYSNN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _absolute(value: Optional[str]) -> Optional[Path]:
    """``value`` as a path if it is a non-empty absolute path, else ``None`` (the XDG base
    directory specification ignores relative values; an empty ``HOME`` is no home)."""
    return Path(value) if value and os.path.isabs(value) else None


def _cache_dir() -> Path:
    """The configured cache folder: ``$PYSNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/pysnn``, else
    ``~/.cache/pysnn``. Relative or empty values of ``XDG_CACHE_HOME`` and ``HOME`` are ignored
    (the home folder is then read from the password database); with no usable home, the private
    temporary folder of :func:`_fallback_dir`."""
    explicit = os.environ.get("PYSNN_CACHE_DIR")
    if explicit:
        return Path(explicit).absolute()
    base = _absolute(os.environ.get("XDG_CACHE_HOME"))
    if base is None:
        home = _absolute(os.environ.get("HOME"))
        if home is None:
            try:
                import pwd

                home = _absolute(pwd.getpwuid(os.getuid()).pw_dir)
            except (ImportError, KeyError):
                home = None
        if home is None or home == Path("/"):
            return _fallback_dir()
        base = home / ".cache"
    return base / "pysnn"


def _unsafe(path: Path, directory: bool) -> Optional[str]:
    """Why ``path`` could have been written by another user (``None`` if it could not): not
    owned by this user (or root), writable by group or others, or not a folder / regular file."""
    try:
        info = os.stat(path) if directory else os.lstat(path)
    except OSError as err:
        return str(err)
    import stat as _stat

    if directory and not _stat.S_ISDIR(info.st_mode):
        return f"{path} is not a folder"
    if not directory and not _stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_uid not in (os.getuid(), 0):
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return (
            f"{path} can be written by other users (mode {oct(info.st_mode & 0o777)}); "
            f"chmod 700 it"
        )
    return None


class _NotPrivate(PermissionError):
    """A cache folder that another user could write into."""


def _private(directory: Path) -> Path:
    """Create ``directory`` (mode 0700) if needed and return it; raise :class:`_NotPrivate`
    saying why if another user could write into it (then nothing in it is loaded)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    reason = _unsafe(directory, directory=True)
    if reason is not None:
        raise _NotPrivate(f"the kernel cache folder is not private: {reason}")
    return directory


_private_tmp: Optional[Path] = None


def _fallback_dir() -> Path:
    """A private folder (0700) for the kernels when the cache folder is unusable:
    ``$TMPDIR/pysnn-<uid>`` if it is this user's and private, else a new folder from
    ``tempfile.mkdtemp`` (for this process only, removed at exit)."""
    global _private_tmp
    candidate = Path(tempfile.gettempdir()) / f"pysnn-{os.getuid()}"
    try:
        return _private(candidate)
    except OSError:
        pass
    if _private_tmp is None or not _private_tmp.is_dir():
        import atexit

        _private_tmp = Path(tempfile.mkdtemp(prefix="pysnn-"))  # mode 0700, a fresh name
        atexit.register(shutil.rmtree, str(_private_tmp), True)
    return _private_tmp


def _compiler() -> Optional[str]:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _torch_fuses_multiply_add() -> bool:
    """Whether ``torch.addcmul`` rounds ``c + a * b`` once (a fused multiply-add), as its
    vectorised CPU kernels do on AVX2/AVX-512 and ARM, rather than after the product too."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(256, generator=g) for _ in range(3))
    fused = (a.double() * b.double() + c.double()).float()  # the exact product, ~one rounding
    result = torch.addcmul(c, a, b)
    return int((result == fused).sum()) > int((result == a * b + c).sum())


def _run_compiler(compiler: str, flags: Sequence[str], output: str, source: Path) -> None:
    """Compile the C file ``source`` into the shared library ``output``."""
    result = subprocess.run(
        [compiler, *flags, "-o", output, str(source), "-lm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:500]}")


def _sha256_of(path: Path) -> Tuple[str, int]:
    """SHA-256 (hex) and size of the regular file ``path``, read without following a link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _verified(target: Path, record: dict) -> Optional[str]:
    """Why the cached library ``target`` must not be loaded (``None``: it may be): not this
    user's or writable by others, no record beside it, or its record (source, flags, compiler)
    or its content (SHA-256, size: a truncated file) differ from what was built."""
    reason = _unsafe(target, directory=False)
    if reason is not None:
        return reason
    record_path = target.with_suffix(".json")
    reason = _unsafe(record_path, directory=False)
    if reason is not None:
        return f"its record: {reason}"
    try:
        stored = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        return f"its record {record_path} is unreadable: {err}"
    if not isinstance(stored, dict) or any(stored.get(k) != v for k, v in record.items()):
        return f"its record {record_path} describes another build"
    digest, size = _sha256_of(target)
    if size != stored.get("size") or digest != stored.get("sha256"):
        return (
            f"its content (SHA-256 {digest[:16]}..., {size} bytes) is not what was built "
            f"({str(stored.get('sha256'))[:16]}..., {stored.get('size')} bytes): truncated or "
            "modified"
        )
    return None


def _compile_into(
    directory: Path, name: str, compiler: str, flags: Sequence[str], source: Path = _SOURCE
) -> Path:
    """Return ``directory / name``, verified against its record, compiling ``kernels.c`` there
    first if it is missing or fails the check (with a ``UserWarning`` saying why).

    ``directory`` must be private (:func:`_private`). Beside the library, ``name`` with the
    suffix ``.json`` records the SHA-256 of the source, the compiler, the flags and the SHA-256
    and size of the library built; a library is loaded only when all match (a file truncated or
    replaced since is rebuilt, never loaded).
    """
    _private(directory)
    target = directory / name
    record = {
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "compiler": compiler,
        "flags": list(flags),
    }
    if os.path.lexists(target):
        reason = _verified(target, record)
        if reason is None:
            return target
        if os.path.lexists(target.with_suffix(".json")):  # no record: an old cache, no warning
            warnings.warn(
                f"pysnn.native: the cached kernel library {target} is not loaded: {reason}. "
                "It is rebuilt",
                UserWarning,
                stacklevel=2,
            )
    # Build under a temporary name, then rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        _run_compiler(compiler, flags, tmp, source)
        digest, size = _sha256_of(Path(tmp))
        os.chmod(tmp, 0o700)
        write_atomic(
            target.with_suffix(".json"),
            lambda f: f.write(json.dumps({**record, "sha256": digest, "size": size}).encode()),
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    reason = _verified(target, record)
    if reason is not None:  # another process replaced it meanwhile, or the folder misbehaves
        raise RuntimeError(f"the kernel library just built, {target}, fails its check: {reason}")
    return target


def _torch_uses_gnu_openmp() -> bool:
    """Whether torch runs its threads on GNU OpenMP, ``libgomp.so.1`` already loaded in this
    process (Linux): then the kernels are built with ``-fopenmp``, the loader resolves their
    ``libgomp.so.1`` to that same library, and they share its thread pool instead of starting
    POSIX threads next to its spinning workers."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        with open("/proc/self/maps") as maps:
            return any(line.rstrip().endswith("/libgomp.so.1") for line in maps)
    except OSError:  # not Linux
        return False


def _build_spec(openmp: bool = True) -> Tuple[str, Tuple[str, ...], str]:
    """``(compiler, flags, file name)`` of the kernel library for this source, compiler and
    machine (with ``openmp``: on torch's OpenMP runtime where it has one, see
    :func:`_torch_uses_gnu_openmp`)."""
    if sys.platform not in ("linux", "darwin"):
        raise RuntimeError(f"fused kernels are built on Linux and macOS only, not {sys.platform}")
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC, or install cc/gcc/clang)")
    flags = _FLAGS
    if _torch_fuses_multiply_add():
        flags += ("-DPYSNN_FMA=1",)
    if platform.machine() in ("x86_64", "AMD64"):
        # The vector extensions torch itself dispatches to on this CPU.
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.startswith("AVX512"):
            flags += ("-mavx512f", "-mavx2", "-mfma")
        elif capability == "AVX2":
            flags += ("-mavx2", "-mfma")
    if openmp and _torch_uses_gnu_openmp():
        flags += ("-fopenmp",)
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join((compiler, *flags, platform.machine(), sys.platform)).encode()
    ).hexdigest()[:16]
    return compiler, flags, f"kernels-{key}.so"


def _build(openmp: bool = True) -> ctypes.CDLL:
    """Compile ``kernels.c`` into the cache (once per source, compiler and machine), verify it
    (:func:`_compile_into`) and load it."""
    compiler, flags, name = _build_spec(openmp)
    try:
        try:
            target = _compile_into(_cache_dir(), name, compiler, flags)
        except OSError as err:  # unwritable (read-only home) or not private: a private folder
            if isinstance(err, _NotPrivate):
                warnings.warn(
                    f"pysnn.native: {err}; the kernels are built in a private temporary folder "
                    "instead",
                    UserWarning,
                    stacklevel=2,
                )
            target = _compile_into(_fallback_dir(), name, compiler, flags)
    except RuntimeError:
        if "-fopenmp" not in flags:
            raise
        return _build(openmp=False)  # a compiler without OpenMP: POSIX threads
    lib = ctypes.CDLL(str(target))
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suffix in _DTYPES.values():
        lif = getattr(lib, f"pysnn_lif_{suffix}")
        lif.argtypes = [i64, i64, i64] + [ptr] * 11 + [i64, ptr, ctypes.c_int, i64]
        lif.restype = None
        inplace = getattr(lib, f"pysnn_lif_inplace_{suffix}")
        inplace.argtypes = [i64, i64] + [ptr] * 6 + [ctypes.c_int]
        inplace.restype = None
        backward = getattr(lib, f"pysnn_lif_backward_{suffix}")
        backward.argtypes = [i64, i64, i64] + [ptr] * 10 + [ctypes.c_int] * 3
        backward.argtypes += [ctypes.c_double, ctypes.c_int, i64]
        backward.restype = None
        trace = getattr(lib, f"pysnn_trace_{suffix}")
        trace.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ctypes.c_int]
        trace.restype = None
        theta = getattr(lib, f"pysnn_theta_{suffix}")
        theta.argtypes = [i64, i64, ptr, ptr, ctypes.c_int, ptr]
        theta.restype = None
        stdp = getattr(lib, f"pysnn_stdp_rows_{suffix}")
        stdp.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ctypes.c_double, ctypes.c_double]
        stdp.argtypes += [ptr, ptr, ctypes.c_int, ctypes.c_double, ctypes.c_double]
        stdp.restype = i64
        triplet = getattr(lib, f"pysnn_triplet_{suffix}")
        triplet.argtypes = [i64, i64] + [ptr] * 7 + [ctypes.c_int, ptr, ptr, ctypes.c_int]
        triplet.argtypes += [ctypes.c_double, ctypes.c_double, ptr]
        triplet.restype = i64
        recurrent = getattr(lib, f"pysnn_recurrent_{suffix}")
        recurrent.argtypes = (
            [i64, i64, i64, i64] + [ptr] * 11 + [ctypes.c_int] + [ptr] * 6 + [ctypes.c_int]
        )
        recurrent.restype = None
        layers = getattr(lib, f"pysnn_layers_{suffix}")
        layers.argtypes = [i64, i64, ptr, i64, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, ptr]
        layers.argtypes += [ctypes.c_int, i64, i64, ptr]
        layers.restype = i64
        lib.pysnn_free.argtypes = [ptr]
        lib.pysnn_free.restype = None
        linear = getattr(lib, f"pysnn_linear_event_{suffix}")
        linear.argtypes = [i64, i64, i64, ptr, ptr, ptr, i64]
        linear.restype = i64
        block = getattr(lib, f"pysnn_linear_event_block_{suffix}")
        block.argtypes = [i64, i64, i64, ptr, ptr, ptr, i64, ctypes.c_int]
        block.restype = i64
        transpose = getattr(lib, f"pysnn_transpose_{suffix}")
        transpose.argtypes = [i64, i64, ptr, ptr, i64]
        transpose.restype = None
        update = getattr(lib, f"pysnn_row_update_{suffix}")
        update.argtypes = [i64, i64, ptr, i64, ptr, ptr, ptr, ctypes.c_int]
        update.argtypes += [ctypes.c_double, ctypes.c_double]
        update.restype = ctypes.c_int
    return lib


def compile_generated(source: str) -> ctypes.CDLL:
    """Compile generated C code (a kernel the engine wrote for a user's module, see
    :mod:`pysnn.codegen`) into the private kernel cache and load it, with the checks and
    flags of the built-in kernels (``-ffp-contract=off``: each operation rounded as torch rounds
    it; ``-fopenmp`` where torch runs on GNU OpenMP and the compiler has it). Cached by the
    SHA-256 of the source, compiler and flags.

    Raises:
        RuntimeError: no compiler, or the compilation failed.
    """
    try:
        return _compile_generated(source, openmp=True)
    except RuntimeError:  # a compiler without OpenMP: the loops run on one thread
        return _compile_generated(source, openmp=False)


def _compile_generated(source: str, openmp: bool) -> ctypes.CDLL:
    compiler, flags, _ = _build_spec(openmp=openmp)
    key = hashlib.sha256((source + " ".join((compiler, *flags))).encode()).hexdigest()[:20]
    try:
        directory = _private(_cache_dir())
    except OSError:
        directory = _fallback_dir()
    path = directory / f"generated-{key}.c"
    if not path.exists() or path.read_text() != source:
        write_atomic(path, lambda f: f.write(source.encode()))
    target = _compile_into(directory, f"generated-{key}.so", compiler, flags, path)
    return ctypes.CDLL(str(target))


def _library() -> Optional[ctypes.CDLL]:
    global _lib, _reason, _tried, _lif_f32, _lif_f64, _trace_f32, _trace_f64, _linear_f32
    global _linear_f64, _block_f32, _block_f64, _transpose_f32, _transpose_f64, _update_f32
    global _update_f64, _backward_f32, _backward_f64, _lif_inplace_f32, _lif_inplace_f64
    global _theta_f32, _theta_f64, _stdp_f32, _stdp_f64, _recurrent_f32, _recurrent_f64
    global _layers_f32, _layers_f64, _triplet_f32, _triplet_f64
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    lib = _build()
                    _lif_f32, _lif_f64 = lib.pysnn_lif_f32, lib.pysnn_lif_f64
                    _backward_f32 = lib.pysnn_lif_backward_f32
                    _lif_inplace_f32 = lib.pysnn_lif_inplace_f32
                    _lif_inplace_f64 = lib.pysnn_lif_inplace_f64
                    _backward_f64 = lib.pysnn_lif_backward_f64
                    _trace_f32, _trace_f64 = lib.pysnn_trace_f32, lib.pysnn_trace_f64
                    _theta_f32, _theta_f64 = lib.pysnn_theta_f32, lib.pysnn_theta_f64
                    _stdp_f32, _stdp_f64 = lib.pysnn_stdp_rows_f32, lib.pysnn_stdp_rows_f64
                    _triplet_f32, _triplet_f64 = lib.pysnn_triplet_f32, lib.pysnn_triplet_f64
                    _recurrent_f32 = lib.pysnn_recurrent_f32
                    _recurrent_f64 = lib.pysnn_recurrent_f64
                    _layers_f32, _layers_f64 = lib.pysnn_layers_f32, lib.pysnn_layers_f64
                    _linear_f32 = lib.pysnn_linear_event_f32
                    _linear_f64 = lib.pysnn_linear_event_f64
                    _block_f32 = lib.pysnn_linear_event_block_f32
                    _block_f64 = lib.pysnn_linear_event_block_f64
                    _transpose_f32 = lib.pysnn_transpose_f32
                    _transpose_f64 = lib.pysnn_transpose_f64
                    _update_f32 = lib.pysnn_row_update_f32
                    _update_f64 = lib.pysnn_row_update_f64
                    _lib = lib
                except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                    _reason = str(err)
                _tried = True
    return _lib


def available() -> bool:
    """Whether the fused kernels are enabled and loaded (compiling them on the first call)."""
    return _enabled and _library() is not None


def status() -> str:
    """One line saying whether the fused kernels are in use, and if not, why."""
    if not _enabled:
        return "fused CPU kernels disabled (PYSNN_NATIVE=0 or pysnn.native.set_enabled(False))"
    if _library() is None:
        return f"fused CPU kernels unavailable, torch operations are used: {_reason}"
    return "fused CPU kernels in use"


def set_enabled(value: bool) -> None:
    """Turn the fused kernels on or off for the process (off: every neuron uses torch ops)."""
    global _enabled
    _enabled = bool(value)


@contextlib.contextmanager
def enabled(value: bool) -> Iterator[None]:
    """Context manager: fused kernels on or off inside the block, restored afterwards."""
    previous = _enabled
    set_enabled(value)
    try:
        yield
    finally:
        set_enabled(previous)


def usable(*tensors: Optional[torch.Tensor], differentiable: bool = False) -> bool:
    """Whether a fused kernel may run on these floating-point tensors (``None`` entries skipped).

    True when the kernels are loaded and enabled, nothing is being compiled, the first tensor is
    not empty, and every tensor is on the CPU, contiguous, of the first one's dtype (float32 or float64), and not in need of a
    gradient (``requires_grad`` with grad mode on), unless ``differentiable`` (the caller wraps
    the kernel in an autograd Function with its backward kernel). A caller that updates a tensor
    in place also rejects one that ``requires_grad`` at all (it may be saved for a backward pass).
    """
    if _lib is None and (not _enabled or _library() is None):
        return False
    if not _enabled or _is_compiling():
        return False
    first = tensors[0]
    dtype = first.dtype
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or not first.numel():
        return False  # (an empty batch: the kernels divide by the batch size)
    grad = not differentiable and _grad_enabled()
    for t in tensors:
        if t is not None and (
            t.dtype is not dtype
            or not t.is_cpu
            or not t.is_contiguous()
            or (grad and t.requires_grad)
        ):
            return False
    return True


_FLOAT32, _FLOAT64 = torch.float32, torch.float64
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


_TABLES: "OrderedDict[tuple, tuple]" = OrderedDict()
_TABLES_MAX = 256


def _remember(key: tuple, table: Tuple[int, tuple], owners: tuple) -> None:
    """Keep a parameter table in the small process-wide cache (least recently added dropped),
    keyed on the ids of the parameter tuples ``owners``, which the entry holds (so those ids stay
    unique while it exists). Tables with expanded copies are not kept: a copy would go stale
    after an in-place edit of its source."""
    if table[1][1]:
        return
    _TABLES[key] = (table, owners)
    if len(_TABLES) > _TABLES_MAX:
        _TABLES.popitem(last=False)


def _table(
    tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype], shape: Sequence[int]
) -> Optional[Tuple[int, object]]:
    """``(address, keep-alive)`` of an int64 table of ``(address, stride)`` per parameter, or
    ``None`` if a parameter is not a CPU tensor of the given dtype.

    Stride 0 means one value shared by all neurons, 1 means ``n`` per-neuron values. The kernels
    read the values through the addresses, so in-place edits are always seen. A parameter
    broadcastable to ``shape`` but laid out differently (e.g. ``(C, 1, 1)``) is expanded into a
    copy made now, kept alive by the second element ``(table, copies)``.
    """
    n = 1
    for size in shape:
        n *= size
    values: List[int] = []
    copies: List[torch.Tensor] = []
    for t, dtype in zip(tensors, dtypes):
        if t.dtype != dtype or not t.is_cpu:
            return None
        numel = t.numel()
        if numel == 1:
            values += (t.data_ptr(), 0)
        elif numel == n and t.is_contiguous():
            values += (t.data_ptr(), 1)
        else:
            t = t.expand(tuple(shape)).contiguous()
            copies.append(t)
            values += (t.data_ptr(), 1)
    table = torch.tensor(values, dtype=torch.int64)
    return table.data_ptr(), (table, copies)


#: Element updates below which the LIF kernels run on one thread (split_neurons in kernels.c):
#: smaller in-place single steps take the one-thread short entry point.
_PARALLEL_MIN = 1 << 18


def _trace_table(
    trace_params: "TraceParameters", f: torch.dtype, shape: torch.Size
) -> Optional[Tuple[int, object]]:
    """``(address, keep-alive)`` of the parameter table of the trace kernel (cached as
    :func:`_lif_table`), or ``None`` if a parameter does not fit it."""
    key = (id(trace_params), f, shape)
    table = _TABLES.get(key)
    if table is not None:
        return table[0]
    table = _table((trace_params.decay, trace_params.scale), (f, f), shape)
    if table is None:
        return None
    _remember(key, table, (trace_params,))
    return table


def _lif_table(
    params: "LIFParameters", trace_params: "TraceParameters", f: torch.dtype, shape: torch.Size
) -> Optional[Tuple[int, object]]:
    """``(address, keep-alive)`` of the parameter table of the LIF kernels (cached per parameter
    tuples, dtype and neuron shape), or ``None`` if a parameter does not fit them."""
    key = (id(params), id(trace_params), f, shape)
    table = _TABLES.get(key)
    if table is not None:
        return table[0]
    table = _table(
        (
            params.decay,
            params.leak,
            params.v_reset,
            params.thresh,
            params.refrac_steps,
            trace_params.decay,
            trace_params.scale,
        ),
        (f, f, f, f, torch.int64, f, f),
        shape,
    )
    if table is None:
        return None
    _remember(key, table, (params, trace_params))
    return table


def lif_steps(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    params: "LIFParameters",
    trace_params: "TraceParameters",
    theta: Optional[torch.Tensor] = None,
    out: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    save: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run ``T`` fused LIF steps with their trace update; returns new ``(spikes, v, refrac, trace)``.

    Called by the functional layer (:func:`pysnn.functional.lif.lif_trace_step`), never by
    modules. The state passed in is read only; the new state is written into new tensors (one
    update semantics on every path). Unchecked beyond dtypes (raw addresses are passed to C):
    shapes must be consistent; check :func:`usable` first.

    Args:
        x: input ``(T, B, *shape)`` or, for one step, ``(B, *shape)`` (mV), contiguous.
        v, refrac, trace: state ``(B, *shape)``, contiguous; ``refrac`` int64.
        params: :class:`pysnn.functional.lif.LIFParameters` (discretised, broadcastable to
            ``shape``).
        trace_params: :class:`pysnn.functional.trace.TraceParameters`.
        theta: ``None``, a shared offset ``shape`` or a per-sample offset ``(B, *shape)`` (mV).
        out: ``(v, refrac, trace)`` to write the new state into (each may alias its input, or be
            ``None`` for a new tensor; same shapes, dtypes and contiguity), or ``None``.
        save: ``None``, or two contiguous tensors shaped like ``x``, of ``x``'s dtype and
            ``torch.uint8``, that receive what :func:`lif_backward` needs: the voltage of each
            step before the reset (mV) and 1 where the neuron was refractory (the second may be
            ``None`` for neurons that are never refractory).

    Returns:
        The spikes (shaped like ``x``) and the state after the last step, or ``None`` (nothing
        done) if a parameter does not fit the kernel (dtype or device).
    """
    if refrac.dtype != torch.int64 or not refrac.is_contiguous() or not refrac.is_cpu:
        return None
    f = v.dtype
    table = _lif_table(params, trace_params, f, v.shape[1:])
    if table is None:
        return None
    spikes = torch.empty_like(x)
    v_new, r_new, t_new = (None, None, None) if out is None else out
    v_new = torch.empty_like(v) if v_new is None else v_new
    r_new = torch.empty_like(refrac) if r_new is None else r_new
    t_new = torch.empty_like(trace) if t_new is None else t_new
    n = v.numel() // v.shape[0]
    if (
        v_new is v
        and r_new is refrac
        and t_new is trace
        and theta is None
        and save is None
        and x.numel() < _PARALLEL_MIN
    ):  # the common single step on reused state: the short entry point (fewer arguments)
        (_lif_inplace_f32 if f is torch.float32 else _lif_inplace_f64)(
            x.numel() // n,
            n,
            x.data_ptr(),
            v.data_ptr(),
            refrac.data_ptr(),
            trace.data_ptr(),
            spikes.data_ptr(),
            table[0],
            trace_params.additive,
        )
        return spikes, v_new, r_new, t_new
    (_lif_f32 if f == torch.float32 else _lif_f64)(
        x.numel() // v.numel(),
        v.shape[0],
        n,
        x.data_ptr(),
        v.data_ptr(),
        refrac.data_ptr(),
        trace.data_ptr(),
        v_new.data_ptr(),
        r_new.data_ptr(),
        t_new.data_ptr(),
        spikes.data_ptr(),
        None if save is None else save[0].data_ptr(),
        None if save is None or save[1] is None else save[1].data_ptr(),
        None if theta is None else theta.data_ptr(),
        0 if theta is None or theta.dim() != v.dim() else n,  # shared theta: stride 0
        table[0],
        trace_params.additive,
        torch.get_num_threads(),  # the kernel itself stays on one thread for small work
    )
    return spikes, v_new, r_new, t_new


class LIFStepKernel:
    """One fused LIF step with its trace, in place, for one input shape and fixed parameters.

    Built by :func:`lif_step_kernel` for a module's repeated single steps: calling it costs one
    allocation (the spikes) and one C call, nothing else. It reads the parameters through their
    memory (it holds the parameter tuples), so in-place edits of the discretised parameters are
    seen; a caller must rebuild it when the tuples are recomputed. Unchecked: the caller passes
    contiguous CPU tensors of the shape and dtype it was built for (``refrac`` int64).
    """

    __slots__ = ("_fn", "_rows", "_n", "_table", "_additive", "_keep")

    def __init__(self, fn: object, rows: int, n: int, table: Tuple[int, object], owners: tuple):
        self._fn, self._rows, self._n = fn, rows, n
        self._table, self._keep = table[0], (table[1], owners)
        self._additive = owners[1].additive

    def __call__(
        self, x: torch.Tensor, v: torch.Tensor, refrac: torch.Tensor, trace: torch.Tensor
    ) -> Optional[torch.Tensor]:
        """Advance ``v``, ``refrac``, ``trace`` ``(B, *shape)`` in place by one step of input ``x``;
        returns the spikes (a new tensor), or ``None`` (nothing done) while the kernels are
        disabled (:func:`set_enabled`)."""
        if not _enabled:
            return None
        spikes = torch.empty_like(x)
        self._fn(
            self._rows,
            self._n,
            x.data_ptr(),
            v.data_ptr(),
            refrac.data_ptr(),
            trace.data_ptr(),
            spikes.data_ptr(),
            self._table,
            self._additive,
        )
        return spikes


def lif_step_kernel(
    params: "LIFParameters", trace_params: "TraceParameters", x: torch.Tensor
) -> Optional[LIFStepKernel]:
    """A :class:`LIFStepKernel` for inputs shaped and typed like ``x`` ``(B, *shape)``, or
    ``None`` where the in-place single-step kernel does not apply (kernels unavailable, a
    dtype or device that does not fit, or a step large enough to be worth several threads)."""
    if not available() or x.dtype not in _DTYPES or not x.is_cpu or x.numel() >= _PARALLEL_MIN:
        return None
    table = _lif_table(params, trace_params, x.dtype, x.shape[1:])
    if table is None:
        return None
    fn = _lif_inplace_f32 if x.dtype is torch.float32 else _lif_inplace_f64
    n = 1
    for size in x.shape[1:]:
        n *= size
    return LIFStepKernel(fn, x.shape[0], n, table, (params, trace_params))


class AdaptiveLIFStepKernel:
    """One fused LIF step with its trace and threshold offset ``theta``, then the update of
    ``theta`` (:func:`pysnn.functional.lif.adaptive_theta_step`), all in place, for one input
    shape and fixed parameters (see :class:`LIFStepKernel`). ``theta`` is per sample
    ``(B, *shape)`` or shared ``shape`` (updated with the spikes summed over the batch); without
    ``update`` it is read only (a shared ``theta`` in ``eval()`` mode)."""

    __slots__ = ("_lif", "_theta", "_rows", "_n", "_table", "_theta_table", "_additive")
    __slots__ += ("_shared", "_update", "_keep")

    def __init__(
        self,
        x: torch.Tensor,
        table: Tuple[int, object],
        theta_table: Tuple[int, object],
        owners: tuple,
        shared: bool,
        update: bool,
    ):
        f32 = x.dtype is torch.float32
        self._lif, self._theta = (_lif_f32, _theta_f32) if f32 else (_lif_f64, _theta_f64)
        self._rows, self._n = x.shape[0], _per_sample(x)
        self._table, self._theta_table = table[0], theta_table[0]
        self._keep = (table[1], theta_table[1], owners)
        self._additive, self._shared, self._update = owners[1].additive, shared, update

    def __call__(
        self,
        x: torch.Tensor,
        v: torch.Tensor,
        refrac: torch.Tensor,
        trace: torch.Tensor,
        theta: torch.Tensor,
    ) -> Optional[torch.Tensor]:
        """Advance the state in place by one step of input ``x``; the spikes (a new tensor), or
        ``None`` (nothing done) while the kernels are disabled."""
        if not _enabled:
            return None
        spikes = torch.empty_like(x)
        v_p, r_p, t_p, s_p, th_p = (
            v.data_ptr(),
            refrac.data_ptr(),
            trace.data_ptr(),
            spikes.data_ptr(),
            theta.data_ptr(),
        )
        n = self._n
        self._lif(
            1, self._rows, n, x.data_ptr(), v_p, r_p, t_p, v_p, r_p, t_p, s_p, None, None, th_p,
            0 if self._shared else n, self._table, self._additive, 1,
        )  # fmt: skip
        if self._update:
            self._theta(self._rows, n, s_p, th_p, self._shared, self._theta_table)
        return spikes


def adaptive_lif_step_kernel(
    params: "LIFParameters",
    trace_params: "TraceParameters",
    theta_decay: torch.Tensor,
    theta_plus: torch.Tensor,
    x: torch.Tensor,
    shared: bool,
    update: bool,
) -> Optional[AdaptiveLIFStepKernel]:
    """An :class:`AdaptiveLIFStepKernel` for inputs like ``x`` ``(B, *shape)``, or ``None``
    where it does not apply (see :func:`lif_step_kernel`)."""
    if not available() or x.dtype not in _DTYPES or not x.is_cpu or x.numel() >= _PARALLEL_MIN:
        return None
    table = _lif_table(params, trace_params, x.dtype, x.shape[1:])
    if table is None:
        return None
    theta_table = _table((theta_decay, theta_plus), (x.dtype, x.dtype), x.shape[1:])
    if theta_table is None:
        return None
    owners = (params, trace_params, theta_decay, theta_plus)
    return AdaptiveLIFStepKernel(x, table, theta_table, owners, shared, update)


def _per_sample(x: torch.Tensor) -> int:
    n = 1
    for size in x.shape[1:]:
        n *= size
    return n


class TraceStepKernel:
    """One fused trace update in place, for one input shape and fixed parameters (see
    :class:`LIFStepKernel`)."""

    __slots__ = ("_fn", "_rows", "_n", "_table", "_additive", "_keep")

    def __init__(self, fn: object, rows: int, n: int, table: Tuple[int, object], owner: object):
        self._fn, self._rows, self._n = fn, rows, n
        self._table, self._keep = table[0], (table[1], owner)
        self._additive = owner.additive

    def __call__(self, x: torch.Tensor, trace: torch.Tensor) -> bool:
        """Update ``trace`` ``(B, *shape)`` in place from ``x``; ``False`` (nothing done) while
        the kernels are disabled."""
        if not _enabled:
            return False
        self._fn(
            self._rows,
            self._n,
            x.data_ptr(),
            trace.data_ptr(),
            trace.data_ptr(),
            self._table,
            self._additive,
        )
        return True


def trace_step_kernel(
    trace_params: "TraceParameters", x: torch.Tensor
) -> Optional[TraceStepKernel]:
    """A :class:`TraceStepKernel` for inputs shaped and typed like ``x`` ``(B, *shape)``, or
    ``None`` where it does not apply (see :func:`lif_step_kernel`)."""
    if not available() or x.dtype not in _DTYPES or not x.is_cpu:
        return None
    f = x.dtype
    table = _trace_table(trace_params, f, x.shape[1:])
    if table is None:
        return None
    fn = _trace_f32 if f is torch.float32 else _trace_f64
    return TraceStepKernel(fn, x.shape[0], _per_sample(x), table, trace_params)


def lif_backward(
    grad_spikes: torch.Tensor,
    surrogate_grad: Union[torch.Tensor, Tuple[int, float]],
    v_save: torch.Tensor,
    r_save: Optional[torch.Tensor],
    grad_v: torch.Tensor,
    grad_trace: torch.Tensor,
    params: "LIFParameters",
    trace_params: "TraceParameters",
    detach_reset: bool,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Backward pass of :func:`lif_steps` (called with ``save``); returns ``(grad_x, grad_v0,
    grad_trace0)``: the gradients with respect to the input ``(T, B, *shape)`` and to the state
    ``v`` and ``trace`` before the first step ``(B, *shape)``, or ``None`` where a parameter does
    not fit the kernel.

    Args:
        grad_spikes: gradient with respect to the spikes ``(T, B, *shape)``: contiguous, or one
            value expanded to that shape (all strides 0, e.g. the gradient of a sum), which the
            kernel reads as such.
        surrogate_grad: the surrogate derivative at ``v_save - thresh``, ``(T, B, *shape)``, or
            ``(code, parameter)`` of a surrogate the kernel computes itself: 1 fast sigmoid, 2
            arctan, 3 sigmoid (parameter ``k``, 1/mV), 4 triangle, 5 straight-through
            (parameter ``w``, mV); see :mod:`pysnn.surrogate`.
        v_save, r_save: what :func:`lif_steps` saved (``r_save`` ``None``: never refractory).
        grad_v, grad_trace: gradients with respect to ``v`` and ``trace`` after the last step.
        params, trace_params: those of the forward pass.
        detach_reset: no gradient through the spike into the reset.

    All tensors contiguous, on the CPU, of one dtype (``r_save``: ``torch.uint8``).
    """
    f = v_save.dtype
    table = _lif_table(params, trace_params, f, grad_v.shape[1:])
    if table is None:
        return None
    grad_x = torch.empty_like(v_save)
    grad_v0, grad_trace0 = torch.empty_like(grad_v), torch.empty_like(grad_trace)
    n = grad_v.numel() // grad_v.shape[0]
    scalar = grad_spikes.numel() > 0 and not any(grad_spikes.stride())
    (_backward_f32 if f == torch.float32 else _backward_f64)(
        v_save.shape[0],
        grad_v.shape[0],
        n,
        grad_spikes.data_ptr(),
        surrogate_grad.data_ptr() if isinstance(surrogate_grad, torch.Tensor) else None,
        v_save.data_ptr(),
        None if r_save is None else r_save.data_ptr(),
        grad_v.data_ptr(),
        grad_trace.data_ptr(),
        grad_x.data_ptr(),
        grad_v0.data_ptr(),
        grad_trace0.data_ptr(),
        table[0],
        trace_params.additive,
        detach_reset,
        *((0, 0.0) if isinstance(surrogate_grad, torch.Tensor) else surrogate_grad),
        scalar,
        torch.get_num_threads(),
    )
    return grad_x, grad_v0, grad_trace0


def trace_step(
    x: torch.Tensor,
    trace: torch.Tensor,
    trace_params: "TraceParameters",
    out: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """One fused trace update from ``x`` ``(B, *shape)``: returns the new trace.

    ``trace`` ``(B, *shape)`` is read; the result goes into ``out`` (which may be ``trace``) or a
    new tensor. Returns ``None`` (nothing done) if a parameter does not fit the kernel. See
    :func:`lif_steps` for the conventions.
    """
    f = trace.dtype
    table = _trace_table(trace_params, f, trace.shape[1:])
    if table is None:
        return None
    new = torch.empty_like(trace) if out is None else out
    (_trace_f32 if f == torch.float32 else _trace_f64)(
        trace.shape[0],
        trace.numel() // trace.shape[0],
        x.data_ptr(),
        trace.data_ptr(),
        new.data_ptr(),
        table[0],
        trace_params.additive,
    )
    return new


#: :func:`linear_event` uses the cache-blocked kernel from this many rows on.
BLOCK_ROWS = 16


def linear_event(x: torch.Tensor, weight_t: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``x @ weight_t`` from the non-zero entries of ``x`` only; returns ``(out, active)``.

    Args:
        x: ``(N, in)``, contiguous, float32 or float64, on the CPU.
        weight_t: ``(in, out)``, contiguous, same dtype: the presynaptic-major weight, e.g.
            :func:`transposed` of a :class:`~pysnn.connection.Linear`'s row-major weight.

    Returns:
        ``out`` ``(N, out)`` (a new tensor) and the number of non-zero entries of ``x``. The sum runs
        over the inputs in increasing order. Large products split the output columns over
        ``torch.get_num_threads()`` threads. From :data:`BLOCK_ROWS` rows on (a multi-step block)
        a cache-blocked variant lists the active inputs first and keeps blocks of weights in cache
        while all rows use them; the result is the same to the bit. No gradient is recorded.

    Raises:
        ValueError: mismatched shapes, or tensors the kernel cannot take (see :func:`usable`).
        RuntimeError: the kernels are not available (:func:`status` says why).
    """
    if not available():
        raise RuntimeError(f"pysnn.native.linear_event: {status()}")
    if x.dim() != 2 or weight_t.dim() != 2 or x.shape[1] != weight_t.shape[0]:
        raise ValueError(
            "linear_event needs x of shape (N, in) and weight_t of shape (in, out), got "
            f"x {tuple(x.shape)} and weight_t {tuple(weight_t.shape)}"
        )
    with torch.no_grad():
        if not usable(x, weight_t):
            raise ValueError(
                "linear_event needs contiguous CPU tensors x and weight_t of one dtype, float32 or "
                f"float64; got {x.dtype} on {x.device} and {weight_t.dtype} on {weight_t.device}"
            )
        return _linear_event(x, weight_t)


def transposed(matrix: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A contiguous ``matrix.t()`` ``(cols, rows)`` of a 2-D ``matrix``, never aliasing it.

    Written into ``out`` when given (a contiguous ``(cols, rows)`` tensor of ``matrix``'s dtype
    and device: reusing memory avoids the page faults of a fresh allocation), else into a new
    tensor. A cache-tiled copy, split over ``torch.get_num_threads()`` threads, where the kernels
    apply (contiguous float32/float64 CPU tensors), else torch's ``copy_``. Exact; no gradient.
    """
    matrix = matrix.detach()
    shape = (matrix.shape[1], matrix.shape[0]) if matrix.dim() == 2 else None
    if out is None or shape is None or tuple(out.shape) != shape or out.dtype != matrix.dtype:
        out = torch.empty(shape or (0,), dtype=matrix.dtype, device=matrix.device)
    if matrix.dim() != 2 or not usable(matrix, out):
        return out.copy_(matrix.t()) if shape is not None else matrix.t().clone()
    (_transpose_f32 if matrix.dtype == torch.float32 else _transpose_f64)(
        matrix.shape[0],
        matrix.shape[1],
        matrix.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out


def row_update_(
    weight: torch.Tensor,
    rows: torch.Tensor,
    dw: torch.Tensor,
    copy: Optional[torch.Tensor],
    bounds: Optional[Tuple[float, float]],
) -> bool:
    """``weight[rows] = clamp(weight[rows] + dw, *bounds)`` in one fused pass, in place, and the
    same values into ``copy`` (the contiguous ``weight.t()``) when given; ``False`` (nothing done)
    where the kernel does not apply or a row is out of range (the caller then uses torch ops,
    which give the same values and raise the usual error).

    Exactly torch's ``index_select``/``add_``/``clamp_``/``index_copy_``. ``weight`` ``(out, in)``
    and ``dw`` ``(len(rows), in)`` contiguous of one dtype on the CPU, ``rows`` int64; no gradient
    is recorded, and ``weight``'s version counter is bumped as by any in-place op.
    """
    if (
        weight.dim() != 2
        or rows.dtype != torch.int64
        or not rows.is_cpu
        or not rows.is_contiguous()
        or not usable(weight, dw, copy)
        or (copy is not None and tuple(copy.shape) != (weight.shape[1], weight.shape[0]))
    ):
        return False
    lo, hi = bounds if bounds is not None else (0.0, 0.0)
    done = (_update_f32 if weight.dtype == torch.float32 else _update_f64)(
        weight.shape[0],
        weight.shape[1],
        rows.data_ptr(),
        rows.shape[0],
        dw.data_ptr(),
        weight.data_ptr(),
        None if copy is None else copy.data_ptr(),
        bounds is not None,
        lo,
        hi,
    )
    if done:
        torch.autograd.graph.increment_version(weight)
    return bool(done)


def stdp_rows_(
    weight: torch.Tensor,
    copy: Optional[torch.Tensor],
    s_post: torch.Tensor,
    x_post: torch.Tensor,
    pre_trace: torch.Tensor,
    arriving: torch.Tensor,
    pot: float,
    dep: float,
    bounds: Optional[Tuple[float, float]],
) -> Optional[int]:
    """Pair-STDP of one sample applied to ``weight`` ``(out, in)`` in place (and to ``copy``, its
    contiguous transpose, when given): for each postsynaptic ``i`` that spiked or has a trace,
    ``w[i] = clamp(w[i] + addcmul(outer(s * pot, pre_trace)[i], x_post[i] * dep, arriving))``.

    Exactly the torch operations of :func:`pysnn.functional.plasticity.stdp_rows_update`.
    ``s_post``, ``x_post`` ``(out,)``, ``pre_trace``, ``arriving`` ``(in,)``; all contiguous CPU
    tensors of one dtype. Returns the number of rows changed, or ``None`` (nothing done) where
    the kernel does not apply.
    """
    if not (
        stdp_rows_fit(weight, copy, s_post, x_post, pre_trace, arriving)
        and usable(weight, copy, s_post, x_post, pre_trace, arriving)
    ):
        return None
    return STDPRowsKernel(weight)(
        weight, copy, s_post, x_post, pre_trace, arriving, pot, dep, bounds
    )


class STDPRowsKernel:
    """:func:`stdp_rows_` for fixed shapes and dtype, without its checks: for a learning rule's
    repeated one-sample updates, after it has checked once what :func:`stdp_rows_` checks (and
    keeps checking the tensors' shapes and dtypes itself)."""

    __slots__ = ("_fn", "_n_out", "_n_in")

    def __init__(self, weight: torch.Tensor) -> None:
        self._fn = _stdp_f32 if weight.dtype == torch.float32 else _stdp_f64
        self._n_out, self._n_in = weight.shape

    def __call__(
        self,
        weight: torch.Tensor,
        copy: Optional[torch.Tensor],
        s_post: torch.Tensor,
        x_post: torch.Tensor,
        pre_trace: torch.Tensor,
        arriving: torch.Tensor,
        pot: float,
        dep: float,
        bounds: Optional[Tuple[float, float]],
    ) -> Optional[int]:
        """The rows changed, or ``None`` (nothing done) while the kernels are disabled."""
        if not _enabled:
            return None
        lo, hi = bounds if bounds is not None else (0.0, 0.0)
        changed = self._fn(
            self._n_out,
            self._n_in,
            s_post.data_ptr(),
            x_post.data_ptr(),
            pre_trace.data_ptr(),
            arriving.data_ptr(),
            pot,
            dep,
            weight.data_ptr(),
            None if copy is None else copy.data_ptr(),
            bounds is not None,
            lo,
            hi,
        )
        if changed:
            torch.autograd.graph.increment_version(weight)
        return changed


def _rule_weight_fits(weight: torch.Tensor) -> bool:
    """Whether a rule's row kernels apply to ``weight``: the kernels are available and it is a
    contiguous 2-D CPU tensor of a kernel dtype."""
    return (
        available()
        and weight.dim() == 2
        and weight.dtype in _DTYPES
        and weight.is_cpu
        and weight.is_contiguous()
    )


def stdp_rows_kernel(weight: torch.Tensor) -> Optional[STDPRowsKernel]:
    """A :class:`STDPRowsKernel` for ``weight`` ``(out, in)``, or ``None`` where the kernels do
    not apply (unavailable, another device or dtype, not a contiguous 2-D tensor)."""
    if not _rule_weight_fits(weight):
        return None
    return STDPRowsKernel(weight)


class TripletKernel:
    """One step of one-sample triplet STDP applied in place (``pysnn_triplet`` in ``kernels.c``:
    the operations of :class:`pysnn.learning.TripletSTDP` without weight dependence, and of the
    dense clamped weight update, bit for bit) for a weight of fixed shape and dtype, without
    checks: the caller (the rule's one-sample step, or the fused loop of
    :func:`pysnn.engine.layers.run_layers`, which runs the same step) checks every tensor.

    Args:
        weight: the ``(out, in)`` weight (its shape and dtype).
        amplitudes: ``(a2_plus, a3_plus, a2_minus, a3_minus)``.
        decays: the traces' decay factors per step, ``(r1, o1, r2, o2)``.
        nearest: nearest-spike traces (set to 1 at a spike) instead of all-to-all (+1).

    Attributes:
        constants: ``amplitudes + decays``, as the kernel takes them.
        nearest: as given.
        work: the kernel's scratch memory (int64), also lent to :func:`layer_steps`.
    """

    __slots__ = ("_fn", "_n_out", "_n_in", "_table", "constants", "nearest", "work")

    def __init__(
        self,
        weight: torch.Tensor,
        amplitudes: Sequence[float],
        decays: Sequence[float],
        nearest: bool,
    ) -> None:
        self._fn = _triplet_f32 if weight.dtype == torch.float32 else _triplet_f64
        self._n_out, self._n_in = weight.shape
        self.constants = tuple(float(c) for c in (*amplitudes, *decays))
        if len(self.constants) != 8:
            raise ValueError("TripletKernel takes four amplitudes and four decay factors")
        self._table = torch.tensor(self.constants, dtype=torch.float64)
        self.nearest = bool(nearest)
        # int64 columns (in), then p (out) and q (in) in the weight's dtype, then dirty flags
        size = 8 * self._n_in + weight.element_size() * (self._n_out + self._n_in) + self._n_out
        self.work = torch.empty((size + 7) // 8, dtype=torch.int64)

    def __call__(
        self,
        weight: torch.Tensor,
        copy: Optional[torch.Tensor],
        s_post: torch.Tensor,
        arriving: torch.Tensor,
        traces: Sequence[torch.Tensor],
        bounds: Optional[Tuple[float, float]],
    ) -> Optional[int]:
        """One step: ``traces`` ``(r1, r2, o1, o2)`` (``(in,)``, ``(in,)``, ``(out,)``,
        ``(out,)``, contiguous) advanced in place, ``weight`` (and ``copy``, its contiguous
        transpose, when given) updated and clamped to ``bounds``; ``s_post`` ``(out,)`` and
        ``arriving`` ``(in,)`` this step's spikes. The rows changed, or ``None`` (nothing done)
        while the kernels are disabled."""
        if not _enabled:
            return None
        r1, r2, o1, o2 = traces
        lo, hi = bounds if bounds is not None else (0.0, 0.0)
        changed = self._fn(
            self._n_out,
            self._n_in,
            s_post.data_ptr(),
            arriving.data_ptr(),
            r1.data_ptr(),
            r2.data_ptr(),
            o1.data_ptr(),
            o2.data_ptr(),
            self._table.data_ptr(),
            self.nearest,
            weight.data_ptr(),
            None if copy is None else copy.data_ptr(),
            bounds is not None,
            lo,
            hi,
            self.work.data_ptr(),
        )
        torch.autograd.graph.increment_version(weight)  # (as the dense update's add_)
        return changed


def triplet_kernel(
    weight: torch.Tensor, amplitudes: Sequence[float], decays: Sequence[float], nearest: bool
) -> Optional[TripletKernel]:
    """A :class:`TripletKernel` for ``weight`` ``(out, in)``, or ``None`` where the kernels do
    not apply (unavailable, another device or dtype, not a contiguous 2-D tensor)."""
    if not _rule_weight_fits(weight):
        return None
    return TripletKernel(weight, amplitudes, decays, nearest)


#: Fields of the int64 descriptors of :func:`layer_steps`, in the order of ``kernels.c``.
LAYER_GROUP_FIELDS = ("kind", "n", "v", "refrac", "trace", "theta", "table", "theta_table")
LAYER_GROUP_FIELDS += ("additive", "shared", "update", "spikes", "record", "record_mode")
LAYER_CONN_FIELDS = ("pre", "post", "weight_t", "bias", "n_in", "n_out")
LAYER_CONN_FIELDS += ("syn_g", "syn_a", "syn_k", "syn_e", "ring", "ring_len", "ring_pos", "arrive")
LAYER_RULE_FIELDS = ("connection", "pre", "post", "weight", "weight_t", "bounded", "kind")
LAYER_RULE_FIELDS += ("nearest", "r1", "r2", "o1", "o2", "work")
#: Kinds of rule :func:`layer_steps` runs (the ``kind`` field).
LAYER_RULE_KINDS = ("stdp", "triplet")
#: Fields of the float64 rows of the rules' constants of :func:`layer_steps`.
LAYER_RATE_FIELDS = ("lo", "hi", "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7")
#: Most connections :func:`layer_steps` takes.
LAYER_MAX_CONNECTIONS = 64


def layer_steps(
    x: torch.Tensor,
    groups: torch.Tensor,
    conns: torch.Tensor,
    conn_lo: torch.Tensor,
    rules: torch.Tensor,
    rates: torch.Tensor,
    active: torch.Tensor,
    changed: torch.Tensor,
    check_nan: bool,
) -> Tuple[int, int]:
    """``T`` steps of a network of layers in one call (``pysnn_layers`` in ``kernels.c``; see
    :func:`pysnn.engine.layers.run_layers`, which builds the descriptors from the modules, keeps
    the memory they point to alive and checks everything this function does not).

    Args:
        x: ``(T, B, n_in)`` input spikes, contiguous, the network's dtype.
        groups: ``(L + 1, len(LAYER_GROUP_FIELDS))`` int64: the input group, then the layers.
        conns: ``(C, len(LAYER_CONN_FIELDS))`` int64, ordered by layer; ``conn_lo`` ``(L + 1,)``
            the first connection of each layer (and the end). A connection's output may pass
            through a conductance synapse: ``syn_g`` its state ``(B, n_out)`` (updated in place;
            0: no synapse), ``syn_a``, ``syn_k``, ``syn_e`` its decay factor, output factor and
            reversal potential (mV), ``(n_out,)`` each. A connection with a shared delay of
            ``d`` steps reads its spikes through its ring ``(B, d + 1, n_in)`` (``ring``, 0:
            no delay; ``ring_len`` ``d + 1``; the slot ``ring_pos`` that the first step writes,
            as :meth:`pysnn.connection.Connection._push`), updated in place; the spikes
            arriving in the last step are left in ``arrive`` ``(B, n_in)``.
        rules: ``(R, len(LAYER_RULE_FIELDS))`` int64, stepped in order after the layers:
            ``kind`` 0 pair STDP (:class:`STDPRowsKernel`'s step: the post group's spikes and
            trace, the pre group's trace), 1 triplet STDP (:class:`TripletKernel`'s step: the
            post group's spikes, ``nearest``, the traces ``r1``, ``r2``, ``o1``, ``o2``
            advanced in place and the kernel's ``work``), each with the spikes its connection
            read, the weight and its transpose (both updated), ``bounded``; ``rates``
            ``(R, len(LAYER_RATE_FIELDS))`` float64: the lower and upper bound, then the pair
            rule's potentiation and depression rates or the triplet rule's
            :attr:`TripletKernel.constants`.
        active, changed: ``(C,)`` / ``(R,)`` int64 counters, added to (``changed``: the steps
            in which a rule changed a weight row).
        check_nan: stop before a module whose input holds a NaN.

    Returns:
        ``(steps done, group)``: fewer steps than ``T`` when a NaN stopped the run before
        ``group``'s step (0: the input) of the next step.
    """
    n_steps, batch = x.shape[0], x.shape[1]
    max_n = max(int(groups[:, 1].max()), 1)
    scratch = x.new_empty(2 * batch * max_n)
    stop = ctypes.c_int64(-1)
    done = (_layers_f32 if x.dtype == torch.float32 else _layers_f64)(
        n_steps,
        batch,
        x.data_ptr(),
        groups.shape[0] - 1,
        groups.data_ptr(),
        conns.data_ptr(),
        conn_lo.data_ptr(),
        rules.shape[0],
        rules.data_ptr(),
        rates.data_ptr(),
        scratch.data_ptr(),
        active.data_ptr(),
        changed.data_ptr(),
        check_nan,
        BLOCK_ROWS,
        torch.get_num_threads(),
        ctypes.byref(stop),
    )
    return done, stop.value


def recurrent_steps(
    n_steps: int,
    row_ptr: torch.Tensor,
    post: torch.Tensor,
    weight: torch.Tensor,
    spikes: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    synapses: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]],
    params: "LIFParameters",
    trace_params: "TraceParameters",
    events: bool = False,
    external: Optional[torch.Tensor] = None,
    external_first: bool = False,
) -> Optional[torch.Tensor]:
    """``n_steps`` steps of a recurrent LIF population with sparse connectivity and exponential
    synapses, in one call (see :func:`pysnn.multistep.run_recurrent`, which checks everything
    this function does not), optionally driven by an external input added to the synapses'
    summed input: returns the spikes ``(T, B, N)`` (or with ``events`` their
    ``(step, sample, neuron)`` indices, ``(E, 3)`` int64, ordered by sample, step, neuron), the
    state updated in place, or ``None`` (nothing done) where a parameter does not fit the
    kernel. ``MemoryError`` if the events do not fit in memory.

    Args:
        row_ptr, post, weight: the connection in CSR form, from the neurons (``N + 1``, ``nnz``
            int64 targets in ``[0, G * N)``, ``nnz`` weights).
        spikes: ``(B, N)`` the connection's input of the first step.
        v, refrac, trace: the neurons' state ``(B, N)`` (``refrac`` int64), updated in place.
        synapses: per receptor group, ``(g, a, k, e_rev)``: the state ``(B, N)`` (updated in
            place), the decay and output factors, and the reversal potential (mV, conductance
            synapse) or ``None`` (current synapse).
        params, trace_params: the neurons' discretised parameters.
        events: return the spikes' indices rather than the raster.
        external: ``(T, B, N)`` contiguous, in ``v``'s dtype: the input added per step to the
            synapses' summed input (the neurons' input current), or ``None`` (no such input).
        external_first: whether ``external`` is the first term of the sum
            (``x + in_0 + in_1 + ...``) rather than the last (``in_0 + in_1 + ... + x``);
            floating-point addition is not associative, so the two differ in the last bit.
    """
    f = v.dtype
    shape = v.shape[1:]
    table = _lif_table(params, trace_params, f, shape)
    if table is None:
        return None
    keep = [table]
    tables, states, cond = [], [], []
    for g, a, k, e_rev in synapses:
        entries = (a, k, a if e_rev is None else e_rev)
        syn = _table(entries, (f, f, f), shape)
        if syn is None:
            return None
        keep.append(syn)
        tables.append(syn[0])
        states.append(g.data_ptr())
        cond.append(0 if e_rev is None else 1)
    batch, n = v.shape[0], v.numel() // v.shape[0]
    if external is not None and (
        external.dtype != f
        or not external.is_cpu
        or not external.is_contiguous()
        or external.numel() != n_steps * batch * n
        or external.shape[:2] != (n_steps, batch)
    ):
        raise ValueError(
            f"external must be a contiguous ({n_steps}, {batch}, {n}) CPU tensor of {f}, got "
            f"{tuple(external.shape)} {external.dtype} on {external.device}"
        )
    groups = len(synapses)
    out = None if events else v.new_empty(n_steps, batch, n)
    found, n_found = ctypes.POINTER(ctypes.c_int64)(), ctypes.c_int64(0)
    scratch = v.new_zeros(batch, groups * n)
    spiking = torch.empty(batch, n, dtype=torch.int64)
    pointers = torch.tensor(states + tables, dtype=torch.int64)
    cond_t = torch.tensor(cond, dtype=torch.int32)
    (_recurrent_f32 if f == torch.float32 else _recurrent_f64)(
        n_steps,
        batch,
        n,
        groups,
        row_ptr.data_ptr(),
        post.data_ptr(),
        weight.data_ptr(),
        spikes.data_ptr(),
        v.data_ptr(),
        refrac.data_ptr(),
        trace.data_ptr(),
        pointers.data_ptr(),
        pointers.data_ptr() + 8 * groups,
        cond_t.data_ptr(),
        table[0],
        trace_params.additive,
        None if out is None else out.data_ptr(),
        scratch.data_ptr(),
        spiking.data_ptr(),
        ctypes.byref(found) if events else None,
        ctypes.byref(n_found) if events else None,
        None if external is None else external.data_ptr(),
        int(bool(external_first)),
    )
    del keep
    if not events:
        return out
    if n_found.value < 0:
        raise MemoryError("pysnn.native.recurrent_steps: out of memory for the spike events")
    try:
        if n_found.value == 0:
            return torch.zeros(0, 3, dtype=torch.int64)
        array = (ctypes.c_int64 * (3 * n_found.value)).from_address(
            ctypes.addressof(found.contents)
        )
        return torch.frombuffer(array, dtype=torch.int64).view(-1, 3).clone()
    finally:
        if found:
            _lib.pysnn_free(found)


def _linear_event(x: torch.Tensor, weight_t: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """:func:`linear_event` without its checks (the caller has checked :func:`usable`)."""
    out = x.new_empty(x.shape[0], weight_t.shape[1])  # (varargs: faster than a shape tuple)
    f32 = x.dtype == torch.float32
    args = (x.shape[0], weight_t.shape[0], weight_t.shape[1], x.data_ptr(), weight_t.data_ptr())
    threads = torch.get_num_threads()
    if x.shape[0] >= BLOCK_ROWS and weight_t.shape[0] < 2**31:
        active = (_block_f32 if f32 else _block_f64)(*args, out.data_ptr(), threads, 0)
    else:
        active = (_linear_f32 if f32 else _linear_f64)(*args, out.data_ptr(), threads)
    if active < 0:
        raise MemoryError("pysnn.native.linear_event: out of memory for the list of active inputs")
    return out, active


def linear_event_rows(x: torch.Tensor, weight: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``x @ weight.t()`` from the non-zero entries of ``x``, reading the row-major ``weight``
    ``(out, in)`` itself: returns ``(out, active)`` as :func:`linear_event`, bit for bit.

    The cache-blocked kernel of :func:`linear_event` with each weight block transposed in cache
    as it is used: the weight is read once per call and no presynaptic-major copy is needed. For
    blocks of rows (a multi-step block); unchecked beyond :func:`usable` (the caller checks it).
    """
    out = x.new_empty(x.shape[0], weight.shape[0])
    kernel = _block_f32 if x.dtype == torch.float32 else _block_f64
    active = kernel(
        x.shape[0],
        weight.shape[1],
        weight.shape[0],
        x.data_ptr(),
        weight.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads(),
        1,
    )
    if active < 0:
        raise MemoryError("pysnn.native.linear_event_rows: out of memory")
    return out, active
