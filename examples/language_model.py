"""Language modelling with a 2-layer GRU, like nn.GRU(300, 128, num_layers=2, batch_first=True): a
character model of Shakespeare trained with truncated BPTT (the state carried across windows).

    python -m examples.language_model [--steps 3000] [--hidden 128] [--temperature 0.8] [...]
    python -m examples.language_model --hidden 512 --embed 64 --batch-size 128 --steps 2400 --eval-every 200 \
        --dropout 0.1 --run-dir runs/lm512 --results-name language_model_512     # wider: about an hour

Held-out text is whole plays (every 7th text, from the 3rd). Reports bits per character and perplexity
beside a Witten-Bell character n-gram, then samples text from the saved checkpoint. Writes
examples/results/language_model.json and .png, and the run under runs/language_model.
"""

import argparse

import jax

from examples.reporting import add_results_flags, save
from rnnx.apps.config import LanguageModelConfig, add_config_flags, config_from_args
from rnnx.apps.console import progress_bar, say
from rnnx.apps.data import SPECIALS
from rnnx.apps.experiments import restore_language_model, train_language_model
from rnnx.apps.models import sample

DEFAULTS = dict(
    cell="gru",
    embed=300,
    hidden=128,
    layers=2,
    steps=3000,
    learning_rate=2e-3,
    schedule="cosine",
    eval_every=500,
    run_dir="runs/language_model",
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, LanguageModelConfig)
    parser.add_argument("--prompt", default="KING.\n")
    parser.add_argument("--temperature", type=float, default=0.8)
    add_results_flags(parser, "language_model")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, LanguageModelConfig, **DEFAULTS)
    with progress_bar(cfg.steps, bits=True) as on_log:
        result = train_language_model(cfg, on_log=on_log, say=say)
    model, params, vocab = restore_language_model(cfg.run_dir)  # generate from the saved checkpoint
    ids = sample(
        model,
        params,
        vocab.encode(args.prompt),
        length=400,
        key=jax.random.key(0),
        temperature=args.temperature,
        exclude=range(len(SPECIALS)),
    )
    result["sample"] = {"prompt": args.prompt, "temperature": args.temperature, "text": vocab.decode(ids)}
    save(
        args.results_name,
        result,
        metric="bits_per_char",
        ylabel="bits per character (validation)",
        baselines={f"{result['ngram_order']}-gram (test)": result["ngram_test_bits_per_char"]},
        directory=args.results_dir,
    )
    print(
        f"| model | held-out bits/char | perplexity |\n|---|---|---|\n"
        f"| {cfg.layers}-layer {cfg.cell} {cfg.hidden} | {result['test_bits_per_char']:.3f} | "
        f"{result['test_perplexity']:.2f} |\n| {result['ngram_order']}-gram Witten-Bell | "
        f"{result['ngram_test_bits_per_char']:.3f} | {2 ** result['ngram_test_bits_per_char']:.2f} |"
    )
    print("\nsample:\n" + args.prompt + result["sample"]["text"])


if __name__ == "__main__":
    main()
