"""A small torch MLP on a fold's :class:`~dermstack.linear.design.Design` (standardised full
embeddings plus table features): by default the linear probe plus a residual of one or two hidden
layers with dropout that starts at zero (:func:`fit_mlp`), class-weighted BCE (binary, multi-label)
or cross-entropy (multiclass), its epochs chosen on an inner patient-grouped split, seeded, saved
as ``.npz`` + ``.json`` (no pickle). Its contributions are Shapley values of the margin per design
term against the all-zero row (the training mean after standardisation): exact by enumerating
subsets for few terms, else averaged over sampled permutations, plus the probe's own linear share;
either way they add up to the margin exactly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermstack.config.limits import check_memory
from dermstack.errors import reading
from dermstack.linear.design import Design, load_design_model, save_design_model
from dermstack.linear.probe import LinearParams, fit_probe, inner_splits
from dermstack.mlp.params import MLPParams
from dermstack.taskkind import TaskKind

#: up to this many terms the contributions are exact (2^T subsets), above it sampled permutations
EXACT_MAX_TERMS = 10


def network(n_in: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def _loss(kind: TaskKind, y: np.ndarray, n_out: int, class_weight: str) -> tuple[nn.Module, torch.Tensor]:
    """The task's loss with balanced class weights, and the targets as a tensor."""
    if kind.exclusive:
        counts = np.bincount(y, minlength=n_out).astype(float)
        w = np.where(counts > 0, len(y) / np.maximum(counts, 1) / n_out, 0.0) if class_weight == "balanced" else np.ones(n_out)
        return nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32)), torch.tensor(y, dtype=torch.long)
    Y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    pos = Y.sum(0)
    w = np.where(pos > 0, (len(Y) - pos) / np.maximum(pos, 1), 1.0) if class_weight == "balanced" else np.ones(Y.shape[1])
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w, dtype=torch.float32)), torch.tensor(Y)


