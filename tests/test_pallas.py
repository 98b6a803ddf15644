"""The fused Pallas kernels (``backend="pallas"``) against the scan, in Pallas's interpreter on the CPU.

Every cell variant the kernels compute, through every sequence semantic ``unroll`` defines: lengths 0, 1 and
``t`` in one batch, resets (including past the length), a gap mask, reverse, an initial carry, several
batch axes, time-major layout, NaN in the padding; outputs, final carries and the gradients with respect
to the params, the inputs and the initial carry, at 1e-5 in float32. Also bidirectional stacks with
dropout, the NNX modules, ``jax.vmap``, bfloat16 within a stated bound, the refusals, and that the kernels
lower to Pallas-Triton for a GPU (the lowering runs here; compiling and running them needs the GPU, in
``tests/test_gpu.py``). Small shapes: the interpreter is slow, and every test compiles.
"""

import functools
import re

import chex
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import pytest

import rnnx
from rnnx.core.backends import pallas, resolver, table
from rnnx.core.backends.call import Call, Options
from tests.conftest import tiered

B, T, D, H = (2, 3), 5, 3, 8
F32 = dict(atol=1e-5, rtol=1e-5)
VARIANTS = {
    "simple_rnn": lambda: rnnx.simple_rnn(H),
    "simple_rnn_relu": lambda: rnnx.simple_rnn(H, activation="relu"),
    "lstm": lambda: rnnx.lstm(H, learn_initial_carry=True),  # learned h0, c0: a reset's state has a gradient
    "gru": lambda: rnnx.gru(H),
    "gru_reset_before": lambda: rnnx.gru(H, reset_after=False),
    "gru_no_bias": lambda: rnnx.gru(6, use_bias=False),  # h=6 pads to 16 units
}


def _params(cell, seed=0):
    params = cell.init(jax.random.key(seed), D)
    noise = lambda a, k: a + 0.3 * jax.random.normal(k, a.shape, a.dtype)  # noqa: E731 - non-zero biases, h0
    keys = jax.random.split(jax.random.key(seed + 1), len(params))
    return {name: noise(a, k) for (name, a), k in zip(sorted(params.items()), keys)}


def _inputs(cell, params):
    keys = jax.random.split(jax.random.key(7), 4)
    xs = jax.random.normal(keys[0], (*B, T, D))
    lengths = jnp.array([[T, 0, 1], [3, T, 2]])
    reset = jax.random.bernoulli(keys[1], 0.3, (*B, T))
    carry = jax.tree.map(lambda a: jax.random.normal(keys[2], a.shape), cell.default_carry(params, B))
    padded = jnp.arange(T) >= lengths[..., None]
    return jnp.where(padded[..., None], jnp.nan, xs), lengths, reset, carry  # NaN must reach nothing


def _loss(cell, params, xs, carry, backend, **kwargs):
    """A loss that weighs every output and final carry differently, so that any misplaced gradient shows."""
    final, ys = rnnx.unroll(cell, params, xs, initial_carry=carry, backend=backend, **kwargs)
    weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final)), (final, ys)


@functools.partial(jax.jit, static_argnames=("cell", "backend", "reverse", "time_major"))
def _value_and_grads(cell, params, xs, carry, lengths, reset, mask, *, backend, reverse, time_major=False):
    loss = functools.partial(_loss, cell, backend=backend, lengths=lengths, reset=reset, mask=mask, reverse=reverse,
                             time_major=time_major)  # fmt: skip
    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", tiered(VARIANTS, quick={"lstm", "gru_no_bias"}))  # all in the full suite
def test_kernels_equal_the_scan_values_and_gradients(variant, reverse):
    cell = VARIANTS[variant]()
    params = _params(cell)
    xs, lengths, reset, carry = _inputs(cell, params)
    args = (cell, params, xs, carry, lengths, reset, None)
    (loss, (final, ys)), grads = _value_and_grads(*args, backend="pallas", reverse=reverse)
    (want_loss, (want_final, want_ys)), want_grads = _value_and_grads(*args, backend="scan", reverse=reverse)
    chex.assert_trees_all_close((final, ys), (want_final, want_ys), **F32)
    chex.assert_trees_all_close(grads, want_grads, **F32)
    chex.assert_tree_all_finite(grads)  # the NaN in the padding reached no gradient
    assert not jnp.any(ys[0, 1]) and not jnp.any(ys[0, 2, 1:]), "padded outputs are exactly zero"
    assert float(jnp.abs(grads[1][0, 1]).max()) == 0.0, "a length-0 sequence's inputs get no gradient"


