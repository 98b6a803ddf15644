"""The rnnx command line: real runs on tiny local files, and clear errors without stack traces."""

import json
import os
import subprocess
import sys

import pytest

from rnnx.apps.cli import main

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rnnx", *args],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | (env or {}),
        timeout=300,
    )


def test_hub_name_offline_says_what_to_do_without_a_stack_trace():
    result = _run("train", "--task", "classify", "--dataset", "someone/some_dataset", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "could not load 'someone/some_dataset' from the Hugging Face Hub" in result.stderr
    assert "Pass local files instead, e.g. --dataset train.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_and_missing_files_fail_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--cell", "transformer"])
    assert exit_info.value.code == 2 and "invalid choice: 'transformer'" in capsys.readouterr().err
    assert main(["train", "--task", "classify", "--dataset", str(tmp_path / "missing.csv")]) == 2
    assert "--dataset file not found" in capsys.readouterr().err
    assert main(["generate", "--run-dir", str(tmp_path)]) == 2
    assert "is not a language-model run" in capsys.readouterr().err
    assert main(["train", "--schedule", "linear", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--schedule must be one of ('constant', 'cosine'), received 'linear'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_classifier_on_a_local_csv_in_the_hub_format(tmp_path, capsys):
    rows = ["text,label"] + [
        f"{'great fine good' if i % 2 else 'awful bad poor'} film number {i},{i % 2}" for i in range(80)
    ]
    (tmp_path / "reviews.csv").write_text("\n".join(rows))
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--task",
        "classify",
        "--dataset",
        str(tmp_path / "reviews.csv"),
        "--steps",
        "30",
        "--eval-every",
        "10",
        "--test-size",
        "16",
        "--batch-size",
        "8",
        "--hidden",
        "8",
        "--embed",
        "8",
        "--learning-rate",
        "0.01",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    code = main(argv)
    result = json.loads((run_dir / "results.json").read_text())
    assert code == 0 and result["rows"]["test"] == 16 and result["classes"] == 2
    assert result["test_accuracy"] >= 0.9  # the words give the label away
    assert (run_dir / "vocab.json").exists() and (run_dir / "metrics.jsonl").read_text().count("\n") >= 3
    # Its checkpoints would resume, so other settings in the same directory are refused, not mixed in.
    capsys.readouterr()
    assert main(argv + ["--learning-rate", "0.02"]) == 2
    assert "other settings, {'learning_rate': (0.01, 0.02)}" in capsys.readouterr().err


def test_language_model_trains_on_a_local_text_file_and_generates(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question.\n" * 200)
    run_dir = tmp_path / "lm"
    code = main(
        [
            "train",
            "--dataset",
            str(tmp_path / "text.txt"),
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--hidden",
            "16",
            "--embed",
            "8",
            "--layers",
            "1",
            "--window",
            "16",
            "--batch-size",
            "4",
            "--ngram-orders",
            "2",
            "--eval-chars",
            "500",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "bits/char" in out and f"Results in {run_dir}/results.json, loss curve in" in out
    assert (run_dir / "loss.png").exists() and "sample (temperature 0.8):" in out
    assert main(["generate", "--run-dir", str(run_dir), "--prompt", "to be", "--length", "30"]) == 0
    text = capsys.readouterr().out[:-1]  # print's newline
    assert text.startswith("to be") and len(text) == len("to be") + 30


def test_gradients_reports_vanishing_for_a_small_weight_rnn(capsys):
    assert main(["gradients", "--cell", "lstm", "--length", "12", "--hidden", "8"]) == 0
    out = capsys.readouterr().out
    assert "| 12 |" in out and "log10 ||dc_t/dc_0||" in out


def test_params_lists_every_registry_cell_with_its_count(capsys):
    import jax

    import rnnx

    MODERN = ("lru", "rg_lru", "slstm", "mlstm")

    assert main(["params", "--input-size", "300", "--hidden-size", "128"]) == 0
    rows = dict(line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines()[2:])
    assert set(rnnx.CELLS) <= set(rows)
    counts = {name: int(v.replace(",", "")) for name, v in rows.items()}
    # REFERENCE.md's counts at input 300, hidden 128; the modern cells' own formulas are checked against their
    # papers in tests/test_modern.py, so here they need only equal the library's count.
    modern = {name: rnnx.count_params(rnnx.make_cell(name, 128).init(jax.random.key(0), 300)) for name in MODERN}
    assert (
        counts
        == {
            "simple_rnn": 54_912,
            "lstm": 219_648,
            "gru": 164_864,
            "min_gru": 77_056,
            "min_lstm": 115_584,
            "gru (reset_after=False)": 164_736,
        }
        | modern
    )
    assert main(["params", "--hidden-size", "0"]) == 2
    assert "--hidden-size must be a positive integer, received 0" in capsys.readouterr().err


def test_sampling_draws_differ_between_prompts_with_one_seed():
    """One key for two prompts must not mean the same random draws: the prompt is folded into the key."""
    import jax
    import jax.numpy as jnp

    from rnnx.apps import models
    from rnnx.core import make_cell, stacked

    model = models.language_model(stacked(make_cell("gru", 4)), 20, 3)
    params = model.init(jax.random.key(0))
    params["out_w"] = jnp.zeros_like(params["out_w"])  # uniform next-token distributions, whatever the prompt
    key = jax.random.key(0)
    first, second = (models.sample(model, params, p, length=60, key=key) for p in ([5, 6], [7, 8]))
    assert first != second
    assert models.sample(model, params, [5, 6], length=60, key=key) == first  # still reproducible


TINY_LM = ["--hidden", "16", "--embed", "8", "--layers", "1", "--window", "16", "--batch-size", "4"]
TINY_LM += ["--ngram-orders", "2", "--eval-chars", "500", "--eval-every", "20", "--no-progress"]


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("to be or not to be, that is the question.\n" * 200)
    return path


def _train_lm(text, run_dir, steps: int, *extra) -> int:
    return main(["train", "--dataset", str(text), "--steps", str(steps), "--run-dir", str(run_dir), *TINY_LM, *extra])


def test_a_finished_run_trains_on_with_more_steps(tmp_path, text, capsys):
    run_dir = tmp_path / "lm"
    assert _train_lm(text, run_dir, 40, "--schedule", "constant") == 0
    capsys.readouterr()
    assert _train_lm(text, run_dir, 60, "--schedule", "constant") == 0
    resumed = f"resuming from step 40 of 60 (checkpoint {run_dir.absolute()}/checkpoints/step_40)"
    assert resumed in capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 60 and [h["step"] for h in results["history"]] == [20, 40, 60]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [20, 40, 60]  # each step once, in order
    assert [r["step"] for r in records if "eval" in r] == [20, 40, 60]
    assert [r["step"] for r in records if r.get("event") == "resume"] == [40]
    # Any other change of settings is refused as before.
    assert _train_lm(text, run_dir, 80, "--schedule", "constant", "--hidden", "32") == 2
    assert "other settings, {'hidden': (16, 32)}" in capsys.readouterr().err


def test_a_cosine_run_refuses_more_steps_saying_why_and_what_to_pass(tmp_path, text, capsys):
    run_dir = tmp_path / "lm"
    assert _train_lm(text, run_dir, 20, "--schedule", "cosine") == 0
    capsys.readouterr()
    assert _train_lm(text, run_dir, 30, "--schedule", "cosine") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"rnnx train: error: {run_dir} holds a run with --schedule cosine over --steps 20, whose learning rate "
        "decays to 0 at step 20: it cannot go on to --steps 30, because the schedule was defined over the old step "
        "count. Pass --steps 20 to keep that run, or another --run-dir to train 30 steps (with --schedule constant "
        "to be able to train on later)"
    )
    assert _train_lm(text, run_dir, 20, "--schedule", "cosine") == 0  # the finished run, as it is
    assert "Its cosine schedule ended at its last step; to train longer, pass another --run-dir" in (
        capsys.readouterr().err
    )
