"""``rnnx train --seeds N --learning-rates ...``: a population from the command line, each member reported
and the mean with its 95% interval; and the t-interval it uses, checked by its coverage."""

import json

import numpy as np
import pytest

from rnnx.apps.cli import main
from rnnx.apps.intervals import t_interval, t_quantile_975, welch_significant


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
def test_population_of_a_classifier_from_the_command_line(tmp_path, capsys):
    rows = ["text,label"] + [
        f"{'great fine good' if i % 2 else 'awful bad poor'} film number {i},{i % 2}" for i in range(80)
    ]
    (tmp_path / "reviews.csv").write_text("\n".join(rows))
    run_dir = tmp_path / "run"
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
    assert "95% interval" in out and "| 2 | 2 | 0.03 |" in out
    assert main(argv[:-3] + ["0.01"]) == 2  # another population in the same directory is refused
    assert "another population" in capsys.readouterr().err
