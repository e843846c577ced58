"""Lean launches of Triton kernels: a cache per call signature in front of triton's launch path.

``kernel[grid](*args)`` on a kernel with ``@triton.heuristics`` and ``@triton.autotune`` costs ~30-45 us
of Python per launch with triton 3.6 (each heuristic rebuilds the argument dict, the autotuner builds its
key from every tensor's ``str(dtype)``, then ``JITFunction.run`` binds and specializes every argument),
against ~5 us for the compiled kernel's own launcher. A chunked op's forward + backward launches ~11
kernels, so at short sequences the GPU waits on this Python.

:func:`lean_launch` wraps a kernel so that its first call with a given *signature* goes through triton
unchanged (compiling and autotuning as usual) and records what triton decided: the compiled kernel and
every constexpr (heuristic flags, the autotuned config, defaults). Later calls with the same signature
launch the compiled kernel directly. The signature is a refinement of everything triton specializes on,
so a cached decision is the one triton itself would make:

* tensors: dtype and whether ``data_ptr()`` is 16-byte aligned (triton's pointer specialization);
* ``None`` / ``int`` / ``float`` / ``bool`` / ``str``: the value itself (triton specializes ints on
  ``== 1`` and divisibility by 16; heuristics may look at any value; autotune keys are values);
* the current CUDA device.

Heuristics that read anything else (a tensor's shape, say) would make a cached decision stale: the
kernels of this package use only ``is None`` tests and scalar values (checked in the tests). A kernel is
launched the normal way when the lean path cannot apply: under the interpreter, under ``torch.compile``
(dynamo must see the triton kernel itself), with triton launch hooks set (profilers), with an argument of
another type, with per-config ``pre_hook`` s, on a triton release whose launcher this was not written for
(only 3.6), or with ``FLA_LEAN_LAUNCH=0``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
import triton
from triton import knobs

from fla.utils.backend import IS_TRITON_INTERPRET
from fla.utils.env import env_switch

# triton releases whose JITFunction / CompiledKernel launch protocol this module reproduces
_SUPPORTED_TRITON = ("3.6.",)
_MAX_SIGNATURES = 512  # per kernel; varlen batches change T, which is part of the signature
_TRITON_PATH = object()  # cache value: this signature launches through triton every time
_PLAIN = frozenset((int, float, bool, str, type(None)))  # argument types whose value is part of a signature


def lean_launch_enabled() -> bool:
    """Whether :func:`lean_launch` kernels take the cached path (environment read once per process)."""
    return _ENABLED


def _enabled_here() -> bool:
    wanted = env_switch("FLA_LEAN_LAUNCH", default=True)  # first: a bad value is an error everywhere
    if IS_TRITON_INTERPRET or not wanted:
        return False
    return triton.__version__.startswith(_SUPPORTED_TRITON)


_ENABLED = _enabled_here()
# the current device's index and its raw CUDA stream handle, as triton's own launch path reads them (CUDA is
# initialized by then: the first call of each signature goes through triton)
_current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)
_current_stream = getattr(
    torch._C, "_cuda_getCurrentRawStream", lambda device: torch.cuda.current_stream(device).cuda_stream
)


def _launch_hooks_set() -> bool:
    """Whether a profiler hooks triton's launches (triton 3.6 keeps them as ``HookChain`` s, empty by default)."""
    runtime = knobs.runtime
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        if hook is not None and getattr(hook, "calls", True):
            return True
    return False


class _Entry:
    """What triton decided for one signature: the compiled kernel and the full argument template."""

    __slots__ = ("compiled", "names", "template", "n_args", "kw_slots")

    def __init__(self, compiled, names: list[str], template: list[Any], n_args: int, kw_slots: list[tuple[int, str]]):
        self.compiled = compiled
        self.names = names  # every parameter of the jit function, in order
        self.template = template  # their values at the recording call (constexprs stay fixed)
        self.n_args = n_args  # leading positional arguments of a call
        self.kw_slots = kw_slots  # (parameter slot, keyword) of the call's keyword arguments


