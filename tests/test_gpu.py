"""Accelerator tests: cuDNN against the scan on the GPU, and every cell on the GPU against the CPU.

They skip unless JAX's default backend is a GPU. ``RNNX_GPU_TESTS_ON_CPU=1`` runs them on CPU to rehearse
the code (the "GPU" is then the CPU and cuDNN is ``jax.experimental.rnn.lstm_ref`` through the same
conversions), which proves they run, not what they measure.

Matmuls run at full float32 precision (``jax.default_matmul_precision("float32")``, which also tells
cuDNN not to use TF32), so that the paths agree at 1e-4; one test checks the default (TF32) precision at
a bound that allows for TF32's 10-bit mantissa.
"""

import inspect
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import rnn as jrnn

import rnnx
from rnnx.core.backends import cudnn, table

ON_GPU = jax.default_backend() == "gpu"
REHEARSAL = not ON_GPU and os.environ.get("RNNX_GPU_TESTS_ON_CPU") == "1"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not ON_GPU and not REHEARSAL,
        reason=f"needs a GPU: jax.default_backend() is {jax.default_backend()!r} "
        "(RNNX_GPU_TESTS_ON_CPU=1 rehearses these tests on CPU)",
    ),
]

IMPL = cudnn.reference_lstm if REHEARSAL else None  # None: the real jax.experimental.rnn.lstm
PLATFORM = "gpu" if REHEARSAL else None  # None: detected
B, T, D, H = 8, 20, 16, 32
F32 = dict(atol=1e-4, rtol=1e-4)
# GPU against CPU: other transcendental implementations and summation orders, over T steps.
DEVICES = dict(atol=2e-4, rtol=2e-4)


@pytest.fixture(autouse=True)
def full_float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def _cpu():
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        pytest.skip("no CPU backend to compare with (JAX_PLATFORMS excludes cpu)")


def _on_cpu(fn, *args):
    """``fn(*args)`` with the arguments and every new array on the CPU."""
    cpu = _cpu()
    with jax.default_device(cpu):
        return fn(*jax.device_put(args, cpu))


