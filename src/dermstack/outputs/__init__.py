"""dermstack.outputs: what a run gives its user, where the run's outputs are.

- :mod:`~dermstack.outputs.final`: the run's final outputs (``oof.parquet``, ``test_predictions.parquet``,
  ``metrics.json``, the submission);
- :mod:`~dermstack.outputs.predict`: a finished run's saved models on new data (``dermstack predict``);
- :mod:`~dermstack.outputs.submission`: competition submissions, validated before they are written
  (``dermstack submit``, ``dermstack ensembles validate``);
- :mod:`~dermstack.outputs.cli`: the ``predict`` and ``submit`` commands.
"""
