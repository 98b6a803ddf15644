"""Every bad command-line value gets one line, ``rnnx <cmd>: error: <message>``, exit code 2 and no traceback.

One row per value: the arguments (``{tmp}`` stands for a temporary directory holding the files below) and
the exact message. Each row runs ``main`` in-process; rows that need data use tiny files, and everything is
refused before training starts, so the whole table runs in seconds.
"""

import dataclasses
import json

import pytest

from rnnx.apps.cli import build_parser, main
from rnnx.apps.config import ClassifierConfig

POSITIVE = "must be a positive integer, received"
FINITE = "must be a positive finite number, received"
NOT_LM = "is not a language-model run"

ROWS = [
    # train: numbers, refused before any data is read
    (["train", "--batch-size", "0"], f"--batch-size {POSITIVE} 0"),
    (["train", "--window", "0"], f"--window {POSITIVE} 0"),
    (["train", "--eval-every", "0"], f"--eval-every {POSITIVE} 0"),
    (["train", "--eval-every", "-1"], f"--eval-every {POSITIVE} -1"),
    (["train", "--steps", "0"], f"--steps {POSITIVE} 0"),
    (["train", "--hidden", "0"], f"--hidden {POSITIVE} 0"),
    (["train", "--embed", "-2"], f"--embed {POSITIVE} -2"),
    (["train", "--layers", "0"], f"--layers {POSITIVE} 0"),
    (["train", "--eval-chars", "0"], f"--eval-chars {POSITIVE} 0"),
    (
        ["train", "--eval-chars", "50", "--window", "100"],
        "--eval-chars must be at least --window 100 + 1 = 101, received 50",
    ),
    (["train", "--patience", "0"], f"--patience {POSITIVE} 0"),
    (["train", "--learning-rate", "-1"], f"--learning-rate {FINITE} -1.0"),
    (["train", "--learning-rate", "0"], f"--learning-rate {FINITE} 0.0"),
    (["train", "--learning-rate", "nan"], f"--learning-rate {FINITE} nan"),
    (["train", "--learning-rate", "inf"], f"--learning-rate {FINITE} inf"),
    (["train", "--clip-norm", "-1"], "--clip-norm must be a finite number >= 0 (0: no clipping), received -1.0"),
    (["train", "--clip-norm", "inf"], "--clip-norm must be a finite number >= 0 (0: no clipping), received inf"),
    (["train", "--dropout", "1"], "--dropout must be in [0, 1), received 1.0"),
    (["train", "--dropout", "-0.1"], "--dropout must be in [0, 1), received -0.1"),
    (["train", "--ngram-orders", "0"], f"--ngram-orders {POSITIVE} 0"),
    (["train", "--ngram-orders", "3", "-1"], f"--ngram-orders {POSITIVE} -1"),
    (["train", "--schedule", "linear"], "--schedule must be one of ('constant', 'cosine'), received 'linear'"),
    (["train", "--task", "classify", "--test-size", "0"], f"--test-size {POSITIVE} 0"),
    (["train", "--task", "classify", "--max-length", "0"], f"--max-length {POSITIVE} 0"),
    (["train", "--task", "classify", "--min-freq", "0"], f"--min-freq {POSITIVE} 0"),
    (
        ["train", "--task", "classify", "--max-vocab", "4"],
        "--max-vocab must exceed the 4 special tokens ['<pad>', '<unk>', '<bos>', '<eos>'], received 4",
    ),
    (
        ["train", "--task", "classify", "--pretrained", "glove50"],
        "--pretrained glove50 has 50-dimensional vectors, so --embed must be 50, received 128",
    ),
    # train: files
    (["train", "--dataset", "{tmp}/missing.txt"], "--dataset file not found: {tmp}/missing.txt"),
    (["train", "--dataset", "{tmp}/empty.txt"], "--dataset file is empty: {tmp}/empty.txt"),
    (["train", "--dataset", "{tmp}/binary.txt"], "--dataset file is binary, not UTF-8 text: {tmp}/binary.txt"),
    (["train", "--dataset", "{tmp}/folder.txt"], "--dataset must be a file, received the directory {tmp}/folder.txt"),
    (
        ["train", "--dataset", "{tmp}/late_bad.txt"],
        "--dataset file is not UTF-8 text: {tmp}/late_bad.txt has the invalid byte 0xff at byte offset 80000 (line "
        "20001)",
    ),
    (
        ["train", "--dataset", "{tmp}/big.txt", "--max-dataset-mb", "1"],
        "--dataset {tmp}/big.txt holds 1.2 MiB, more than --max-dataset-mb 1: a language model holds its whole text "
        "in memory, several times over (as characters and as ids). Pass --max-dataset-mb 2 to read it anyway",
    ),
    (["train", "--run-dir", ""], "--run-dir must name a directory, received ''"),
    (["train", "--run-dir", "{tmp}/short.txt"], "--run-dir must be a directory, received the file {tmp}/short.txt"),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/missing.csv"],
        "--dataset file not found: {tmp}/missing.csv",
    ),
    (
        ["train", "--dataset", "{tmp}/short.txt", "--batch-size", "64", "--window", "100"],
        "--dataset {tmp}/short.txt is too short: its training part has 679 characters, fewer than --batch-size 64 "
        "x --window 100 + 1 = 6,401",
    ),
    (
        ["train", "--dataset", "{tmp}/short.txt", "--batch-size", "1", "--window", "100"],
        "--dataset {tmp}/short.txt is too short: its validation part has 40 characters, fewer than --window 100 "
        "+ 1 = 101",
    ),
    # train --task classify: columns, classes, splits
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/two_rows.csv"],
        "--test-size must be smaller than the 2 rows of {tmp}/two_rows.csv, received 500",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/reviews.csv", "--test-size", "100000"],
        "--test-size must be smaller than the 40 rows of {tmp}/reviews.csv, received 100000",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/reviews.csv", "--text-column", "review"],
        "--text-column must be one of the columns ['text', 'label'] of {tmp}/reviews.csv, received 'review'",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/reviews.csv", "--label-column", "sentiment"],
        "--label-column must be one of the columns ['text', 'label'] of {tmp}/reviews.csv, received 'sentiment'",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/one_class.csv", "--test-size", "10"],
        "--label-column 'label' of {tmp}/one_class.csv must hold at least 2 classes, received 1: ['good']",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/rare_class.csv", "--test-size", "10"],
        "--test-size 10 of {tmp}/rare_class.csv (40 rows) leaves class(es) ['bad'] without validation rows; every "
        "class needs rows in the training, validation and test splits",
    ),
    (
        ["train", "--task", "classify", "--dataset", "{tmp}/reviews.csv", "--test-size", "10"],
        "--batch-size must be at most the 26 training rows of {tmp}/reviews.csv, received 32",
    ),
    # generate
    (["generate", "--length", "0"], f"--length {POSITIVE} 0"),
    (["generate", "--length", "-5"], f"--length {POSITIVE} -5"),
    (["generate", "--temperature", "0"], f"--temperature {FINITE} 0.0"),
    (["generate", "--temperature", "nan"], f"--temperature {FINITE} nan"),
    (["generate", "--prompt", ""], "--prompt must contain at least one character, received ''"),
    (
        ["generate", "--run-dir", "{tmp}/nothing"],
        f"--run-dir {{tmp}}/nothing {NOT_LM}: {{tmp}}/nothing/config.json is missing",
    ),
    (
        ["generate", "--run-dir", "{tmp}/classifier_run"],
        "--run-dir {tmp}/classifier_run holds a classifier run, not a language model; generate needs the run "
        "directory of rnnx train --task lm",
    ),
    # gradients and params
    (["gradients", "--length", "0"], f"--length {POSITIVE} 0"),
    (["gradients", "--length", "-3"], f"--length {POSITIVE} -3"),
    (["gradients", "--hidden", "0"], f"--hidden {POSITIVE} 0"),
    (["params", "--input-size", "0"], f"--input-size {POSITIVE} 0"),
    (["params", "--hidden-size", "-1"], f"--hidden-size {POSITIVE} -1"),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    """The files the rows name."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "folder.txt").mkdir()
    (root / "late_bad.txt").write_bytes(b"abc\n" * 20000 + b"\xff\n")  # past the first 64 KiB
    (root / "big.txt").write_bytes(b"abcdefghi\n" * 131072)  # 1.25 MiB
    (root / "short.txt").write_text("abcdefghi\n" * 80)  # 799 characters once read: 679 / 40 / 80
    (root / "two_rows.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    (root / "reviews.csv").write_text(
        "text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} film {i},{i % 2}\n" for i in range(40))
    )
    (root / "one_class.csv").write_text("text,label\n" + "".join(f"film {i},good\n" for i in range(40)))
    (root / "rare_class.csv").write_text(
        "text,label\n" + "".join(f"film {i},{'bad' if i == 0 else 'good'}\n" for i in range(40))
    )
    (root / "classifier_run").mkdir()
    (root / "classifier_run" / "config.json").write_text(json.dumps(dataclasses.asdict(ClassifierConfig())))
    return root


@pytest.mark.parametrize(("argv", "message"), ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_a_bad_value_gets_one_line_and_exit_code_2(argv, message, tmp, capsys):
    argv = [a.format(tmp=tmp) for a in argv]
    run_dir = tmp / "run"
    if argv[0] == "train":
        argv += ["--no-progress"] + ([] if "--run-dir" in argv else ["--run-dir", str(run_dir)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # The last line (a dataset loader may draw a progress bar above it on stderr).
    assert err.splitlines()[-1] == f"rnnx {argv[0]}: error: {message.format(tmp=tmp)}"
    assert not run_dir.exists()  # refused before anything was written


def test_clip_norm_zero_is_a_warning_not_an_error(capsys):
    from rnnx.apps import cli

    cfg = cli._train_config(build_parser().parse_args(["train", "--clip-norm", "0"]))
    assert cfg.clip_norm == 0
    assert capsys.readouterr().err == (
        "rnnx train: warning: --clip-norm 0 turns gradient clipping off; pass a positive bound such as 1.0 to clip\n"
    )


def test_gradients_names_the_sequence_length_length_not_steps(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradients", "--steps", "5"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --steps 5" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["comma,name.txt", "nosuffix", "notes.md"])
def test_an_existing_text_file_is_read_locally_whatever_its_name(name, tmp, tmp_path, monkeypatch, capsys):
    """Read here, not by the Hub loader nor into datasets' cache: its text reaches the length check."""
    from rnnx.apps import data

    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("sent to datasets"))
    path = tmp_path / name
    path.write_text("abcdefghi\n" * 80)
    assert main(["train", "--dataset", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rnnx train: error: --dataset {path} is too short: its training part has 679 characters, fewer than "
        "--batch-size 64 x --window 50 + 1 = 3,201"
    )


def test_text_is_decoded_across_blocks_and_an_error_named_by_byte_and_line(tmp_path):
    from rnnx.apps import data_files

    text = "héllo wörld\r\n€uro 𝄞\n" * 5
    (tmp_path / "ok.txt").write_text(text, newline="")
    assert "".join(data_files._decoded(tmp_path / "ok.txt", block=3)) == text  # characters cut between blocks
    assert data_files.read_text([tmp_path / "ok.txt"]) == text.replace("\r\n", "\n").removesuffix("\n")
    good = "ab\nc€\n".encode()
    (tmp_path / "bad.txt").write_bytes(good + b"\xe2\x82" + b"x\n")  # a character cut short, at byte 8 of line 3
    with pytest.raises(data_files.DataUnavailable, match=r"invalid byte 0xe2 at byte offset 8 \(line 3\)$"):
        data_files.check_files([tmp_path / "bad.txt"])
    for block in (1, 2, 4):
        with pytest.raises(data_files.DataUnavailable, match=r"0xe2 at byte offset 8 \(line 3\)$"):
            list(data_files._decoded(tmp_path / "bad.txt", block=block))


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "no connection"])
def test_a_hub_name_offline_fails_at_once_without_retries(offline, monkeypatch, capsys):
    import socket

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked the Hub"))
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("touched the network"))
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

        def refused(address, timeout):
            assert address == ("huggingface.co", 443) and timeout <= 3
            raise OSError("Network is unreachable")

        monkeypatch.setattr(socket, "create_connection", refused)
    assert main(["train", "--task", "classify", "--dataset", "nosuchfile"]) == 2  # progress on: no bar before data
    assert capsys.readouterr().err.splitlines() == [  # one line: the progress bar opens only once the data is ready
        "rnnx train: error: could not load 'nosuchfile' from the Hugging Face Hub: it cannot be reached (offline, "
        "or HF_HUB_OFFLINE is set), and there is no file 'nosuchfile' here either. The Hub needs network access. "
        "Pass local files instead, e.g. --dataset train.csv (csv/tsv/json/jsonl/parquet/txt, with a text column "
        "and a label column)."
    ]


def test_a_local_csv_says_where_datasets_keeps_its_copy(tmp, capsys):
    from rnnx.apps import cli

    cli._train_config(build_parser().parse_args(["train", "--task", "classify", "--dataset", f"{tmp}/reviews.csv"]))
    assert capsys.readouterr().err.startswith(
        f"rnnx train: note: Hugging Face datasets keeps a converted copy of {tmp}/reviews.csv in "
    )