@dataclass
class FittedMLP:
    """The fitted network of one fold and seed over the columns of ``design`` (weights as arrays)."""

    design: Design
    kind: TaskKind
    weights: list[np.ndarray]
    epochs: int
    permutations: int = 16
    seed: int = 0
    #: (coef (K, P), intercept (K,)) of the linear probe the residual network is added to (``start = "probe"``)
    skip: list[np.ndarray] | None = None

    @property
    def summary(self) -> dict:
        return {"epochs": self.epochs}

    def margin(self, X: np.ndarray) -> np.ndarray:
        """(n, K) log-odds (binary, multi-label) or softmax logits (multiclass)."""
        X = np.asarray(X, dtype=np.float64)
        return self._head(X @ self.weights[0].T + self.weights[1]) + self._linear(X)

    def _linear(self, X: np.ndarray) -> np.ndarray | float:
        return X @ self.skip[0].T + self.skip[1] if self.skip is not None else 0.0

    def _head(self, pre: np.ndarray) -> np.ndarray:
        """The network after its first linear layer, from that layer's output ``pre``."""
        h = pre
        for i in range(2, len(self.weights), 2):
            h = np.maximum(h, 0.0) @ self.weights[i].T + self.weights[i + 1]
        return h

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.kind.squeeze(self.kind.link(self.margin(X)))

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shapley values of the margin per design term against the zero row: (values, base) with
        values (n, T) binary or (n, T, K) and ``values.sum(1) + base == margin`` exactly. A coalition
        keeps its terms' columns; the first layer is linear, so each term's share of it is computed once."""
        X = np.asarray(X, dtype=np.float64)
        T, index, (W, b) = len(self.design.terms), self.design.term_index, self.weights[:2]
        Z = np.stack([X[:, index == t] @ W[:, index == t].T for t in range(T)], axis=1)  # (n, T, hidden)
        base = np.broadcast_to(self._head(b[None, :]), (len(X), len(self.weights[-1]))).copy()
        values = np.zeros((len(X), T, base.shape[1]))
        if T <= EXACT_MAX_TERMS:
            f = {m: self._head(b + (Z * np.array(m)[None, :, None]).sum(1))
                 for m in itertools.product((0, 1), repeat=T)}
            for m, fm in f.items():
                k = sum(m)
                for t in (t for t in range(T) if m[t]):
                    w = math.factorial(k - 1) * math.factorial(T - k) / math.factorial(T)
                    values[:, t] += w * (fm - f[m[:t] + (0,) + m[t + 1:]])
        else:
            rng = np.random.default_rng(self.seed)
            for _ in range(self.permutations):
                pre, prev = np.broadcast_to(b, Z[:, 0].shape), base
                for t in rng.permutation(T):
                    pre = pre + Z[:, t]
                    cur = self._head(pre)
                    values[:, t] += cur - prev
                    prev = cur
            values /= self.permutations
        if self.skip is not None:  # the probe's part is linear: each term's share of it is exact
            coef, intercept = self.skip
            values += np.stack([X[:, index == t] @ coef[:, index == t].T for t in range(T)], axis=1)
            base = base + intercept
        values += ((self.margin(X) - base) - values.sum(1))[:, None, :] / T  # float residual, shared evenly
        return (values[:, :, 0], base[:, 0]) if self.kind.binary else (values, base)

    def save(self, stem: Path) -> list[Path]:
        skip = {f"skip{i}": w for i, w in enumerate(self.skip)} if self.skip is not None else {}
        return save_design_model(stem, self.design, {f"w{i}": w for i, w in enumerate(self.weights)} | skip,
                                 {"layers": len(self.weights), "epochs": self.epochs, "permutations": self.permutations,
                                  "seed": self.seed, "skip": self.skip is not None})

    @classmethod
    def load(cls, stem: Path, kind: str) -> FittedMLP:
        spec, design, arrays = load_design_model(stem, "mlp model")
        with reading(stem.with_name(stem.name + ".npz"), "mlp model"):
            weights = [arrays[f"w{i}"] for i in range(spec["layers"])]
            skip = [arrays["skip0"], arrays["skip1"]] if spec.get("skip") else None
        return cls(design, TaskKind(kind), weights, spec["epochs"], spec["permutations"], spec["seed"], skip)


def fit_mlp(design: Design, X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: TaskKind, n_classes: int,
            params: MLPParams, seed: int = 0) -> FittedMLP:
    """Train on (X, y), stopping at the epoch with the lowest loss on one inner patient-grouped split
    (all rows train when there are too few groups for one).

    ``start = "probe"``: the network is the linear probe (:func:`dermstack.linear.probe.fit_probe`,
    its C chosen by its own inner CV, the same class weights) plus a hidden-layer residual whose
    output layer starts at zero; the probe stays fixed and the residual learns what it misses. The
    number of epochs is chosen on the inner split, the probe there fitted on the inner training rows
    only and epoch 0 (the probe alone) a candidate; then probe and residual are fitted again on every
    row, for that many epochs. An MLP from a random start on 1280 standardised dimensions and a few
    thousand rows overfits before early stopping can see it (HAM10000 dev: ROC-AUC 0.846 against
    the probe's 0.867, whose C is near 1e-3); the probe start cannot fall below the probe on the
    inner split. ``start = "random"``: a plain MLP trained on the inner training rows, kept at its
    best epoch."""
    kind = TaskKind(kind)
    n_out = kind.n_outputs(["_"] * n_classes)
    splits = inner_splits(kind.stratum(y), groups, params.inner_splits, seed)
    tr, va = splits[0] if splits else (np.arange(len(y)), np.arange(0))
    check_memory(mlp_bytes(X.shape, list(params.hidden), n_out, max(min(params.batch_size, len(tr)), len(va))),
                 f"mlp params.hidden = {list(params.hidden)}", f"an MLP on {X.shape[1]} inputs")
    if params.start == "random":
        weights, epochs = _train(X, y, tr, va, None, kind, n_out, params, seed)
        skip, fitted = None, tr
    else:
        epochs = 0
        if len(va):
            _, epochs = _train(X, y, tr, va, _probe(design, X[tr], y[tr], groups[tr], kind, n_classes, params, seed),
                               kind, n_out, params, seed)
        skip, fitted = _probe(design, X, y, groups, kind, n_classes, params, seed), np.arange(len(y))
        weights, _ = _train(X, y, fitted, np.arange(0), skip, kind, n_out, params, seed, epochs=epochs)
    if kind.binary and params.class_weight == "balanced":  # divide out the odds the positive weight put in
        pos = float(np.mean(y[fitted] == 1))
        weights[-1] = weights[-1] - np.log((1 - pos) / max(pos, 1e-12))
    return FittedMLP(design, kind, weights, epochs, params.permutations, seed, skip)


def _probe(design: Design, X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: TaskKind, n_classes: int,
           params: MLPParams, seed: int) -> list[np.ndarray]:
    """(coef, intercept) of the linear probe on these rows, with the MLP's class weights."""
    probe = fit_probe(design, X, y, groups, kind, n_classes,
                      LinearParams(class_weight=params.class_weight, threads=params.threads,
                                   inner_splits=params.inner_splits), seed)
    return [probe.coef.astype(np.float64), probe.intercept.astype(np.float64)]


def _train(X: np.ndarray, y: np.ndarray, rows: np.ndarray, valid: np.ndarray, skip: list[np.ndarray] | None,
           kind: TaskKind, n_out: int, params: MLPParams, seed: int, epochs: int | None = None) -> tuple[list[np.ndarray], int]:
    """(weights, epochs) of the network trained on ``rows``: at its best epoch on ``valid`` (with
    ``params.patience``), or after ``epochs`` (no ``valid`` rows). With ``skip`` the network's output
    is added to the fixed linear margin ``X @ coef.T + intercept`` and starts at zero (epoch 0)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = network(X.shape[1], list(params.hidden), n_out, params.dropout)
    Xt = torch.tensor(X, dtype=torch.float32)
    offset = torch.zeros(len(X), n_out)
    if skip is not None:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
        offset = torch.tensor(np.asarray(X, dtype=np.float64) @ skip[0].T + skip[1], dtype=torch.float32)

    def out(idx: np.ndarray) -> torch.Tensor:
        return _squeeze(net(Xt[idx]) + offset[idx], kind)

    loss_fn, target = _loss(kind, y[rows], n_out, params.class_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    best, best_state, best_epoch, waited = math.inf, _state(net), 0, 0
    with torch.random.fork_rng(), _threads(params.threads):
        torch.manual_seed(seed)
        valid_loss = _loss(kind, y[valid], n_out, params.class_weight) if len(valid) else None

        def validation_loss() -> float:
            net.eval()
            with torch.no_grad():
                return float(valid_loss[0](out(valid), valid_loss[1]))

        if valid_loss is not None and skip is not None:  # epoch 0, the probe alone, is a candidate
            best = validation_loss()
        for epoch in range(1, (params.epochs if epochs is None else epochs) + 1):
            net.train()
            for b in np.array_split(rng.permutation(len(rows)), max(1, math.ceil(len(rows) / params.batch_size))):
                opt.zero_grad()
                loss_fn(out(rows[b]), target[b]).backward()
                opt.step()
            if valid_loss is None:
                best_state, best_epoch = _state(net), epoch
                continue
            loss = validation_loss()
            if loss < best - 1e-6:
                best, best_state, best_epoch, waited = loss, _state(net), epoch, 0
            else:
                waited += 1
                if waited > params.patience:
                    break
    return best_state, best_epoch


def mlp_bytes(shape: tuple[int, int], hidden: list[int], n_out: int, rows: int) -> int:
    """The least memory :func:`fit_mlp` takes: 32 bytes a parameter (weights, gradients, AdamW's two
    moments, two float64 copies of the best state), three float32 copies of the activations of the
    largest batch, and the float32 copy of the rows."""
    widths = [shape[1], *hidden, n_out]
    parameters = sum(a * b + b for a, b in zip(widths, widths[1:]))
    return 32 * parameters + 12 * rows * sum(hidden) + 4 * shape[0] * shape[1]


def _squeeze(out: torch.Tensor, kind: TaskKind) -> torch.Tensor:
    return out if kind.exclusive else out.reshape(len(out), -1)


def _state(net: nn.Sequential) -> list[np.ndarray]:
    return [p.detach().numpy().astype(np.float64).copy() for p in net.parameters()]


class _threads:
    """torch's intra-op threads set for the fit, restored after."""

    def __init__(self, n: int):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
