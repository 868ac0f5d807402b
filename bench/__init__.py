"""Benchmarks of xllm-asr on the machine at hand (``make bench`` -> ``python -m bench.run --out bench/out``)."""