def test_a_gap_mask_time_major_equals_the_scan():
    cell = VARIANTS["lstm"]()
    params = _params(cell, seed=3)
    xs, _, reset, carry = _inputs(cell, params)
    xs = jnp.nan_to_num(xs)
    mask = jax.random.bernoulli(jax.random.key(11), 0.6, (*B, T))
    tm = lambda a: jnp.moveaxis(a, -2 if a.ndim == 4 else -1, 0)  # noqa: E731
    args = (cell, params, tm(xs), carry, None, tm(reset), tm(mask))
    got = _value_and_grads(*args, backend="pallas", reverse=False, time_major=True)
    want = _value_and_grads(*args, backend="scan", reverse=False, time_major=True)
    chex.assert_trees_all_close(got, want, **F32)


def test_a_bidirectional_stack_with_dropout_and_the_nnx_module_equal_the_scan():
    net = rnnx.stacked(rnnx.gru(H), num_layers=2, bidirectional=True, dropout=0.25)
    params = net.init(jax.random.key(0), D)
    xs, lengths = jax.random.normal(jax.random.key(1), (3, T, D)), jnp.array([T, 2, 0])

    @functools.partial(jax.jit, static_argnames="backend")
    def loss(params, xs, backend):
        _, ys = net.apply(params, xs, lengths=lengths, key=jax.random.key(2), backend=backend)
        return jnp.sum(ys * jnp.cos(jnp.arange(ys.size).reshape(ys.shape)))

    grad = jax.value_and_grad(loss, argnums=(0, 1))
    chex.assert_trees_all_close(grad(params, xs, "pallas"), grad(params, xs, "scan"), **F32)

    model = rnnx.nn.LSTM(D, H, num_layers=1, rngs=nnx.Rngs(0))
    chex.assert_trees_all_close(model(xs, lengths=lengths, backend="pallas"), model(xs, lengths=lengths), **F32)


def test_vmap_and_jit_equal_the_batched_eager_call():
    cell = rnnx.lstm(H)
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(4), (2, 3, T, D))
    run = lambda x: rnnx.unroll(cell, params, x, backend="pallas")  # noqa: E731
    batched = run(xs)
    chex.assert_trees_all_close(jax.vmap(run)(xs), batched, **F32)
    chex.assert_trees_all_close(jax.jit(run)(xs), batched, **F32)


def test_bfloat16_stays_as_close_to_float32_as_the_scan_does():
    """Storage and compute in bfloat16, matmuls accumulated in float32. bfloat16 keeps 8 significant bits
    (a relative rounding error of 2^-9 per operation), so over ``t`` steps both the scan and the kernels drift
    from the float32 result by a few 1e-3; the bound asks the kernels to stay within twice the scan's
    drift (plus one bfloat16 ulp at 1, 2^-7), i.e. to be no less exact than the scan."""
    xs = jax.random.normal(jax.random.key(5), (4, 12, D))
    for make in (lambda **k: rnnx.lstm(H, **k), lambda **k: rnnx.gru(H, **k)):
        reference = make()
        params = _params(reference)
        f32 = rnnx.unroll(reference, params, xs)[1]
        cell = make(dtype=jnp.bfloat16)
        scan = rnnx.unroll(cell, params, xs, backend="scan")[1]
        fused = rnnx.unroll(cell, params, xs, backend="pallas")[1]
        assert fused.dtype == scan.dtype == jnp.bfloat16
        drift = float(jnp.abs(scan.astype(jnp.float32) - f32).max())
        assert 0 < float(jnp.abs(fused.astype(jnp.float32) - f32).max()) <= 2 * drift + 2.0**-7


def test_tuned_lays_out_the_kernels_traced_inside_it_and_changes_no_value():
    cell = rnnx.gru(H)
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(4), (40, 3, D))  # 40 rows: 3 tiles of 16, or 2 of 32
    grids, values = {}, {}
    for block in (16, 32):
        with pallas.tuned(pallas.Tuning(block=block)):  # a fresh function each time: tracing reads the block
            run = lambda x: rnnx.unroll(cell, params, x, backend="pallas")  # noqa: E731
            grids[block] = set(re.findall(r"grid=\([^)]*\)", str(jax.make_jaxpr(run)(xs))))
            values[block] = run(xs)
    assert grids == {16: {"grid=(3,)"}, 32: {"grid=(2,)"}}
    chex.assert_trees_all_close(values[32], values[16], **F32)
    with pytest.raises(ValueError, match=r"Tuning.block must be a power of two >= 16, received 24"):
        pallas.Tuning(block=24)
    with pytest.raises(ValueError, match=r"Tuning.num_stages must be an int >= 1, received 0"):
        pallas.Tuning(num_stages=0)
    with pytest.raises(TypeError, match="tuned\\(\\) takes a pallas.Tuning, received dict"):
        pallas.tuned({"block": 32}).__enter__()


