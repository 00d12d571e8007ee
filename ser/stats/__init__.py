"""Statistics on the tables of windows: descriptors, mixed-effects models, multiplicity,
tests, deltas, problem tables, level classification and validation by simulation.

Reads tables; imports only :mod:`ser.core` and :mod:`ser.data`, never models,
training or inference.
"""
