"""The ``rnnx`` command line (also ``python -m rnnx``): train, generate, gradients, params.

rnnx train                                   # a short GRU character model on the embedded Shakespeare
rnnx train --task classify --dataset trec --cell simple_rnn
rnnx train --task classify --dataset reviews.csv --text-column review --label-column sentiment
rnnx train --devices all                     # data-parallel over every visible device
rnnx train --task classify --seeds 8         # 8 seeds at once: each member, and the mean with a 95% interval
rnnx train --distributed --devices all       # one of several processes (SLURM, JAX_* environment, or the flags)
rnnx generate --run-dir runs/language_model --prompt "ROMEO." --temperature 0.8
rnnx gradients --cell simple_rnn --length 100
rnnx params
"""

import argparse
import sys
from collections.abc import Mapping, Sequence

from rnnx.apps import config, scale, summary
from rnnx.apps.config import ClassifierConfig, ConfigError, LanguageModelConfig, add_config_flags, config_from_args
from rnnx.apps.data import DataUnavailable, cache_note, check_files, is_text, local_files, require_datasets
from rnnx.apps.scale import device_count as device_count
from rnnx.core import CELLS
from rnnx.training import distributed

# The main job, ``rnnx train`` with no flags: chosen to beat the n-gram baseline within a few minutes on two
# CPU cores (docs/getting-started.md gives the figures and the command); the examples train longer with the
# config's own defaults.
LM_DEFAULTS = dict(
    steps=1800, learning_rate=1e-2, schedule="cosine", batch_size=64, window=50, embed=64, eval_every=200
)
CLASSIFIER_DEFAULTS = dict(steps=300)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    lm = commands.add_parser("train", help="train a language model (default) or a classifier; ends with metrics")
    lm.add_argument("--task", choices=["lm", "classify"], default="lm")
    lm.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    lm.add_argument(
        "--dataset",
        default=None,
        help="lm: shakespeare or text file(s); classify: trec, trec-fine, rotten_tomatoes, a Hub name, "
        "or csv/json/parquet file(s)",
    )
    lm.add_argument("--cell", choices=sorted(CELLS), default=None, help="default gru (lm), simple_rnn (classify)")
    lm.add_argument("--hidden", type=int, default=None, help="default 128 (lm), 64 (classify)")
    lm.add_argument("--steps", type=int, default=None, help="updates, default 1800 (lm), 300 (classify)")
    lm.add_argument("--run-dir", default=None)
    seen = {"dataset", "cell", "hidden", "steps", "run_dir"}
    for config_class, title in ((LanguageModelConfig, "--task lm"), (ClassifierConfig, "--task classify")):
        group = lm.add_argument_group(f"{title} (shared flags are listed once)")
        seen |= add_config_flags(group, config_class, skip=seen)
    scale.add_scale_flags(lm.add_argument_group("scale out (run settings: a run resumes with other values)"))
    population = lm.add_argument_group("population: several seeds (and learning rates) trained at once")
    population.add_argument("--seeds", type=int, default=None, help="members, seeds --seed, --seed + 1, ...")
    population.add_argument("--learning-rates", type=float, nargs="+", help="one for all members, or one per member")
    tasks: dict[str, tuple[type, Mapping[str, object]]] = {
        "lm": (LanguageModelConfig, LM_DEFAULTS),
        "classify": (ClassifierConfig, CLASSIFIER_DEFAULTS),
    }
    notes = config.default_notes(tasks)  # the defaults a run gets, the command line's own included
    for action in lm._actions:
        if action.dest in notes and (action.help is None or action.help.startswith("default")):
            action.help = notes[action.dest]

    gen = commands.add_parser("generate", help="sample text from a trained language model's run directory")
    gen.add_argument("--run-dir", default="runs/language_model")
    gen.add_argument("--prompt", default="ROMEO.\n")
    gen.add_argument("--length", type=int, default=400, help="characters, printed as they are drawn (default 400)")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--seed", type=int, default=0)

    grads = commands.add_parser("gradients", help="gradient-flow diagnostics of a cell at initialisation")
    grads.add_argument("--cell", choices=sorted(CELLS), default="simple_rnn")
    grads.add_argument("--hidden", type=int, default=64)
    grads.add_argument("--length", type=int, default=100, help="sequence length T")
    grads.add_argument("--seed", type=int, default=0)

    counts = commands.add_parser("params", help="the parameter count of every cell in rnnx.CELLS")
    counts.add_argument("--input-size", type=int, default=300)
    counts.add_argument("--hidden-size", type=int, default=128)
    return parser


