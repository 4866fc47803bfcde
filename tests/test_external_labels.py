"""Labels of one format read in another format's task (every pair of formats), and metadata values
written in another vocabulary."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dermstack.data.diagnoses import diagnosis_code
from dermstack.data.readers import READERS
from dermstack.data.readers.ham10000 import CLASSES as HAM_CLASSES
from dermstack.data.readers.milk10k import CLASSES as MILK_CLASSES
from dermstack.data.readers.ph2 import CLASSES as PH2_CLASSES
from dermstack.external.inputs import map_vocabulary
from dermstack.external.labels import map_labels
from lesion_tables import lesion_table

#: how each format writes melanoma, a (melanocytic) nevus and a basal cell carcinoma in ``label``
#: (PH2 has no BCC)
WRITTEN = {
    "ham10000": {"MEL": "mel", "NV": "nv", "BCC": "bcc"},
    "milk10k": {"MEL": "MEL", "NV": "NV", "BCC": "BCC"},
    "ph2": {"MEL": "melanoma", "NV": "common nevus"},
    "isic-archive": {"MEL": "Melanoma, NOS", "NV": "Nevus", "BCC": "Basal cell carcinoma"},
    "isic2024": {"MEL": "Melanoma Invasive", "NV": "Nevus", "BCC": "Basal cell carcinoma"},
    "ddi": {"MEL": "melanoma-acral-lentiginous", "NV": "melanocytic-nevi", "BCC": "basal-cell-carcinoma"},
}
#: the classes of a run trained on each format (fixed by the reader, else the labels of a dev set)
RUN_CLASSES = {
    "ham10000": HAM_CLASSES, "milk10k": MILK_CLASSES, "ph2": PH2_CLASSES,
    "isic-archive": ["Basal cell carcinoma", "Melanoma, NOS", "Nevus", "Seborrheic keratosis"],
    "isic2024": ["Basal cell carcinoma", "Melanoma Invasive", "Nevus", "Solar lentigo"],
    "ddi": ["basal-cell-carcinoma", "melanocytic-nevi", "melanoma", "verruca-vulgaris"],
}
assert set(WRITTEN) == set(READERS) == set(RUN_CLASSES)


def table_of(labels: list[str | None], target: list[int | None]):
    return lesion_table({"image_id": [f"x{i}" for i in range(len(labels))], "label": labels, "target": target})


@pytest.mark.parametrize("run_format", sorted(RUN_CLASSES))
@pytest.mark.parametrize("data_format", sorted(WRITTEN))
def test_labels_map_across_every_pair_of_formats(run_format, data_format):
    classes = RUN_CLASSES[run_format]
    kind = "multilabel" if run_format == "milk10k" else "multiclass"
    concepts = list(WRITTEN[data_format])
    table = table_of([WRITTEN[data_format][c] for c in concepts], [int(c != "NV") for c in concepts])
    got = map_labels(table, kind, classes)
    by_code = {}
    for c in classes:
        by_code.setdefault(diagnosis_code(c), []).append(c)
    kept = iter(range(int(got.keep.sum())))
    for concept, keep in zip(concepts, got.keep):
        label = WRITTEN[data_format][concept]
        exact = [c for c in classes if c.lower() == label.lower()]
        want = exact or by_code.get(concept, [])
        if len(want) == 1:
            assert keep, (label, classes)
            k = next(kept)
            index = got.y[k] if kind == "multiclass" else int(np.flatnonzero(got.y[k])[0])
            assert classes[index] == want[0]
        else:  # no class of the run (PH2 has no BCC) or several (PH2's two nevi): named, with the row count
            assert not keep
            reason = next(r for r in got.skipped if repr(label) in r)
            assert ("several classes" if want else "no class of the run") in reason and got.skipped[reason] == 1
    # the binary malignant target is every reader's own column
    binary = map_labels(table, "binary", ["target"])
    assert binary.keep.all() and binary.y.tolist() == [int(c != "NV") for c in concepts]


def test_one_class_against_the_rest_reads_other_diagnoses_as_the_rest():
    table = table_of(["Melanoma in situ", "Nevus", "verruca-vulgaris", "Benign", None], [1, 0, 0, 0, None])
    got = map_labels(table, "binary", ["target"], target="mel")
    assert got.keep.tolist() == [True, True, False, False, False]
    assert got.y.tolist() == [1, 0]
    assert any("'Benign'" in r and "too coarse" in r for r in got.skipped) and got.skipped["no label"] == 1


def test_unlabelled_rows_are_counted():
    got = map_labels(table_of(["mel", None], [1, None]), "binary", ["target"])
    assert got.keep.tolist() == [True, False] and got.skipped == {"no malignancy label (target)": 1}


def test_categorical_values_are_written_as_the_run_writes_them():
    run = lesion_table({"image_id": ["a", "b", "c"], "sex": ["male", "female", "male"],
                        "anatom_site_general": ["posterior torso", "head/neck", "lower extremity"]})
    run.meta.feature_columns, run.meta.categorical_columns = ["sex", "anatom_site_general"], ["sex", "anatom_site_general"]
    new = lesion_table({"image_id": ["x", "y", "z"], "sex": ["Male", "FEMALE", None],
                        "anatom_site_general": ["Posterior_Torso", "lower-extremity", "palms/soles"]})
    mapped, report = map_vocabulary(run, new)
    assert mapped.df["sex"].to_list() == ["male", "female", None]
    assert mapped.df["anatom_site_general"].to_list() == ["posterior torso", "lower extremity", "palms/soles"]
    assert report["anatom_site_general"]["unseen"] == {"palms/soles": 1}
    assert report["sex"] == {"mapped": {"Male": "male", "FEMALE": "female"}, "unseen": {}}


def test_label_frame_shapes():
    from dermstack.external.labels import label_frame

    assert label_frame(np.array([0, 1]), "binary", ["target"]).to_list() == [0, 1]
    assert label_frame(np.array([1, 0]), "multiclass", ["a", "b"]).to_list() == ["b", "a"]
    assert label_frame(np.array([[1, 1], [0, 1]]), "multilabel", ["a", "b"]).to_list() == ["a;b", "b"]
    assert isinstance(label_frame(np.array([0]), "binary", ["target"]), pl.Series)
