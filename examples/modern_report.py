"""The tables and the plot of ``examples.modern_study`` (``python -m examples.modern_study report``): each task's
``examples/results/modern_<task>.json`` as a markdown table with its Welch tests, and one panel per task in
``examples/results/modern_study.png``."""

import json
import os

from examples.population_study import fmt

VOCAB = 16  # of the selective-copying task, as Gu & Dao's
# (metric, higher is better, learned if beyond, trivial baseline) per task
METRIC = {
    "adding": ("mse", False, 0.1, 1 / 6),
    "copying": ("accuracy", True, 1 / (VOCAB - 2) + 0.05, 1 / (VOCAB - 2)),
    "lm": ("margin", True, 0.0, 0.0),
}
# the order of the tables and panels, whatever the order the runs added the cells in
ORDER = ("lstm", "gru", "min_gru", "lru", "rg_lru", "slstm", "mlstm")
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def report():
    """Print each task's table and tests (markdown) and draw the three panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = [t for t in (*METRIC, "lm_main_job") if os.path.exists(os.path.join(RESULTS, f"modern_{t}.json"))]
    fig, axes = plt.subplots(1, len(stems), figsize=(4.5 * len(stems), 3.8), squeeze=False)
    for ax, stem in zip(axes[0], stems):
        with open(os.path.join(RESULTS, f"modern_{stem}.json")) as f:
            out = json.load(f)
        task = out["config"]["task"]  # modern_lm_main_job.json: the lm task at the main job's settings
        title = f"{task}, {out['config']['updates']} updates" if task == "lm" else task
        metric, _, threshold, trivial = METRIC[task]
        shown = ["bits_per_char", "margin"] if task == "lm" else ["accuracy", "mse"] if task == "adding" else [metric]
        print(f"\n{title}\n\n| cell | hidden | params | {' | '.join(shown)} | learned | s/update | step memory, MiB |")
        print("|---" * (6 + len(shown)) + "|")
        rows = dict(sorted(out["results"].items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))
        for name, r in rows.items():
            print(
                f"| {name} | {r['hidden']} | {r['parameters']:,} | {' | '.join(fmt(r[m]) for m in shown)} | "
                f"{r['learned']} / {len(r[metric]['values'])} | {r['seconds_per_update']:.2f} | "
                f"{r['memory']['total'] / 2**20:.1f} |"
            )
        for name, r in out.get("memory_only", {}).items():
            print(
                f"| {name}, memory only | {r['hidden']} | {r['parameters']:,} | not trained |{' |' * len(shown)} - | "
                f"{r['memory']['total'] / 2**20:,.0f} |"
            )
        for name, t in out["tests"].items():
            print(
                f"{task} {name}: {metric} {t['difference']:+.4f}, Welch t {t['t']:.2f}, "
                f"{'' if t['significant'] else 'not '}significant at 5%"
            )
        means = [r[metric]["mean"] for r in rows.values()]
        errors = [
            [m - r[metric]["low"] for m, r in zip(means, rows.values())],
            [r[metric]["high"] - m for m, r in zip(means, rows.values())],
        ]
        ax.bar(range(len(rows)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
        for x, r in enumerate(rows.values()):
            ax.plot([x] * len(r[metric]["values"]), r[metric]["values"], "k.", alpha=0.5)
        ax.axhline(trivial, color="tab:red", linestyle=":", label="n-gram" if task == "lm" else "trivial baseline")
        ax.axhline(threshold, color="tab:green", linestyle="--", label="learned beyond")
        label = {"adding": "final MSE", "copying": "copied-token accuracy", "lm": "bits/char margin over n-gram"}
        ax.set_xticks(range(len(rows)), list(rows), rotation=30)
        ax.set(title=f"{title} ({len(rows[next(iter(rows))][metric]['values'])} seeds)", ylabel=label[task])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "modern_study.png"), dpi=100)
    print(f"wrote {os.path.join(RESULTS, 'modern_study.png')}")
