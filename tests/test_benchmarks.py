"""The benchmark suite's machinery on tiny CPU runs: plans, failure rows, budgets, goals, reports, HLO counts.

No timing is asserted: a benchmark reports medians, a test checks that the report is built right.
"""

import json
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnx
from benchmarks import goals, hlo, pallas_tuning, report, roofline, scan_tuning
from benchmarks.__main__ import SWEEP_PEERS, Job, gpu_plan, main, run_config
from benchmarks.peers import PEERS, Config, Contender, Unsupported, build_rnnx

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only


def test_cpu_suite_runs_and_writes_results(tmp_path, capsys):
    main(
        [
            "--suite",
            "cpu",
            "--tiny",
            "--repeats",
            "1",
            "--cells",
            "lstm,gru",
            "--peers",
            "rnnx,flax.linen",
            "--out",
            str(tmp_path),
            "--name",
            "tiny",
        ]
    )
    result = json.loads((tmp_path / "tiny.json").read_text())
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["peer"], r["cell"], r["mode"]) for r in rows} == {
        (p, c, m) for p in ("rnnx", "flax.linen") for c in ("lstm", "gru") for m in ("forward", "train")
    }
    assert all(r["ratio_to_rnnx"] == 1.0 for r in rows if r["peer"] == "rnnx")
    assert all(r["tokens_per_s"] == pytest.approx(2 * 4 / (r["median_ms"] * 1e-3)) for r in rows)  # B=2, T=4
    # Parameter counts are the libraries' own: rnnx folds biases, flax keeps the GRU's b_hn too.
    params = {(r["peer"], r["cell"]): r["params"] for r in rows}
    assert params[("rnnx", "lstm")] == 4 * 4 * (6 + 4 + 1) and params[("rnnx", "gru")] == 3 * 4 * (6 + 4 + 1) + 4
    out = capsys.readouterr().out
    assert "| lstm | train | rnnx |" in out and "LSTM ~3x slower than GRU" in out


def test_gpu_plan_puts_the_goal_shapes_first_and_sweeps_without_repeats():
    jobs = gpu_plan(repeats=15)
    headline = [j for j in jobs if j.part == "headline"]
    assert jobs[: len(headline)] == headline  # most valuable first
    order = [(j.config.dtype, j.config.cell, j.config.steps) for j in headline]
    goal, other = ("lstm", "gru", "simple_rnn"), ("min_gru", "min_lstm", "lru", "rg_lru", "slstm", "mlstm")
    assert order == [
        (d, c, t) for d in ("float32", "bfloat16") for cells in (goal, other) for t in (100, 1000) for c in cells
    ]
    assert {(j.config.batch, j.config.input, j.config.hidden) for j in headline} == {(64, 300, 128)}
    assert all(j.modes == ("forward", "backward", "train") for j in headline)
    assert all("rnnx-pallas" in j.peers and "torch" in j.peers for j in jobs)
    assert {j.peers for j in headline if j.config.steps == 1000} == {SWEEP_PEERS}
    sweeps = [(j.part, j.config.batch, j.config.steps, j.config.hidden) for j in jobs if j.part != "headline"]
    assert list(dict.fromkeys(p for p, *_ in sweeps)) == ["sweep-hidden", "sweep-steps", "sweep-batch"]
    assert list(dict.fromkeys(sweeps)) == [
        ("sweep-hidden", 64, 100, 512),
        ("sweep-hidden", 64, 100, 1024),
        ("sweep-hidden", 64, 100, 256),
        ("sweep-steps", 64, 10000, 128),
        ("sweep-batch", 8, 100, 128),
        ("sweep-batch", 256, 100, 128),
    ]
    assert all(j.modes == ("forward", "train") and j.repeats == 5 for j in jobs if j.part != "headline")
    assert len({j.config for j in jobs}) == len(jobs)  # nothing measured twice
    assert all(j.config.cell in rnnx.CELLS for j in jobs)
    tiny = gpu_plan(parts=("headline",), cells=("lstm",), dtypes=("float32",), tiny=True)
    assert [j.config.steps for j in tiny] == [4, 10]


