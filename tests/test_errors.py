"""Bad input fails at trace time with a message naming the argument, the expected and the received value."""

import jax
import jax.numpy as jnp
import pytest

import rnnx

CELL = rnnx.lstm(4)
PARAMS = CELL.init(jax.random.key(0), 3)
XS = jnp.ones((2, 5, 3))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(xs=jnp.ones((2, 5, 299))), ValueError, r"xs has feature size 299, but the cell was initialised for input_size=3"),
        (dict(xs=jnp.ones((2, 5, 3), jnp.int32)), TypeError, r"xs must have a floating dtype, received int32"),
        (dict(xs=jnp.ones((2, 0, 3))), ValueError, r"xs has 0 time steps; expected at least 1"),
        (dict(xs=jnp.ones((3,))), ValueError, r"xs must have shape \(\*batch, time, features\), received shape \(3,\)"),
        (dict(lengths=jnp.array([5, 5, 5])), ValueError, r"lengths must have the batch shape \(2,\), received shape \(3,\)"),
        (dict(lengths=jnp.array([6, 1])), ValueError, r"lengths must lie in \[0, 5\].*received min 1, max 6"),
        (dict(lengths=jnp.array([-1, 1])), ValueError, r"lengths must lie in \[0, 5\].*received min -1, max 1"),
        (dict(lengths=jnp.array([1.0, 2.0])), TypeError, r"lengths must have an integer dtype, received float32"),
        (dict(mask=jnp.ones((2, 4), bool)), ValueError, r"mask must have shape \(\*batch, time\) = \(2, 5\), received shape \(2, 4\)"),
        (dict(mask=jnp.ones((2, 5), jnp.int32)), TypeError, r"mask must have dtype bool, received int32"),
        (dict(reset=jnp.ones((5, 2), bool)), ValueError, r"reset must have shape .* = \(2, 5\), received shape \(5, 2\)"),
        (dict(initial_carry=jnp.zeros((2, 4))), ValueError, r"initial_carry must have shapes LSTMCarry\(h=\(2, 4\), c=\(2, 4\)\)"),
        (dict(params=rnnx.gru(4).init(jax.random.key(0), 3)), ValueError, r"params do not fit the cell lstm\(hidden_size=4.*received \{'w_ih': \(3, 12\)"),
        (dict(params=rnnx.lstm(5).init(jax.random.key(0), 3)), ValueError, r"params do not fit the cell lstm\(hidden_size=4"),
    ],
)  # fmt: skip
def test_unroll_rejects_bad_input(kwargs, error, pattern):
    args = dict(params=PARAMS, xs=XS) | kwargs
    params, xs = args.pop("params"), args.pop("xs")
    with pytest.raises(error, match=pattern):
        rnnx.unroll(CELL, params, xs, **args)


def test_errors_are_raised_while_tracing_before_any_compute():
    # jit(...).trace only traces: an error raised there came before any compute.
    with pytest.raises(ValueError, match="feature size 2"):
        jax.jit(lambda x: rnnx.unroll(CELL, PARAMS, x)).trace(jnp.ones((2, 5, 2)))
    # Traced lengths cannot be range-checked, but their shape still is.
    with pytest.raises(ValueError, match="lengths must have the batch shape"):
        jax.jit(lambda n: rnnx.unroll(CELL, PARAMS, XS, lengths=n)).trace(jnp.ones(3, jnp.int32))


@pytest.mark.parametrize("factory", [rnnx.simple_rnn, rnnx.lstm, rnnx.gru])
@pytest.mark.parametrize("hidden_size", [0, -3, 2.5, True])
def test_factories_reject_bad_hidden_size(factory, hidden_size):
    with pytest.raises(ValueError, match=rf"hidden_size must be a positive integer, received {hidden_size!r}"):
        factory(hidden_size)


def test_unknown_activation_and_bad_input_size():
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'tanh'\], received 'sigmoid'"):
        rnnx.simple_rnn(4, activation="sigmoid")
    with pytest.raises(ValueError, match=r"input_size must be a positive integer, received 0"):
        rnnx.gru(4).init(jax.random.key(0), 0)


def test_stack_rejects_bad_configuration_and_params():
    with pytest.raises(ValueError, match=r"num_layers must be a positive integer, received 0"):
        rnnx.stacked(rnnx.gru(4), num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\), received 1.0"):
        rnnx.stacked(rnnx.gru(4), num_layers=2, dropout=1.0)
    with pytest.raises(TypeError, match=r"cell must be an rnnx.Cell .*received function"):
        rnnx.stacked(rnnx.gru, num_layers=2)
    net = rnnx.stacked(rnnx.gru(4), num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"params must be a list of 2 layers of 2 direction\(s\), received \[2\]"):
        net.apply(params[:1], XS)
    with pytest.raises(ValueError, match=r"initial_carry must be a tuple of 4 cell carries .* received 2"):
        net.apply(params, XS, initial_carry=(None, None))
