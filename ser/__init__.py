"""ser: speech emotion recognition helpers for the Humanitude caregiver study.

A thin, tested helper package; the numbered notebooks in ``notebooks/`` orchestrate.
One subpackage per stage, each importing only those below it (``docs/architecture.md``)::

    run        params, pipeline (papermill), the ``ser`` command line
    report     figures, privacy, run state, report sections, Quarto / fallback render
    stats      descriptors, mixed models, multiplicity, tests, deltas, validation
    inference  windowed prediction over long recordings
    train      metrics, training loop, evaluation, calibration
    models     network families, transformers, quantisation, bundles, classical models
    data       the study's vocabulary (schema), labels, corpora, splits, demo data
    signal     audio I/O, spectrograms, F0 / energy / speech activity, pitch normalisation
    core       paths, atomic writes, provenance
"""

__version__ = "0.1.0"