def test_a_failing_contender_is_a_row_not_the_end_of_the_run():
    def unsupported(cfg, modes):
        raise Unsupported("no bfloat16 here")

    def crashes(cfg, modes):
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    def fails_later(cfg, modes):
        def call():
            raise FloatingPointError("nan")

        return Contender({"forward": call}, 1, {"forward": 0.0}, {"forward": None})

    peers = {"rnnx": build_rnnx, "unsupported": unsupported, "crashes": crashes, "fails later": fails_later}
    job = Job("headline", Config("lstm", 2, 3, 4, 5), tuple(peers), ("forward",), 1)
    rows = {r["peer"]: r for r in run_config(job, peers)}
    assert rows["rnnx"]["status"] == "ok" and rows["rnnx"]["hlo"]["loops"]
    assert rows["unsupported"]["status"] == "unsupported: no bfloat16 here"
    assert rows["crashes"]["status"] == "failed: RuntimeError: CUDA error: out of memory"
    assert rows["fails later"]["status"] == "failed: FloatingPointError: nan"


def test_gpu_suite_on_cpu_writes_md_json_and_a_plot_with_pallas_rows_per_step_and_goals(tmp_path):
    main(
        [
            "--suite",
            "gpu",
            "--tiny",
            "--repeats",
            "1",
            "--cells",
            "lstm",
            "--sweep-cells",
            "lstm",
            "--parts",
            "headline,steps",
            "--dtypes",
            "float32",
            "--peers",
            "rnnx,rnnx-pallas,rnnx-cudnn",
            "--sweep-peers",
            "rnnx",  # the interpreter's kernels take seconds to compile: pallas at one shape only
            "--out",
            str(tmp_path),
            "--name",
            "gpu-{device}-tiny",
        ]
    )
    stem = tmp_path / "gpu-cpu-tiny"
    result = json.loads(stem.with_suffix(".json").read_text())
    rows = result["rows"]
    assert {(r["part"], r["steps"]) for r in rows} == {("headline", 4), ("headline", 10), ("sweep-steps", 16)}
    assert {(r["peer"], r["mode"]) for r in rows if r["steps"] == 4} == {
        (p, m) for p in ("rnnx", "rnnx-pallas", "rnnx-cudnn") for m in ("forward", "backward", "train")
    }
    cudnn = [r for r in rows if r["peer"] == "rnnx-cudnn"]
    assert cudnn and all(r["status"].startswith("unavailable: needs a GPU") for r in cudnn)
    pallas = [r for r in rows if r["peer"] == "rnnx-pallas"]  # in Pallas's interpreter
    assert len(pallas) == 3 and all(r["status"] == "ok" and r["per_step_basis"] == "median/T" for r in pallas)
    scan = [r for r in rows if r["peer"] == "rnnx" and r["status"] == "ok"]
    assert {r["per_step_basis"] for r in scan} == {"fit"} and all(r["fixed_ms"] >= 0 for r in scan)
    assert all(r["fraction_of_peak"] > 0 for r in scan) and set(result["peak"]) == {"float32"}
    text = stem.with_suffix(".md").read_text()
    assert "## Goals" in text and "kernels per step" in text and "| steps |" in text
    assert "**not measured**: rnnx `pallas` forward at T=100" in text  # tiny shapes are not the goals' shape
    assert (
        "## Per time step and fraction of the matmul peak" in text
        and "| lstm | float32 | backward | rnnx | 10 |" in text
    )
    try:
        import matplotlib  # noqa: F401  (the plot needs the bench extra; the test extra does not carry it)
    except ImportError:
        assert not stem.with_suffix(".png").exists()
    else:
        assert stem.with_suffix(".png").stat().st_size > 0


