"""The accelerator issues' goals, stated as met / missed / not measured from the ratios of one run's rows.

Pure Python over the rows ``python -m benchmarks`` writes (:mod:`benchmarks.rows`); no JAX import.
"""

from benchmarks.rows import config_key, fmt, ok

__all__ = ["GOALS", "PALLAS_TARGETS", "goals", "goals_markdown"]

# The fused-kernel goals: rnnx `pallas` time / torch cuDNN time at B=64 I=300 H=128 float32, per (mode, T).
PALLAS_SHAPE = {"batch": 64, "input": 300, "hidden": 128, "layers": 1, "bidirectional": False, "dtype": "float32"}
PALLAS_CELLS = ("lstm", "gru", "simple_rnn")
PALLAS_TARGETS = {
    ("forward", 100): 0.7,
    ("forward", 1000): 1.0,
    ("backward", 100): 0.6,
    ("backward", 1000): 1.0,
    ("train", 100): 0.5,
    ("train", 1000): 0.85,
}
_MODE_NAMES = {"forward": "forward", "backward": "forward+backward", "train": "full training step (Adam, clipping)"}

# (key, statement, target).
GOALS = (
    ("cudnn", "LSTM rnnx `auto` (cuDNN) within 1.1x of torch cuDNN, float32: rnnx time / torch time <= 1.1", 1.1),
    ("scan", "rnnx scan at least 1.3x faster than flax `nn.RNN`, every cell: flax time / rnnx time >= 1.3", 1.3),
    ("bf16", "bfloat16 training at least 1.5x faster than float32 at H >= 512: f32 time / bf16 time >= 1.5", 1.5),
    *(
        (
            f"pallas-{mode}-T{steps}",
            f"rnnx `pallas` {_MODE_NAMES[mode]} at T={steps:,}, B=64 I=300 H=128 float32, LSTM, GRU and simple RNN: "
            f"pallas time / torch cuDNN time <= {target}",
            target,
        )
        for (mode, steps), target in PALLAS_TARGETS.items()
    ),
    ("pallas-scan", "rnnx `pallas` never slower than the scan, every shape and mode measured: pallas / scan <= 1", 1.0),
)


def goals(rows: list[dict]) -> list[dict]:
    """Each goal's cases, measured in one run: ``{"goal", "case", "ratio", "target", "verdict", "counts"}``.

    - ``cudnn``: every headline LSTM row of ``rnnx-auto`` (or ``rnnx-cudnn`` where auto was not measured)
      against ``torch`` of the same configuration and mode; met when the time ratio is <= 1.1. Only float32
      decides the verdict (cuDNN's LSTM in ``jax.experimental.rnn`` is float32); bfloat16 is shown too.
    - ``scan``: every headline row of ``rnnx`` (the scan) against the fastest ``flax.linen`` variant of the same
      configuration and mode; met when flax takes >= 1.3x as long.
    - ``bf16``: every ``rnnx`` training-step row at H >= 512 in bfloat16 against the float32 row of the same
      configuration; met when float32 takes >= 1.5x as long.
    - ``pallas-<mode>-T<T>``: ``rnnx-pallas`` against ``torch`` for each of LSTM, GRU and simple RNN at B=64 I=300
      H=128 float32 and that T and mode; a case that was not measured (not run, or a contender's row not ok) is
      listed with ``ratio`` None and the reason.
    - ``pallas-scan``: every ``rnnx-pallas`` row against the ``rnnx`` (scan) row of the same configuration and mode.
    """
    by = {}
    for r in ok(rows):
        by.setdefault((r["peer"], r["mode"], config_key(r)), r)
    return _cudnn(by, rows) + _scan(by, rows) + _bf16(by, rows) + _pallas(by, rows) + _pallas_scan(by, rows)


def _headline(rows):
    return [r for r in ok(rows) if r.get("part", "headline") == "headline"]


def _ratios(goal: str, pairs, met) -> list[dict]:
    """A case per ``(numerator row, denominator row, label, counts)`` whose two rows were both measured."""
    out = []
    for top, bottom, label, counts in pairs:
        if top and bottom:
            ratio = top["median_ms"] / bottom["median_ms"]
            out.append(_case(goal, label, ratio, met(ratio), counts=counts))
    return out