class LeanKernel:
    """A Triton kernel (jit, optionally under heuristics / autotune) with a cached launch path.

    ``kernel[grid](*args, **kwargs)`` behaves as on the wrapped kernel; see the module docstring.
    """

    def __init__(self, kernel):
        from triton.runtime.autotuner import Autotuner, Heuristics
        from triton.runtime.jit import JITFunction

        self.kernel = kernel
        self.chain = []  # the decorators from the outside in
        node = kernel
        while not isinstance(node, JITFunction):
            if not isinstance(node, (Autotuner, Heuristics)):
                raise TypeError(f"lean_launch: cannot see through {type(node).__name__} to the jit function")
            self.chain.append(node)
            node = node.fn
        self.jit = node
        self.arg_names = node.arg_names
        self.fn = kernel  # the next layer down, as on triton's decorators (code that walks `.fn` keeps working)
        self.__name__ = node.__name__
        self.__doc__ = node.__doc__
        self._entries: dict[tuple, Any] = {}  # signature -> _Entry or _TRITON_PATH
        self.lean_launches = 0  # launches that took the cached path (tests read it)
        # heuristics over an autotuner with pruning: launched by :meth:`_traced_launch` under torch.compile
        heuristics = tuple(itertools.takewhile(lambda c: isinstance(c, Heuristics), self.chain))
        below = self.chain[len(heuristics)] if len(heuristics) < len(self.chain) else None
        prunes = isinstance(below, Autotuner) and (below.early_config_prune or below.perf_model) is not None
        self.outer_heuristics = heuristics if heuristics and prunes else ()
        self.pruned_autotuner = below if self.outer_heuristics else None
        self._lean = _ENABLED and not any(
            isinstance(c, Autotuner) and any(cfg.pre_hook is not None for cfg in c.configs) for c in self.chain
        )
        _KERNELS.append(self)

    def __repr__(self) -> str:
        return f"LeanKernel({self.jit.__name__})"

    def __getitem__(self, grid) -> Callable[..., Any]:
        if torch.compiler.is_compiling():
            if self.pruned_autotuner is not None:
                return lambda *args, **kwargs: self._traced_launch(grid, args, kwargs)
            return self.kernel[grid]
        if not self._lean:
            return self.kernel[grid]
        return lambda *args, **kwargs: self._launch(grid, args, kwargs)

    def _traced_launch(self, grid, args: tuple, kwargs: dict):
        """The launch dynamo traces for ``heuristics -> autotune(prune_configs_by=...) -> jit``: the heuristics'
        flags computed here and passed to the autotuner, launched by subscript.

        Through the heuristics, triton's ``Heuristics.run`` calls ``Autotuner.run``, and dynamo (torch 2.11) turns
        that call into a kernel variable without a source, which its config pruning needs: tracing stopped with
        "Can't construct an AttrSource without a valid base source" (FoX, NSA, Samba and Rodimus under flame's
        compile on an H100). ``autotuner[grid]`` keeps the source. The flags are the heuristics' own functions of
        the arguments, evaluated in the same order.
        """
        named = {**dict(zip(self.arg_names, args)), **kwargs}
        flags = {}
        for heuristics in self.outer_heuristics:
            for name, fn in heuristics.values.items():
                flags[name] = fn({**named, **flags})
        return self.pruned_autotuner[grid](*args, **{**kwargs, **flags})  # the flags win, as in Heuristics.run

    # ------------------------------------------------------------------------------------------- internals

    @staticmethod
    def _signature(device: int, args: tuple, kwargs: dict) -> tuple | None:
        # flat for speed (~0.4 us per argument): a tensor adds (dtype, address mod 16), a plain value itself;
        # unambiguous, since no plain argument is a dtype
        key: list[Any] = [device, tuple(kwargs)]
        append = key.append
        for a in (*args, *kwargs.values()):
            if type(a) in _PLAIN:
                append(a)
            elif isinstance(a, torch.Tensor):
                append(a.dtype)
                append(a.data_ptr() & 15)
            else:
                return None
        return tuple(key)

    def _launch(self, grid, args: tuple, kwargs: dict):
        if _launch_hooks_set():
            return self.kernel[grid](*args, **kwargs)
        device = _current_device()
        sig = self._signature(device, args, kwargs)
        entry = self._entries.get(sig) if sig is not None else _TRITON_PATH
        if entry is None:
            compiled = self.kernel[grid](*args, **kwargs)  # triton's own path: compile, autotune, launch
            self._record(sig, compiled, args, kwargs)
            return compiled
        if entry is _TRITON_PATH:
            return self.kernel[grid](*args, **kwargs)
        values = list(args)
        values += entry.template[entry.n_args :]
        for slot, name in entry.kw_slots:
            values[slot] = kwargs[name]
        if callable(grid):
            grid = grid(dict(zip(entry.names, values)))
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        compiled = entry.compiled
        self.lean_launches += 1
        compiled.run(
            grid[0], g1, g2, _current_stream(device), compiled.function, compiled.packed_metadata, None, None, None,
            *values,
        )  # fmt: skip
        return compiled

    def _record(self, sig: tuple, compiled, args: tuple, kwargs: dict) -> None:
        """Store triton's decision for ``sig``: replay the decorators' choices to get every constexpr."""
        from triton.runtime.autotuner import Autotuner, Heuristics

        if compiled is None or not hasattr(compiled, "packed_metadata") or hasattr(compiled, "result"):
            return  # not a finished CompiledKernel (asynchronous compile): record at a later call
        named = dict(zip(self.arg_names, args))
        kw = dict(kwargs)
        for node in self.chain:
            if isinstance(node, Heuristics):
                for flag, heuristic in node.values.items():
                    kw[flag] = heuristic({**named, **kw})
            elif isinstance(node, Autotuner):
                config = node.best_config if len(node.configs) > 1 else node.configs[0]
                kw.update(config.all_kwargs())
        # triton's binder: every parameter in order with defaults applied (launch options go elsewhere)
        bound, _, _ = self._binder()(*args, **kw)
        names = list(bound.keys())
        kw_slots = [(names.index(name), name) for name in kwargs if name in names]
        if names[: len(args)] != list(self.arg_names[: len(args)]) or len(kw_slots) != len(kwargs):
            # a keyword that is not a parameter (a launch option): this signature stays on triton's path,
            # remembered so that later calls do not replay the decorators again
            self._remember(sig, _TRITON_PATH)
            return
        # the call's own arguments are refilled at each launch: keep none of them (no tensor outlives its call)
        template = list(bound.values())
        for slot in [*range(len(args)), *(slot for slot, _ in kw_slots)]:
            template[slot] = None
        self._remember(sig, _Entry(compiled, names, template, len(args), kw_slots))

    def _remember(self, sig: tuple, entry) -> None:
        if len(self._entries) >= _MAX_SIGNATURES:
            self._entries.clear()
        self._entries[sig] = entry

    def _binder(self):
        from triton.runtime.driver import driver

        device = driver.active.get_current_device()
        return self.jit.device_caches[device][4]


_KERNELS: list[LeanKernel] = []  # every wrapped kernel (module-level objects: never freed)


def lean_kernels() -> list[LeanKernel]:
    """Every kernel wrapped by :func:`lean_launch` so far."""
    return list(_KERNELS)


@contextlib.contextmanager
def lean_launch_disabled() -> Iterator[None]:
    """Launch every :func:`lean_launch` kernel through triton's own path inside the block (A/B checks)."""
    saved = [(k, k._lean) for k in _KERNELS]
    for k, _ in saved:
        k._lean = False
    try:
        yield
    finally:
        for k, lean in saved:
            k._lean = lean


def lean_launch(kernel):
    """Decorator (outermost, above ``@triton.heuristics`` / ``@triton.autotune``): see :class:`LeanKernel`.

    Under the interpreter the kernel is returned as it is (it has no compiled launcher to call).
    """
    return kernel if IS_TRITON_INTERPRET else LeanKernel(kernel)
