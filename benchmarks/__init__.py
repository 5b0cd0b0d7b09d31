"""Speed and memory benchmarks. Run with ``make bench``; never part of ``make test``."""