def _data(batch_shape=(B,), seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    xs = jax.random.normal(k1, (*batch_shape, T, D))
    lengths = jax.random.randint(k2, batch_shape, 1, T + 1).at[..., 0].set(T).at[..., 1].set(1)
    return xs, lengths


def _perturb(params, seed=3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def _loss(carry, ys):
    weights = jax.random.normal(jax.random.key(99), ys.shape)
    terms = [jnp.mean(weights * ys)] + [jnp.mean(jnp.sin(c.h)) + jnp.mean(jnp.cos(c.c)) for c in carry]
    return sum(terms)


def _value_and_grads(fn, params, xs, carry):
    def loss(params, xs, carry):
        return _loss(*fn(params, xs, carry))

    return jax.jit(lambda *a: (fn(*a), jax.grad(loss, argnums=(0, 1, 2))(*a)))(params, xs, carry)


# --- cuDNN against the scan ------------------------------------------------------------------------------------

CONFIGS = {
    "1x_uni": dict(num_layers=1, bidirectional=False, lengths=False, carry=False, cell={}),
    "2x_bi_lengths_carry": dict(num_layers=2, bidirectional=True, lengths=True, carry=True, cell={}),
    "1x_bi_learned_carry_no_bias": dict(
        num_layers=1, bidirectional=True, lengths=True, carry=False, cell=dict(learn_initial_carry=True, use_bias=False)
    ),
}


def _setup(config):
    c = CONFIGS[config]
    net = rnnx.stacked(rnnx.lstm(H, **c["cell"]), c["num_layers"], bidirectional=c["bidirectional"])
    params = _perturb(net.init(jax.random.key(0), D))
    xs, lengths = _data()
    keys = jax.random.split(jax.random.key(5), 2 * c["num_layers"] * net.num_directions)
    carry = tuple(
        rnnx.LSTMCarry(jax.random.normal(keys[2 * i], (B, H)), jax.random.normal(keys[2 * i + 1], (B, H)))
        for i in range(len(keys) // 2)
    )
    return net, params, xs, lengths if c["lengths"] else None, carry if c["carry"] else None


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_cudnn_matches_the_scan_float32(config):
    net, params, xs, lengths, carry = _setup(config)
    assert cudnn.unsupported_reason(net, params, xs, platform=PLATFORM) is None
    highest = jax.lax.Precision.HIGHEST
    fused = _value_and_grads(
        lambda p, x, c: cudnn.apply(net, p, x, lengths=lengths, initial_carry=c, precision=highest, impl=IMPL),
        params, xs, carry,
    )  # fmt: skip
    scan = _value_and_grads(lambda p, x, c: net.apply(p, x, lengths=lengths, initial_carry=c), params, xs, carry)
    chex.assert_tree_all_finite(fused)
    chex.assert_trees_all_equal_shapes_and_dtypes(fused, scan)
    chex.assert_trees_all_close(fused, scan, **F32)
    if lengths is not None:
        ys = fused[0][1]
        assert float(jnp.abs(jnp.where((jnp.arange(T) >= lengths[:, None])[..., None], ys, 0)).max()) == 0.0


def test_cudnn_matches_the_scan_at_default_precision():
    """TF32 (10-bit mantissa, relative rounding 2**-11 per product) in both paths on recent GPUs: about
    1e-3 relative per matmul, compounding over T=20 steps; 2e-2 leaves room without hiding a wrong layout,
    which errs by O(1)."""
    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    with jax.default_matmul_precision(None):
        fused = _value_and_grads(
            lambda p, x, c: cudnn.apply(net, p, x, lengths=lengths, initial_carry=c, impl=IMPL), params, xs, carry
        )
        scan = _value_and_grads(lambda p, x, c: net.apply(p, x, lengths=lengths, initial_carry=c), params, xs, carry)
    chex.assert_trees_all_close(fused, scan, atol=2e-2, rtol=2e-2)


def test_real_cudnn_semantics_match_lstm_ref():
    """jax.experimental.rnn.lstm itself (no rnnx masking) against lstm_ref: ragged lengths, reverse direction,
    initial carry; and cuDNN's outputs past each length are its padding fill, 0."""
    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    h_0 = jnp.stack([c.h for c in carry])
    c_0 = jnp.stack([c.c for c in carry])
    args = (xs, h_0, c_0, cudnn.pack(net, params), lengths.astype(jnp.int32))
    static = dict(input_size=D, hidden_size=H, num_layers=2, dropout=0.0, bidirectional=True)
    real = (IMPL or jrnn.lstm)(*args, **static, precision=jax.lax.Precision.HIGHEST)
    ref = cudnn.reference_lstm(*args, **static)
    chex.assert_trees_all_close(real, ref, **F32)
    padded = jnp.arange(T) >= lengths[:, None]
    assert float(jnp.abs(jnp.where(padded[..., None], real[0], 0)).max()) == 0.0


def test_cudnn_bfloat16():
    """cuDNN's LSTM in jax.experimental.rnn computes in float32 only: a bfloat16 cell gets the scan (and the
    reason says so). bfloat16 *storage* with float32 compute does run on cuDNN: its outputs match at float32
    tolerance and its param gradients are the float32 gradients rounded to bfloat16, within one bfloat16 ulp
    (2**-7 relative; the scan, which sums per-step gradients in bfloat16, is further off)."""
    net = rnnx.stacked(rnnx.lstm(H, dtype=jnp.bfloat16), 1)
    reason = cudnn.unsupported_reason(net, net.init(jax.random.key(0), D), platform=PLATFORM)
    assert reason is not None and "float32 only" in reason and "bfloat16" in reason

    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    net16 = rnnx.stacked(rnnx.lstm(H, dtype=jnp.float32, param_dtype=jnp.bfloat16), 2, bidirectional=True)
    params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params16)  # the same values, in float32
    assert cudnn.unsupported_reason(net16, params16, xs, platform=PLATFORM) is None
    highest = jax.lax.Precision.HIGHEST
    fused = _value_and_grads(
        lambda p, x, c: cudnn.apply(net16, p, x, lengths=lengths, initial_carry=c, precision=highest, impl=IMPL),
        params16, xs, carry,
    )  # fmt: skip
    exact = _value_and_grads(lambda p, x, c: net.apply(p, x, lengths=lengths, initial_carry=c), params32, xs, carry)
    chex.assert_trees_all_close((fused[0], fused[1][1:]), (exact[0], exact[1][1:]), **F32)
    rounded = jax.tree.map(lambda g: g.astype(jnp.bfloat16), exact[1][0])
    chex.assert_trees_all_close(fused[1][0], rounded, atol=1e-4, rtol=2**-7)


def test_cudnn_training_step():
    """A jitted optax step through cuDNN's custom VJP equals the scan's."""
    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    optimizer = optax.adam(1e-2)
    highest = jax.lax.Precision.HIGHEST

    def make_step(run):
        @jax.jit
        def step(params, opt_state):
            loss, grads = jax.value_and_grad(lambda p: _loss(*run(p)))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, grads

        return step

    fused = make_step(lambda p: cudnn.apply(net, p, xs, lengths=lengths, precision=highest, impl=IMPL))
    scan = make_step(lambda p: net.apply(p, xs, lengths=lengths))
    a, b = fused(params, optimizer.init(params)), scan(params, optimizer.init(params))
    chex.assert_tree_all_finite(a)
    chex.assert_trees_all_close(a[2:], b[2:], **F32)  # loss and gradients (Adam's first step is ~lr * sign(g))


@pytest.mark.parametrize("poison", [jnp.nan, jnp.inf])
def test_cudnn_padding_never_reaches_the_gradient(poison):
    """NaN or inf beyond ``lengths`` gives the outputs and gradients of zeros there, as in the scan."""
    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    padded = (jnp.arange(T) >= lengths[:, None])[..., None]
    highest = jax.lax.Precision.HIGHEST

    def run(p, x, c):
        return cudnn.apply(net, p, x, lengths=lengths, initial_carry=c, precision=highest, impl=IMPL)

    dirty = _value_and_grads(run, params, jnp.where(padded, poison, xs), carry)
    clean = _value_and_grads(run, params, jnp.where(padded, 0.0, xs), carry)
    chex.assert_tree_all_finite(dirty)
    chex.assert_trees_all_close(dirty, clean, **F32)


def test_backend_argument_when_wired():
    """``backend=`` on Stack.apply / unroll: "cudnn" equals "scan", and "auto" picks cuDNN on a GPU exactly
    where the committed table measured it faster than the scan."""
    if "backend" not in inspect.signature(rnnx.Stack.apply).parameters:
        pytest.skip("Stack.apply has no backend= argument yet")
    net, params, xs, lengths, carry = _setup("2x_bi_lengths_carry")
    if REHEARSAL:
        with pytest.raises(ValueError, match="GPU"):
            net.apply(params, xs, lengths=lengths, backend="cudnn")
        return
    kwargs = dict(lengths=lengths, initial_carry=carry)
    chex.assert_trees_all_close(
        net.apply(params, xs, backend="cudnn", **kwargs), net.apply(params, xs, backend="scan", **kwargs), **F32
    )
    kind = table.device_key(jax.devices()[0].device_kind)
    expected = table.fastest(kind, "lstm", "float32", xs.shape[0], xs.shape[1], H) or "scan"
    auto = str(jax.make_jaxpr(lambda p, x: net.apply(p, x, backend="auto", **kwargs))(params, xs))
    assert ("rnn_fwd" in auto) == (expected == "cudnn")
    assert "rnn_fwd" not in str(jax.make_jaxpr(lambda p, x: net.apply(p, x, backend="scan", **kwargs))(params, xs))
    if "backend" in inspect.signature(rnnx.unroll).parameters:
        cell, p = rnnx.lstm(H), params[0][0]
        chex.assert_trees_all_close(
            rnnx.unroll(cell, p, xs, lengths=lengths, backend="cudnn"),
            rnnx.unroll(cell, p, xs, lengths=lengths, backend="scan"),
            **F32,
        )


# --- every cell on the GPU, against the CPU --------------------------------------------------------------------


@pytest.fixture(params=sorted(rnnx.CELLS))
def cell(request):
    return rnnx.make_cell(request.param, H)


def _agree(fn, *args):
    """Run ``fn`` on the default device (the GPU) and on the CPU; both finite and equal within DEVICES."""
    on_gpu = jax.jit(fn)(*args)
    chex.assert_tree_all_finite(on_gpu)
    on_cpu = _on_cpu(jax.jit(fn), *args)
    chex.assert_trees_all_close(jax.device_get(on_gpu), jax.device_get(on_cpu), **DEVICES)
    return on_gpu


def test_unroll_every_cell(cell):
    params = _perturb(cell.init(jax.random.key(0), D))
    xs, lengths = _data()

    def run(params, xs, lengths):
        fwd = rnnx.unroll(cell, params, xs, lengths=lengths)
        bwd = rnnx.unroll(cell, params, xs, lengths=lengths, reverse=True)
        return fwd, bwd, jax.grad(lambda p: jnp.mean(rnnx.unroll(cell, p, xs, lengths=lengths)[1] ** 2))(params)

    _agree(run, params, xs, lengths)


def test_stacked_every_cell(cell):
    net = rnnx.stacked(cell, 2, bidirectional=True)
    params = _perturb(net.init(jax.random.key(0), D))
    xs, lengths = _data(batch_shape=(2, 4))

    def run(params, xs, lengths):
        out = net.apply(params, xs, lengths=lengths)
        return out, jax.grad(lambda p, x: jnp.mean(net.apply(p, x, lengths=lengths)[1] ** 2), (0, 1))(params, xs)

    _agree(run, params, xs, lengths)


def test_nnx_module_every_cell(cell):
    from flax import nnx

    import rnnx.nn

    classes = {"simple_rnn": rnnx.nn.SimpleRNN, "lstm": rnnx.nn.LSTM, "gru": rnnx.nn.GRU}
    if cell.name in classes:  # input size positionally: its keyword name may change
        model = classes[cell.name](D, H, 2, bidirectional=True, rngs=nnx.Rngs(0))
    else:
        model = rnnx.nn.Recurrent(cell, D, 2, bidirectional=True, rngs=nnx.Rngs(0))
    xs, lengths = _data()
    graphdef, state = nnx.split(model)

    def run(state, xs, lengths):
        return nnx.merge(graphdef, state)(xs, lengths=lengths)

    _agree(run, state, xs, lengths)


def test_training_step_every_cell(cell):
    net = rnnx.stacked(cell, 2, bidirectional=True)
    params = {"rnn": net.init(jax.random.key(0), D), "w": 0.1 * jax.random.normal(jax.random.key(2), (2 * H, 3))}
    xs, lengths = _data()
    targets = jax.random.normal(jax.random.key(4), (B, 3))
    # Plain SGD, so that agreement between devices is checked on the updated params too (Adam's first step
    # is lr * sign(g), which flips where a gradient is near zero).
    optimizer = optax.sgd(0.1)

    def step(params, xs, lengths, targets):
        def loss(params):
            _, ys = net.apply(params["rnn"], xs, lengths=lengths)
            pooled = ys.sum(axis=1) / lengths[:, None]
            return jnp.mean((pooled @ params["w"] - targets) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return value, optax.apply_updates(params, updates)

    loss, new_params = _agree(step, params, xs, lengths, targets)
    assert np.isfinite(float(loss)) and float(loss) > 0


# --- the fused Pallas kernels against the scan, on the device ---------------------------------------------------

KERNEL_CELLS = {
    "simple_rnn": lambda: rnnx.simple_rnn(H),
    "simple_rnn_relu": lambda: rnnx.simple_rnn(H, activation="relu"),
    "lstm": lambda: rnnx.lstm(H, learn_initial_carry=True),
    "gru": lambda: rnnx.gru(H),
    "gru_reset_before": lambda: rnnx.gru(H, reset_after=False),
}


@pytest.mark.parametrize("name", sorted(KERNEL_CELLS))
def test_pallas_matches_the_scan_through_unroll_stacked_and_nnx(name):
    """Values and gradients (params, xs, initial carry) through ``unroll`` with lengths, resets and both
    directions, through a bidirectional two-layer stack with dropout, and through the NNX modules."""
    cell = KERNEL_CELLS[name]()
    params = _perturb(cell.init(jax.random.key(0), D))
    xs, lengths = _data(batch_shape=(2, 4))
    reset = jax.random.bernoulli(jax.random.key(8), 0.2, (2, 4, T))
    carry = jax.tree.map(lambda a: jax.random.normal(jax.random.key(9), a.shape), cell.initial_carry(params, (2, 4)))

    def run(backend):
        def loss(params, xs, carry, reverse):
            out = rnnx.unroll(cell, params, xs, lengths=lengths, reset=reset, initial_carry=carry, reverse=reverse,
                              backend=backend)  # fmt: skip
            return sum(jnp.mean(jnp.sin(a)) for a in jax.tree.leaves(out)), out

        grads = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
        return jax.jit(lambda *a: (grads(*a, False), grads(*a, True)))(params, xs, carry)

    chex.assert_trees_all_close(run("pallas"), run("scan"), **F32)

    net = rnnx.stacked(cell, 2, bidirectional=True, dropout=0.2)
    stack_params = _perturb(net.init(jax.random.key(1), D))

    def stack(backend):
        def loss(p, x):
            _, ys = net.apply(p, x, lengths=lengths, key=jax.random.key(3), backend=backend)
            return jnp.mean(ys**2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(stack_params, xs)

    chex.assert_trees_all_close(stack("pallas"), stack("scan"), **F32)

    from flax import nnx

    from rnnx import nn as rnnx_nn  # loaded on first use; `import rnnx.nn` here would make rnnx a local name

    model = rnnx_nn.Recurrent(cell, D, 1, rngs=nnx.Rngs(0))
    chex.assert_trees_all_close(model(xs, lengths=lengths, backend="pallas"), model(xs, lengths=lengths), **F32)


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_rnn"])
def test_pallas_training_step_equals_the_scan(name):
    """A full training step (Adam, gradient clipping) on the kernels equals the scan's, and so do the
    default-precision (TF32) results within TF32's 10-bit mantissa."""
    net = rnnx.stacked(KERNEL_CELLS[name](), 1)
    params = {"rnn": _perturb(net.init(jax.random.key(0), D)), "w": 0.1 * jax.random.normal(jax.random.key(2), (H, 3))}
    xs, lengths = _data()
    targets = jax.random.normal(jax.random.key(4), (B, 3))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))

    def step(backend):
        def loss(params):
            _, ys = net.apply(params["rnn"], xs, lengths=lengths, backend=backend)
            return jnp.mean((ys.sum(axis=1) / lengths[:, None] @ params["w"] - targets) ** 2)

        def run(params):
            value, grads = jax.value_and_grad(loss)(params)
            updates, _ = optimizer.update(grads, optimizer.init(params), params)
            return value, grads, optax.apply_updates(params, updates)

        return jax.jit(run)(params)

    chex.assert_trees_all_close(step("pallas"), step("scan"), **F32)
    with jax.default_matmul_precision(None):
        chex.assert_trees_all_close(step("pallas"), step("scan"), atol=2e-2, rtol=2e-2)


def test_pallas_bfloat16_on_the_device():
    xs, lengths = _data()
    reference = rnnx.lstm(H)
    params = _perturb(reference.init(jax.random.key(0), D))
    f32 = rnnx.unroll(reference, params, xs, lengths=lengths)[1]
    cell = rnnx.lstm(H, dtype=jnp.bfloat16)
    scan = rnnx.unroll(cell, params, xs, lengths=lengths, backend="scan")[1].astype(jnp.float32)
    fused = rnnx.unroll(cell, params, xs, lengths=lengths, backend="pallas")[1].astype(jnp.float32)
    assert float(jnp.abs(fused - f32).max()) <= 2 * float(jnp.abs(scan - f32).max()) + 2.0**-7
