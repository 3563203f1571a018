"""Diffuse training: task files, the training loop, preservation anchors and the audit."""
