"""Running the study: stage parameters, the papermill pipeline and the ``ser`` command line.

The top floor: nothing imports it.
"""
