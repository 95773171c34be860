"""Benchmarks: each ``bench/<name>_bench.py`` module, and ``bench/scenarios.py``, has
``main(argv) -> int``; ``bench/common.py`` holds what they share.

``python -m bench`` runs them all; ``python -m bench extract transform`` runs only those.
"""
