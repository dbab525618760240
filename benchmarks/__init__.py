"""Speed and quality benchmarks: `python -m benchmarks.<topic>`."""
