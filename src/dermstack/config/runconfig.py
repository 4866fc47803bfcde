"""RunConfig: every section, read from TOML and checked as a whole, and the checks across sections."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Any

import tomli_w

from dermstack.config.modelconfig import DEFAULT_KIND, ModelConfig, default_choices, default_models
from dermstack.config.problems import lines, schema, show, unknown, validate
from dermstack.config.sections import (
    ClinicalConfig,
    CVConfig,
    DataConfig,
    EnsembleConfig,
    ExtractConfig,
    FeaturesConfig,
    ReportConfig,
)
from dermstack.dataprofile import DataProfile
from dermstack.errors import ConfigError
from dermstack.metrics import TASK_METRICS
from dermstack.registry import ensemble_methods, model_kinds
from dermstack.taskkind import TaskKind

_SECTIONS: dict[str, type] = {
    "data": DataConfig, "cv": CVConfig, "extract": ExtractConfig, "features": FeaturesConfig,
    "models": ModelConfig, "ensemble": EnsembleConfig, "clinical": ClinicalConfig, "report": ReportConfig,
}


@schema("config")
class RunConfig:
    """A run's whole config, one section per TOML table, checked completely when it is made.

    :func:`dermstack.fit` takes one (or a TOML path, or a dict); a run directory's ``config.toml``
    reads back as one.

    Examples
    --------
    >>> import dermstack as ds
    >>> cfg = ds.RunConfig.from_dict({"data": {"format": "ham10000", "path": "data/ham10000"}, "cv": {"n_splits": 3}})
    >>> cfg.data.format, cfg.cv.n_splits, cfg.models
    ('ham10000', 3, [])
    >>> 'format = "ham10000"' in cfg.to_toml()
    True
    """

    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    #: empty: the default set for the data's size (:func:`default_models`), resolved after ingest
    models: list[ModelConfig] = field(default_factory=list)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    clinical: ClinicalConfig = field(default_factory=ClinicalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> RunConfig:
        """Validate every section of ``raw`` (a parsed TOML document); one ConfigError lists every problem."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        for name, value in raw.items():
            kind = _SECTIONS.get(name)
            if kind is None:
                problems.append(f"[{name}]: {unknown('section', name, _SECTIONS)}")
            elif name != "models":
                sections[name], items = validate(kind, value)
                problems += lines(f"[{name}]", items)
            elif not isinstance(value, list):
                problems.append("models: must be an array of tables ([[models]]), got " + show(value))
            else:
                sections[name] = []
                for i, entry in enumerate(value):
                    model, items = validate(ModelConfig, entry)
                    sections[name].append(model)
                    label = (entry.get("name") or entry.get("kind", DEFAULT_KIND)) if isinstance(entry, dict) else "?"
                    problems += lines(f"[[models]] #{i + 1} ({label})", items)
        if not problems:
            cfg = cls(**sections)
            problems = cfg.problems()
        if problems:
            raise ConfigError(_summary(source, problems))
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(raw, str(path))

    def problems(self) -> list[str]:
        """What is wrong across sections (each section is valid on its own)."""
        out = []
        where = {id(m): f"[[models]] #{i + 1} ({m.label})" for i, m in enumerate(self.models)}
        names = [m.label for m in self.models or default_models(0)]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            out.append(f'[[models]] name = "{dup}": two [[models]] share this name; give each a distinct `name`')
        for m in self.models:
            if m.sampling and not TaskKind(self.data.task).binary:
                out += lines(where[id(m)],
                             [("sampling", m.sampling, f"resampling is for binary tasks only; this task is {self.data.task}")])
        out += self._stop_metric_problems(where)
        ens = self.ensemble
        available = names + self.feature_group_models()
        for n in ens.models or []:
            if n not in available:
                out.append(f'[ensemble] models = {show(ens.models)}: {unknown("model", n, available)} (no [[models]] has that name)')
        out += self._score_feature_problems()
        chosen = [n for n in available if not ens.models or n in ens.models]
        method = ensemble_methods().get(ens.method)
        if method is not None and method.min_members > 1 and len(chosen) < method.min_members:
            out.append(f'[ensemble] method = "{ens.method}": a level-2 {ens.method} needs at least two base models, '
                       f'this config has {chosen}; use method = "auto" or add [[models]]')
        return out

    def group_givers(self, n_train: int | None = None) -> list[ModelConfig]:
        """The ``[[models]]`` entries whose scores become a booster feature group: those ``[ensemble]
        score_features`` names, or (unset) every entry whose kind gives its group by default for this task
        and ``n_train`` training rows (None: not known yet) (:attr:`dermstack.registry.FeatureGroup.default`)."""
        kinds, wanted = model_kinds(), self.ensemble.score_features
        givers = [m for m in self.models if m.kind in kinds and kinds[m.kind].feature_group is not None]
        if wanted is None:
            return [m for m in givers if kinds[m.kind].feature_group.default(TaskKind(self.data.task), n_train)]
        return [m for m in givers if m.label in wanted]

    def resolve(self, data: DataProfile | int) -> list[str]:
        """What the config leaves to the data, filled in for ``data`` (a DataProfile, or a number of training
        rows: a table without images): the default model set (no ``[[models]]``; each kind's rule logged), then
        the score-feature givers (no ``[ensemble] score_features``); the keys filled."""
        filled, n_train = [], data.n_train if isinstance(data, DataProfile) else data
        if not self.models:
            self.models, filled = default_models(data), ["models"]
            labels = [m.label for m in self.models]
            absent = [n for n in self.ensemble.score_features or [] if n not in labels]
            if absent:  # a giver that only some data's default set has (checked at parse time against every kind)
                choices = default_choices(data)
                why = "; ".join(f"{n}: {choices[n].why}" for n in absent if n in choices and choices[n].why)
                raise ConfigError(f"[ensemble] score_features = {show(self.ensemble.score_features)}: this data's default "
                                  f"model set {labels} has no {show(absent)}{f' ({why})' if why else ''}; to use it, list "
                                  f"the [[models]] wanted (they replace the default set), kind = \"{absent[0]}\" among them")
        if self.ensemble.score_features is None:
            givers = [m.label for m in self.group_givers(n_train)] if self.ensemble.cnn_feature is not False else []
            self.ensemble.score_features, filled = givers, [*filled, "ensemble.score_features"]
        return filled

    def boosters(self) -> list[str]:
        """The names of the ``[[models]]`` entries whose kind trains a booster."""
        kinds = model_kinds()
        return [m.label for m in self.models if m.kind in kinds and kinds[m.kind].adapter is not None]

    def feature_group_models(self) -> list[str]:
        """Each booster (or each one ``cnn_feature`` names) trained again on the feature group of each
        of the :meth:`group_givers` (their scores, leak-free: dermstack.features.scores): the names of
        those models, ``<booster>+<giver>``."""
        wanted = self.ensemble.cnn_feature
        method = ensemble_methods().get(self.ensemble.method)
        uses = self.ensemble.method == "auto" or (method is not None and method.group_members)
        if not (wanted and uses):
            return []
        return [f"{b}+{giver.label}" for giver in self.group_givers() for b in self.boosters() if wanted is True or b in wanted]

    def _score_feature_problems(self) -> list[str]:
        out, kinds = [], model_kinds()
        named = self.ensemble.score_features
        # without [[models]] the default set is known only after ingest: any kind that gives a group may be
        # in it (resolve() says so if this data's set lacks a giver named here)
        models = self.models or default_models(0)
        if not self.models:
            models += [ModelConfig(kind=k) for k, e in kinds.items() if e.feature_group is not None and k not in {m.kind for m in models}]
        if named:
            where = f"[ensemble] score_features = {show(named)}"
            givers = [m.label for m in models if m.kind in kinds and kinds[m.kind].feature_group is not None]
            labels = [m.label for m in models]
            for n in named:
                if n not in labels:
                    out.append(f"{where}: {unknown('model', n, givers or labels)} (it names [[models]] whose scores "
                               "become a feature group)")
                elif n not in givers:
                    kind = next(m.kind for m in models if m.label == n)
                    out.append(f'{where}: "{n}" is a kind = "{kind}" model, whose scores give no feature group; '
                               f"models that give one: {givers or 'none in this config'}")
            out += [f'{where}: "{n}" is named twice' for n in sorted({n for n in named if named.count(n) > 1})]
            if self.ensemble.cnn_feature is False:
                out.append(f"{where}: [ensemble] cnn_feature = false trains no booster with them; "
                           "remove one of the two")
        wanted = self.ensemble.cnn_feature
        if not isinstance(wanted, list):
            return out
        boosters, where = self.boosters(), f"[ensemble] cnn_feature = {show(wanted)}"
        out += [f"{where}: {unknown('booster', n, boosters)} (it names booster [[models]] only)"
                for n in wanted if n not in boosters]
        out += [f'{where}: "{n}" is named twice' for n in sorted({n for n in wanted if wanted.count(n) > 1})]
        if not out and wanted and not self.group_givers():
            out.append(f"{where}: no [[models]] gives a score feature group; add a kind = \"cnn\" model, name a "
                       "giver in [ensemble] score_features, or remove the list")
        return out

    def _stop_metric_problems(self, where: dict[int, str]) -> list[str]:
        models = [m for m in self.models if m.params.get("stop_metric") is not None]
        metrics = list(TASK_METRICS[TaskKind(self.data.task)])
        return [line for m in models if m.params["stop_metric"] not in metrics
                for line in lines(where[id(m)], [("params.stop_metric", m.params["stop_metric"],
                                                   unknown(f"{self.data.task} metric", m.params["stop_metric"], metrics))])]

    def check(self, source: str = "config") -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(_summary(source, problems))

    def to_dict(self) -> dict:
        return _pruned(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """The config as TOML (``from_toml`` reads it back equal)."""
        return tomli_w.dumps(_pruned(dataclasses.asdict(self), empty_tables=True))


def _summary(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)


def _pruned(x: Any, empty_tables: bool = False) -> Any:
    """``x`` without None values (TOML has no null) and, with ``empty_tables``, without the empty
    tables (params = {}, weights = {}: the defaults) that tomli-w would write as bare headers."""
    if isinstance(x, dict):
        return {k: _pruned(v, empty_tables) for k, v in x.items() if v is not None and not (empty_tables and v == {})}
    if isinstance(x, list):
        return [_pruned(v, empty_tables) for v in x]
    return x
