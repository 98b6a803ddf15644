"""The application layer: data and corpora, small models, baselines, experiment runs and the CLI.

The only code in rnnx that prints. Builds on :mod:`rnnx.core` and :mod:`rnnx.training`; the library layers
never import it. Its data pipeline uses Hugging Face ``datasets``, imported when a dataset is loaded, so
``import rnnx`` works without it.
"""

__all__ = ["baselines", "cli", "config", "console", "corpora", "data", "experiments", "models"]
