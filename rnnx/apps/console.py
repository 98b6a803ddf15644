"""What the CLI and the examples show while a run trains: a progress bar fed by ``fit``'s records, and notes.

>>> with progress_bar(10, enabled=False) as on_log:
...     on_log({"step": 5, "loss": 1.0, "grad_norm": 2.0})
"""

import contextlib
import math
import sys
from collections.abc import Iterator

from rnnx.training.loop import OnLog


def say(message: str) -> None:
    """A note for the person watching, on stderr so that stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool = True, bits: bool = False) -> Iterator[OnLog]:
    """A tqdm bar over ``total`` steps; yields an ``on_log`` for :func:`rnnx.training.fit` that moves it to
    each record's step and shows the latest training loss, gradient norm and evaluation together, and
    prints fit's notes (resuming, a damaged checkpoint skipped) above it. The bar opens at the first record
    (:func:`rnnx.apps.experiments.run`'s "ready" note, once the data has loaded). The ``"trained"`` note of
    :func:`rnnx.apps.experiments.run` closes it, so that its clock stops while the baselines are scored.

    ``bits``: the loss is a mean NLL per character, shown in bits per character, the unit of evaluation.
    """
    from tqdm.auto import tqdm

    shown: dict = {}
    loss_name, scale = ("bits/char", 1 / math.log(2.0)) if bits else ("loss", 1.0)
    bars: list = []  # opened by the first record, so that a run refused before training (bad data) shows no bar

    def on_log(record: dict) -> None:
        if not bars:
            bars.append(tqdm(total=total, disable=not enabled, desc="training", unit="step", dynamic_ncols=True))
        bar = bars[0]
        if "event" in record:  # a note: the data is ready, resuming, finished, a damaged checkpoint skipped
            bar.write(record["message"], file=sys.stderr)
            if record["event"] == "trained":  # what follows (the baselines) shows its own progress
                bar.close()
            return
        if "eval" in record:
            shown.update({f"eval {k.replace('_per_', '/')}": f"{v:.4g}" for k, v in record["eval"].items()})
        else:
            shown.update({loss_name: f"{record['loss'] * scale:.4f}", "|g|": f"{record['grad_norm']:.3g}"})
        bar.update(record["step"] - bar.n)
        bar.set_postfix(shown)

    try:
        yield on_log
    finally:
        for bar in bars:
            bar.close()


__all__ = ["progress_bar", "say"]
