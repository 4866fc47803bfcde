"""dermstack.cnn: the fine-tuned CNN as a model kind (``kind = "cnn"``), as :mod:`dermstack.mlp` holds the MLP.

- :mod:`~dermstack.cnn.kind`: its registry entry, and its scores as the boosters' ``cnn`` feature group;
- :mod:`~dermstack.cnn.train`: fine-tuning per fold and seed (``cross_validate_cnn``); :mod:`~dermstack.cnn.saved`:
  ``SavedCNN``, a saved CNN folder's scores;
- :mod:`~dermstack.cnn.params`: the ``[[models]] params`` schema and device defaults; :mod:`~dermstack.cnn.net`:
  the timm network; :mod:`~dermstack.cnn.augment`, :mod:`~dermstack.cnn.imagebank`: the images it trains on;
- :mod:`~dermstack.cnn.nested`: the pair CNNs whose leak-free views are the ``cnn`` features
  (:mod:`~dermstack.cnn.feature`: the group's name and columns; :mod:`dermstack.features.scores`: the
  views and columns, shared with the linear probe's ``probe`` group).

Nothing outside this package imports it to use a CNN: the pipeline reaches it through the registry.
"""
