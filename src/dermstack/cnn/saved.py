"""Inference with a saved CNN folder (``models/<name>/``): :class:`SavedCNN`, which the registry names
for ``kind = "cnn"``. torch and timm load when it scores, not when the kind is registered."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermstack.calibration import undo_prior
from dermstack.cnn.feature import GROUP, RELATIONS
from dermstack.cnn.params import CNNConfig
from dermstack.crossfit import align_rows
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.features.scores import NestedScoreGroup
from dermstack.saved import Inputs, SavedModel, read_spec
from dermstack.taskkind import TaskKind


class SavedCNN(NestedScoreGroup, SavedModel):
    """A CNN's fold/seed checkpoints (and, when trained, its pair models under ``nested/``, whose
    scores are the ``cnn`` feature group of the boosters stacked on it)."""

    feature_group = GROUP
    relations = RELATIONS

    @property
    def n_outputs(self) -> int:
        return TaskKind(self.spec["task"]).n_outputs(self.spec["classes"])

    def _score(self, files: list[Path], table: LesionTable, progress: bool = True,
               factors: list | None = None) -> np.ndarray:
        """Mean score of the checkpoints ``files`` over every row of ``table`` (each with its prior
        factor taken out, where it was trained with one)."""
        import torch

        from dermstack.cnn.imagebank import image_refs
        from dermstack.cnn.net import NetTemplate, load_net
        from dermstack.cnn.train import CNNTrainer

        spec = self.spec
        nets = [load_net(spec["arch"], self.n_outputs, f) for f in files]
        template = NetTemplate(nets[0], spec["arch"], tuple(spec["mean"]), tuple(spec["std"]), spec["weights"])
        trainer = CNNTrainer(CNNConfig(**spec["config"]), spec["task"], self.n_outputs, image_refs(table.df), progress,
                             template=template)
        rows = np.arange(len(table))
        scores = [trainer.score(net.to(trainer.device, memory_format=torch.channels_last), rows) for net in nets]
        factors = factors or [None] * len(scores)
        return np.mean([s if f is None else undo_prior(spec["task"], s, np.asarray(f)) for s, f in zip(scores, factors)], axis=0)

    def predict(self, inputs: Inputs) -> np.ndarray:
        entries = self.spec["models"]
        return self._score([self.dir / e["file"] for e in entries], _rows(inputs),
                           factors=[e.get("prior_factor") for e in entries])

    def nested_mean(self, inputs: Inputs) -> np.ndarray:
        """The mean score of the pair models (what boosters stacked on this CNN saw for test rows)."""
        key = (self.name, "nested")
        if key not in inputs.cache:
            files = sorted((self.dir / "nested").glob("without*_seed*.safetensors"))
            if not files:
                raise DataError("no nested pair models: a booster stacked on this CNN cannot be applied",
                                file=str(self.dir / "nested"))
            inputs.cache[key] = self._score(files, _rows(inputs))
        return inputs.cache[key]


def _rows(inputs: Inputs) -> LesionTable:
    """The LesionTable rows of ``inputs.ids``, in that order."""
    table = inputs.table
    df = align_rows(table.df, inputs.ids, source="LesionTable")
    return LesionTable(df, table.meta)


def predict_cnn_saved(model_dir: str | Path, table: LesionTable, progress: bool = True) -> np.ndarray:
    """Scores of every row of ``table`` averaged over the saved folds and seeds: (n,) or (n, C)."""
    ids = table.df["image_id"].to_list()
    model = SavedCNN(Path(model_dir), read_spec(model_dir))
    return model.predict(Inputs(ids, model.spec["classes"], table=table))
