"""Evaluation: I2P safety benchmark, retrieval and zero-shot preservation, generation utility."""
