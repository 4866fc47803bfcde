"""One diagnosis vocabulary across the formats: every reader's ``label`` mapped to a MILK10k code.

The formats name diagnoses differently: HAM10000 ``dx`` codes (``mel``, ``bkl``), MILK10k's eleven
codes (``MEL``, ``SCCKA``), PH2's three names, the ISIC hierarchy (``diagnosis_3``:
``Melanoma, NOS``; legacy ``diagnosis``: ``melanoma``; ISIC 2024 ``iddx_3``), DDI's hyphenated
disease names (``melanoma-acral-lentiginous``). :func:`diagnosis_code` maps any of them onto the
MILK10k codes, the finest set that covers HAM10000's (its ``akiec`` is MILK10k's ``AKIEC``: actinic
keratosis and squamous cell carcinoma in situ). A name it does not recognise, and a level too
coarse to place (``Benign``, ``Malignant``), has no code: the caller names it, it is never guessed.

>>> diagnosis_code("Melanoma in situ"), diagnosis_code("bkl"), diagnosis_code("common nevus")
('MEL', 'BKL', 'NV')
"""
from __future__ import annotations

import re

#: MILK10k's classes: the common codes
CODES = ("AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC")
#: short codes of HAM10000 (and MILK10k, upper case), as they are
SHORT = {"akiec": "AKIEC", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC",
         **{c.lower().replace("_", " "): c for c in CODES}}
#: (pattern on the normalised name, code), first match wins: the specific before the general
RULES: tuple[tuple[str, str], ...] = (
    (r"\bmelanoma\b|\blentigo maligna\b", "MEL"),
    (r"\bbasal cell\b", "BCC"),
    (r"\bsquamous cell carcinoma in situ\b|\bbowen|\bactinic keratosis\b|\bsolar or actinic\b|\bintraepithelial carcinoma\b",
     "AKIEC"),
    (r"\bsquamous cell\b|\bkeratoacanthoma\b", "SCCKA"),
    (r"\bepidermal nevus\b|\bnevus lipomatosus\b|\bnevus sebaceus\b", "BEN_OTH"),  # nevi that are not melanocytic
    (r"\bnev(us|i)\b|\bnaev(us|i)\b", "NV"),
    (r"\bseborrh?eic keratosis\b|\blentigo\b|\blichen planus like keratosis\b|\blichenoid keratosis\b|\bbenign keratosis\b",
     "BKL"),
    (r"\bdermatofibroma\b", "DF"),
    (r"\bvascular\b|angioma\b|angiokeratoma\b|\bpyogenic granuloma\b", "VASC"),
)
#: levels of the ISIC hierarchy that say no more than benign / malignant
COARSE = {"benign", "malignant", "indeterminate"}


def normalise(name: str) -> str:
    """Lower case, punctuation and ``-``/``_`` as single spaces: ``Melanoma, NOS`` -> ``melanoma nos``."""
    return re.sub(r"[\s\-_,;:/()]+", " ", name.lower()).strip()


def diagnosis_code(label: str | None) -> str | None:
    """The MILK10k code of a diagnosis as any reader writes it in ``label``; None when unknown or too coarse."""
    if label is None:
        return None
    key = normalise(label)
    if key in SHORT:
        return SHORT[key]
    if key in COARSE:
        return None
    return next((code for pattern, code in RULES if re.search(pattern, key)), None)


def why_unmapped(label: str) -> str:
    """Why :func:`diagnosis_code` gives no code for ``label``."""
    if normalise(label) in COARSE:
        return "too coarse (a benign / malignant level of the ISIC hierarchy)"
    return "not a diagnosis dermstack recognises"
