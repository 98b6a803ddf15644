"""What ``rnnx train`` prints when a run ends: its metrics beside its baselines, with sensible precision, and
:class:`DidNotLearn` after them when the run is no better than the trivial baseline."""

from typing import Any

from rnnx.apps.config import ClassifierConfig, LanguageModelConfig


class DidNotLearn(RuntimeError):
    """A run finished, with finite numbers, but no better than its trivial baseline (a uniform guess, the
    majority class): exit code 3, after its results, so that a script does not take it for a success."""


def language_model(cfg: LanguageModelConfig, result: dict[str, Any]) -> None:
    """The end of ``rnnx train --task lm``: a sample and the held-out bits per character beside the baselines."""
    rnn, ngram = result["test_bits_per_char"], result["ngram_test_bits_per_char"]
    uniform = result["uniform_bits_per_char"]
    gap = _number(abs(ngram - rnn))
    verdict = "level with" if gap == _number(0.0) else f"{gap} {'ahead of' if rnn < ngram else 'behind'}"
    sample = result["sample"]
    print(f"sample (temperature {sample['temperature']}):\n{sample['prompt']}{sample['text']}\n")
    print(
        f"{cfg.cell} language model, {result['steps']} steps in {result['train_seconds']} s: held-out "
        f"{_number(rnn)} bits/char (perplexity {_number(result['test_perplexity'], 2)}), {verdict} the "
        f"{result['ngram_order']}-gram baseline's {_number(ngram)}; uniform {_number(uniform)}."
    )
    plot = f", loss curve in {result['plot']}" if result["plot"] else ""
    print(f"Results in {cfg.run_dir}/results.json{plot}")
    if rnn >= uniform:
        raise DidNotLearn(
            f"held-out {_number(rnn)} bits/char is no better than a uniform guess ({_number(uniform)}): the model "
            f"diverged or did not learn (--learning-rate {cfg.learning_rate} too high?)"
        )


def _number(value: float, decimals: int = 3) -> str:
    """``value`` with ``decimals`` decimals, or in scientific notation when it is too large for them to mean
    anything (a diverged run's perplexity)."""
    return f"{value:.{decimals}f}" if abs(value) < 1e4 else f"{value:.3e}"


def classifier(cfg: ClassifierConfig, result: dict[str, Any]) -> None:
    """The end of ``rnnx train --task classify``: test accuracy beside the baselines."""
    print(
        f"{cfg.cell} classifier on {cfg.dataset}, {result['steps']} steps: test accuracy "
        f"{result['test_accuracy']:.4f}; majority {result['majority_accuracy']:.4f}; bag-of-words logistic "
        f"regression {result['bow_logreg_accuracy']:.4f}. Results in {cfg.run_dir}/results.json"
    )
    if result["test_accuracy"] <= result["majority_accuracy"]:
        raise DidNotLearn(
            f"test accuracy {result['test_accuracy']:.4f} is no better than always predicting the majority "
            f"class ({result['majority_accuracy']:.4f}): the model did not learn (--learning-rate "
            f"{cfg.learning_rate} too high or too low?)"
        )


__all__ = ["DidNotLearn", "classifier", "language_model"]
