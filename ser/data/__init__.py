"""The study's data: its vocabulary (:mod:`ser.data.schema`), the unified emotion labels,
corpus readers, speaker-independent splits and the synthetic demo.

Imports :mod:`ser.core` and :mod:`ser.signal`.
"""
