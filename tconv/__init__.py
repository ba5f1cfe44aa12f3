"""tconv: a compiler for convolutional networks where architecture changes are program transformations."""

__version__ = "0.1.0"