def test_a_spent_budget_skips_and_records_the_remaining_configurations(tmp_path):
    main(
        [
            "--suite",
            "gpu",
            "--tiny",
            "--cells",
            "lstm,gru",
            "--parts",
            "headline",
            "--dtypes",
            "float32",
            "--budget-seconds",
            "0",
            "--out",
            str(tmp_path),
            "--name",
            "spent",
        ]
    )
    result = json.loads((tmp_path / "spent.json").read_text())
    skipped = [(s["cell"], s["steps"]) for s in result["skipped_configs"]]
    assert result["rows"] == [] and skipped == [("lstm", 4), ("gru", 4), ("lstm", 10), ("gru", 10)]
    assert "Skipped: time budget exceeded (4 configurations)" in (tmp_path / "spent.md").read_text()


def _row(peer, cell, mode, ms, dtype="float32", hidden=128, part="headline", steps=100):
    config = {
        "cell": cell,
        "batch": 64,
        "steps": steps,
        "input": 300,
        "hidden": hidden,
        "layers": 1,
        "bidirectional": False,
        "dtype": dtype,
        "remat": False,
    }
    return {
        "peer": peer,
        "mode": mode,
        "part": part,
        **config,
        "status": "ok",
        "median_ms": ms,
        "min_ms": ms,
        "max_ms": ms,
        "tokens_per_s": 6400 / ms,
    }


def test_goals_are_met_or_missed_from_the_ratios_of_one_run():
    rows = [
        _row("rnnx", "lstm", "forward", 10.0),
        _row("flax.linen", "lstm", "forward", 14.0),  # 1.4: met
        _row("flax.linen OptimizedLSTM", "lstm", "forward", 12.0),  # the fastest flax decides: 1.2, missed
        _row("rnnx", "gru", "train", 10.0),
        _row("flax.linen", "gru", "train", 13.0),  # exactly 1.3: met
        _row("rnnx-auto", "lstm", "forward", 5.4),
        _row("torch", "lstm", "forward", 5.0),  # 1.08: met
        _row("rnnx-cudnn", "lstm", "forward", 9.0),  # auto measured: cudnn not a case
        _row("rnnx-cudnn", "lstm", "train", 12.0),
        _row("torch", "lstm", "train", 10.0),  # 1.2: missed
        _row("rnnx-auto", "lstm", "train", 30.0, "bfloat16"),
        _row("torch", "lstm", "train", 10.0, "bfloat16"),
        _row("rnnx", "lstm", "train", 30.0, hidden=512, part="sweep-hidden"),
        _row("rnnx", "lstm", "train", 15.0, "bfloat16", hidden=512, part="sweep-hidden"),  # 2.0: met
        _row("rnnx", "gru", "train", 20.0, hidden=1024, part="sweep-hidden"),
        _row("rnnx", "gru", "train", 16.0, "bfloat16", hidden=1024, part="sweep-hidden"),  # 1.25: missed
        _row("rnnx", "gru", "train", 9.0, "bfloat16", hidden=128, part="sweep-hidden"),  # H < 512: not a case
        {**_row("flax.linen", "gru", "forward", 1.0), "status": "failed: x"},  # failures are not cases
    ]
    cases = {
        (c["goal"], c["case"]): (round(c["ratio"], 3), c["verdict"])
        for c in goals.goals(rows)
        if not c["goal"].startswith("pallas")
    }
    assert cases == {
        ("scan", "flax.linen OptimizedLSTM / rnnx, lstm float32 T=100 forward"): (1.2, "missed"),
        ("scan", "flax.linen / rnnx, gru float32 T=100 train"): (1.3, "met"),
        ("cudnn", "rnnx-auto / torch, float32 T=100 forward"): (1.08, "met"),
        ("cudnn", "rnnx-cudnn / torch, float32 T=100 train"): (1.2, "missed"),
        ("cudnn", "rnnx-auto / torch, bfloat16 T=100 train"): (3.0, "missed (information only)"),
        ("bf16", "rnnx lstm B=64 T=100 H=512: float32 / bfloat16"): (2.0, "met"),
        ("bf16", "rnnx gru B=64 T=100 H=1024: float32 / bfloat16"): (1.25, "missed"),
    }
    text = goals.goals_markdown(rows)
    assert text.count("**missed**") == 3
    met = [_row("rnnx-auto", "lstm", "train", 1.0), _row("torch", "lstm", "train", 1.0)]
    assert "**met**: LSTM" in goals.goals_markdown(met) and "**not measured**: rnnx scan" in goals.goals_markdown(met)


