"""Benchmarks: each ``bench/<name>_bench.py`` module has ``main(argv) -> int``.

``python -m bench`` runs them all; ``python -m bench extract transform`` runs only those.
"""
