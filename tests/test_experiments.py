"""The experiment pipeline (rnnx.apps.experiments) goes through each step once: one validation of the config,
one optimiser, one train step, compiled once; checked by spying on those functions wherever rnnx holds them."""

import sys

import pytest

import rnnx.apps.cli  # noqa: F401 - loads every module that holds the functions spied on
from rnnx.apps import config, experiments, task
from rnnx.apps.cli import main
from rnnx.apps.config import ClassifierConfig
from rnnx.training import step

TINY_LM = ["--hidden", "8", "--embed", "8", "--layers", "1", "--window", "16", "--batch-size", "4"]
TINY_LM += ["--ngram-orders", "2", "--eval-chars", "200", "--eval-every", "10", "--schedule", "constant"]
TINY_LM += ["--no-progress"]


def _spy(monkeypatch, original) -> list:
    """Replace ``original`` in every rnnx module that holds it (by attribute or imported name); returns the
    list of its results, one per call."""
    results = []

    def spy(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    holders = [m for n, m in list(sys.modules.items()) if n.startswith("rnnx.") and m is not None]
    for module in holders:
        if getattr(module, original.__name__, None) is original:
            monkeypatch.setattr(module, original.__name__, spy)
    return results


@pytest.fixture
def spies(monkeypatch):
    return {
        "validate": _spy(monkeypatch, config.validate),
        "optimizer": _spy(monkeypatch, task.optimizer),
        "train_step": _spy(monkeypatch, step.make_train_step),
    }


@pytest.mark.slow  # a whole CLI run
def test_a_cli_run_validates_once_and_builds_and_compiles_its_train_step_once(tmp_path, spies, capsys):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 60)
    assert main(["train", "--dataset", str(text), "--steps", "20", "--run-dir", str(tmp_path / "run"), *TINY_LM]) == 0
    assert len(spies["validate"]) == 1 and len(spies["optimizer"]) == 1
    (train_step,) = spies["train_step"]
    assert train_step.update._cache_size() == 1  # 20 updates of one batch shape: one compilation


def test_the_library_entry_validates_once(tmp_path, spies):
    rows = ["text,label"] + [f"{'good fine' if i % 2 else 'bad poor'} film {i},{i % 2}" for i in range(60)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows))
    cfg = ClassifierConfig(
        dataset=str(tmp_path / "reviews.csv"),
        test_size=12,
        batch_size=8,
        hidden=4,
        embed=4,
        steps=4,
        eval_every=4,
        max_length=8,  # one bucket: every batch has the same shape
        run_dir=str(tmp_path / "run"),
    )
    result = experiments.train_classifier(cfg)
    assert result["steps"] == 4
    assert len(spies["validate"]) == 1 and len(spies["optimizer"]) == 1
    (train_step,) = spies["train_step"]
    assert train_step.update._cache_size() == 1
    with pytest.raises(TypeError, match="cfg must be a LanguageModelConfig, received ClassifierConfig"):
        experiments.train_language_model(cfg)
