"""cnnbench: benchmarks and profiles of the CNNs of *Dive into Deep Learning* chapter 8."""

__version__ = "0.1.0"
