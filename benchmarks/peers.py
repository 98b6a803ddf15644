"""The contenders: rnnx and the libraries people would otherwise use, built for one configuration.

Cells are named as in :data:`rnnx.CELLS`. Each builder ``build(cfg, modes)`` returns a :class:`Contender`
with a zero-argument callable per mode (``forward``; ``backward``: forward and backward, the gradient of a
mean-square loss with respect to the parameters; ``train``: that gradient, then global-norm clipping at 1.0 and
Adam at 3e-4, as in rnnx's default optimiser), already called once so
that its first-call time, memory and (for JAX) compiled HLO are known; or it raises :class:`Unavailable`
(:class:`Unsupported` for a dtype the library cannot run) with the reason.

In ``bfloat16`` every library holds its parameters and inputs in bfloat16 and computes in it (rnnx:
``dtype`` and ``param_dtype``; flax: ``dtype``, with the params drawn in float32 and cast, because the
orthogonal initialiser's QR has no bfloat16 kernel; Equinox: the model cast with ``jax.tree.map``; torch:
``module.to(torch.bfloat16)``); the loss is taken in float32.
"""

import dataclasses
import functools
import importlib.util
import inspect
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnx
from benchmarks.hlo import count_kernels
from benchmarks.timing import reason

__all__ = ["DEFAULT_MODES", "MODES", "PEERS", "Config", "Contender", "Unavailable", "Unsupported", "jax_contender"]

MODES = ("forward", "backward", "train")  # every mode a builder can time; the CPU suite's default is DEFAULT_MODES
DEFAULT_MODES = ("forward", "train")


class Unavailable(Exception):
    """This peer cannot run this configuration (not installed, not on this device, or no such cell/option)."""


class Unsupported(Unavailable):
    """This peer does not support the configuration's dtype."""


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str  # a name in rnnx.CELLS
    batch: int = 64
    steps: int = 100
    input: int = 300
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        if self.cell not in rnnx.CELLS:
            raise ValueError(f"cell must be one of {sorted(rnnx.CELLS)}, received {self.cell!r}")

    @property
    def tokens(self) -> int:
        return self.batch * self.steps

    def flops(self, mode: str) -> float:
        """Matmul FLOPs of one call: a forward pass's input and recurrent products; ``backward`` and ``train``
        count 3x (the usual estimate: the backward pass is two products per forward product)."""
        cell = rnnx.make_cell(self.cell, self.hidden)
        dirs = 2 if self.bidirectional else 1
        recurrent = 0 if cell.parallel else self.hidden  # parallel-scan cells and the mLSTM: no w_hh
        total, width = 0.0, self.input
        for _ in range(self.layers):
            total += dirs * 2.0 * self.batch * self.steps * (width + recurrent) * cell.gates * self.hidden
            width = dirs * self.hidden
        return total * (1.0 if mode == "forward" else 3.0)


@dataclasses.dataclass
class Contender:
    calls: dict  # {mode: zero-argument callable}
    params: int
    first_call_s: dict  # {mode: seconds of the first call: trace + compile + run for JAX, lazy set-up for torch}
    memory_bytes: dict  # {mode: bytes or None}: JAX: compiled argument + output + temp; torch: CUDA peak
    hlo: dict = dataclasses.field(default_factory=dict)  # {mode: benchmarks.hlo.count_kernels(...)}, JAX only


CLASSIC = ("simple_rnn", "lstm", "gru")  # the cells the other libraries have


def _optimizer():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-4))


def _compiled_bytes(compiled) -> int | None:
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - getattr(memory, "alias_size_in_bytes", 0)
    )


def jax_contender(params, apply: Callable, xs, modes=MODES) -> Contender:
    """Compile and call once a forward pass and/or an optax training step for ``apply(params, xs) -> ys``."""
    optimizer = _optimizer()

    def loss(p, x):
        return jnp.mean(jnp.square(apply(p, x).astype(jnp.float32)))

    def train_step(p, s, x):
        value, grads = jax.value_and_grad(loss)(p, x)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = {"params": params, "opt": optimizer.init(params) if "train" in modes else None}

    def train(compiled):
        state["params"], state["opt"], value = compiled(state["params"], state["opt"], xs)
        return value

    calls, first, memory, hlo = {}, {}, {}, {}
    for mode in modes:
        start = time.perf_counter()
        if mode in ("forward", "backward"):
            fn = apply if mode == "forward" else jax.grad(loss)
            compiled = jax.jit(fn).lower(params, xs).compile()
            calls[mode] = lambda compiled=compiled: compiled(params, xs)
        else:
            compiled = jax.jit(train_step).lower(state["params"], state["opt"], xs).compile()
            calls[mode] = lambda compiled=compiled: train(compiled)
        jax.block_until_ready(calls[mode]())
        first[mode] = time.perf_counter() - start
        memory[mode] = _compiled_bytes(compiled)
        hlo[mode] = count_kernels(compiled.as_text())
    return Contender(calls, rnnx.count_params(params), first, memory, hlo)


