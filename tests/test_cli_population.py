"""``rnnx train --seeds N --learning-rates ...``: a population from the command line, each member reported
and the mean with its 95% interval; and the t-interval it uses, checked by its coverage."""

import errno
import json
import os

import numpy as np
import pytest

from rnnx.apps import baselines, language_modelling
from rnnx.apps.cli import main
from rnnx.apps.intervals import t_interval, t_quantile_975, welch_significant
from rnnx.training import checkpoint
from tests.conftest import file_hashes

TINY_LM = ["--hidden", "16", "--embed", "8", "--layers", "1", "--window", "16", "--batch-size", "4", "--steps", "10"]
TINY_LM += ["--ngram-orders", "2", "--eval-chars", "500", "--eval-every", "5", "--checkpoint-every", "5"]
TINY_LM += ["--schedule", "constant", "--no-progress"]
T_975_2 = 4.302652729911275  # the t-distribution's 97.5% quantile at 2 degrees of freedom (tables)


def _counted(monkeypatch, module, name):
    """``module.name`` replaced by itself counting its calls in the returned list."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    return calls


def test_t_quantile_table_meets_the_expansion_and_intervals_cover_95_percent():
    assert abs(t_quantile_975(29) - t_quantile_975(30.0)) < 0.01  # the table's end meets the expansion
    assert abs(t_quantile_975(1e9) - 1.95996) < 1e-4
    rng = np.random.default_rng(0)
    for n in (3, 8):
        samples = rng.normal(1.0, 2.0, size=(4000, n))
        covered = np.mean([lo <= 1.0 <= hi for _, lo, hi in map(t_interval, samples.tolist())])
        assert abs(covered - 0.95) < 0.015, (n, covered)
    a, b = rng.normal(0, 1, 8).tolist(), rng.normal(3, 1, 8).tolist()
    assert welch_significant(a, b)[1] and not welch_significant(a, a[::-1])[1]


@pytest.mark.slow  # a CLI run end to end
def test_population_of_a_classifier_from_the_command_line(tmp_path, capsys, monkeypatch):
    rows = ["text,label"] + [
        f"{'great fine good' if i % 2 else 'awful bad poor'} film number {i},{i % 2}" for i in range(80)
    ]
    (tmp_path / "reviews.csv").write_text("\n".join(rows))
    run_dir = tmp_path / "run"
    bow_calls = _counted(monkeypatch, baselines, "bow_logistic_regression")
    argv = ["train", "--task", "classify", "--dataset", str(tmp_path / "reviews.csv"), "--steps", "30"]
    argv += ["--eval-every", "10", "--test-size", "16", "--batch-size", "8", "--hidden", "8", "--embed", "8"]
    argv += ["--run-dir", str(run_dir), "--no-progress", "--seeds", "3", "--learning-rates", "0.01", "0.02", "0.03"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((run_dir / "results.json").read_text())
    assert [m["seed"] for m in result["members"]] == [0, 1, 2]
    assert [m["learning_rate"] for m in result["members"]] == [0.01, 0.02, 0.03]
    accuracies = [m["test_accuracy"] for m in result["members"]]
    summary = result["summary"]["test_accuracy"]
    assert summary["n"] == 3 and abs(summary["mean"] - np.mean(accuracies)) < 1e-9
    assert summary["low"] <= summary["mean"] <= summary["high"]
    assert min(accuracies) >= 0.9  # the words give the label away
    assert bow_calls == [1] and len({m["bow_logreg_accuracy"] for m in result["members"]}) == 1  # one baseline
    assert "95% interval" in out and "| 2 | 2 | 0.03 |" in out
    before = file_hashes(run_dir)
    assert main(argv[:-3] + ["0.01"]) == 2  # another population in the same directory is refused
    err = capsys.readouterr().err
    assert "holds checkpoints of the population {'seeds': [0, 1, 2]" in err and "this is the population" in err
    assert main(argv[:-6]) == 2  # so is a solo run, which would resume from the stacked checkpoints
    assert "and this is a solo run" in capsys.readouterr().err and file_hashes(run_dir) == before


@pytest.mark.slow  # CLI runs end to end
def test_population_of_a_language_model_from_the_command_line_and_its_finished_rerun(tmp_path, capsys, monkeypatch):
    """``rnnx train --seeds 3`` for the language model: member 0 equals the solo run with its seed and
    learning rate, the summary is the members' mean and t-interval, the n-gram baseline is counted once; and
    the rerun of the finished population, on a read-only disk, prints its results and writes nothing."""
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 200)
    run, solo = tmp_path / "run", tmp_path / "solo"
    ngram_calls = _counted(monkeypatch, language_modelling, "_ngram_baseline")
    argv = ["train", "--dataset", str(text), "--run-dir", str(run), *TINY_LM]
    argv += ["--seeds", "3", "--learning-rates", "0.01", "0.003", "0.03"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "results.json").read_text())
    members = result["members"]
    assert [(m["seed"], m["learning_rate"], m["steps"]) for m in members] == [
        (0, 0.01, 10),
        (1, 0.003, 10),
        (2, 0.03, 10),
    ]
    bits = np.array([m["test_bits_per_char"] for m in members])
    assert len(set(bits)) == 3 and np.all(np.isfinite(bits))  # three models
    assert ngram_calls == [1] and len({m["ngram_test_bits_per_char"] for m in members}) == 1
    for m in members:  # lower is better: the margin is the baseline's bits/char less the member's
        assert m["margin"] == m["ngram_test_bits_per_char"] - m["test_bits_per_char"]
    half = T_975_2 * bits.std(ddof=1) / np.sqrt(3)
    summary = result["summary"]["test_bits_per_char"]
    np.testing.assert_allclose(
        [summary["low"], summary["mean"], summary["high"]],
        [bits.mean() - half, bits.mean(), bits.mean() + half],
        rtol=1e-4,  # rnnx.apps.intervals' table holds 4.303
    )
    margin = result["summary"]["margin"]
    assert margin["n"] == 3 and abs(margin["mean"] - np.mean([m["margin"] for m in members])) < 1e-9
    assert (
        f"test_bits_per_char: mean {summary['mean']:.4f}, 95% interval [{summary['low']:.4f}, {summary['high']:.4f}]"
        in out
    )
    assert f"| 1 | 1 | 0.003 | {bits[1]:.4f} |" in out

    assert main(["train", "--dataset", str(text), "--run-dir", str(solo), *TINY_LM, "--learning-rate", "0.01"]) == 0
    solo_result = json.loads((solo / "results.json").read_text())
    assert abs(solo_result["test_bits_per_char"] - bits[0]) < 1e-5  # member 0 is the solo run, to round-off
    assert solo_result["ngram_test_bits_per_char"] == members[0]["ngram_test_bits_per_char"]
    capsys.readouterr()
    assert main(["train", "--dataset", str(text), "--run-dir", str(solo), *TINY_LM, "--seeds", "2"]) == 2
    assert f"{solo} holds checkpoints of a solo run, and this is the population" in capsys.readouterr().err

    before, calls = file_hashes(run), len(ngram_calls)
    capsys.readouterr()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run))

    monkeypatch.setattr(checkpoint, "lock", read_only)  # any attempt to write would meet a read-only disk
    assert main(argv) == 0
    rerun = capsys.readouterr()
    assert f"{run} holds a finished run (10 of 10 steps)" in rerun.err and rerun.out == out
    assert file_hashes(run) == before and len(ngram_calls) == calls  # nothing written, nothing computed again