def _cudnn(by, rows):
    pairs = (
        (
            r,
            by.get(("torch", r["mode"], config_key(r))),
            f"{r['peer']} / torch, {r['dtype']} T={r['steps']} {r['mode']}",
            r["dtype"] == "float32",
        )
        for r in _headline(rows)
        if r["cell"] == "lstm"
        and (
            r["peer"] == "rnnx-auto"
            or (r["peer"] == "rnnx-cudnn" and ("rnnx-auto", r["mode"], config_key(r)) not in by)
        )
    )
    return _ratios("cudnn", pairs, lambda ratio: ratio <= 1.1)


def _scan(by, rows):
    def pairs():
        for r in _headline(rows):
            flax = [by[k] for k in by if k[0].startswith("flax.linen") and k[1:] == (r["mode"], config_key(r))]
            if r["peer"] == "rnnx" and flax:
                fastest = min(flax, key=lambda x: x["median_ms"])
                yield fastest, r, f"{fastest['peer']} / rnnx, {r['cell']} {r['dtype']} T={r['steps']} {r['mode']}", True

    return _ratios("scan", pairs(), lambda ratio: ratio >= 1.3)


def _bf16(by, rows):
    pairs = (
        (
            by.get(("rnnx", "train", config_key({**r, "dtype": "float32"}))),
            r,
            f"rnnx {r['cell']} B={r['batch']} T={r['steps']} H={r['hidden']}: float32 / bfloat16",
            True,
        )
        for r in ok(rows)
        if r["peer"] == "rnnx" and r["mode"] == "train" and r["dtype"] == "bfloat16" and r["hidden"] >= 512
    )
    return _ratios("bf16", pairs, lambda ratio: ratio >= 1.5)


def _pallas(by, rows):
    out = []
    for (mode, steps), target in PALLAS_TARGETS.items():
        for cell in PALLAS_CELLS:
            config = {**PALLAS_SHAPE, "cell": cell, "steps": steps, "remat": False}
            key = config_key(config)
            goal, case = f"pallas-{mode}-T{steps}", f"rnnx-pallas / torch, {cell} T={steps} {mode}"
            pallas, torch = by.get(("rnnx-pallas", mode, key)), by.get(("torch", mode, key))
            if pallas and torch:
                ratio = pallas["median_ms"] / torch["median_ms"]
                out.append(_case(goal, case, ratio, ratio <= target))
            else:
                missing = "rnnx-pallas" if not pallas else "torch"
                status = next(
                    (r["status"] for r in rows if r["peer"] == missing and r["mode"] == mode and config_key(r) == key),
                    "not run",
                )
                out.append(_case(goal, case, None, False, why=f"{missing}: {status}"))
    return out


def _pallas_scan(by, rows):
    pairs = (
        (
            r,
            by.get(("rnnx", mode, key)),
            f"{r['cell']} {r['dtype']} B={r['batch']} T={r['steps']} H={r['hidden']} {mode}",
            True,
        )
        for (peer, mode, key), r in by.items()
        if peer == "rnnx-pallas"
    )
    return _ratios("pallas-scan", pairs, lambda ratio: ratio <= 1.0)


def _case(goal, case, ratio, met, counts=True, why=None):
    """One case. ``counts=False``: shown for information, outside the goal's verdict; ``why``: not measured."""
    target = dict((k, t) for k, _, t in GOALS)[goal]
    if why is not None:
        verdict = f"not measured ({why})"
    else:
        verdict = ("met" if met else "missed") + ("" if counts else " (information only)")
    return {"goal": goal, "case": case, "ratio": ratio, "target": target, "verdict": verdict, "counts": counts}


def _verdict(cases: list[dict]) -> str:
    measured = [c for c in cases if c["ratio"] is not None]
    if any(c["verdict"] == "missed" for c in measured):
        return "missed"
    if not measured:
        return "not measured"
    if len(measured) < len(cases):
        return f"not measured ({len(measured)} of {len(cases)} cases measured, all met)"
    return "met"


def goals_markdown(rows: list[dict]) -> str:
    cases = goals(rows)
    lines = []
    for key, statement, _ in GOALS:
        lines.append(f"- **{_verdict([c for c in cases if c['goal'] == key and c['counts']])}**: {statement}")
    lines += ["", "| goal | case | ratio | target | verdict |", "|---|---|---|---|---|"]
    lines += [
        f"| {c['goal']} | {c['case']} | {fmt(c['ratio'], '.2f')} | {c['target']} | {c['verdict']} |" for c in cases
    ]
    return "\n".join(lines)
