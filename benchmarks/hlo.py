"""Where the time goes on an accelerator: kernels per scan step, counted in a compiled XLA module.

    python -m benchmarks.hlo [--cell lstm --batch 64 --steps 100 --input 300 --hidden 128 --dtype float32]

A ``lax.scan`` becomes an HLO ``while`` loop; on a GPU each instruction of its body that is not pure
bookkeeping (``parameter``, ``tuple``, ``get-tuple-element``, ``constant``, ``bitcast``) is roughly one
kernel launch per time step: a ``fusion`` is one generated kernel, a ``custom-call`` one library call
(cuBLAS ``__cublas$gemm``, cuDNN), and ``copy``, ``dynamic-update-slice`` and the like their own kernels.
``call`` instructions (XLA wraps command-buffer sequences in them) are followed into their computation.
A fused cuDNN RNN shows no while loop at all: one custom call runs every step. These are counts, not
timings; XLA may still merge launches at run time (CUDA graphs), so read them as an upper bound.
"""

import argparse
import re
from collections import Counter

__all__ = ["count_kernels", "parse_computations"]

# Instructions that never launch a kernel.
_BOOKKEEPING = frozenset(
    {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all", "opt-barrier", "add-dependency"}
)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"([a-z][\w\-]*)\(")


def _opcode(rest: str) -> str | None:
    """The opcode of an instruction's right-hand side: the word after its (possibly tuple) shape."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[i + 1 :]
                break
    else:
        rest = rest.split(" ", 1)[1] if " " in rest else ""
    match = _OPCODE.match(rest.lstrip())
    return match.group(1) if match else None


def parse_computations(hlo_text: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """``({computation: [(opcode, line)]}, entry name)`` from ``compiled.as_text()``."""
    computations, entry, current = {}, None, None
    for line in hlo_text.splitlines():
        stripped = line.strip()
        if stripped.endswith("{") and not stripped.startswith("HloModule") and " = " not in stripped.split("(")[0]:
            is_entry = stripped.startswith("ENTRY")
            name = stripped.removeprefix("ENTRY").strip().split(" ")[0].split("(")[0].lstrip("%")
            current = computations.setdefault(name, [])
            entry = name if is_entry else entry
        elif stripped == "}":
            current = None
        elif current is not None:
            match = _INSTRUCTION.match(line)
            if match:
                op = _opcode(match.group(2))
                if op:
                    current.append((op, line))
    return computations, entry


def _attribute(line: str, name: str) -> str | None:
    match = re.search(rf"\b{name}=%?([\w.\-]+)", line)
    return match.group(1) if match else None


def _kernels(computations, name: str, seen=()) -> Counter:
    """Kernel-like instructions of one computation, following ``call``s, not descending into loops."""
    counts = Counter()
    for op, line in computations.get(name, []):
        if op in _BOOKKEEPING:
            continue
        if op == "call" and _attribute(line, "to_apply") and name not in seen:
            counts += _kernels(computations, _attribute(line, "to_apply"), (*seen, name))
        elif op == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', line)
            counts["custom-call"] += 1
            counts[f"target:{target.group(1) if target else '?'}"] += 1
        else:
            counts[op] += 1
    return counts


def _summary(counts: Counter) -> dict:
    ops = {k: v for k, v in counts.items() if not k.startswith("target:")}
    return {
        "kernels": sum(v for k, v in ops.items() if k != "while"),
        "fusion": ops.get("fusion", 0),
        "custom_call": ops.get("custom-call", 0),
        "other": sum(v for k, v in ops.items() if k not in ("fusion", "custom-call", "while")),
        "while": ops.get("while", 0),
        "ops": dict(sorted(ops.items())),
        "custom_call_targets": {k[7:]: v for k, v in sorted(counts.items()) if k.startswith("target:")},
    }


def count_kernels(hlo_text: str) -> dict:
    """Kernel counts of a compiled module: the whole entry computation and the body of each while loop.

    Returns ``{"module": summary, "loops": [summary + {"body": name}], "per_step": the largest loop body's
    kernel count (0 without a loop)}``, each summary ``{"kernels", "fusion", "custom_call", "other", "while",
    "ops", "custom_call_targets"}``.
    """
    computations, entry = parse_computations(hlo_text)
    loops = []
    for instructions in computations.values():
        for op, line in instructions:
            body = _attribute(line, "body") if op == "while" else None
            if body:
                loops.append({"body": body, **_summary(_kernels(computations, body))})
    module = _summary(_kernels(computations, entry)) if entry else _summary(Counter())
    return {"module": module, "loops": loops, "per_step": max((loop["kernels"] for loop in loops), default=0)}


def main(argv=None):
    import jax
    import jax.numpy as jnp

    from benchmarks.peers import MODES, PEERS, Config, Unavailable

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--mode", choices=MODES, default="forward")
    args = parser.parse_args(argv)
    cfg = Config(args.cell, args.batch, args.steps, args.input, args.hidden, dtype=args.dtype)
    print(f"{jax.default_backend()} {jax.devices()[0].device_kind}; {cfg}; {args.mode}; jnp {jnp.dtype(args.dtype)}")
    print("| library | while loops | kernels per step | fusions | custom calls | other | whole module | targets |")
    print("|---|---|---|---|---|---|---|---|")
    for name, build in PEERS.items():
        if name == "torch":  # no HLO
            continue
        try:
            counts = build(cfg, (args.mode,)).hlo[args.mode]
        except Unavailable as why:
            print(f"| {name} | unavailable: {why} | | | | | | |")
            continue
        step = max(counts["loops"], key=lambda loop: loop["kernels"], default=None)
        cells = [str(len(counts["loops"]))]
        cells += [str(step[k]) if step else "0" for k in ("kernels", "fusion", "custom_call", "other")]
        targets = ", ".join(f"{k} x{v}" for k, v in counts["module"]["custom_call_targets"].items())
        print(f"| {name} | {' | '.join(cells)} | {counts['module']['kernels']} | {targets} |")


if __name__ == "__main__":
    main()
