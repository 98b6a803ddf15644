"""The ``rnnx`` command line (also ``python -m rnnx``): train, generate, gradients, params.

rnnx train                                   # a short GRU character model on the embedded Shakespeare
rnnx train --task classify --dataset trec --cell rnn
rnnx train --task classify --dataset reviews.csv --text-column review --label-column sentiment
rnnx generate --run-dir runs/language_model --prompt "ROMEO." --temperature 0.8
rnnx gradients --cell rnn
rnnx params
"""

import argparse
import dataclasses
import sys

from rnnx.apps.data import DataUnavailable


def add_config_flags(parser, config_class, skip=()):
    """One ``--flag`` per config field, typed from its default. Defaults stay None here, so that the task's
    own config default applies (the two tasks share flags such as --learning-rate with different defaults)."""
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        flag, default = "--" + field.name.replace("_", "-"), field.default
        note = f"default {default!r}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=note)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=None, help=note)
        else:
            kind = int if field.name == "patience" else (str if default is None else type(default))
            parser.add_argument(flag, type=kind, default=None, help=note)


def build_parser() -> argparse.ArgumentParser:
    from rnnx.apps.experiments import CELLS, ClassifierConfig, LanguageModelConfig

    parser = argparse.ArgumentParser(
        prog="rnnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    lm = commands.add_parser("train", help="train a language model (default) or a classifier; ends with metrics")
    lm.add_argument("--task", choices=["lm", "classify"], default="lm")
    lm.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    lm.add_argument("--dataset", default=None, help="lm: shakespeare or text file(s); classify: trec, trec-fine, "
                    "rotten_tomatoes, a Hub name, or csv/json/parquet file(s)")  # fmt: skip
    lm.add_argument("--cell", choices=sorted(CELLS), default=None, help="default gru (lm), rnn (classify)")
    lm.add_argument("--hidden", type=int, default=None, help="default 128 (lm), 64 (classify)")
    lm.add_argument("--steps", type=int, default=None, help="updates (default 300; the examples run longer)")
    lm.add_argument("--run-dir", default=None)
    for config_class, title in ((LanguageModelConfig, "--task lm"), (ClassifierConfig, "--task classify")):
        add_config_flags(lm.add_argument_group(f"{title} (shared flags are listed once)"), config_class,
                    skip={"dataset", "cell", "hidden", "steps", "run_dir"} | _seen(lm))  # fmt: skip

    gen = commands.add_parser("generate", help="sample text from a trained language model's run directory")
    gen.add_argument("--run-dir", default="runs/language_model")
    gen.add_argument("--prompt", default="ROMEO.\n")
    gen.add_argument("--length", type=int, default=400)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--seed", type=int, default=0)

    grads = commands.add_parser("gradients", help="gradient-flow diagnostics of a cell at initialisation")
    grads.add_argument("--cell", choices=sorted(CELLS), default="rnn")
    grads.add_argument("--hidden", type=int, default=64)
    grads.add_argument("--steps", type=int, default=100, help="sequence length T")
    grads.add_argument("--seed", type=int, default=0)

    commands.add_parser("params", help="the parameter-count table and a forward pass of every cell")
    return parser


def _seen(parser) -> set:
    return {a.dest for a in parser._actions}


def config_from_args(args, config_class, **defaults):
    """``config_class`` from the flags given on the command line, else ``defaults``, else its own defaults."""
    names = {f.name for f in dataclasses.fields(config_class)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names and v is not None}
    return config_class(**(defaults | given))


def train(args) -> dict:
    from rnnx.apps import experiments

    if args.task == "lm":
        cfg = config_from_args(args, experiments.LanguageModelConfig, steps=300)
        result = experiments.train_language_model(cfg, progress=args.progress)
        print(f"{cfg.cell} language model, {result['steps']} steps in {result['train_seconds']} s: held-out "
              f"{result['test_bits_per_char']:.3f} bits/char (perplexity {result['test_perplexity']:.2f}); "
              f"{result['ngram_order']}-gram baseline {result['ngram_test_bits_per_char']:.3f} bits/char; "
              f"uniform {result['uniform_bits_per_char']:.3f}. Results in {cfg.run_dir}/results.json")  # fmt: skip
    else:
        cfg = config_from_args(args, experiments.ClassifierConfig, steps=300)
        result = experiments.train_classifier(cfg, progress=args.progress)
        print(f"{cfg.cell} classifier on {cfg.dataset}, {result['steps']} steps: test accuracy "
              f"{result['test_accuracy']:.4f}; majority {result['majority_accuracy']:.4f}; bag-of-words logistic "
              f"regression {result['bow_logreg_accuracy']:.4f}. Results in {cfg.run_dir}/results.json")  # fmt: skip
    return result


def generate(args) -> str:
    import jax

    from rnnx.apps import experiments, models
    from rnnx.apps.data import SPECIALS

    model, params, vocab = experiments.restore_language_model(args.run_dir)
    prompt = vocab.encode(args.prompt)
    if not prompt:
        raise SystemExit("rnnx generate: error: --prompt must contain at least one character")
    ids = models.sample(model, params, prompt, length=args.length, key=jax.random.key(args.seed),
                        temperature=args.temperature, exclude=range(len(SPECIALS)))  # fmt: skip
    text = args.prompt + vocab.decode(ids)
    print(text)
    return text


def gradients(args) -> dict:
    """Gradient flow of a freshly initialised cell on random inputs: log10 norms at a few steps."""
    import jax
    import jax.numpy as jnp

    from rnnx import diagnostics
    from rnnx.apps import experiments

    cell = experiments.CELLS[args.cell](args.hidden)
    params = cell.init(jax.random.key(args.seed), 2)
    xs = jax.random.normal(jax.random.key(args.seed + 1), (8, args.steps, 2))
    jac = diagnostics.jacobian_norms(cell, params, xs, log=True)
    _, grads = diagnostics.hidden_grad_norms(cell, params, xs, lambda ys: jnp.mean(ys[:, -1] ** 2))
    grad_h = getattr(grads, "h", grads)
    marks = sorted({1, max(1, args.steps // 4), max(1, args.steps // 2), args.steps})
    report = {
        "cell": args.cell, "hidden": args.hidden, "steps": args.steps,
        "log10_dhT_dh0": {t: float(jnp.mean(jac["dh_dh0"][:, t - 1])) for t in marks},
        "log10_dL_dh_t": {t: float(jnp.log10(grad_h[t - 1])) for t in marks},
    }  # fmt: skip
    if "dc_dc0" in jac:
        report["log10_dcT_dc0"] = {t: float(jnp.mean(jac["dc_dc0"][:, t - 1])) for t in marks}
    print(f"{args.cell} (hidden {args.hidden}) at initialisation, random inputs, loss on the last output:")
    print("| t | log10 ||dh_t/dh_0|| |" + (" log10 ||dc_t/dc_0|| |" if "dc_dc0" in jac else "")
          + " log10 ||dL/dh_t|| |")  # fmt: skip
    for t in marks:
        cells = [report["log10_dhT_dh0"][t]] + ([report["log10_dcT_dc0"][t]] if "dc_dc0" in jac else [])
        print(f"| {t} | " + " | ".join(f"{v:.2f}" for v in cells) + f" | {report['log10_dL_dh_t'][t]:.2f} |")
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "params":
            from benchmarks.params import main as params

            params()
        else:
            {"train": train, "generate": generate, "gradients": gradients}[args.command](args)
    except (DataUnavailable, FileNotFoundError, ValueError) as error:
        print(f"rnnx {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
