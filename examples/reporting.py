"""Shared by the examples: write a result JSON and, when matplotlib is installed, a learning-curve plot."""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save(name: str, result: dict, *, metric: str, baselines: dict, ylabel: str) -> Path:
    """Write ``results/<name>.json`` and plot the validation ``metric`` per evaluation beside ``baselines``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return path
    steps = [h["step"] for h in result["history"]]
    if not steps:  # a run resumed after its last step trains and evaluates nothing
        return path
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [h[metric] for h in result["history"]], marker="o", label=f"{result['cell']} (validation)")
    for label, value in baselines.items():
        ax.axhline(value, linestyle="--", color="gray" if "majority" in label or "uniform" in label else "C3")
        ax.annotate(f"{label} {value:.3f}", (steps[0], value), fontsize=8, va="bottom")
    ax.set(xlabel="training step", ylabel=ylabel, title=name.replace("_", " "))
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    return path


def classifier_example(name: str, doc: str, defaults: dict, argv=None) -> dict:
    """The whole of a classification example: flags over ``defaults``, train, save, print the table."""
    import argparse

    from rnnx.apps.cli import add_config_flags, config_from_args
    from rnnx.apps.experiments import ClassifierConfig, train_classifier

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, ClassifierConfig)
    parser.add_argument("--results-name", default=name, help="examples/results/<name>.json and .png")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, ClassifierConfig, **defaults)
    result = train_classifier(cfg)
    baselines = {"majority": result["majority_accuracy"], "bag-of-words LR": result["bow_logreg_accuracy"]}
    save(args.results_name, result, metric="accuracy", ylabel="accuracy", baselines=baselines)
    print(f"| model | test accuracy |\n|---|---|\n| {cfg.cell} {cfg.hidden} | {result['test_accuracy']:.4f} |\n"
          f"| majority class | {result['majority_accuracy']:.4f} |\n"
          f"| bag-of-words logistic regression | {result['bow_logreg_accuracy']:.4f} |")  # fmt: skip
    return result
