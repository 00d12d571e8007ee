"""Windowed inference over long recordings: the window grid, feature workers, per-recording
and per-table prediction and their outputs.

Imports the layers below it (core, signal, data, models).
"""
