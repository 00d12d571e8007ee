"""Signal processing: audio I/O in bounded blocks, log-mel spectrograms and their
augmentation, per-window prosody (F0, energy, speech activity) and speaker pitch
normalisation.

Imports only :mod:`ser.core`; never a model, a statistic or the runner.
"""
