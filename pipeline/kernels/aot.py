"""numba kernels that run compiled ahead of time, without importing numba, else jitted by numba.

A kernel is declared with :func:`kernel` in place of ``numba.njit`` (same options), with the argument
types the pipeline passes (``signatures``)::

    @kernel(nogil=True, cache=True, signatures=[("int32[:, :, ::1]", "int64", "float64[::1]")])
    def _work(data, n, out): ...

Importing its module imports no numba. A call runs

* the module's build compiled ahead of time (:func:`build`, by ``make install``: numba's ``pycc``,
  one extension module per source module, ``_aot_<module>_<hash>``) when it is there and the
  arguments match one of the signatures (dtype, number of dimensions, C-contiguity, scalar types);
  loading it takes a millisecond where ``import numba`` and numba's first load take 0.3 s;
* else numba's jitted kernel (``numba.njit(**options)``, cached as usual): numba is imported then.

The hash in the module's name covers the source file, the constants its kernels read from other
modules, the signatures and the CPU (the build targets this machine's CPU, as numba's jit does): a
build of another source, or for another CPU, is never loaded. The build keeps the jitted kernels'
options that ``pycc`` does not take (``nogil``: the call releases the GIL; numba's error model) and,
as the jit, no fastmath: both builds give the same bits (the tests run both).

Kernels called from kernels (``inline="always"`` helpers too) are declared the same way; numba sees
them as its own dispatchers (each module's kernels are jitted together in a copy of its namespace).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np

__all__ = ["INTEGRATE", "MODULES", "Kernel", "ahead_name", "build", "build_all", "jit_only", "kernel"]

#: the modules of integrate's kernels
INTEGRATE = (
    "pipeline.kernels.binning",
    "pipeline.kernels.partials",
    "pipeline.kernels.sorting",
    "pipeline.io.chunks",
    "pipeline.io.rawimages",
)
#: modules whose kernels ``make install`` compiles ahead of time
MODULES = (*INTEGRATE, "pipeline.kernels.corrections_numba")

_LOCK = threading.RLock()
_UNSET = object()
_AHEAD: dict[str, object] = {}  # module name -> its compiled-ahead module, or None
_JIT_ONLY = False


def kernel(signatures=(), **options):
    """Decorator: a :class:`Kernel` with numba's ``options`` (as ``numba.njit``'s) and the argument
    types (numba's notation, one tuple of strings per signature) it is compiled ahead of time for."""

    def wrap(py_func):
        return Kernel(py_func, options, signatures)

    return wrap


def _scalar(*kinds):
    return lambda a: isinstance(a, kinds)


_SCALARS = {
    "int64": _scalar(int, np.int64),
    "float64": _scalar(float, np.float64),
    "boolean": _scalar(bool, np.bool_),
}


def _check(spec: str):
    """A test of one argument against its numba type (``int32[:, ::1]``, ``int64``, ...)."""
    name, bracket, dims = spec.partition("[")
    name = name.strip()
    if not bracket:
        return _SCALARS[name]
    axes = dims.rstrip("] ").split(",")
    ndim, contiguous = len(axes), axes[-1].strip() == "::1"
    dtype = np.dtype("bool" if name == "boolean" else name)

    def check(a) -> bool:
        return (
            isinstance(a, np.ndarray)
            and a.dtype == dtype
            and a.ndim == ndim
            and (not contiguous or a.flags.c_contiguous)
        )

    return check


def _matcher(signature):
    checks = [_check(s) for s in signature]
    n = len(checks)

    def matches(args) -> bool:
        return len(args) == n and all(c(a) for c, a in zip(checks, args, strict=True))

    return matches


class Kernel:
    """A kernel: its compiled-ahead build for arguments of its signatures, else numba's jit."""

    def __init__(self, py_func, options, signatures):
        functools.update_wrapper(self, py_func)
        self.py_func = py_func
        self.options = dict(options)
        self.signatures = tuple(tuple(s) for s in signatures)
        self._matchers = [_matcher(s) for s in self.signatures]
        self._ahead = _UNSET  # [(matches, compiled function)], empty without a build
        self._jit = None

    def __call__(self, *args, **kwargs):
        if not _JIT_ONLY and not kwargs:
            ahead = self._ahead
            if ahead is _UNSET:
                ahead = self._load_ahead()
            for matches, function in ahead:
                if matches(args):
                    return function(*args)
        return self.jitted(*args, **kwargs)

    def _load_ahead(self):
        module = load_ahead(self.py_func.__module__)
        functions = [getattr(module, _symbol(self, i), None) for i in range(len(self.signatures))]
        ahead = [(m, f) for m, f in zip(self._matchers, functions, strict=True) if f is not None]
        self._ahead = ahead
        return ahead

    @property
    def compiled_ahead(self) -> bool:
        """True when a build compiled ahead of time is there for this kernel."""
        if self._ahead is _UNSET:
            self._load_ahead()
        return bool(self._ahead)

    @property
    def jitted(self):
        """numba's dispatcher of this kernel (numba imported, and the module's kernels jitted, once)."""
        if self._jit is None:
            with _LOCK:
                if self._jit is None:
                    _jit_module(self.py_func.__module__)
        return self._jit


def _symbol(k: Kernel, i: int) -> str:
    return f"{k.__name__}__{i}"


def _kernels(module) -> dict[str, Kernel]:
    return {
        name: v
        for name, v in vars(module).items()
        if isinstance(v, Kernel) and v.py_func.__module__ == module.__name__
    }


def _namespace(module, cache: bool = True) -> dict:
    """A copy of ``module``'s namespace where its kernels are numba dispatchers (``cache``: numba's
    cache as the options say; else none), and kernels of other modules their jitted dispatchers."""
    from pipeline.kernels.warmup import load_numba

    load_numba()  # imports numba, without scipy.linalg
    import numba

    ns = dict(vars(module))
    for name, v in vars(module).items():
        if isinstance(v, Kernel) and v.py_func.__module__ != module.__name__:
            ns[name] = v.jitted
    for name, k in _kernels(module).items():
        f = k.py_func
        copy = types.FunctionType(f.__code__, ns, f.__name__, f.__defaults__, f.__closure__)
        copy.__qualname__, copy.__doc__, copy.__kwdefaults__ = f.__qualname__, f.__doc__, f.__kwdefaults__
        options = k.options if cache else {**k.options, "cache": False}
        ns[name] = numba.njit(**options)(copy)
    return ns


def _jit_module(name: str) -> None:
    module = sys.modules[name]
    ns = _namespace(module)
    for attr, k in _kernels(module).items():
        k._jit = ns[attr]


@contextlib.contextmanager
def jit_only():
    """Within: every kernel runs numba's jitted build (the tests compare both builds)."""
    global _JIT_ONLY
    saved, _JIT_ONLY = _JIT_ONLY, True
    try:
        yield
    finally:
        _JIT_ONLY = saved


# --- the builds compiled ahead of time ---------------------------------------------------------------


@functools.cache
def _cpu() -> str:
    """This machine's CPU features (the build targets them)."""
    import platform

    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    return f"{platform.machine()} {platform.processor()}"


def _constants(module) -> list[str]:
    """Numbers the kernels read from the module's namespace (imported ones too: built in)."""
    names: set[str] = set()
    todo = [k.py_func.__code__ for k in _kernels(module).values()]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    ns = vars(module)
    numbers = (int, float, np.generic)
    return [f"{n}={ns[n]!r}" for n in sorted(names) if isinstance(ns.get(n), numbers)]


def ahead_name(module) -> str:
    """The name of ``module``'s compiled-ahead build for its source as it is now."""
    parts = [
        Path(module.__file__).read_bytes(),
        repr(_constants(module)).encode(),
        repr({n: (k.signatures, sorted(k.options.items())) for n, k in _kernels(module).items()}).encode(),
        _cpu().encode(),
    ]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()
    return f"_aot_{module.__name__.rpartition('.')[2]}_{digest[:16]}"


def load_ahead(name: str):
    """The compiled-ahead build of module ``name`` (imported once), or None when there is none."""
    with _LOCK:
        if name not in _AHEAD:
            module = sys.modules[name]
            try:
                _AHEAD[name] = importlib.import_module(f"{module.__package__}.{ahead_name(module)}")
            except (ImportError, OSError):
                _AHEAD[name] = None
        return _AHEAD[name]


def load_all(names=INTEGRATE) -> bool:
    """Load the compiled-ahead build of every module ``names``; False if one is missing."""
    return all([load_ahead(importlib.import_module(name).__name__) is not None for name in names])


def build(name: str, directory: str | os.PathLike | None = None) -> Path | None:
    """Compile module ``name``'s kernels for their signatures ahead of time (numba's ``pycc``) into an
    extension module beside the source (or in ``directory``), replacing builds of earlier sources.
    Returns its path (None: no kernel with signatures)."""
    import tempfile
    import warnings

    module = importlib.import_module(name)
    kernels = {n: k for n, k in _kernels(module).items() if k.signatures}
    if not kernels:
        return None
    directory = Path(directory or Path(module.__file__).parent)
    target_name = ahead_name(module)
    built = [p for p in directory.glob(f"{target_name}.*") if p.suffix in (".so", ".pyd")]
    if built:
        return built[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's pending deprecation
        import numba.pycc.compiler as pycc_compiler
        from numba.core import sigutils
        from numba.pycc import CC

    nogil = {bool(k.options.get("nogil")) for k in kernels.values()}
    errors = {k.options.get("error_model", "python") for k in kernels.values()}
    if len(nogil) > 1 or len(errors) > 1:
        raise RuntimeError(f"{name}: the kernels compiled ahead of time must share nogil and error_model")
    release_gil, error_model = nogil.pop(), errors.pop()
    ns = _namespace(module, cache=False)

    class _AsJitted(pycc_compiler.Flags):  # the jitted kernels' options, which pycc does not take
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = release_gil
            self.error_model = error_model

    saved = pycc_compiler.Flags
    pycc_compiler.Flags = _AsJitted
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".aot-") as tmp:
            cc = CC(target_name)
            cc.output_dir = tmp
            cc.target_cpu = "host"  # as the jit: this machine's instructions (the name says which)
            for attr, k in kernels.items():
                dispatcher = ns[attr]
                for i, signature in enumerate(k.signatures):
                    args, _ = sigutils.normalize_signature(f"({', '.join(signature)},)")
                    dispatcher.compile(args)  # the return type numba infers for these arguments
                    cc.export(_symbol(k, i), dispatcher.overloads[args].signature)(dispatcher.py_func)
            cc.compile()
            (output,) = Path(tmp).glob(f"{target_name}.*")
            target = directory / output.name
            os.replace(output, target)  # whole, under its final name
    finally:
        pycc_compiler.Flags = saved
    stem = target_name.rpartition("_")[0] + "_"
    for old in directory.glob(f"{stem}*"):
        if old.name != target.name and old.name[len(stem) :].split(".")[0].isalnum():
            old.unlink(missing_ok=True)
    return target


def build_all() -> None:
    """Build every module of :data:`MODULES`; a build that fails is reported on stderr (numba's jitted
    kernels then run)."""
    for name in MODULES:
        try:
            build(name)
        except Exception as exc:  # no compiler, a read-only install, ...: the jitted kernels will do
            print(
                f"{name}'s kernels not compiled ahead of time ({type(exc).__name__}: {exc})", file=sys.stderr
            )
