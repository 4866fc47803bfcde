"""dermstack.data: every dataset format read into one LesionTable (:mod:`~dermstack.data.readers`,
with an IngestReport of what was skipped and why), the FoldPlan every model shares
(:mod:`~dermstack.data.folds`), images and masks, and the synthetic ISIC 2024 generator."""