def test_pallas_goals_are_met_missed_or_not_measured_with_the_reason():
    why = "unavailable: ValueError: backend='pallas' cannot run this call: hidden size 4"
    rows = [
        _row("rnnx-pallas", "lstm", "forward", 0.6),
        _row("torch", "lstm", "forward", 1.0),  # 0.6 <= 0.7: met
        _row("rnnx", "lstm", "forward", 0.5),  # but pallas / scan = 1.2: slower than the scan
        _row("rnnx-pallas", "gru", "forward", 0.8),
        _row("torch", "gru", "forward", 1.0),  # 0.8: missed
        {**_row("rnnx-pallas", "simple_rnn", "forward", 1.0), "status": why},
        _row("torch", "simple_rnn", "forward", 1.0),  # not measured, with the pallas row's reason
        _row("rnnx-pallas", "lstm", "train", 0.4),
        _row("torch", "lstm", "train", 1.0),  # the only T=100 training case: partly measured
        *[_row("rnnx-pallas", c, "train", ms, steps=1000) for c, ms in (("lstm", 8.5), ("gru", 5), ("simple_rnn", 8))],
        *[_row("torch", c, "train", 10.0, steps=1000) for c in ("lstm", "gru", "simple_rnn")],  # <= 0.85: met
        _row("rnnx", "lstm", "train", 9.0, steps=1000),
        _row("rnnx-pallas", "lstm", "train", 2.0, hidden=512, part="sweep-hidden"),
        _row("rnnx", "lstm", "train", 3.0, hidden=512, part="sweep-hidden"),
        _row("rnnx-pallas", "lstm", "forward", 0.3, dtype="bfloat16"),  # bfloat16: outside the goal shape
        _row("torch", "lstm", "forward", 1.0, dtype="bfloat16"),
    ]
    cases = {(c["goal"], c["case"]): (c["ratio"] and round(c["ratio"], 3), c["verdict"]) for c in goals.goals(rows)}
    assert cases[("pallas-forward-T100", "rnnx-pallas / torch, lstm T=100 forward")] == (0.6, "met")
    assert cases[("pallas-forward-T100", "rnnx-pallas / torch, gru T=100 forward")] == (0.8, "missed")
    assert cases[("pallas-forward-T100", "rnnx-pallas / torch, simple_rnn T=100 forward")] == (
        None,
        f"not measured (rnnx-pallas: {why})",
    )
    assert cases[("pallas-train-T100", "rnnx-pallas / torch, gru T=100 train")] == (
        None,
        "not measured (rnnx-pallas: not run)",
    )
    assert cases[("pallas-train-T1000", "rnnx-pallas / torch, lstm T=1000 train")] == (0.85, "met")
    scan = {k[1]: v for k, v in cases.items() if k[0] == "pallas-scan"}
    assert scan == {
        "lstm float32 B=64 T=100 H=128 forward": (1.2, "missed"),
        "lstm float32 B=64 T=1000 H=128 train": (round(8.5 / 9, 3), "met"),
        "lstm float32 B=64 T=100 H=512 train": (round(2 / 3, 3), "met"),
    }
    assert len([c for c in cases if c[0].startswith("pallas-") and c[0] != "pallas-scan"]) == 6 * 3
    text = goals.goals_markdown(rows)
    assert "- **missed**: rnnx `pallas` forward at T=100, B=64" in text
    assert "- **met**: rnnx `pallas` full training step (Adam, clipping) at T=1,000" in text
    assert "- **not measured (1 of 3 cases measured, all met)**: rnnx `pallas` full training step" in text
    assert "- **not measured**: rnnx `pallas` forward+backward at T=100" in text
    assert "- **missed**: rnnx `pallas` never slower than the scan" in text
    assert "| pallas-forward-T100 | rnnx-pallas / torch, simple_rnn T=100 forward | - | 0.7 | not measured" in text


