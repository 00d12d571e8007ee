"""The report: figures, privacy scrubbing and scan, run state, report sections, the Quarto
render and its fallback, and the headless browser check.

Reads ``results/``; imports core, data and stats, never models, training or inference.
"""
