"""SHAP figures as PNG data URIs: group shares, beeswarm, bar, dependence, age x site, waterfall."""
from __future__ import annotations

import re
import warnings

import numpy as np
import polars as pl

from dermstack.features.featureset import GROUPS
from dermstack.reports.plots import data_uri, plt
from dermstack.reports.shap_ import ShapValues

#: metadata concept -> feature-name pattern (first match among the explained features wins; metadata group first)
METADATA_CONCEPTS = {
    "age": r"^age(_approx)?$",
    "sex": r"^sex$",
    "site": r"^(anatom_site_general(_challenge)?|localization|site|anatom_site|tbp_lv_location(_simple)?)$",
    "size": r"(clin_size_long_diam_mm|areamm2|diam|size)",
    "colour": r"(color|colour|deltalb|tbp_lv_[abl]$|tbp_lv_[abhl]ext$)",
}
#: one colour per feature group (matplotlib's qualitative cycle; grey is kept for "other": a plugin's or unknown group)
_PALETTE = ["blue", "orange", "green", "purple", "brown", "red", "pink", "olive", "cyan"]
GROUP_COLOURS = {g: f"tab:{c}" for g, c in zip(GROUPS, _PALETTE, strict=False)}
GROUP_COLOURS["other"] = "grey"


def concept_features(features: list[str], groups: dict[str, str]) -> dict[str, str]:
    """The feature standing for each metadata concept (age, sex, site, size, colour) present."""
    ordered = sorted(features, key=lambda f: groups.get(f) != "metadata")
    out = {}
    for concept, pattern in METADATA_CONCEPTS.items():
        hit = next((f for f in ordered if re.search(pattern, f.lower())), None)
        if hit is not None and hit not in out.values():
            out[concept] = hit
    return out


def explanation(sv: ShapValues, cls: str | None = None, rows: np.ndarray | None = None, text: bool = True):
    """A ``shap.Explanation`` of one output class (rows optional); ``text``: with the values as shown in
    words (category names), which only plots that print values need: shap walks an object array
    element by element (seconds for a beeswarm's thousand rows)."""
    import shap

    values, base = sv.output(cls)
    rows = slice(None) if rows is None else rows
    if not text:
        return shap.Explanation(values[rows], base[rows], data=sv.data[rows], feature_names=sv.features)
    display = sv.data[rows].astype(object)
    for j, f in enumerate(sv.features):  # category names instead of codes where shown as text
        if f in sv.categories:
            names = sv.categories[f]
            display[..., j] = [names[int(c)] if c == c and 0 <= c < len(names) else "missing" for c in sv.data[rows][..., j].ravel()]
    return shap.Explanation(values[rows], base[rows], data=sv.data[rows], display_data=display, feature_names=sv.features)


def _shap_figure(draw) -> str:
    """Run a shap plotting function on a fresh figure and encode it."""
    plt.figure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draw()
    return data_uri(plt.gcf())


def beeswarm_figure(sv: ShapValues, cls: str | None = None, top: int = 15) -> str:
    import shap

    return _shap_figure(lambda: shap.plots.beeswarm(explanation(sv, cls, text=False), max_display=top, show=False,
                                                    plot_size=(7, 0.32 * top + 1.5)))


def bar_figure(importance: pl.DataFrame, top: int = 15) -> str:
    """Mean |SHAP| of the top features, coloured by feature group."""
    t = importance.head(top)
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * t.height + 1.0))
    ax.barh(np.arange(t.height)[::-1], t["mean_abs_shap"], color=[GROUP_COLOURS.get(g, "grey") for g in t["group"]])
    ax.set_yticks(np.arange(t.height)[::-1], t["feature"].to_list(), fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS.get(g, "grey")) for g in dict.fromkeys(t["group"].to_list())]
    ax.legend(handles, list(dict.fromkeys(t["group"].to_list())), fontsize=7, loc="lower right")
    ax.set(xlabel="mean |SHAP| (raw score)", title="Top features")
    return data_uri(fig)


def group_share_figure(shares: pl.DataFrame) -> str:
    """Stacked bars: each model's |SHAP| share per feature group, over all rows and over the positives."""
    labels = [f"{m} ({r})" for m, r in shares.select("model", "rows").unique(maintain_order=True).iter_rows()]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.4))
    left = np.zeros(len(labels))
    keys = shares.select("model", "rows").unique(maintain_order=True).rows()
    for g in dict.fromkeys(shares["group"].to_list()):
        sub = {(m, r): v for m, r, v in shares.filter(pl.col("group") == g).select("model", "rows", "share").iter_rows()}
        width = np.array([sub.get(k, 0.0) for k in keys])
        ax.barh(np.arange(len(labels))[::-1], width, left=left, color=GROUP_COLOURS.get(g, "grey"), label=g)
        left += width
    ax.set_yticks(np.arange(len(labels))[::-1], labels, fontsize=8)
    ax.set(xlim=(0, 1), xlabel="share of mean |SHAP|", title="Contribution by feature group")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return data_uri(fig)


def _axis_values(sv: ShapValues, feature: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str] | None]:
    x = sv.data[:, sv.features.index(feature)].astype(float)
    cats = sv.categories.get(feature)
    if cats is not None:
        x = x + rng.uniform(-0.25, 0.25, len(x))  # jitter categories so points do not overlap
    return x, cats


def dependence_figure(sv: ShapValues, feature: str, colour_by: str | None = None, cls: str | None = None) -> str:
    """SHAP of ``feature`` against its value (categories jittered), optionally coloured by another feature."""
    values, _ = sv.output(cls)
    rng = np.random.default_rng(0)
    x, cats = _axis_values(sv, feature, rng)
    y = values[:, sv.features.index(feature)]
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    if colour_by:
        c = sv.data[:, sv.features.index(colour_by)]
        ccats = sv.categories.get(colour_by)
        cmap = plt.get_cmap("tab10" if ccats else "coolwarm")
        pts = ax.scatter(x, y, c=c, s=8, cmap=cmap, alpha=0.7)
        if ccats:
            handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i / max(len(ccats) - 1, 1))) for i in range(len(ccats))]
            ax.legend(handles, ccats, fontsize=6, title=colour_by, title_fontsize=7, loc="best")
        else:
            fig.colorbar(pts, ax=ax, label=colour_by)
    else:
        ax.scatter(x, y, s=8, alpha=0.6)
    if cats is not None:
        ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=7)
    missing = np.isnan(sv.data[:, sv.features.index(feature)]).sum()
    ax.axhline(0, c="grey", lw=0.8)
    ax.set(xlabel=feature + (f" ({missing} missing not shown)" if missing else ""), ylabel=f"SHAP of {feature}",
           title=f"{feature}" + (f" x {colour_by}" if colour_by else ""))
    return data_uri(fig)


def waterfall_figure(sv: ShapValues, row: int, cls: str | None = None, top: int = 12) -> str:
    import shap

    return _shap_figure(lambda: shap.plots.waterfall(explanation(sv, cls, [row])[0], max_display=top, show=False))
