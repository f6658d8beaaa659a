"""Benchmarks of skyclass: they print figures and ratios measured side by side in one run.

Run them with ``make bench`` (``bench/run_all.py``); ``docs/benchmarks.md``
records the figures and the commands that reproduce them.
"""
