"""The cuDNN backend's conversions, checked on CPU through ``jax.experimental.rnn``'s own reference.

``cudnn.apply(..., impl=cudnn.reference_lstm)`` runs the same packing and result conversion as on a GPU,
with ``jax.experimental.rnn.lstm_ref`` (pure JAX) in place of the cuDNN kernel.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jrnn

import rnnx
from rnnx.core.backends import cudnn, resolver, table
from rnnx.core.backends.call import Call
from tests.conftest import require_torch, tiered

B, T, D, H = 3, 5, 4, 6
LENGTHS = [5, 1, 3]  # T, 1 and one in between
TOL = dict(atol=1e-5, rtol=1e-5)


def _perturb(params, seed=3):
    """Non-zero everything (biases included), so a dropped or misplaced term shows."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [a + 0.2 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def _net_params(num_layers=1, bidirectional=False, cell=None, input_size=D, **kwargs):
    net = rnnx.stacked(cell or rnnx.lstm(H), num_layers, bidirectional=bidirectional, **kwargs)
    return net, _perturb(net.init(jax.random.key(0), input_size))


def _carry(net, batch_shape=(B,), seed=10):
    keys = jax.random.split(jax.random.key(seed), 2 * net.num_layers * net.num_directions)
    normal = lambda k: jax.random.normal(k, (*batch_shape, H))  # noqa: E731
    return tuple(rnnx.LSTMCarry(normal(keys[2 * i]), normal(keys[2 * i + 1])) for i in range(len(keys) // 2))


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


# --- packing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
def test_pack_is_the_layout_jax_unpacks(num_layers, bidirectional):
    net, params = _net_params(num_layers, bidirectional)
    packed = cudnn.pack(net, params)
    assert packed.shape == (jrnn.get_num_params_in_lstm(D, H, num_layers, bidirectional),)
    assert packed.dtype == jnp.float32
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(packed, D, H, num_layers, bidirectional)
    cells = [p for layer in params for p in layer]
    assert len(w_ih) == len(cells) == num_layers * net.num_directions
    for index, p in enumerate(cells):  # pseudo-layers: layer 0 fwd, layer 0 bwd, layer 1 fwd, ...
        np.testing.assert_array_equal(w_ih[index], p["w_ih"].T)
        np.testing.assert_array_equal(w_hh[index], p["w_hh"].T)
        np.testing.assert_array_equal(b_ih[index], p["b"])
        np.testing.assert_array_equal(b_hh[index], np.zeros(4 * H))


@pytest.mark.parametrize("num_layers,bidirectional", [(1, True), (2, True), (2, False)])
def test_round_trips_are_bit_exact(num_layers, bidirectional):
    net, params = _net_params(num_layers, bidirectional)
    # A -0.0 bias must survive (b_ih + 0.0 would make it +0.0).
    params[0][0]["b"] = params[0][0]["b"].at[0].set(-0.0)
    back = cudnn.unpack(net, cudnn.pack(net, params), D)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # packed -> rnnx -> packed, for every packed vector whose b_hh is zero (everything pack makes).
    packed = cudnn.pack(net, params)
    np.testing.assert_array_equal(_bits(cudnn.pack(net, cudnn.unpack(net, packed, D))), _bits(packed))


def test_foreign_packed_weights_fold_their_two_biases():
    """A cuDNN vector with non-zero b_hh (e.g. from init_lstm_weight) converts to the same function."""
    net = rnnx.stacked(rnnx.lstm(H), 2, bidirectional=True)
    packed = jrnn.init_lstm_weight(jax.random.key(5), D, H, 2, True)
    params = cudnn.unpack(net, packed, D)
    repacked = cudnn.pack(net, params)
    w0, wh0, bi0, bh0 = jrnn.unpack_lstm_weights(packed, D, H, 2, True)
    w1, wh1, bi1, bh1 = jrnn.unpack_lstm_weights(repacked, D, H, 2, True)
    for p in range(4):
        np.testing.assert_array_equal(w1[p], w0[p])
        np.testing.assert_array_equal(wh1[p], wh0[p])
        np.testing.assert_array_equal(bi1[p], bi0[p] + bh0[p])
        np.testing.assert_array_equal(bh1[p], np.zeros(4 * H))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    h0 = jnp.zeros((4, B, H))
    lengths = jnp.array(LENGTHS, jnp.int32)
    run = lambda w: cudnn.reference_lstm(xs, h0, h0, w, lengths, D, H, 2, 0.0, True)  # noqa: E731
    chex.assert_trees_all_close(run(packed), run(repacked), atol=1e-6, rtol=1e-6)
    chex.assert_trees_all_close(net.apply(params, xs, lengths=lengths)[1], run(packed)[0], **TOL)


def test_unpack_fills_what_the_cell_keeps_beyond_weights():
    net, params = _net_params(cell=rnnx.lstm(H, learn_initial_carry=True, param_dtype=jnp.bfloat16))
    back = cudnn.unpack(net, cudnn.pack(net, params), D)
    assert back[0][0]["w_ih"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(back[0][0]["w_ih"], params[0][0]["w_ih"])
    np.testing.assert_array_equal(back[0][0]["h0"], np.zeros(H))  # initial carries are not cuDNN weights

    net, params = _net_params(cell=rnnx.lstm(H, use_bias=False))
    packed = cudnn.pack(net, params)
    np.testing.assert_array_equal(jrnn.unpack_lstm_weights(packed, D, H, 1, False)[2][0], np.zeros(4 * H))
    assert sorted(cudnn.unpack(net, packed, D)[0][0]) == ["w_hh", "w_ih"]
    with pytest.raises(ValueError, match="non-zero biases in pseudo-layer 0, but the cell has use_bias=False"):
        cudnn.unpack(net, packed.at[-1].set(1.0), D)


def test_pack_and_unpack_errors():
    net, params = _net_params()
    with pytest.raises(ValueError, match=r"packed must have shape \(288,\) .* received shape \(287,\)"):
        cudnn.unpack(net, jnp.zeros(287), D)
    with pytest.raises(ValueError, match=r"params do not fit lstm x 2 layer\(s\) x 1 direction"):
        cudnn.pack(rnnx.stacked(rnnx.lstm(H), 2), params)
    with pytest.raises(ValueError, match="computes rnnx.lstm stacks only, received a gru stack"):
        cudnn.pack(rnnx.stacked(rnnx.gru(H)), params)


# --- apply against the scan ----------------------------------------------------------------------------------


def _loss_terms(carry, ys):
    """A scalar touching every output and final state with distinct weights."""
    weights = jax.random.normal(jax.random.key(99), ys.shape)
    total = jnp.sum(weights * ys)
    for i, c in enumerate(carry):
        total += jnp.sum(jnp.sin(c.h + i)) + jnp.sum(jnp.cos(c.c * (i + 1)))
    return total


def _compare(net, params, xs, *, lengths=None, initial_carry=None, param_grad_tol: dict | None = TOL):
    """cudnn.apply (through lstm_ref) equals net.apply: outputs, final carries and every gradient."""

    def run(fn):
        def loss(params, xs, carry):
            return _loss_terms(*fn(params, xs, carry))

        # One compiled program per path: eager autodiff of scans is many times slower here.
        both = jax.jit(lambda *args: (fn(*args), jax.grad(loss, argnums=(0, 1, 2))(*args)))
        return both(params, xs, initial_carry)

    scan = run(lambda p, x, c: net.apply(p, x, lengths=lengths, initial_carry=c))
    fused = run(lambda p, x, c: cudnn.apply(net, p, x, lengths=lengths, initial_carry=c, impl=cudnn.reference_lstm))
    chex.assert_trees_all_equal_shapes_and_dtypes(fused, scan)
    (out, (d_params, d_xs, d_carry)), (scan_out, (scan_d_params, scan_d_xs, scan_d_carry)) = fused, scan
    chex.assert_trees_all_close((out, d_xs, d_carry), (scan_out, scan_d_xs, scan_d_carry), **TOL)
    if param_grad_tol is not None:
        chex.assert_trees_all_close(d_params, scan_d_params, **param_grad_tol)
    return fused


# The quick tier runs the two-layer bidirectional stack and one variant; the full suite runs them all.
@pytest.mark.parametrize(
    "num_layers,bidirectional",
    [pytest.param(n, b, marks=() if (n, b) == (2, True) else pytest.mark.slow) for n in (1, 2) for b in (False, True)],
)
def test_apply_matches_the_scan(num_layers, bidirectional):
    net, params = _net_params(num_layers, bidirectional)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    (carry, ys), grads = _compare(net, params, xs, lengths=jnp.array(LENGTHS), initial_carry=_carry(net))
    assert float(jnp.abs(ys[1, 1:]).max()) == 0.0  # padded outputs are exact zeros
    assert float(jnp.abs(grads[1][1, 1:]).max()) == 0.0  # and padded inputs get no gradient
    assert len(carry) == num_layers * net.num_directions


VARIANTS = {  # each compiles two programs, so each covers several options
    "no_lengths": dict(lengths=None),
    "time_major_two_batch_axes_zero_length": dict(
        time_major=True, shape=(T, 2, B, D), lengths=[[0, 5, 2], [1, 4, 5]]
    ),
    "no_batch_axis": dict(shape=(T, D), lengths=3),
    "learned_carry_no_bias": dict(cell=rnnx.lstm(H, learn_initial_carry=True, use_bias=False, forget_bias=0.0),
                                  carry=False),
    "bf16_storage": dict(cell=rnnx.lstm(H, dtype=jnp.float32, param_dtype=jnp.bfloat16)),
}  # fmt: skip


@pytest.mark.parametrize("variant", tiered(VARIANTS, quick={"time_major_two_batch_axes_zero_length"}))
def test_apply_variants_match_the_scan(variant):
    v = {"lengths": LENGTHS, "shape": (B, T, D), "cell": rnnx.lstm(H), "carry": True, "time_major": False}
    v |= VARIANTS[variant]
    # One bidirectional layer keeps compile time down; two layers are covered above.
    net, params = _net_params(1, True, cell=v["cell"], time_major=v["time_major"])
    xs = jax.random.normal(jax.random.key(1), v["shape"])
    batch_shape = v["shape"][1:-1] if v["time_major"] else v["shape"][:-2]
    initial_carry = _carry(net, batch_shape) if v["carry"] else None
    lengths = None if v["lengths"] is None else jnp.array(v["lengths"])
    bf16 = variant == "bf16_storage"
    fused = _compare(
        net, params, xs, lengths=lengths, initial_carry=initial_carry, param_grad_tol=None if bf16 else TOL
    )
    if bf16:
        # The scan casts bfloat16 params to float32 inside every step, so it sums their gradient over steps in
        # bfloat16; cuDNN's path casts once and sums in float32. Oracle: the float32 gradient, rounded.
        net32 = rnnx.stacked(rnnx.lstm(H), 1, bidirectional=True)
        params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
        loss = lambda p: _loss_terms(*net32.apply(p, xs, lengths=lengths, initial_carry=initial_carry))  # noqa: E731
        expected = jax.tree.map(lambda g: g.astype(jnp.bfloat16), jax.jit(jax.grad(loss))(params32))
        chex.assert_trees_all_close(fused[1][0], expected, atol=1e-5, rtol=2**-7)  # one bfloat16 ulp


def test_apply_under_jit_equals_eager():
    net, params = _net_params(1, True)
    xs, lengths = jax.random.normal(jax.random.key(1), (B, T, D)), jnp.array(LENGTHS)
    run = lambda p, x, n: cudnn.apply(net, p, x, lengths=n, impl=cudnn.reference_lstm)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(run)(params, xs, lengths), run(params, xs, lengths), atol=1e-6, rtol=1e-6)


def test_apply_errors_name_the_argument():
    net, params = _net_params()
    with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, time, 4\), received shape \(3, 5, 7\)"):
        cudnn.apply(net, params, jnp.zeros((B, T, 7)), impl=cudnn.reference_lstm)
    with pytest.raises(ValueError, match=r"lengths must be integers of shape \(3,\)"):
        cudnn.apply(net, params, jnp.zeros((B, T, D)), lengths=jnp.ones(2, int), impl=cudnn.reference_lstm)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\] .* received min 0, max 6"):
        cudnn.apply(net, params, jnp.zeros((B, T, D)), lengths=jnp.array([0, 6, 2]), impl=cudnn.reference_lstm)
    with pytest.raises(ValueError, match="initial_carry must be a tuple of 1 LSTMCarry"):
        cudnn.apply(net, params, jnp.zeros((B, T, D)), initial_carry=(), impl=cudnn.reference_lstm)


