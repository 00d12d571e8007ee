"""Emotion models: log-mel network families, the transformer family, quantisation, the
bundle that carries a trained model with its window, sample rate and labels, and the
classical (openSMILE/MFCC + SVM) family in :mod:`ser.models.classical`.

Imports :mod:`ser.core`, :mod:`ser.signal` and :mod:`ser.data`; never training,
inference, statistics or the runner.
"""
