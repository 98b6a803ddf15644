"""The contenders: rnnx and the libraries people would otherwise use, built for one configuration.

Each builder returns a :class:`Contender` with zero-argument ``forward`` and ``train`` callables (a
training step is forward, mean-square loss, gradient, global-norm clipping at 1.0 and Adam at 3e-4, as in
rnnx's default optimiser), or raises :class:`Unavailable` with the reason.
"""

import dataclasses
import importlib.util
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnx


class Unavailable(Exception):
    """This peer cannot run this configuration (not installed, or no such cell/option)."""


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str  # "rnn", "lstm", "gru", or rnnx's parallel-scan "min_gru" / "min_lstm"
    batch: int = 64
    steps: int = 100
    input: int = 300
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"
    remat: bool = False

    @property
    def gates(self) -> int:
        return {"rnn": 1, "lstm": 4, "gru": 3, "min_gru": 2, "min_lstm": 3}[self.cell]

    def flops(self, mode: str) -> float:
        """Matmul FLOPs of one forward pass (input and recurrent products); a training step counts 3x."""
        dirs = 2 if self.bidirectional else 1
        recurrent = 0 if self.cell.startswith("min_") else self.hidden  # the min cells have no recurrent matrix
        total, width = 0.0, self.input
        for _ in range(self.layers):
            total += dirs * 2.0 * self.batch * self.steps * (width + recurrent) * self.gates * self.hidden
            width = dirs * self.hidden
        return total * (3.0 if mode == "train" else 1.0)


@dataclasses.dataclass
class Contender:
    forward: Callable
    train: Callable
    compile_s: dict  # {"forward": seconds, "train": seconds}; None where the library does not compile
    temp_bytes: int | None  # XLA temp memory of the compiled training step
    params: int


def _optimizer():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-4))


def jax_contender(params, apply: Callable, xs) -> Contender:
    """Jit a forward pass and an optax training step for ``apply(params, xs) -> ys``."""
    optimizer = _optimizer()
    opt_state = optimizer.init(params)

    def loss(p, x):
        return jnp.mean(jnp.square(apply(p, x).astype(jnp.float32)))

    def train_step(p, s, x):
        value, grads = jax.value_and_grad(loss)(p, x)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    compile_s, compiled = {}, {}
    for name, fn, args in (("forward", apply, (params, xs)), ("train", train_step, (params, opt_state, xs))):
        start = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        compile_s[name] = time.perf_counter() - start
    memory = compiled["train"].memory_analysis()
    state = {"params": params, "opt": opt_state}

    def train():
        state["params"], state["opt"], value = compiled["train"](state["params"], state["opt"], xs)
        return value

    return Contender(
        forward=lambda: compiled["forward"](params, xs),
        train=train,
        compile_s=compile_s,
        temp_bytes=getattr(memory, "temp_size_in_bytes", None),
        params=rnnx.count_params(params),
    )


def _inputs(cfg: Config):
    return jax.random.normal(jax.random.key(0), (cfg.batch, cfg.steps, cfg.input)).astype(cfg.dtype)


RNNX_CELLS = {
    "rnn": rnnx.simple_rnn,
    "lstm": rnnx.lstm,
    "gru": rnnx.gru,
    "min_gru": rnnx.min_gru,
    "min_lstm": rnnx.min_lstm,
}


def build_rnnx(cfg: Config, **unroll_kwargs) -> Contender:
    cell = RNNX_CELLS[cfg.cell](cfg.hidden, dtype=cfg.dtype)
    net = rnnx.stacked(cell, cfg.layers, bidirectional=cfg.bidirectional)
    params = net.init(jax.random.key(1), cfg.input)
    return jax_contender(params, lambda p, x: net.apply(p, x, remat=cfg.remat, **unroll_kwargs)[1], _inputs(cfg))


def _single_layer_only(cfg: Config, library: str):
    if cfg.cell.startswith("min_"):
        raise Unavailable(f"{library} has no {cfg.cell} cell")
    if cfg.layers != 1 or cfg.bidirectional:
        raise Unavailable(f"{library}: this suite builds single-layer, unidirectional peers only")