def test_reference_path_matches_torch_packed_sequences():
    """The external oracle for the semantics: PyTorch's nn.LSTM over packed sequences, with h0/c0."""
    torch = require_torch()
    net, params = _net_params(2, True)
    xs = np.asarray(jax.random.normal(jax.random.key(1), (B, T, D)))
    carry = _carry(net)
    module = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for layer, directions in enumerate(params):
            for direction, p in enumerate(directions):
                suffix = f"l{layer}" + ("_reverse" if direction else "")
                getattr(module, f"weight_ih_{suffix}").copy_(torch.tensor(np.asarray(p["w_ih"]).T))
                getattr(module, f"weight_hh_{suffix}").copy_(torch.tensor(np.asarray(p["w_hh"]).T))
                getattr(module, f"bias_ih_{suffix}").copy_(torch.tensor(np.asarray(p["b"])))
                getattr(module, f"bias_hh_{suffix}").zero_()
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.tensor(xs), torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False
        )
        h0 = torch.tensor(np.stack([np.asarray(c.h) for c in carry]))
        c0 = torch.tensor(np.stack([np.asarray(c.c) for c in carry]))
        out, (h_n, c_n) = module(packed, (h0, c0))
        ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    got_carry, got_ys = cudnn.apply(
        net, params, xs, lengths=jnp.array(LENGTHS), initial_carry=carry, impl=cudnn.reference_lstm
    )
    np.testing.assert_allclose(got_ys, ys.numpy(), **TOL)
    np.testing.assert_allclose(np.stack([c.h for c in got_carry]), h_n.numpy(), **TOL)
    np.testing.assert_allclose(np.stack([c.c for c in got_carry]), c_n.numpy(), **TOL)


