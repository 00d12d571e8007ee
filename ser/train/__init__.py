"""Training and evaluation: metrics, the training loop, evaluation on held-out speakers
and corpora, and temperature calibration.

Imports the layers below it (core, signal, data, models).
"""