def _inputs(cfg: Config):
    return jax.random.normal(jax.random.key(0), (cfg.batch, cfg.steps, cfg.input)).astype(cfg.dtype)


def _has_backend_argument() -> bool:
    return "backend" in inspect.signature(rnnx.unroll).parameters


def build_rnnx(cfg: Config, modes=MODES, backend: str | None = "scan", unroll: int = 1) -> Contender:
    """rnnx.stacked over the registry's cell; ``backend`` as in ``Stack.apply`` (None: omit the argument), ``unroll``
    as in :func:`rnnx.unroll` (steps per scan iteration)."""
    kwargs = {"remat": cfg.remat, "unroll": unroll}
    if backend is not None and _has_backend_argument():
        kwargs["backend"] = backend
    elif backend not in (None, "scan"):
        raise Unavailable(f"this rnnx has no backend= argument (wanted backend={backend!r})")
    cell = rnnx.make_cell(cfg.cell, cfg.hidden, dtype=cfg.dtype, param_dtype=cfg.dtype)
    net = rnnx.stacked(cell, cfg.layers, bidirectional=cfg.bidirectional)
    params = net.init(jax.random.key(1), cfg.input)
    return jax_contender(params, lambda p, x: net.apply(p, x, **kwargs)[1], _inputs(cfg), modes)


def build_rnnx_backend(cfg: Config, modes=MODES, backend: str = "pallas") -> Contender:
    """rnnx through a backend that may refuse a call (``"pallas"``, ``"cudnn"``, ``"auto"``).

    Whatever the backend raises while building or compiling (a ValueError naming why it cannot run this call, or
    an unknown backend name before it exists) becomes the row's one-line reason, never the end of the run.
    """
    if not _has_backend_argument():
        raise Unavailable("this rnnx has no backend= argument yet")
    try:
        return build_rnnx(cfg, modes, backend=backend)
    except Exception as error:
        raise Unavailable(reason(error)) from error


def build_rnnx_cudnn(cfg: Config, modes=MODES, backend: str = "cudnn") -> Contender:
    """rnnx's LSTM stack through cuDNN (``backend="cudnn"``); GPU and LSTM only."""
    if cfg.cell != "lstm":
        raise Unavailable(f"backend={backend!r} is measured for lstm only (cuDNN in rnnx runs LSTMs)")
    return _on_gpu(cfg, modes, backend)


def build_rnnx_auto(cfg: Config, modes=MODES) -> Contender:
    """rnnx's ``backend="auto"``, which may pick cuDNN or the Pallas kernels; GPU and classic cells only."""
    if cfg.cell not in CLASSIC:
        raise Unavailable(f"auto runs the scan family for {cfg.cell}: the rnnx row")
    return _on_gpu(cfg, modes, "auto")


def _on_gpu(cfg: Config, modes, backend: str) -> Contender:
    if jax.default_backend() != "gpu":
        raise Unavailable(f"needs a GPU (jax backend is {jax.default_backend()})")
    return build_rnnx_backend(cfg, modes, backend)


def _classic_only(cfg: Config, library: str):
    if cfg.cell not in CLASSIC:
        raise Unavailable(f"{library} has no {cfg.cell} cell")
    if cfg.layers != 1 or cfg.bidirectional:
        raise Unavailable(f"{library}: this suite builds single-layer, unidirectional peers only")


def build_flax_linen(cfg: Config, modes=MODES, cell_class: str | None = None) -> Contender:
    _classic_only(cfg, "flax.linen")
    import flax.linen as nn

    name = cell_class or {"simple_rnn": "SimpleCell", "lstm": "LSTMCell", "gru": "GRUCell"}[cfg.cell]
    xs = _inputs(cfg)
    drawn = nn.RNN(getattr(nn, name)(cfg.hidden, dtype=cfg.dtype)).init(jax.random.key(1), xs)
    # param_dtype also sets the dtype of the carry nn.RNN starts from: in bfloat16 it must be bfloat16 too.
    model = nn.RNN(getattr(nn, name)(cfg.hidden, dtype=cfg.dtype, param_dtype=cfg.dtype))
    return jax_contender(_cast(drawn, cfg.dtype), model.apply, xs, modes)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def build_flax_linen_optimized(cfg: Config, modes=MODES) -> Contender:
    if cfg.cell != "lstm":
        raise Unavailable("OptimizedLSTMCell is an LSTM")
    return build_flax_linen(cfg, modes, "OptimizedLSTMCell")