# --- when cuDNN cannot compute the call exactly ----------------------------------------------------------------


def test_unsupported_reason_is_none_where_cudnn_is_exact():
    for cell in [rnnx.lstm(H), rnnx.lstm(H, learn_initial_carry=True, use_bias=False, forget_bias=0.0),
                 rnnx.lstm(H, dtype=jnp.float32, param_dtype=jnp.bfloat16)]:  # fmt: skip
        net, params = _net_params(2, True, cell=cell, dropout=0.5, time_major=True)
        assert cudnn.unsupported_reason(net, params, platform="gpu") is None  # no key: dropout is off
        assert cudnn.unsupported_reason(net, params, platform="cuda", precision=jax.lax.Precision.HIGHEST) is None
    net, params = _net_params(1, dropout=0.5)
    assert cudnn.unsupported_reason(net, params, key=jax.random.key(0), platform="gpu") is None  # one layer


def test_unsupported_reason_names_each_reason():
    net, params = _net_params(2, True, dropout=0.3)
    mask = jnp.ones((B, T), bool)
    reason = lambda *args, **kwargs: cudnn.unsupported_reason(*args, **{"platform": "gpu", **kwargs})  # noqa: E731
    assert "runs on 'cpu'" in cudnn.unsupported_reason(net, params, platform="cpu")
    assert "runs on 'cpu'" in cudnn.unsupported_reason(
        net, params, jax.device_put(jnp.zeros((B, T, D)), jax.devices("cpu")[0])
    )
    for name in ["gru", "simple_rnn", "min_gru", "min_lstm"]:
        other, other_params = _net_params(cell=rnnx.make_cell(name, H))
        assert f"rnnx.lstm cells only, received a {name} stack" in reason(other, other_params)
    assert "params do not fit the stack" in reason(net, params[:1])
    bf16, bf16_params = _net_params(cell=rnnx.lstm(H, dtype=jnp.bfloat16))
    assert "float32 only, but the cell computes in bfloat16" in reason(bf16, bf16_params)
    bf16, bf16_params = _net_params(cell=rnnx.lstm(H, param_dtype=jnp.bfloat16))  # compute dtype = storage
    assert "float32 only, but the cell computes in bfloat16" in reason(bf16, bf16_params)
    with jax.default_matmul_precision("bfloat16"):
        assert "refuses this matmul precision" in reason(net, params)
    assert "not a mask" in reason(net, params, mask=mask)
    assert "reset the carry" in reason(net, params, reset=mask)
    assert "dropout=0.3 between layers is active" in reason(net, params, key=jax.random.key(0))
    assert "empty batch" in reason(net, params, jnp.zeros((0, T, D)))
    xs = jnp.zeros((2, B, T, D))
    seen = []
    jax.vmap(lambda x: seen.append(reason(net, params, x)) or x)(xs)
    assert "no jax.vmap rule" in seen[0]
    seen.clear()
    jax.jit(lambda x: seen.append(reason(net, params, x)) or x)(xs)
    assert seen == [None]