def _train_config(args):
    """The run's config from the flags, validated, with its dataset files checked: before any work."""
    config_class, defaults = (
        (LanguageModelConfig, LM_DEFAULTS) if args.task == "lm" else (ClassifierConfig, CLASSIFIER_DEFAULTS)
    )
    cfg = config_from_args(args, config_class, **defaults)
    config.validate(cfg)
    shipped = cfg.dataset in ("shakespeare", *config.CLASSIFICATION_SETS)  # a name, even if a file is called so
    paths = None if shipped else local_files(cfg.dataset)
    if paths is not None:
        limit = getattr(cfg, "max_dataset_mb", None)  # the language model holds its text in memory
        check_files(paths, max_bytes=None if limit is None else limit << 20)
    lm_text = args.task == "lm" and (cfg.dataset == "shakespeare" or (paths is not None and is_text(paths)))
    if not lm_text:  # the language model reads the shipped text and text files itself; the rest needs datasets
        require_datasets(f"--dataset {cfg.dataset}")
    lead = distributed.is_lead()
    for note in config.warnings(cfg) if lead else ():
        print(f"rnnx train: warning: {note}", file=sys.stderr)
    if paths is not None and not lm_text and lead:
        print(f"rnnx train: note: {cache_note(paths)}", file=sys.stderr)
    return cfg


def _train(args) -> dict:
    if args.seeds is not None or args.learning_rates is not None:
        if args.devices is not None or args.distributed:
            raise ConfigError("--seeds and --learning-rates train on one process's default device: drop --devices")
        from rnnx.apps import population_run

        return population_run.command(_train_config(args), args.seeds, args.learning_rates, progress=args.progress)
    devices = scale.device_flag(args.devices)
    scale.join(args)  # before any other JAX computation
    scale.check_backend()
    cfg = _train_config(args)
    mesh = scale.data_mesh(devices, cfg.batch_size)  # before any data is read
    lead = distributed.is_lead()
    from rnnx.apps import experiments, interrupts
    from rnnx.apps.console import progress_bar, say
    from rnnx.training import NonFiniteError

    try:
        with (
            progress_bar(cfg.steps, enabled=args.progress and lead, bits=args.task == "lm") as on_log,
            interrupts.ctrl_c("rnnx train") as ctrl_c,
        ):
            on_log = ctrl_c.watch(on_log)
            result = experiments.run(cfg, data_mesh=mesh, on_log=on_log, say=say, interrupt=ctrl_c)  # validated above
    except NonFiniteError as error:
        raise RunFailed(
            f"{error} (this run: --learning-rate {cfg.learning_rate}, --clip-norm {cfg.clip_norm}, --schedule "
            f"{cfg.schedule})"
        ) from None
    if not lead:
        return result
    (summary.language_model if args.task == "lm" else summary.classifier)(cfg, result)
    return result


def _generate(args) -> str:
    config.positive_integer("--length", args.length)
    config.positive_number("--temperature", args.temperature)
    if not args.prompt:
        raise ConfigError("--prompt must contain at least one character, received ''")
    from rnnx.apps import experiments

    experiments.language_model_config(args.run_dir)  # what the directory holds, before any array is read
    scale.check_backend()
    import jax

    from rnnx.apps import models
    from rnnx.apps.console import say
    from rnnx.apps.data import SPECIALS

    model, params, vocab = experiments.restore_language_model(args.run_dir, say=say)
    unknown = sorted({c for c in args.prompt if c not in vocab.index})
    if unknown:
        say(f"warning: --prompt characters {unknown} are not in the run's vocabulary; they are read as <unk>")
    chunks = models.sample_chunks(
        model,
        params,
        vocab.encode(args.prompt),
        length=args.length,
        key=jax.random.key(args.seed),
        temperature=args.temperature,
        exclude=range(len(SPECIALS)),
    )
    print(args.prompt, end="", flush=True)
    text = [args.prompt]
    for ids in chunks:  # printed as they are drawn
        text.append(vocab.decode(ids))
        print(text[-1], end="", flush=True)
    print()
    return "".join(text)


