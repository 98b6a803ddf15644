"""Property tests over random lengths and masks, with one jitted function reused across examples."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnx

CELL = rnnx.gru(4)
PARAMS = CELL.init(jax.random.key(0), 3)
XS = jax.random.normal(jax.random.key(1), (3, 6, 3))
RUN = jax.jit(
    lambda xs, lengths, mask, reverse: rnnx.unroll(CELL, PARAMS, xs, lengths=lengths, mask=mask, reverse=reverse),
    static_argnums=3,
)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=3, max_size=3),
    mask_bits=st.lists(st.booleans(), min_size=18, max_size=18),
    reverse=st.booleans(),
)
def test_lengths_and_mask_equal_running_only_the_selected_steps(lengths, mask_bits, reverse):
    lengths = jnp.array(lengths)
    mask = jnp.array(mask_bits).reshape(3, 6)
    carry, ys = RUN(XS, lengths, mask, reverse)
    selected = np.asarray(mask & (jnp.arange(6) < lengths[:, None]))
    for n in range(3):
        idx = np.flatnonzero(selected[n])
        assert float(jnp.abs(ys[n][~selected[n]]).max(initial=0.0)) == 0.0
        if idx.size == 0:
            np.testing.assert_array_equal(carry[n], 0.0)
            continue
        c, y = rnnx.unroll(CELL, PARAMS, XS[n, idx], reverse=reverse)
        np.testing.assert_allclose(ys[n, idx], y, atol=1e-6)
        np.testing.assert_allclose(carry[n], c, atol=1e-6)


def test_import_rnnx_does_not_need_torch():
    code = "import sys; sys.modules['torch'] = None; import rnnx, rnnx.interop; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