# --------------------------------------------------------------------------- the backend= argument, on CPU


def test_backend_auto_is_the_scan_off_a_gpu_and_cudnn_refuses_with_the_reason():
    import flax.nnx as nnx

    net = rnnx.stacked(rnnx.lstm(6), 2, bidirectional=True)
    params = net.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 4))
    auto, scan = net.apply(params, xs, backend="auto"), net.apply(params, xs, backend="scan")
    chex.assert_trees_all_equal(auto, scan)
    with pytest.raises(ValueError, match="backend='cudnn' cannot run this call: cuDNN runs on an NVIDIA GPU"):
        net.apply(params, xs, backend="cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        net.apply(params, xs, backend="cuda")
    cell = rnnx.gru(6)
    with pytest.raises(ValueError, match="rnnx.lstm cells only, received a gru"):
        rnnx.unroll(cell, cell.init(jax.random.key(0), 4), xs, backend="cudnn")
    with pytest.raises(ValueError, match="reverse=True alone"):
        rnnx.unroll(net.cell, params[0][0], xs, reverse=True, backend="cudnn")
    model = rnnx.nn.LSTM(4, 6, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="NVIDIA GPU"):
        model(xs, backend="cudnn")
    chex.assert_trees_all_equal(model(xs, backend="auto"), model(xs, backend="scan"))


@pytest.mark.parametrize(
    ("conditions", "reason"),
    [(dict(mask=True), "not a mask"), (dict(reset=True), "reset"), (dict(dropout=0.5), "dropout=0.5 between layers")],
)
def test_explicit_cudnn_names_each_reason_it_cannot_honour(conditions, reason, monkeypatch):
    net = rnnx.stacked(rnnx.lstm(6), 2, dropout=0.5)
    params = net.init(jax.random.key(0), 4)
    xs = jnp.zeros((3, 5, 4))
    call = functools.partial(Call, net.cell, params, xs, num_layers=2, platform="gpu")
    with pytest.raises(ValueError, match=f"backend='cudnn' cannot run this call: .*{reason}"):
        resolver.choose(call(**conditions), "cudnn")
    assert resolver.choose(call(), "cudnn") == "cudnn"
    assert resolver.choose(call(), "scan") == "scan"
    # "auto" takes cuDNN only where the table measured it faster than the scan, and only where it can run.
    faster = {"scan": {"forward": 2.0, "train": 9.0}, "cudnn": {"forward": 1.0, "train": 8.0}}
    row = dict(device=table.device_key(jax.devices()[0].device_kind), cell="lstm", dtype="float32", B=3, T=5, H=6)
    assert resolver.choose(call(), "auto") == "scan"  # no measurement for this device kind
    monkeypatch.setattr(table, "entries", lambda: [row | {"ms": faster}])
    assert resolver.choose(call(), "auto") == "cudnn"
    assert resolver.choose(call(**conditions), "auto") == "scan"
    slower = faster | {"cudnn": {"forward": 1.0, "train": 9.5}}  # faster forward, slower training: never
    monkeypatch.setattr(table, "entries", lambda: [row | {"ms": slower}])
    assert resolver.choose(call(), "auto") == "scan"
