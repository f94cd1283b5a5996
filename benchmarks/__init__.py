"""Speed and memory measurements of hydralanet: each module is one command (python -m benchmarks.<name>)."""
