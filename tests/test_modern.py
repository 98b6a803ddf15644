"""The LRU, RG-LRU, sLSTM and mLSTM: what is particular to them.

The sequence semantics (lengths, masks, resets, reverse, initial carry, batch axes, gradients, NaN in padding),
the per-step NumPy references and the fuzzed parallel = sequential run for them through the registry
(``tests/conftest.py``, ``tests/test_unroll.py``, ``tests/test_properties.py``, ``tests/test_cells.py``). This
file checks the papers' initialisations and parameter counts, the stabiliser against the unstabilised equations,
stability over 10,000 steps, the parallel forms' gradients, and the NNX, checkpoint and interop paths.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnnx
import rnnx.nn
from tests import reference

NEW = ("lru", "rg_lru", "slstm", "mlstm")
PARALLEL = ("lru", "rg_lru", "mlstm")
D, H = 3, 4


def _perturbed(cell, key=0):
    params = cell.init(jax.random.key(key), D)
    return {k: v + 0.2 * jax.random.normal(jax.random.key(7), v.shape) for k, v in params.items()}


# ------------------------------------------------------------------------------------ initialisation


def test_lru_ring_initialisation_and_normalisation():
    params = rnnx.lru(8, state_size=512, r_min=0.4, r_max=0.9, max_phase=math.pi / 10).init(jax.random.key(0), D)
    modulus = np.exp(-np.exp(np.asarray(params["nu_log"], np.float64)))
    phase = np.exp(np.asarray(params["theta_log"], np.float64))
    assert 0.4 <= modulus.min() and modulus.max() <= 0.9 and modulus.max() - modulus.min() > 0.4
    assert 0 <= phase.min() and phase.max() <= math.pi / 10 + 1e-6
    # the ring by area: |lambda|^2 is uniform, so its mean is the middle of [r_min^2, r_max^2]
    assert abs(np.mean(modulus**2) - (0.4**2 + 0.9**2) / 2) < 0.03
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-5)


def test_rg_lru_initialises_a_to_the_c_in_the_papers_range():
    params = rnnx.rg_lru(512, c=8.0).init(jax.random.key(0), D)
    a_c = jax.nn.sigmoid(params["lam"]) ** 8
    assert 0.9 - 1e-5 <= float(a_c.min()) and float(a_c.max()) <= 0.999 + 1e-5
    assert float(a_c.max() - a_c.min()) > 0.09


def test_xlstm_forget_biases_spread_over_three_to_six():
    slstm = rnnx.slstm(H).init(jax.random.key(0), D)["b"]
    np.testing.assert_allclose(slstm[H : 2 * H], np.linspace(3, 6, H), rtol=1e-6)
    assert float(jnp.abs(slstm[:H]).max()) == 0 and float(jnp.abs(slstm[2 * H :]).max()) == 0
    mlstm = rnnx.mlstm(H, num_heads=2).init(jax.random.key(0), D)["b"]
    np.testing.assert_allclose(mlstm[-2:], [3.0, 6.0]) and np.testing.assert_array_equal(mlstm[:-2], 0.0)


# ------------------------------------------------------------------------------------ parameter counts


COUNTS = {  # each computed by hand from the paper's parametrisation at a size the paper (or its code) uses
    # LRU, H = 128 inputs and outputs, N = 256 states: B, C complex (2NH each), nu, theta, gamma (N each), and
    # D: the paper's H diagonal entries, a full H x H matrix here (hidden_size may differ from input_size).
    "lru": (rnnx.lru(128, state_size=256), 128, 4 * 256 * 128 + 3 * 256 + 128 * 128),
    # RG-LRU at RecurrentGemma-2B's recurrence width 2560 with 10 heads: block-diagonal W_a, W_x (2 D^2 / heads),
    # b_a, b_x, Lambda (D each), plus this cell's input layer (D (d + 1)).
    "rg_lru": (rnnx.rg_lru(2560, num_heads=10), 2560, 2 * 2560**2 // 10 + 3 * 2560 + 2560 * 2561),
    # sLSTM at the 125M xLSTM's width 768 with 4 heads: W (4 d h), block-diagonal R (4 h^2 / heads), biases (4 h).
    "slstm": (rnnx.slstm(768, num_heads=4), 768, 4 * 768 * 768 + 4 * 768**2 // 4 + 4 * 768),
    # mLSTM, d = h = 768, 4 heads: W_q, W_k, W_v, W_o (h d each, with biases), w_i, w_f (d per head, with biases).
    "mlstm": (rnnx.mlstm(768, num_heads=4), 768, 4 * 768 * 769 + 2 * 4 * 769),
}


@pytest.mark.parametrize("name", NEW)
def test_count_params_matches_the_papers_parametrisation(name):
    cell, input_size, expected = COUNTS[name]
    shapes = cell.param_shapes(input_size)  # the shapes init draws, without drawing 10^7 numbers
    assert sum(math.prod(s) for s in shapes.values()) == expected  # every unroll checks params against them


# ------------------------------------------------------------------------------------ the stabiliser


@pytest.mark.parametrize("name", ["slstm", "mlstm"])
def test_the_stabiliser_gives_the_unstabilised_equations_outputs(name, monkeypatch):
    """Over a short sequence, where the plain exponentials do not overflow in float64, the stabilised cell's
    outputs equal the paper's equations without the stabiliser (and without the authors' epsilon, which the
    stabiliser scales by exp(m_t))."""
    monkeypatch.setattr(rnnx.core.matrix_memory, "EPS", 0.0)
    cell = rnnx.make_cell(name, H, num_heads=2, forget_gate="exp")
    params = _perturbed(cell)
    xs = np.asarray(jax.random.normal(jax.random.key(3), (12, D)))
    _, ys = rnnx.unroll(cell, params, xs, parallel=False)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    if name == "slstm":
        state, step = (np.zeros(H),) * 3, functools.partial(reference.slstm_step_unstabilised, forget_gate="exp")
    else:
        state = (np.zeros((2, 2, 2)), np.zeros((2, 2)))
        step = functools.partial(reference.mlstm_step_unstabilised, heads=2, forget_gate="exp")
    expected = []
    for x in xs:
        state, y = reference.split(step(p, state, x.astype(np.float64)))
        expected.append(y)
    np.testing.assert_allclose(ys, np.stack(expected), atol=2e-5, rtol=2e-5)


# ------------------------------------------------------------------------------------ 10,000 steps

LONG = 10_000


@functools.cache
def _long_run(name, parallel):
    """Value, outputs and gradients of one long run, jitted (one compilation per cell and mode)."""
    cell = rnnx.make_cell(name, 2)

    def loss(params, xs):
        carry, ys = rnnx.unroll(cell, params, xs, parallel=parallel)
        return jnp.mean(ys**2) + sum(jnp.mean(jnp.abs(c) ** 2) for c in jax.tree.leaves(carry)), ys

    return cell, jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.slow  # 10,000 sequential steps and their gradient, per cell
@pytest.mark.parametrize("name", NEW)
def test_ten_thousand_steps_stay_finite(name):
    """Large inputs drive the exponential input gates to ``exp(100)`` and beyond, which overflows float32
    unless the stabiliser works; the parallel forms agree with the recurrence over the whole run."""
    cell, run = _long_run(name, name in PARALLEL)
    params = cell.init(jax.random.key(0), D)
    xs = 30.0 * jax.random.normal(jax.random.key(5), (1, LONG, D))
    (value, ys), grads = run(params, xs)
    chex.assert_tree_all_finite((value, ys, grads))
    if name in ("slstm", "mlstm"):  # the input gates' pre-activations really are beyond float32's exp
        pre = np.asarray(cell.project(params, xs[0]))
        gate = slice(0, 2) if name == "slstm" else slice(4 * 2, 4 * 2 + 1)
        assert np.abs(pre[:, gate]).max() > 100
    if name in PARALLEL:
        (_, sequential), seq_grads = _long_run(name, False)[1](params, xs)
        np.testing.assert_allclose(ys, sequential, atol=1e-3, rtol=1e-3)
        # gradients reach 1e6 here (the normaliser's epsilon): float32 summation order shows at 1e-3 of that
        scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(seq_grads))
        chex.assert_trees_all_close(grads, seq_grads, atol=1e-2 * scale, rtol=1e-2)


def test_lru_keeps_its_eigenvalues_inside_the_unit_circle_for_any_parameters():
    nu_log = jnp.array([-30.0, -10.0, 0.0, 5.0])  # |lambda| = exp(-exp(nu_log)): 1 - 1e-13 .. e^-148
    params = rnnx.lru(1, state_size=4).init(jax.random.key(0), 1) | {"nu_log": nu_log}
    a, _ = rnnx.lru(1, state_size=4).coefficients(params, jnp.zeros((1, 2 * 4 + 1)))
    with jax.enable_x64(True):
        modulus = np.exp(-np.exp(np.asarray(nu_log, np.float64)))
    assert np.all(modulus < 1.0)
    np.testing.assert_allclose(np.abs(np.asarray(a[0])), modulus.astype(np.float32), rtol=1e-6)


# ------------------------------------------------------------------------------------ modules, records, interop


@pytest.mark.slow  # orbax writes and reads a checkpoint
@pytest.mark.parametrize("name", ["lru", "mlstm"])  # the complex carry and the matrix memory; the others are plainer
def test_nnx_modules_stack_and_single_step_with_checkpoint_record(name, tmp_path):
    cell = rnnx.make_cell(name, H)
    model = rnnx.nn.Recurrent(cell, D, num_layers=2, bidirectional=True, dropout=0.25, rngs=nnx.Rngs(0))
    xs, lengths = jax.random.normal(jax.random.key(1), (2, 5, D)), jnp.array([5, 3])
    ys, carry = model(xs, lengths=lengths)
    assert ys.shape == (2, 5, 2 * H) and len(carry) == 4
    assert float(jnp.abs(ys[1, 3:]).max()) == 0.0  # padding stays zero through dropout and both directions
    model.eval()
    # stateful: two calls, the second from the first's carry, equal one call over the whole sequence
    forward = rnnx.nn.Recurrent(cell, D, num_layers=2, rngs=nnx.Rngs(1))
    first, carry_1 = forward(xs[:, :2])
    second, carry_2 = forward(xs[:, 2:], initial_carry=carry_1)
    whole, carry = forward(xs)
    chex.assert_trees_all_close((jnp.concatenate([first, second], 1), carry_2), (whole, carry), atol=1e-5)
    net, params = model.functional()
    chex.assert_trees_all_close(model(xs, lengths=lengths)[0], net.apply(params, xs, lengths=lengths)[1])
    # single steps: the module's step is cell.apply
    step = rnnx.nn.RecurrentCell(cell, D, rngs=nnx.Rngs(0))
    state, y = step(step.default_carry((2,)), xs[:, 0])
    expected = cell.apply(step.functional()[1], cell.default_carry(step.functional()[1], (2,)), xs[:, 0])
    chex.assert_trees_all_close((state, y), expected)
    # the checkpoint records the architecture and refuses another configuration
    path = rnnx.training.checkpoint.save(tmp_path / name, {"params": params}, net=net)
    restored = rnnx.training.checkpoint.restore(path, {"params": params}, net=net)
    chex.assert_trees_all_equal(restored["params"], params)
    other = rnnx.stacked(rnnx.make_cell(name, H + 2), 2, bidirectional=True, dropout=0.25)
    with pytest.raises(ValueError, match="different architecture"):
        rnnx.training.checkpoint.restore(path, {"params": params}, net=other)


@pytest.mark.parametrize("name", NEW)
def test_interop_targets_refuse_the_new_cells_in_one_line(name):
    cell = rnnx.make_cell(name, H)
    params = cell.init(jax.random.key(0), D)
    for convert in (rnnx.interop.to_keras_weights, rnnx.interop.to_linen):
        with pytest.raises(ValueError, match=f"converts simple_rnn, lstm and gru cells; received a '{name}' cell"):
            convert(cell, params)
    with pytest.raises(ValueError, match=f"received a '{name}' cell") as info:
        rnnx.interop.to_torch(rnnx.stacked(cell), [[params]])
    assert "\n" not in str(info.value)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"num_heads must be a positive divisor of hidden_size=6, received 4"):
        rnnx.slstm(6, num_heads=4)
    with pytest.raises(ValueError, match=r"forget_gate must be one of \('sigmoid', 'exp'\), received 'tanh'"):
        rnnx.mlstm(4, forget_gate="tanh")
    with pytest.raises(ValueError, match=r"r_min and r_max must satisfy 0 <= r_min < r_max <= 1, received 0.9, 0.5"):
        rnnx.lru(4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match=r"seq_mesh= splits time .* received a mlstm cell"):
        mesh = jax.sharding.Mesh(jax.devices()[:1], ("seq",))
        cell = rnnx.mlstm(4)
        rnnx.unroll(cell, cell.init(jax.random.key(0), 2), jnp.ones((1, 2, 2)), seq_mesh=mesh)
    with pytest.raises(ValueError, match=r"parallel=True needs a cell with a parallel form .*, but slstm has none"):
        cell = rnnx.slstm(4)
        rnnx.unroll(cell, cell.init(jax.random.key(0), 2), jnp.ones((1, 2, 2)), parallel=True)