def test_per_step_cost_fits_a_line_over_t_and_the_peak_comes_from_the_device_kind():
    rows = [
        _row("rnnx", "lstm", "forward", 1.0),
        _row("rnnx", "lstm", "forward", 5.5, steps=1000),  # 5 µs per step, 0.5 ms fixed
        _row("torch", "lstm", "forward", 0.1),
        _row("torch", "lstm", "forward", 5.5, steps=1000),  # the line's intercept is negative: fixed 0
        _row("rnnx", "gru", "forward", 2.0),  # one T only: median / T
        {**_row("rnnx-pallas", "gru", "forward", 1.0), "status": "unavailable: x"},
    ]
    out = {(r["peer"], r["cell"], r["steps"]): r for r in roofline.with_per_step(rows)}
    assert out[("rnnx", "lstm", 100)]["fixed_ms"] == pytest.approx(0.5)
    assert out[("rnnx", "lstm", 100)]["per_step_us"] == pytest.approx(5.0)
    assert out[("rnnx", "lstm", 1000)]["per_step_us"] == pytest.approx(5.0)
    assert out[("torch", "lstm", 100)]["fixed_ms"] == 0.0 and out[("torch", "lstm", 100)]["per_step_us"] == 1.0
    gru = out[("rnnx", "gru", 100)]
    assert (gru["fixed_ms"], gru["per_step_us"], gru["per_step_basis"]) == (None, 20.0, "median/T")
    assert "per_step_us" not in out[("rnnx-pallas", "gru", 100)]
    assert roofline.peak("nvidia-h100-80gb-hbm3", "float32", 1.0)[0] == pytest.approx(494_700)
    assert roofline.peak("nvidia-h100-80gb-hbm3", "bfloat16")[0] == pytest.approx(989_400)
    assert roofline.peak("cpu", "float32", 50.0) == (50.0, "measured here: best of 10 runs of a 2048x2048 matmul")


def test_merge_names_the_device_and_concatenates_parts(tmp_path):
    env = {"device": "NVIDIA H100 80GB HBM3", "backend": "gpu"}
    parts = []
    for i, part in enumerate(("headline", "sweep-hidden")):
        result = {
            "name": part,
            "environment": env,
            "rows": [_row("rnnx", "lstm", "train", 1.0 + i, part=part)],
            "skipped_configs": [_row("rnnx", "gru", "train", 1.0, part=part)] * i,
        }
        parts.append(tmp_path / f"{part}.json")
        parts[-1].write_text(json.dumps(result))
    report.main([str(p) for p in parts] + ["--out", str(tmp_path / "merged")])
    merged = json.loads((tmp_path / "merged" / "gpu-nvidia-h100-80gb-hbm3.json").read_text())
    assert len(merged["rows"]) == 2 and len(merged["skipped_configs"]) == 1 and len(merged["parts"]) == 2
    assert (tmp_path / "merged" / "gpu-nvidia-h100-80gb-hbm3.md").read_text().startswith("# gpu-nvidia-h100")


SYNTHETIC_HLO = """HloModule jit_f, entry_computation_layout={(f32[2,8]{1,0})->f32[2,8]{1,0}}

%fused_computation (param_0: f32[2,8]) -> f32[2,8] {
  %param_0 = f32[2,8]{1,0} parameter(0)
  ROOT %tanh.1 = f32[2,8]{1,0} tanh(%param_0)
}

%command_buffer (p: f32[2,8]) -> f32[2,8] {
  %p = f32[2,8]{1,0} parameter(0)
  %gemm = (f32[2,8]{1,0}, s8[0]{0}) custom-call(%p, %p), custom_call_target="__cublas$gemm"
  %gte = f32[2,8]{1,0} get-tuple-element(%gemm), index=0
  ROOT %fusion.2 = f32[2,8]{1,0} fusion(%gte), kind=kLoop, calls=%fused_computation
}

%body (arg: (s32[], f32[2,8])) -> (s32[], f32[2,8]) {
  %arg = (s32[], /*index=1*/f32[2,8]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %h = f32[2,8]{1,0} get-tuple-element(%arg), index=1
  %call = f32[2,8]{1,0} call(%h), to_apply=%command_buffer
  %fusion.3 = f32[2,8]{1,0} fusion(%call), kind=kLoop, calls=%fused_computation
  %add = s32[] add(%i, %i)
  ROOT %tuple = (s32[], f32[2,8]{1,0}) tuple(%add, %fusion.3)
}

%cond (arg.1: (s32[], f32[2,8])) -> pred[] {
  %arg.1 = (s32[], f32[2,8]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[2,8]) -> f32[2,8] {
  %x = f32[2,8]{1,0} parameter(0)
  %t = (s32[], f32[2,8]{1,0}) tuple(%x, %x)
  %while.1 = (s32[], f32[2,8]{1,0}) while(%t), condition=%cond, body=%body
  ROOT %out = f32[2,8]{1,0} get-tuple-element(%while.1), index=1
}
"""


