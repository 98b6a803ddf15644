"""Largest output and final-state differences between rnnx.interop.from_torch and PyTorch itself.

    python -m benchmarks.parity [--batch 8 --steps 50 --input 300 --hidden 128]

Every torch.nn.RNN/LSTM/GRU layout (1 and 2 layers, uni- and bidirectional, padded and packed) in float32.
"""

import argparse
import itertools

import jax.numpy as jnp
import numpy as np
import torch

import rnnx


def max_error(module, xs, lengths):
    net, params = rnnx.interop.from_torch(module)
    x = torch.from_numpy(xs)
    with torch.no_grad():
        if lengths is not None:
            x = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.tensor(lengths), batch_first=True, enforce_sorted=False
            )
        out, state = module(x)
        if lengths is not None:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    carry, ys = net.apply(params, xs, lengths=None if lengths is None else jnp.array(lengths))
    states = state if isinstance(state, tuple) else (state,)
    ours = [[c.h, c.c] if isinstance(c, rnnx.LSTMCarry) else [c] for c in carry]
    state_error = max(
        float(np.abs(np.asarray(o[k]) - s[i].numpy()).max()) for i, o in enumerate(ours) for k, s in enumerate(states)
    )
    return float(np.abs(np.asarray(ys) - out.numpy()).max()), state_error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(args.batch, args.steps, args.input)).astype(np.float32)
    lengths = rng.integers(1, args.steps + 1, args.batch).tolist()
    print(f"torch {torch.__version__}; B={args.batch} T={args.steps} I={args.input} H={args.hidden}, float32")
    print("| module | layers | bidirectional | packed | max abs error outputs | max abs error final states |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for kind, layers, bidir, packed in itertools.product(["RNN", "LSTM", "GRU"], [1, 2], [False, True], [False, True]):
        torch.manual_seed(0)
        module = getattr(torch.nn, kind)(
            args.input, args.hidden, num_layers=layers, bidirectional=bidir, batch_first=True
        )
        out_err, state_err = max_error(module, xs, lengths if packed else None)
        worst = max(worst, out_err, state_err)
        print(f"| {kind} | {layers} | {bidir} | {packed} | {out_err:.1e} | {state_err:.1e} |")
    print(f"worst: {worst:.1e}")


if __name__ == "__main__":
    main()