def test_explicit_pallas_names_each_reason_it_cannot_run():
    xs = jnp.zeros((2, T, D))

    def reason(cell, **kwargs):
        params = cell.init(jax.random.key(0), D)
        with pytest.raises(ValueError, match=r"backend='pallas' cannot run this call: ") as error:
            resolver.choose(Call(cell, [[params]], xs, **kwargs), "pallas")
        return str(error.value)

    assert "received min_gru" in reason(rnnx.min_gru(H))
    assert "this call runs on 'tpu'" in reason(rnnx.lstm(H), platform="tpu")
    assert "computes in float16" in reason(rnnx.gru(H, dtype=jnp.float16))
    assert "hidden_size=200 (padded to 256) needs 256 KiB" in reason(rnnx.lstm(200))
    assert "hidden_size <= 128 fits" in reason(rnnx.lstm(200))
    assert resolver.choose(Call(rnnx.lstm(256, dtype=jnp.bfloat16), [[rnnx.lstm(256).init(jax.random.key(0), D)]],
                                xs), "pallas") == "pallas"  # fmt: skip
    with pytest.raises(ValueError, match="received min_gru"):
        rnnx.unroll(rnnx.min_gru(H), rnnx.min_gru(H).init(jax.random.key(0), D), xs, backend="pallas")
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("seq",))
    with pytest.raises(ValueError, match="mesh= splits time"):
        resolver.choose(Call(rnnx.lstm(H), [[rnnx.lstm(H).init(jax.random.key(0), D)]], xs, mesh=mesh), "pallas")


def test_auto_picks_the_kernels_only_where_measured_faster_and_never_off_a_gpu(monkeypatch):
    cell = rnnx.gru(H)
    params = [[cell.init(jax.random.key(0), D)]]
    xs = jnp.zeros((64, 100, D))
    kind = table.device_key(jax.devices()[0].device_kind)
    row = dict(device=kind, cell="gru", dtype="float32", B=64, T=100, H=H)
    faster = {"scan": {"forward": 1.0, "train": 30.0}, "pallas": {"forward": 0.4, "train": 7.0}}
    monkeypatch.setattr(table, "entries", lambda: [row | {"ms": faster}])
    assert resolver.choose(Call(cell, params, xs, platform="gpu"), "auto") == "pallas"
    assert resolver.choose(Call(cell, params, xs), "auto") == "scan"  # the interpreter, off a GPU: never
    assert resolver.choose(Call(cell, params, xs[:, :10], platform="gpu"), "auto") == "scan"  # T far from 100
    assert resolver.choose(Call(rnnx.lstm(H), params, xs, platform="gpu"), "auto") == "scan"  # no lstm row
    monkeypatch.setattr(table, "entries", lambda: [row | {"ms": faster | {"pallas": {"forward": 0.4}}}])
    assert resolver.choose(Call(cell, params, xs, platform="gpu"), "auto") == "scan"  # train not measured


@pytest.mark.parametrize("variant", ["simple_rnn", "lstm", "gru", "gru_reset_before"])
def test_the_kernels_and_their_gradients_lower_to_pallas_triton(variant):
    """Lowering for CUDA runs the whole Pallas-to-Triton lowering of the forward and backward kernels here;
    an unsupported operation in a kernel would fail it. (Triton's own compiler runs only on a GPU.)"""
    cell = VARIANTS[variant]() if variant != "lstm" else rnnx.lstm(128)
    params = cell.init(jax.random.key(0), D)
    options = Options(kernel=pallas.Tuning(interpret=False))

    def loss(params, x_tm):
        carry = cell.default_carry(params, (32,))
        valid = jnp.arange(T)[:, None] < jnp.arange(32)[None, :]
        out = pallas.run(cell, params, x_tm, carry, valid, valid, carry, reverse=True, options=options)
        return sum(jnp.sum(a) for a in jax.tree.leaves(out))

    lowered = jax.jit(jax.grad(loss)).trace(params, jnp.ones((T, 32, D))).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 2, "one forward kernel and one backward kernel"
    assert "interpret" not in text


def test_the_docs_say_the_kernels_are_interpreted_off_a_gpu():
    page = open("docs/accelerators.md", encoding="utf-8").read()
    assert 'backend="pallas"' in page and "interpreter" in page
