"""dermstack.external: a finished run on another clinic's labelled data (`dermstack evaluate`), with the
overlap audit that keeps the run's own training images out of the figures."""
from dermstack.external.evaluate import EVALUATION_FILES, evaluate_run

__all__ = ["EVALUATION_FILES", "evaluate_run"]
