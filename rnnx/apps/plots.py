"""The loss curve of a language-model run: ``loss.png`` in its run directory, when matplotlib is installed."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnx.training import metrics


def plot_losses(run_dir: Path, out: dict[str, Any], say: Callable[[str], None]) -> str | None:
    """``run_dir/loss.png``: training and validation bits/char by step beside the n-gram's test figure;
    returns its path, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no loss plot: matplotlib is not installed (pip install matplotlib)")
        return None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    trained = [(r["step"], metrics.bits_per_token(r["loss"])) for r in records if "loss" in r]
    evaluated = [(r["step"], r["eval"]["bits_per_char"]) for r in records if "eval" in r]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(*zip(*trained), label="training (mean since the previous record)")
    if evaluated:
        axes.plot(*zip(*evaluated), "o-", label="validation")
    order, last = out["ngram_order"], trained[-1][0]
    axes.axhline(out["ngram_validation_bits_per_char"][order], color="gray", ls="--", label=f"{order}-gram validation")
    axes.plot([last], [out["test_bits_per_char"]], "C0*", ms=12, label="test (final)")
    axes.plot([last], [out["ngram_test_bits_per_char"]], "kx", ms=10, label=f"{order}-gram test")
    axes.set(xlabel="update", ylabel="bits per character", title=f"{out['cell']} on {out['dataset']}")
    axes.legend()
    figure.tight_layout()
    path = run_dir / "loss.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


__all__ = ["plot_losses"]
