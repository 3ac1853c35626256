"""Speculative decoding with a Mamba drafter, recorded step by step for visualisation."""

__version__ = "0.1.0"
