"""The floor every stage stands on: project paths, atomic writes, provenance records,
step timings.

Imports nothing else from :mod:`ser`.
"""