def build_flax_nnx(cfg: Config, modes=MODES) -> Contender:
    _classic_only(cfg, "flax.nnx")
    from flax import nnx

    cls = {"simple_rnn": nnx.SimpleCell, "lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}[cfg.cell]
    cell = cls(cfg.input, cfg.hidden, dtype=cfg.dtype, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(nnx.RNN(cell, rngs=False), nnx.Param, ...)
    params = _cast(params, cfg.dtype)
    zeros = jnp.zeros((cfg.batch, cfg.hidden), cfg.dtype)
    init = (zeros, zeros) if cfg.cell == "lstm" else zeros  # explicit: nnx would draw it from an RNG stream
    apply = lambda p, x: nnx.merge(graphdef, p, rest)(x, initial_carry=init)  # noqa: E731
    return jax_contender(params, apply, _inputs(cfg), modes)


def build_equinox(cfg: Config, modes=MODES) -> Contender:
    _classic_only(cfg, "equinox")
    if importlib.util.find_spec("equinox") is None:
        raise Unavailable("equinox is not installed (pip install equinox)")
    import equinox as eqx

    if cfg.cell == "simple_rnn":
        raise Unavailable("equinox has no simple RNN cell")
    cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cfg.cell]
    cell = cls(cfg.input, cfg.hidden, key=jax.random.key(1))
    params, static = eqx.partition(cell, eqx.is_array)
    params = _cast(params, cfg.dtype)
    zeros = jnp.zeros((cfg.batch, cfg.hidden), cfg.dtype)

    def apply(p, xs):
        model = jax.vmap(eqx.combine(p, static))  # batch the cell; scan over time

        def step(carry, x):
            carry = model(x, carry)
            return carry, carry[0] if isinstance(carry, tuple) else carry

        init = (zeros, zeros) if cfg.cell == "lstm" else zeros
        return jnp.swapaxes(jax.lax.scan(step, init, jnp.swapaxes(xs, 0, 1))[1], 0, 1)

    return jax_contender(params, apply, _inputs(cfg), modes)


def build_torch(cfg: Config, modes=MODES) -> Contender:
    """``torch.nn.RNN/LSTM/GRU``: cuDNN on a CUDA device, oneDNN/ATen on a CPU."""
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed (pip install torch==2.13.0)")
    import torch

    kind = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}.get(cfg.cell)
    if kind is None:
        raise Unavailable(f"torch has no {cfg.cell} cell")
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()  # the suite runs unchanged on a GPU machine
    device, dtype = ("cuda" if cuda else "cpu"), getattr(torch, cfg.dtype)
    module = getattr(torch.nn, kind)(
        cfg.input, cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional, batch_first=True
    )
    module = module.to(device=device, dtype=dtype)
    xs = torch.from_numpy(np.array(_inputs(cfg).astype(jnp.float32))).to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-4)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def forward():
        with torch.no_grad():
            out = module(xs)[0]
        sync()
        return out

    def backward(update=False):
        optimizer.zero_grad(set_to_none=True)
        loss = module(xs)[0].float().square().mean()
        loss.backward()
        if update:
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
        sync()
        return loss.detach()

    every = {"forward": forward, "backward": backward, "train": lambda: backward(update=True)}
    calls = {m: every[m] for m in modes}
    first, memory = {}, {}
    for mode, fn in calls.items():
        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            fn()
        except RuntimeError as error:
            if cfg.dtype != "float32":
                raise Unsupported(f"torch {kind} {cfg.dtype} on {device}: {str(error).splitlines()[0]}") from error
            raise
        first[mode] = time.perf_counter() - start
        memory[mode] = torch.cuda.max_memory_allocated() if cuda else None
    return Contender(calls, sum(p.numel() for p in module.parameters()), first, memory)


PEERS = {
    "rnnx": build_rnnx,  # the scan path (backend="scan" once rnnx has the argument)
    **{f"rnnx-unroll{u}": functools.partial(build_rnnx, unroll=u) for u in (4, 8, 16)},  # benchmarks.scan_tuning
    "rnnx-auto": build_rnnx_auto,
    "rnnx-cudnn": build_rnnx_cudnn,
    "rnnx-pallas": build_rnnx_backend,  # off a GPU: Pallas's interpreter (slow; tiny shapes only)
    "flax.linen": build_flax_linen,
    "flax.linen OptimizedLSTM": build_flax_linen_optimized,
    "flax.nnx": build_flax_nnx,
    "equinox": build_equinox,
    "torch": build_torch,
}