def test_hlo_counts_kernels_per_step_through_calls():
    counts = hlo.count_kernels(SYNTHETIC_HLO)
    (loop,) = counts["loops"]
    assert loop["body"] == "body" and counts["per_step"] == 4  # gemm, fusion in the call; fusion; add
    assert (loop["fusion"], loop["custom_call"], loop["other"]) == (2, 1, 1)
    assert loop["custom_call_targets"] == {"__cublas$gemm": 1}
    assert counts["module"]["while"] == 1 and counts["module"]["kernels"] == 0


def test_hlo_counts_a_compiled_scan():
    cell = rnnx.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    compiled = jax.jit(lambda p, x: rnnx.unroll(cell, p, x)[1]).lower(params, jnp.zeros((2, 5, 3))).compile()
    counts = hlo.count_kernels(compiled.as_text())
    assert len(counts["loops"]) >= 1 and counts["per_step"] >= 1


def test_params_lists_every_registry_cell(capsys):
    from benchmarks import params

    params.main(["--batch", "1", "--steps", "2", "--input", "3", "--hidden", "2"])
    out = capsys.readouterr().out
    assert all(f"| {name} |" in out for name in rnnx.CELLS) and "gru (reset_after=False)" in out


def test_every_peer_takes_registry_names():
    assert set(PEERS) >= {"rnnx", "rnnx-auto", "rnnx-cudnn", "flax.linen", "flax.nnx", "equinox", "torch"}
    with pytest.raises(ValueError, match="cell must be one of"):
        Config("rnn")


def test_device_script_parses():
    script = Path(__file__).parent.parent / "benchmarks" / "device.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_scan_tuning_runs_each_flag_setting_in_its_own_process_and_records_a_refused_flag(tmp_path, monkeypatch):
    monkeypatch.setitem(scan_tuning.SETTINGS, "bogus", "--xla_gpu_no_such_flag=1")
    argv = ["--tiny", "--cells", "lstm", "--steps", "4", "--modes", "forward", "--settings", "default,bogus"]
    result = scan_tuning.main(argv + ["--budget-seconds", "200", "--out", str(tmp_path)])
    assert result["settings"]["default"]["returncode"] == 0
    assert {(r["unroll"], r["mode"], r["status"]) for r in result["rows"]} == {
        (u, "forward", "ok") for u in (1, 4, 8, 16)
    }
    bogus = result["settings"]["bogus"]
    assert bogus["returncode"] != 0 and "Unknown flag in XLA_FLAGS: --xla_gpu_no_such_flag=1" in bogus["error"]
    text = (tmp_path / "scan_tuning-cpu.md").read_text()
    assert "| lstm | 4 | forward | 16 |" in text and "| bogus | `--xla_gpu_no_such_flag=1` |" in text


