"""Speed and quality benchmarks: ours against a reference, measured in the same run."""
