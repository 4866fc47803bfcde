"""Performance figures (matplotlib, Agg) returned as ``data:image/png;base64`` URIs for embedding."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from dermstack.reports.curves import BinaryCurves  # noqa: E402

PAUC_MIN_TPR = 0.8


def data_uri(fig) -> str:
    """Encode a figure as a PNG data URI and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_figure(curves: dict[str, BinaryCurves]) -> str:
    """ROC curves of several models; the ISIC 2024 pAUC region (TPR >= 0.8) shaded under the first."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.axhspan(PAUC_MIN_TPR, 1.0, color="tab:orange", alpha=0.08, label=f"pAUC region (TPR >= {PAUC_MIN_TPR:g})")
    for i, (label, c) in enumerate(curves.items()):
        fpr, tpr = np.asarray(c.fpr), np.asarray(c.tpr)
        line, = ax.plot(fpr, tpr, lw=1.6, label=f"{label}: AUC {c.roc_auc:.3f}, pAUC {c.pauc_tpr80:.3f}")
        if i == 0:
            ax.fill_between(fpr, PAUC_MIN_TPR, np.maximum(tpr, PAUC_MIN_TPR), color=line.get_color(), alpha=0.25)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    ax.legend(fontsize=7, loc="lower right")
    return data_uri(fig)


def pr_figure(curves: dict[str, BinaryCurves]) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for label, c in curves.items():
        ax.plot(c.recall, c.precision, lw=1.6, label=f"{label}: AP {c.average_precision:.3f}")
    first = next(iter(curves.values()))
    ax.axhline(first.n_pos / first.n, ls=":", c="grey", lw=1, label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-recall")
    ax.legend(fontsize=7, loc="upper right")
    return data_uri(fig)


def calibration_figure(curves: dict[str, BinaryCurves]) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    top = 0.0
    for label, c in curves.items():
        ax.plot(c.calib_pred, c.calib_obs, marker="o", ms=3, lw=1.2, label=label)
        top = max(top, *c.calib_pred, *c.calib_obs)
    top = min(1.0, top * 1.05 + 1e-3)
    ax.plot([0, top], [0, top], ls=":", c="grey", lw=1, label="perfect")
    ax.set(xlabel="mean predicted probability (equal-count bins)", ylabel="observed positive rate",
           xlim=(0, top), ylim=(0, top), title="Calibration")
    ax.legend(fontsize=7)
    return data_uri(fig)


def confusion_figure(cm: np.ndarray, labels: list[str], title: str) -> str:
    cm = np.asarray(cm)
    size = max(3.2, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return data_uri(fig)


def subgroup_figure(table: pl.DataFrame, metric: str, title: str) -> str:
    """Forest plot: value and CI of each group, overall value as a line, small groups in grey."""
    t = table.filter((pl.col("metric") == metric) & (pl.col("attribute") != "overall"))
    overall = table.filter((pl.col("metric") == metric) & (pl.col("attribute") == "overall"))["value"]
    fig, ax = plt.subplots(figsize=(6.4, 0.26 * t.height + 1.2))
    ys = np.arange(t.height)[::-1]
    for y, row in zip(ys, t.iter_rows(named=True)):
        colour = "lightgrey" if row["small"] else "tab:blue"
        if np.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], c=colour, lw=2)
        ax.plot(row["value"], y, "o", c="grey" if row["small"] else "tab:blue", ms=4)
    if overall.len() and np.isfinite(overall[0]):
        ax.axvline(overall[0], ls="--", c="tab:red", lw=1, label=f"overall {overall[0]:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    labels = [f"{a}: {g} (n={n}{'' if p is None else f', pos={p}'}){' *' if s else ''}"
              for a, g, n, p, s in t.select("attribute", "group", "n", "n_pos", "small").iter_rows()]
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set(xlabel=metric, title=title)
    return data_uri(fig)


def difference_figure(table: pl.DataFrame, metric: str, title: str) -> str:
    """Forest plot of paired differences (run minus reference) per subgroup: CI bars around 0, small groups in grey."""
    t = table.filter(pl.col("metric") == metric)
    fig, ax = plt.subplots(figsize=(6.4, 0.26 * t.height + 1.2))
    ys = np.arange(t.height)[::-1]
    for y, row in zip(ys, t.iter_rows(named=True)):
        colour = "lightgrey" if row["small"] else "tab:blue"
        if row["ci_low"] is not None and np.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], c=colour, lw=2)
        if row["difference"] is not None and np.isfinite(row["difference"]):
            ax.plot(row["difference"], y, "o", c="grey" if row["small"] else "tab:blue", ms=4)
    ax.axvline(0, ls="--", c="tab:red", lw=1)
    labels = [f"{a}: {g} (n={n}{'' if p is None else f', pos={p}'}){' *' if s else ''}"
              for a, g, n, p, s in t.select("attribute", "group", "n", "n_pos", "small").iter_rows()]
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set(xlabel=f"{metric} difference", title=title)
    return data_uri(fig)
