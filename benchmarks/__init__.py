"""rnnx benchmarks: scripts that report medians and ratios measured side by side in one process."""
