"""The floor every stage stands on: project paths, atomic writes, provenance records.

Imports nothing else from :mod:`ser`.
"""