def _gradients(args) -> dict:
    """Gradient flow of a freshly initialised cell on random inputs: log10 norms at a few steps."""
    config.positive_integer("--hidden", args.hidden)
    config.positive_integer("--length", args.length)
    scale.check_backend()
    import jax
    import jax.numpy as jnp

    from rnnx import diagnostics
    from rnnx.core import make_cell

    cell = make_cell(args.cell, args.hidden)
    params = cell.init(jax.random.key(args.seed), 2)
    xs = jax.random.normal(jax.random.key(args.seed + 1), (8, args.length, 2))
    jac = diagnostics.jacobian_norms(cell, params, xs, log=True)
    _, grads = diagnostics.hidden_grad_norms(cell, params, xs, lambda ys: jnp.mean(ys[:, -1] ** 2))
    grad_h = getattr(grads, "h", grads)
    marks = sorted({1, max(1, args.length // 4), max(1, args.length // 2), args.length})
    report = {
        "cell": args.cell,
        "hidden": args.hidden,
        "length": args.length,
        "log10_dhT_dh0": {t: float(jnp.mean(jac["dh_dh0"][:, t - 1])) for t in marks},
        "log10_dL_dh_t": {t: float(jnp.log10(grad_h[t - 1])) for t in marks},
    }
    if "dc_dc0" in jac:
        report["log10_dcT_dc0"] = {t: float(jnp.mean(jac["dc_dc0"][:, t - 1])) for t in marks}
    print(f"{args.cell} (hidden {args.hidden}) at initialisation, random inputs, loss on the last output:")
    print(
        "| t | log10 ||dh_t/dh_0|| |" + (" log10 ||dc_t/dc_0|| |" if "dc_dc0" in jac else "") + " log10 ||dL/dh_t|| |"
    )
    for t in marks:
        cells = [report["log10_dhT_dh0"][t]] + ([report["log10_dcT_dc0"][t]] if "dc_dc0" in jac else [])
        print(f"| {t} | " + " | ".join(f"{v:.2f}" for v in cells) + f" | {report['log10_dL_dh_t'][t]:.2f} |")
    return report


def param_rows() -> dict:
    """``{label: (registry name, factory kwargs)}``: every cell in ``rnnx.CELLS``, then the reset-before GRU (the
    textbook count). ``rnnx params`` and ``python -m benchmarks.params`` list these rows."""
    import rnnx

    return {name: (name, {}) for name in rnnx.CELLS} | {"gru (reset_after=False)": ("gru", {"reset_after": False})}


def _params(args) -> dict:
    """The parameter count of every registry cell (and the reset-before GRU) at one input and hidden size."""
    import jax

    import rnnx

    config.positive_integer("--input-size", args.input_size)
    config.positive_integer("--hidden-size", args.hidden_size)
    rows = param_rows()
    counts = {}
    print(f"| cell | parameters (input {args.input_size}, hidden {args.hidden_size}) |")
    print("|---|---|")
    for label, (name, kwargs) in rows.items():
        cell = rnnx.make_cell(name, args.hidden_size, **kwargs)
        shapes = jax.eval_shape(lambda key, cell=cell: cell.init(key, args.input_size), jax.random.key(0))
        counts[label] = rnnx.count_params(shapes)
        print(f"| {label} | {counts[label]:,} |")
    return counts


class RunFailed(RuntimeError):
    """A run stopped for a reason the person running it must act on (divergence, damaged checkpoints, a
    run directory in use); the message is one line and says what to do."""


def _os_error(error: OSError) -> str:
    """One line: the path and the reason (``No space left on device``, ``Read-only file system``, ...)."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rnnx.apps.interrupts import EXIT_CODE
    from rnnx.training import Interrupted, NonFiniteError
    from rnnx.training.checkpoint import CheckpointError, CheckpointMismatch

    def fail(message: str, code: int) -> int:
        print(f"rnnx {args.command}: error: {message}", file=sys.stderr)
        return code

    try:
        {"train": _train, "generate": _generate, "gradients": _gradients, "params": _params}[args.command](args)
    except (ConfigError, DataUnavailable) as error:  # bad input or unavailable data; anything else is a bug
        return fail(str(error), 2)
    except (RunFailed, NonFiniteError, CheckpointError) as error:
        return fail(str(error), 1)
    except CheckpointMismatch as error:
        return fail(f"{error}. Pass another --run-dir, or delete that one to start afresh", 1)
    except OSError as error:  # the disk: full, read-only, ...; the checkpoints written before are intact
        return fail(_os_error(error), 1)
    except summary.DidNotLearn as error:
        return fail(str(error), 3)
    except Interrupted as interrupted:
        print(
            f"rnnx {args.command}: interrupted at step {interrupted.step}; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_CODE
    except KeyboardInterrupt:
        print(f"rnnx {args.command}: interrupted", file=sys.stderr)
        return EXIT_CODE
    return 0


__all__ = ["RunFailed", "build_parser", "device_count", "main", "param_rows"]
