"""ser: speech emotion recognition helpers for the Humanitude caregiver study.

A thin, tested helper package; the numbered notebooks in ``notebooks/`` orchestrate.
"""

__version__ = "0.1.0"
