"""The benchmark suite runs end to end on a tiny configuration (no timing is asserted)."""

import json

from benchmarks.__main__ import main


def test_suite_runs_and_writes_results(tmp_path, capsys):
    main(["--cells", "lstm,gru", "--batch", "2", "--steps", "3", "--input", "4", "--hidden", "5", "--repeats", "1",
          "--peers", "rnnx,flax.linen,equinox", "--out", str(tmp_path), "--name", "tiny"])  # fmt: skip
    result = json.loads((tmp_path / "tiny.json").read_text())
    rows = [r for r in result["rows"] if "skipped" not in r]
    assert {(r["peer"], r["cell"], r["mode"]) for r in rows if r["peer"] == "rnnx"} == {
        ("rnnx", c, m) for c in ("lstm", "gru") for m in ("forward", "train")
    }
    assert all(r["ratio_to_rnnx"] == 1.0 for r in rows if r["peer"] == "rnnx")
    # Parameter counts are the libraries' own: rnnx folds biases, flax keeps the GRU's b_hn too.
    params = {(r["peer"], r["cell"]): r["params"] for r in rows}
    assert params[("rnnx", "lstm")] == 4 * 5 * (4 + 5 + 1) and params[("rnnx", "gru")] == 3 * 5 * (4 + 5 + 1) + 5
    out = capsys.readouterr().out
    assert "| lstm | train | rnnx |" in out and "LSTM ~3x slower than GRU" in out
