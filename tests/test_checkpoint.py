"""rnnx.training.checkpoint: bit-exact round trips of params, optimizer state and NNX modules; interrupted saves
and other architectures are refused with a clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnx
import rnnx.nn

B, T, D, H = 2, 5, 3, 4


def _bits(tree):
    def raw(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.asarray(a).tobytes()

    return jax.tree.map(raw, tree)


def _types(tree):
    return jax.tree.structure(tree), jax.tree.map(lambda a: (np.shape(a), np.asarray(a).dtype), tree)


@pytest.fixture(scope="module")
def trained():
    """A functional stack after a few Adam steps (non-trivial moments), with a bfloat16 layer."""
    net = rnnx.stacked(rnnx.lstm(H), num_layers=2)
    params = net.init(jax.random.key(0), D)
    params[1][0] = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params[1][0])
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: jnp.sum(net.apply(p, xs)[1].astype(jnp.float32) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(3):
        params, opt_state = step(params, opt_state)
    return net, {"params": params, "opt_state": opt_state, "step": jnp.int32(3)}


def test_functional_state_round_trips_bit_exactly(tmp_path, trained):
    net, state = trained
    path = rnnx.training.checkpoint.save(tmp_path / "ckpt", state, net=net)
    assert path.is_dir() and not list(tmp_path.glob("*orbax-checkpoint-tmp*"))
    like = jax.tree.map(jnp.zeros_like, state)  # same structure, other values
    restored = rnnx.training.checkpoint.restore(path, like, net=net)
    assert _bits(restored) == _bits(state)
    assert _types(restored) == _types(state)  # optax NamedTuples and dtypes (bfloat16 included) come back
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    assert _bits(rnnx.training.checkpoint.restore(path, abstract)) == _bits(state)


def test_nnx_module_and_optimizer_round_trip_bit_exactly(tmp_path):
    xs = jax.random.normal(jax.random.key(2), (B, T, D))
    model = rnnx.nn.GRU(D, H, num_layers=2, dropout=0.2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.sum(m(xs)[0] ** 2))(model)
        optimizer.update(model, grads)

    for _ in range(2):
        step(model, optimizer)
    path = rnnx.training.checkpoint.save(tmp_path / "nnx", {"model": model, "optimizer": optimizer})

    fresh = rnnx.nn.GRU(D, H, num_layers=2, dropout=0.2, rngs=nnx.Rngs(9))
    fresh_opt = nnx.Optimizer(fresh, optax.adam(1e-2), wrt=nnx.Param)
    assert _bits(nnx.state(fresh)) != _bits(nnx.state(model))
    restored = rnnx.training.checkpoint.restore(path, {"model": fresh, "optimizer": fresh_opt})
    assert restored["model"] is fresh
    assert _bits(nnx.state(fresh)) == _bits(nnx.state(model))  # params and the dropout stream
    assert _bits(nnx.state(fresh_opt)) == _bits(nnx.state(optimizer))
    # The NNX checkpoint's params are the functional pytree: the two APIs read each other's weights.
    net, params = model.functional()
    path = rnnx.training.checkpoint.save(tmp_path / "functional", params, net=net)
    assert _bits(rnnx.training.checkpoint.restore(path, fresh.functional()[1], net=fresh)) == _bits(params)


def test_an_interrupted_save_is_never_taken_for_a_checkpoint(tmp_path, trained, monkeypatch):
    net, state = trained
    from orbax.checkpoint._src.path import atomicity

    async def crash(self, *args, **kwargs):  # the process dies after writing, before orbax's rename
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash)
    with pytest.raises(KeyboardInterrupt):
        rnnx.training.checkpoint.save(tmp_path / "ckpt", state, net=net)
    monkeypatch.undo()
    (partial,) = tmp_path.glob("ckpt.orbax-checkpoint-tmp*")  # every byte written, but never renamed
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*ckpt; found \['ckpt.orbax-checkpoint-tmp"):
        rnnx.training.checkpoint.restore(tmp_path / "ckpt", state)
    with pytest.raises(FileNotFoundError, match="unfinished temporary directory left by an interrupted save"):
        rnnx.training.checkpoint.restore(partial, state)

    # A directory under the final name that lacks an item (e.g. a truncated copy).
    path = rnnx.training.checkpoint.save(tmp_path / "good", state, net=net)
    import shutil

    shutil.rmtree(path / "state")
    with pytest.raises(FileNotFoundError, match=r"not a complete rnnx checkpoint: \['state'\] missing"):
        rnnx.training.checkpoint.restore(path, state)


def test_fit_resumes_from_the_latest_complete_step_past_an_interrupted_save(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    xs = jax.random.normal(jax.random.key(0), (6, 4, 3))

    def loss_fn(params, batch, key):
        return jnp.mean((batch @ params["w"] - 1.0) ** 2), {}

    def batches(epoch):
        return [xs[(i + epoch) % 6] for i in range(6)]

    params = {"w": jnp.zeros(3)}
    whole = rnnx.training.fit(loss_fn, params, batches, steps=20)
    hooks = rnnx.training.Checkpoints(tmp_path / "run", every=10)
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def crash_at_step_20(self, *args, **kwargs):  # the process dies before orbax's rename of step_20
        if "step_20" in str(self.get()):
            raise KeyboardInterrupt("simulated crash")
        return await finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash_at_step_20)
    with pytest.raises(KeyboardInterrupt):
        rnnx.training.fit(loss_fn, params, batches, steps=20, checkpoints=hooks)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_10", "step_20.orbax-checkpoint-tmp"]
    with rnnx.training.checkpoint.manager(tmp_path / "run", read_only=True) as manager:
        assert manager.latest_step() == 10
    resumed = rnnx.training.fit(loss_fn, params, batches, steps=20, checkpoints=hooks)
    assert resumed.step == 20 and sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_10", "step_20"]
    assert _bits(resumed.last_params) == _bits(whole.last_params)


def test_a_different_architecture_fails_with_a_clear_error(tmp_path, trained):
    net, state = trained
    path = rnnx.training.checkpoint.save(tmp_path / "lstm", state, net=net)
    gru_net = rnnx.stacked(rnnx.gru(H), num_layers=2)
    with pytest.raises(ValueError, match=r"holds a different architecture: .*'cell': \('lstm', 'gru'\)"):
        rnnx.training.checkpoint.restore(path, state, net=gru_net)
    # Without net=, the recorded shapes catch it, naming the arrays.
    gru_params = gru_net.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"do not fit `like`.*\(saved, expected\) \[shape, dtype\]"):
        rnnx.training.checkpoint.restore(path, {**state, "params": gru_params})
    # NNX modules record their own architecture.
    model = rnnx.nn.LSTM(D, H, rngs=nnx.Rngs(0))
    path = rnnx.training.checkpoint.save(tmp_path / "nnx", {"model": model})
    wider = rnnx.nn.LSTM(D, H, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"different architecture at 'model'.*'bidirectional': \(False, True\)"):
        rnnx.training.checkpoint.restore(path, {"model": wider})