def test_pallas_tuning_times_each_layout_keeps_the_fastest_and_records_one_that_fails(tmp_path, monkeypatch, capsys):
    gpu_layouts = pallas_tuning.layouts((16, 32), (4, 8), (1, 2), gpu=True)
    assert gpu_layouts[0] == rnnx.core.backends.pallas.Tuning() and len(set(gpu_layouts)) == 8
    assert pallas_tuning.layouts((16, 32), (4, 8), (1, 2), gpu=False) == [
        rnnx.core.backends.pallas.Tuning(block=b) for b in (16, 32)
    ]  # the interpreter ignores warps and stages
    build = pallas_tuning.build_rnnx_backend

    def refuse_block_32(cfg, modes, backend):
        if rnnx.core.backends.pallas._TUNING.get().block == 32:
            raise pallas_tuning.Unavailable("ValueError: no block 32 today")
        return build(cfg, modes, backend=backend)

    monkeypatch.setattr(pallas_tuning, "build_rnnx_backend", refuse_block_32)
    record = pallas_tuning.main(["--tiny", "--cells", "gru", "--modes", "forward", "--out", str(tmp_path)])
    (shape,) = record["shapes"]
    assert shape["layouts"]["block=32 warps=4 stages=1"] == {"status": "failed: ValueError: no block 32 today"}
    best = shape["best"]["forward"]
    assert best["layout"] == "block=16 warps=4 stages=1" and best["median_ms"] == best["default_ms"] > 0
    text = (tmp_path / "pallas_tuning-cpu.md").read_text()
    assert "| gru | float32 | 20x4x8 | forward | block=16 warps=4 stages=1 |" in text
    assert "- gru, block=32 warps=4 stages=1: failed: ValueError: no block 32 today" in text
    assert json.loads((tmp_path / "pallas_tuning-cpu.json").read_text()) == record


def test_population_benchmark_rehearsal_writes_rows_goals_and_plot(tmp_path):
    from benchmarks import population

    argv = ["--tiny", "--repeats", "1", "--members", "1,2", "--models", "classifier", "--out", str(tmp_path)]
    report = population.main(argv)
    assert [r["model"] for r in report["results"]] == ["classifier"] and report["malloc"] == "heap"
    for result in report["results"]:
        assert [r["members"] for r in result["rows"]] == [1, 2] and result["rows"][0]["ratio_to_1"] == 1.0
        assert result["rows"][1]["member_updates_per_s"] > 0 and result["solo_ms"] > 0
        # XLA's byte count: every update reads at least each member's params once (params counted exactly)
        assert result["params"] == rnnx.count_params(
            population.model_and_loss("classifier", True)[0].init(jax.random.key(0))
        )
        assert all(r["param_passes"] >= 1 and r["gb_per_s"] > 0 and r["stream_gb_per_s"] > 0 for r in result["rows"])
    text = (tmp_path / "population-cpu-2core-tiny.md").read_text()
    assert (
        "arrays moved per member (XLA)" in text
        and "stream GB/s" in text
        and "Dense Adam alone needs at least 7" in text
    )
    assert "| classifier, 8 members <= 3.0x one member | not measured | - |" in text
    assert "GPU: classifier, 16 members <= 1.5x | not measured on this device" in text
    assert "ms fixed +" in text and "ms per member" in text
    assert (tmp_path / "population-cpu-2core-tiny.png").stat().st_size > 0


def test_population_split_recovers_a_known_line_and_ignores_rows_past_8():
    from benchmarks import population

    rows = [{"members": n, "ms_per_update": 2.0 + 3.0 * n} for n in (1, 2, 4, 8)]
    rows += [{"members": 16, "ms_per_update": 500.0}, {"members": 32, "error": "out of memory"}]
    split = population.fixed_and_per_member(rows)
    assert split["over_members"] == [1, 2, 4, 8]
    np.testing.assert_allclose([split["fixed"], split["per_member"]], [2.0, 3.0], atol=1e-9)
    assert population.fixed_and_per_member(rows[:1]) is None


def test_time_interleaved_calls_every_contender_each_round_in_changing_orders():
    from benchmarks.timing import time_interleaved

    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    timed = time_interleaved(fns, repeats=6, warmup=1)
    assert all(len(timed[name]["samples_ms"]) == 6 for name in "abcd")
    rounds = [tuple(calls[i : i + 4]) for i in range(4, len(calls), 4)]  # after the warm-up calls
    assert all(sorted(r) == list("abcd") for r in rounds) and len(set(rounds)) > 1