def build_flax_linen(cfg: Config, cell_class: str | None = None) -> Contender:
    _single_layer_only(cfg, "flax.linen")
    import flax.linen as nn

    name = cell_class or {"rnn": "SimpleCell", "lstm": "LSTMCell", "gru": "GRUCell"}[cfg.cell]
    model = nn.RNN(getattr(nn, name)(cfg.hidden, dtype=cfg.dtype))
    xs = _inputs(cfg)
    params = model.init(jax.random.key(1), xs)
    return jax_contender(params, model.apply, xs)


def build_flax_nnx(cfg: Config) -> Contender:
    _single_layer_only(cfg, "flax.nnx")
    from flax import nnx

    cls = {"rnn": nnx.SimpleCell, "lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}[cfg.cell]
    model = nnx.RNN(cls(cfg.input, cfg.hidden, dtype=cfg.dtype, rngs=nnx.Rngs(1)), rngs=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    zeros = jnp.zeros((cfg.batch, cfg.hidden), cfg.dtype)
    init = (zeros, zeros) if cfg.cell == "lstm" else zeros  # explicit: nnx would draw it from an RNG stream
    return jax_contender(params, lambda p, x: nnx.merge(graphdef, p, rest)(x, initial_carry=init), _inputs(cfg))


def build_equinox(cfg: Config) -> Contender:
    _single_layer_only(cfg, "equinox")
    if importlib.util.find_spec("equinox") is None:
        raise Unavailable("equinox is not installed (pip install equinox)")
    import equinox as eqx

    if cfg.cell == "rnn":
        raise Unavailable("equinox has no simple RNN cell")
    cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cfg.cell]
    cell = cls(cfg.input, cfg.hidden, dtype=jnp.dtype(cfg.dtype), key=jax.random.key(1))
    params, static = eqx.partition(cell, eqx.is_array)
    zeros = jnp.zeros((cfg.batch, cfg.hidden), cfg.dtype)

    def apply(p, xs):
        model = jax.vmap(eqx.combine(p, static))  # batch the cell; scan over time

        def step(carry, x):
            carry = model(x, carry)
            return carry, carry[0] if isinstance(carry, tuple) else carry

        init = (zeros, zeros) if cfg.cell == "lstm" else zeros
        return jnp.swapaxes(jax.lax.scan(step, init, jnp.swapaxes(xs, 0, 1))[1], 0, 1)

    return jax_contender(params, apply, _inputs(cfg))


def build_torch(cfg: Config) -> Contender:
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed (pip install torch==2.13.0)")
    import torch

    if cfg.cell.startswith("min_"):
        raise Unavailable(f"torch has no {cfg.cell} cell")
    torch.manual_seed(0)
    kind = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cfg.cell]
    dtype = getattr(torch, cfg.dtype)
    module = getattr(torch.nn, kind)(cfg.input, cfg.hidden, num_layers=cfg.layers,
                                     bidirectional=cfg.bidirectional, batch_first=True).to(dtype)  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the suite runs unchanged on a GPU machine
    module = module.to(device)
    xs = torch.from_numpy(np.array(_inputs(cfg).astype(jnp.float32))).to(dtype).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            out = module(xs)[0]
        sync()
        return out

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = module(xs)[0].float().square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        sync()
        return loss.detach()

    return Contender(forward, train, {"forward": None, "train": None}, None,
                     sum(p.numel() for p in module.parameters()))  # fmt: skip


PEERS = {
    "rnnx": build_rnnx,
    "flax.linen": build_flax_linen,
    "flax.linen OptimizedLSTM": lambda cfg: (
        build_flax_linen(cfg, "OptimizedLSTMCell") if cfg.cell == "lstm" else _raise("LSTM only")
    ),
    "flax.nnx": build_flax_nnx,
    "equinox": build_equinox,
    "torch": build_torch,
}


def _raise(reason):
    raise Unavailable(reason)
