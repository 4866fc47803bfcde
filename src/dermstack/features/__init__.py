"""dermstack.features: the feature table (FeatureSet) the boosters read, built from the LesionTable
and the embeddings in groups: metadata, engineered (ISIC 2024 TBP), patient-relative, image
(colour and shape from masks) and embedding; the transform fitted on training rows that ``predict``
applies to new rows. Another kind's scores join it as one more group (the CNN's ``cnn``, the linear
probe's ``probe``: :mod:`dermstack.features.scores`), handed over by the pipeline."""
