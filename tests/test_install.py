"""The plain install: ``import rnnx`` and ``rnnx train`` on the shipped text need no Hugging Face ``datasets``,
and what does need it says so in one line naming the ``data`` extra.

``datasets`` is blocked the way an interpreter without it behaves: ``sys.modules["datasets"] = None`` makes every
``import datasets`` raise ImportError.
"""

import subprocess
import sys

import pytest

from rnnx.apps import config, corpora, data, experiments
from rnnx.apps.cli import main

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

EXTRA = 'needs Hugging Face datasets, which is not installed: pip install "rnnx[data]"'

IMPORTS = """
import sys
sys.modules["datasets"] = None
import rnnx, rnnx.core, rnnx.core.backends, rnnx.nn, rnnx.training, rnnx.interop, rnnx.diagnostics
import rnnx.apps.cli, rnnx.apps.data, rnnx.apps.corpora, rnnx.apps.experiments
heavy = sorted(name for name in ("pyarrow", "pandas") if name in sys.modules)
assert not heavy, heavy
print("ok")
"""


def test_every_public_module_imports_without_datasets():
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.fixture
def no_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)


def test_the_main_job_reads_shakespeare_without_datasets(no_datasets):
    train, val, test = experiments._load_text(config.LanguageModelConfig())
    assert (len(train), len(val), len(test)) == (3_728_694, 551_637, 776_906)


@pytest.mark.parametrize(
    "call, what",
    [
        (lambda: data.load("stanfordnlp/imdb"), "loading 'stanfordnlp/imdb'"),
        (corpora.shakespeare, "rnnx.apps.corpora.shakespeare"),
        (corpora.trec, "rnnx.apps.corpora.trec"),
        (corpora.rotten_tomatoes, "rnnx.apps.corpora.rotten_tomatoes"),
    ],
)
def test_data_names_the_extra_when_datasets_is_missing(no_datasets, call, what):
    with pytest.raises(data.MissingExtra, match=f"^{what} {EXTRA}$".replace("[", r"\[").replace("]", r"\]")):
        call()


def test_the_cli_names_the_extra_in_one_line(no_datasets, capsys):
    assert main(["train", "--task", "classify", "--dataset", "trec"]) == 2
    assert capsys.readouterr().err == f"rnnx train: error: --dataset trec {EXTRA}\n"
