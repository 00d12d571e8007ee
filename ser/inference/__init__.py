"""Windowed inference over long recordings.

``protocol`` (what a model bundle provides), ``grid`` (the window grid, exact hop),
``options`` (:class:`~ser.inference.options.InferenceOptions`, checked once), ``workers``
(feature processes), ``recording`` (one recording), ``stamp`` (the model that computed a
window table), ``table`` (stage 04 over recordings.csv) and ``files`` (``ser predict``).

Imports the layers below it (core, signal, data, models).
"""
