"""rnnx examples: runnable scripts (``python -m examples.<name>``) that write their results under results/."""
