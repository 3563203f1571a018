"""synthgen: synthetic datasets with diverse attributes from diffuse language models."""

__version__ = "0.1.0"
