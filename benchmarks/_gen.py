"""The benchmarks use the package's synthetic generators (also behind `mtx bench`)."""
from mtx._synth import GENERATORS  # noqa: F401
