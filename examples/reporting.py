"""Shared by the examples: write a result JSON and, when matplotlib is installed, a learning-curve plot."""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save(name: str, result: dict, *, metric: str, baselines: dict, ylabel: str, directory=RESULTS) -> Path:
    """Write ``<directory>/<name>.json`` and plot the validation ``metric`` per evaluation beside ``baselines``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
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
    fig.savefig(directory / f"{name}.png", dpi=110)
    return path


def add_results_flags(parser, name: str) -> None:
    parser.add_argument("--results-name", default=name, help="<results-dir>/<name>.json and .png")
    parser.add_argument("--results-dir", default=str(RESULTS), help="default examples/results")


def classifier_example(name: str, doc: str, defaults: dict, argv=None) -> dict:
    """The whole of a classification example: flags over ``defaults``, train, save, print the table."""
    import argparse

    from rnnx.apps.config import ClassifierConfig, add_config_flags, config_from_args
    from rnnx.apps.console import progress_bar, say
    from rnnx.apps.experiments import train_classifier

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, ClassifierConfig)
    add_results_flags(parser, name)
    args = parser.parse_args(argv)
    cfg = config_from_args(args, ClassifierConfig, **defaults)
    with progress_bar(cfg.steps) as on_log:
        result = train_classifier(cfg, on_log=on_log, say=say)
    baselines = {"majority": result["majority_accuracy"], "bag-of-words LR": result["bow_logreg_accuracy"]}
    save(
        args.results_name, result, metric="accuracy", ylabel="accuracy", baselines=baselines, directory=args.results_dir
    )
    print(
        f"| model | test accuracy |\n|---|---|\n| {cfg.cell} {cfg.hidden} | {result['test_accuracy']:.4f} |\n"
        f"| majority class | {result['majority_accuracy']:.4f} |\n"
        f"| bag-of-words logistic regression | {result['bow_logreg_accuracy']:.4f} |"
    )
    return result
