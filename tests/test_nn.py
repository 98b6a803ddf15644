"""rnnx.nn: NNX modules wrap the functional stack exactly, train under nnx.jit, and toggle dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnx
import rnnx.nn

B, T, D, H = 3, 6, 5, 4
LENGTHS = jnp.array([6, 4, 1])
MODULES = {"SimpleRNN": rnnx.nn.SimpleRNN, "LSTM": rnnx.nn.LSTM, "GRU": rnnx.nn.GRU}


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(1), (B, T, D))


def _bits(tree):
    """Every leaf as raw bytes: equality of these is bit-exactness, signed zeros and NaN payloads included."""
    return jax.tree.map(lambda a: np.asarray(a).tobytes(), tree)


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_module_equals_the_functional_api_bit_for_bit(kind, xs):
    model = MODULES[kind](D, H, num_layers=2 if kind == "LSTM" else 1, bidirectional=True, rngs=nnx.Rngs(0))
    net, params = model.functional()
    assert net.cell.name == MODULES[kind].cell_name and net.cell == rnnx.make_cell(net.cell.name, H)
    ys, carry = nnx.jit(lambda m, x: m(x, lengths=LENGTHS))(model, xs)
    carry_f, ys_f = jax.jit(lambda p, x: net.apply(p, x, lengths=LENGTHS))(params, xs)
    assert _bits((ys, carry)) == _bits((ys_f, carry_f))
    assert ys.shape == (B, T, 2 * H) and len(carry) == 2 * net.num_layers
    # The NNX state is the functional pytree, path for path: params/layer/direction/name.
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}
    assert f"['params'][{net.num_layers - 1}][1]['w_ih'].value" in paths
    assert rnnx.count_params(params) == sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_from_functional_and_back_is_lossless(xs):
    net = rnnx.stacked(rnnx.gru(H, reset_after=False, param_dtype=jnp.bfloat16), 2, bidirectional=True)
    params = net.init(jax.random.key(3), D)
    params[0][1]["b"] = params[0][1]["b"].at[0].set(-0.0)  # a signed zero must survive too
    model = rnnx.nn.Recurrent.from_functional(net, params)
    assert type(model) is rnnx.nn.GRU and model.net is net
    net2, params2 = model.functional()
    assert net2 is net and _bits(params2) == _bits(params)
    assert jax.tree.map(lambda a: a.dtype, params2) == jax.tree.map(lambda a: a.dtype, params)
    assert _bits(model(xs)[0]) == _bits(net.apply(params, xs)[1])
    with pytest.raises(TypeError, match="LSTM.from_functional needs a LSTM stack, received a gru one"):
        rnnx.nn.LSTM.from_functional(net, params)
    with pytest.raises(ValueError, match=r"params do not fit gru .* input_size=5: expected shapes"):
        rnnx.nn.GRU(D, H, params=[[params[0][0]]])
    with pytest.raises(ValueError, match=r"rngs is required to initialise the params, e.g. rngs=nnx.Rngs\(0\)"):
        rnnx.nn.LSTM(D, H)
    with pytest.raises(TypeError, match="net must be an rnnx.Stack"):
        rnnx.nn.Recurrent.from_functional(net.cell, params)


def test_nnx_jit_optimizer_split_merge_and_compile_once(xs):
    model = rnnx.nn.LSTM(D, H, num_layers=2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(5e-2), wrt=nnx.Param)
    targets = jnp.tanh(xs[..., :H])

    @nnx.jit
    @chex.assert_max_traces(n=1)  # the train step compiles once across same-shaped batches
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return jnp.mean((model(x)[0] - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, xs, targets)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses
    chex.assert_tree_all_finite(nnx.state(model))
    # jit equals eager; split/merge rebuilds an equal module.
    eager = model(xs)[0]
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x)[0])(model, xs), eager, atol=1e-6)
    graphdef, state = nnx.split(model)
    assert _bits(nnx.merge(graphdef, state)(xs)[0]) == _bits(eager)


def test_dropout_follows_train_and_eval(xs):
    model = rnnx.nn.GRU(D, H, num_layers=2, dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
    net, params = model.functional()
    run = nnx.jit(lambda m, x, **kw: m(x, **kw)[0])
    apply = jax.jit(lambda p, x, key: net.apply(p, x, key=key)[1])
    train_a, train_b = run(model, xs), run(model, xs)
    assert not np.allclose(train_a, train_b), "each training call draws a new dropout mask"
    model.eval()
    assert model.deterministic
    eval_a = run(model, xs)
    assert _bits(eval_a) == _bits(run(model, xs)) == _bits(apply(params, xs, None))
    assert not np.allclose(eval_a, train_a)
    model.train()
    assert not model.deterministic and not np.allclose(run(model, xs), eval_a)
    # A given key reproduces the functional stack's dropout exactly.
    key = jax.random.key(5)
    assert _bits(run(model, xs, rngs=key)) == _bits(apply(params, xs, key))
    no_rngs = rnnx.nn.GRU.from_functional(net, params)
    with pytest.raises(ValueError, match=r"dropout=0.5 needs random keys.*model.eval\(\)"):
        no_rngs(xs)
    no_rngs.eval()
    assert _bits(run(no_rngs, xs)) == _bits(eval_a)


def test_module_reset_lengths_and_initial_carry(xs):
    """A reset inside a sequence equals two separate runs, through layers and both directions."""
    model = rnnx.nn.LSTM(D, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    s, length = 2, 5
    reset = jnp.zeros((T,), bool).at[s].set(True)
    run = nnx.jit(lambda m, x, **kw: m(x, **kw))
    ys, carry = run(model, xs[0], reset=reset, lengths=jnp.array(length))
    ys1, carry1 = run(model, xs[0, :s])
    ys2, carry2 = run(model, xs[0, s:length])
    np.testing.assert_allclose(ys[:s], ys1, atol=1e-6)
    np.testing.assert_allclose(ys[s:length], ys2, atol=1e-6)
    assert float(jnp.abs(ys[length:]).max()) == 0.0
    for layer in range(2):  # forward ends in the second run, backward in the first
        chex.assert_trees_all_close(carry[2 * layer], carry2[2 * layer], atol=1e-6)
        chex.assert_trees_all_close(carry[2 * layer + 1], carry1[2 * layer + 1], atol=1e-6)
    # initial_carry goes through; the default is default_carry().
    start = model.default_carry((B,))
    assert _bits(run(model, xs, initial_carry=start)) == _bits(run(model, xs, initial_carry=None))
    nonzero = jax.tree.map(lambda a: a + 0.5, start)
    assert not np.allclose(run(model, xs, initial_carry=nonzero)[0], run(model, xs, initial_carry=start)[0])


def test_the_stack_is_a_static_attribute_and_equal_modules_share_a_compilation(xs):
    """The module holds its rnnx.Stack directly; equal configurations give equal graphdefs."""
    a = rnnx.nn.LSTM(D, H, num_layers=2, rngs=nnx.Rngs(0))
    b = rnnx.nn.LSTM(D, H, num_layers=2, rngs=nnx.Rngs(1))
    assert a.net == b.net and a.net is not b.net and nnx.graphdef(a) == nnx.graphdef(b)
    assert nnx.graphdef(a) != nnx.graphdef(rnnx.nn.LSTM(D, H, num_layers=2, forget_bias=0.0, rngs=nnx.Rngs(0)))

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def run(model, x):
        return model(x)[0]

    assert not np.allclose(run(a, xs), run(b, xs))  # one compilation, two modules with their own params
    assert type(rnnx.nn.Recurrent(rnnx.min_gru(H), D, rngs=nnx.Rngs(0)).net) is rnnx.Stack


def test_named_modules_build_their_cells_through_the_registry():
    for cls, name in [(rnnx.nn.SimpleRNN, "simple_rnn"), (rnnx.nn.LSTM, "lstm"), (rnnx.nn.GRU, "gru")]:
        model = cls(input_size=D, hidden_size=H, rngs=nnx.Rngs(0), use_bias=False)
        assert model.net.cell == rnnx.make_cell(name, H, use_bias=False)
        net, params = model.functional()
        assert type(rnnx.nn.Recurrent.from_functional(net, params)) is cls
    # A cell without a class of its own comes back as a Recurrent.
    net = rnnx.stacked(rnnx.min_gru(H))
    assert type(rnnx.nn.Recurrent.from_functional(net, net.init(jax.random.key(0), D))) is rnnx.nn.Recurrent


CELL_MODULES = {
    "simple_rnn": rnnx.nn.SimpleRNNCell,
    "lstm": rnnx.nn.LSTMCell,
    "gru": rnnx.nn.GRUCell,
    "min_gru": rnnx.nn.MinGRUCell,
    "min_lstm": rnnx.nn.MinLSTMCell,
    "lru": rnnx.nn.LRUCell,
    "rg_lru": rnnx.nn.RGLRUCell,
    "slstm": rnnx.nn.SLSTMCell,
    "mlstm": rnnx.nn.MLSTMCell,
}


def test_every_registry_cell_has_a_single_step_module():
    assert set(CELL_MODULES) == set(rnnx.CELLS)


@pytest.mark.parametrize("name", sorted(CELL_MODULES))
def test_a_cell_module_is_the_functional_step_and_loops_to_the_unroll(name, xs):
    module = CELL_MODULES[name](D, H, rngs=0)
    cell, params = module.functional()
    assert cell == rnnx.make_cell(name, H) and module.hidden_size == H and module.input_size == D
    assert _bits(params) == _bits(cell.init(nnx.Rngs(0).params(), D))  # rngs=0 is nnx.Rngs(0)
    carry = module.default_carry((B,))
    assert _bits(carry) == _bits(cell.default_carry(params, (B,)))
    ys = []
    for t in range(T):  # a loop of one's own over the module equals rnnx.unroll over the cell
        carry, y = nnx.jit(lambda m, c, x: m(c, x))(module, carry, xs[:, t])
        ys.append(y)
    carry_u, ys_u = rnnx.unroll(cell, params, xs)
    chex.assert_trees_all_close((carry, jnp.stack(ys, 1)), (carry_u, ys_u), atol=1e-5)
    with pytest.raises(ValueError, match=r"params do not fit .* expected shapes"):
        CELL_MODULES[name](D + 1, H, params=params)


def test_size_attributes_are_read_only():
    model = rnnx.nn.GRU(D, H, num_layers=2, bidirectional=True, rngs=0)
    assert (model.input_size, model.hidden_size, model.num_layers, model.bidirectional) == (D, H, 2, True)
    for name in ("hidden_size", "num_layers", "bidirectional"):
        with pytest.raises(AttributeError):
            setattr(model, name, 3)


def test_integer_seeds_are_rngs():
    a, b = rnnx.nn.LSTM(D, H, rngs=0), rnnx.nn.LSTM(D, H, rngs=nnx.Rngs(0))
    assert _bits(a.functional()[1]) == _bits(b.functional()[1])
    model = rnnx.nn.GRU(D, H, num_layers=2, dropout=0.5, rngs=0)
    xs = jnp.ones((B, T, D))
    assert _bits(model(xs, rngs=3)[0]) == _bits(model(xs, rngs=jax.random.key(3))[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_first": True}, "batch_first is PyTorch's; pass time_major=False (the default) for batch-first input"),
        ({"batch_first": False}, "batch_first is PyTorch's; pass time_major=True for time-major input"),
        ({"bias": False}, "bias is PyTorch's; pass use_bias=False for no biases"),
        ({"proj_size": 4}, "proj_size is PyTorch's; rnnx has no projected LSTM"),
        ({"device": "cpu"}, "device is PyTorch's; JAX places arrays itself"),
    ],
)
def test_torch_arguments_name_the_module_and_the_fix(kwargs, message):
    with pytest.raises(TypeError, match="^" + "rnnx.nn.LSTM: " + message.replace("(", r"\(").replace(")", r"\)")):
        rnnx.nn.LSTM(D, H, rngs=0, **kwargs)
    with pytest.raises(TypeError, match="^rnnx.nn.LSTMCell: " + message.split(";")[0]):
        rnnx.nn.LSTMCell(D, H, rngs=0, **kwargs)
    with pytest.raises(TypeError, match=r"rnnx.nn.SimpleRNN: nonlinearity is PyTorch's; pass activation='relu'"):
        rnnx.nn.SimpleRNN(D, H, rngs=0, nonlinearity="relu")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_state_round_trip_and_stacked_initial_carry_is_refused(kind, xs):
    model = MODULES[kind](D, H, num_layers=2, bidirectional=True, rngs=0)
    _, carry = model(xs)
    state = rnnx.nn.to_torch_state(carry)
    h_n = state[0] if kind == "LSTM" else state
    assert h_n.shape == (4, B, H)
    back = rnnx.nn.from_torch_state(*state) if kind == "LSTM" else rnnx.nn.from_torch_state(state)
    assert _bits(back) == _bits(tuple(carry))
    assert _bits(model(xs, initial_carry=back)) == _bits(model(xs, initial_carry=carry))
    with pytest.raises(ValueError, match=rf"rnnx.nn.{kind}: .*PyTorch's stacked \(L\*D, b, h\) layout; pass "):
        model(xs, initial_carry=tuple(state) if kind == "LSTM" else (h_n,))
    with pytest.raises(TypeError, match=rf"rnnx.nn.{kind}: initial_carry must be a tuple .*from_torch_state"):
        model(xs, initial_carry=h_n)


def test_torch_state_matches_torch_lstm(xs):
    """rnnx's h_n/c_n from to_torch_state equal torch.nn.LSTM's, weights brought over by interop."""
    from tests.conftest import require_torch

    torch = require_torch()
    from rnnx.interop import torch as interop_torch

    torch.manual_seed(0)
    ref = torch.nn.LSTM(D, H, num_layers=2, batch_first=True)
    net, params = interop_torch.from_torch(ref)
    model = rnnx.nn.LSTM.from_functional(net, params)
    h0, c0 = torch.randn(2, B, H), torch.randn(2, B, H)
    with torch.no_grad():
        ys_t, (h_t, c_t) = ref(torch.tensor(np.array(xs)), (h0, c0))
    ys, carry = model(xs, initial_carry=rnnx.nn.from_torch_state(h0.numpy(), c0.numpy()))
    h_n, c_n = rnnx.nn.to_torch_state(carry)
    np.testing.assert_allclose(ys, ys_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, h_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(c_n, c_t.numpy(), atol=1e-5)
