"""``shopctl bench``: the benchmark of the whole saga against a bare intake
endpoint, and a microbenchmark of the consumer runner. See ``run.py``."""
