"""The desk's learned text model: character n-grams, TF-IDF and a linear model, from staff's labels.

`caseloop classify train` fits it on the cases staff labelled (daemon/classifycmd.py) and writes
it to the data folder; intake asks it first and keeps its answer only when it is confident
(handlers/classify.py). Character n-grams need no word splitting, so one model reads Chinese
and English; the text is read as the rules read it (lowercased, traditional Chinese as
simplified). scikit-learn fits it; the file holds plain arrays (numpy's .npz, read without
pickle, so a planted file cannot run code) and the arrays are put back into a vectorizer at
load. A file of another format version is refused with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from daemon.settings import CLASSIFY_MODEL_FILE
from handlers.scan import scanned

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

log = logging.getLogger("caseloop.classify")

MODEL_FILE = CLASSIFY_MODEL_FILE
FORMAT = "caseloop-classify-model"
VERSION = 1  # raise when the arrays or their meaning change: older files are then refused
MAX_CHARS = 4000  # a complaint says what it is about early; a pasted chat log adds nothing
_VECTORIZER = {"analyzer": "char_wb", "ngram_range": (1, 3), "sublinear_tf": True}
MAX_FEATURES = 60_000


class ModelError(Exception):
    """A model file that cannot be used, phrased for the operator (file, problem, what to do)."""


class Guess(NamedTuple):
    value: str
    probability: float


@dataclass
class _Head:
    """One linear model over the shared features: a category or a priority."""

    classes: list[str]
    coef: Any  # (classes, features), or (1, features) for two classes
    intercept: Any

    def guess(self, features: Any) -> Guess:
        scores = np.asarray(features @ self.coef.T).ravel() + self.intercept
        if len(self.classes) == 2:  # binary: one row of weights for the second class
            second = 1.0 / (1.0 + np.exp(-scores[0]))
            probabilities = np.array([1.0 - second, second])
        else:
            shifted = np.exp(scores - scores.max())
            probabilities = shifted / shifted.sum()
        best = int(probabilities.argmax())
        return Guess(self.classes[best], float(probabilities[best]))


@dataclass
class TextModel:
    vectorizer: TfidfVectorizer
    category: _Head
    priority: _Head | None
    meta: dict[str, Any] = field(default_factory=dict)

    def features(self, text: str) -> Any:
        return self.vectorizer.transform([prepare(text)])

    def guess(self, text: str) -> tuple[Guess, Guess | None]:
        """The most likely category and, when the model learned priorities, priority."""
        features = self.features(text)
        priority = self.priority.guess(features) if self.priority is not None else None
        return self.category.guess(features), priority


def prepare(text: str) -> str:
    return scanned(text[:MAX_CHARS]).text


def fit(
    texts: list[str],
    categories: list[str],
    priorities: list[str | None],
    *,
    meta: dict[str, Any],
) -> TextModel:
    """Fit on labelled texts. Priorities are learned when at least two values have 5 labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(
        **_VECTORIZER,
        min_df=2 if len(texts) >= 50 else 1,
        max_features=MAX_FEATURES,
        dtype=np.float32,
    )
    matrix = vectorizer.fit_transform([prepare(t) for t in texts])

    def head(labels: list[str], rows: list[int]) -> _Head:
        model = LogisticRegression(C=20.0, max_iter=3000, class_weight="balanced")
        model.fit(matrix[rows], [labels[i] for i in rows])
        return _Head(list(model.classes_), model.coef_, model.intercept_)

    if len(set(categories)) < 2:
        raise ModelError("the labels name one category only: a model needs at least two")
    category = head(categories, list(range(len(texts))))
    known = [i for i, p in enumerate(priorities) if p]
    counts: dict[str, int] = {}
    for i in known:
        counts[priorities[i] or ""] = counts.get(priorities[i] or "", 0) + 1
    priority = None
    if sum(1 for n in counts.values() if n >= 5) >= 2:
        priority = head([p or "" for p in priorities], known)
    return TextModel(vectorizer, category, priority, dict(meta))


def save(model: TextModel, path: Path) -> None:
    """Write the model atomically (a daemon reading the old one never sees half a file)."""
    vocabulary = model.vectorizer.vocabulary_
    terms = sorted(vocabulary, key=vocabulary.__getitem__)
    meta = {**model.meta, "format": FORMAT, "version": VERSION, "vectorizer": _VECTORIZER}
    arrays: dict[str, Any] = {
        "meta": np.array(json.dumps(meta, ensure_ascii=False)),
        "terms": np.array(terms, dtype=str),
        "idf": model.vectorizer.idf_.astype(np.float32),
    }
    for name, head in (("category", model.category), ("priority", model.priority)):
        if head is not None:
            arrays[f"{name}_classes"] = np.array(head.classes, dtype=str)
            arrays[f"{name}_coef"] = np.asarray(head.coef, dtype=np.float32)
            arrays[f"{name}_intercept"] = np.asarray(head.intercept, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("wb") as out:
        np.savez_compressed(out, **arrays)
    os.replace(partial, path)


def load(path: Path) -> TextModel:
    """Read a model file; ModelError (never another exception) when it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ModelError(f"{path}: no model file (caseloop classify train writes one)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelError(f"{path}: not a caseloop model file ({exc})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError):
        raise ModelError(f"{path}: not a caseloop model file (no description in it)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a caseloop model file")
    if meta.get("version") != VERSION:
        raise ModelError(
            f"{path}: written by caseloop {meta.get('caseloop', '?')} in model format "
            f"{meta.get('version')!r}; this caseloop reads format {VERSION}. Run `caseloop "
            "classify train` again to write a model this version can use (until then the "
            "rules classify alone)."
        )
    try:
        return _from_arrays(arrays, meta)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(
            f"{path}: a damaged model file ({exc}); run classify train again"
        ) from None


def _from_arrays(arrays: dict[str, Any], meta: dict[str, Any]) -> TextModel:
    from sklearn.feature_extraction.text import TfidfVectorizer

    settings = meta["vectorizer"]
    terms = [str(t) for t in arrays["terms"]]
    vectorizer = TfidfVectorizer(
        analyzer=settings["analyzer"],
        ngram_range=tuple(settings["ngram_range"]),
        sublinear_tf=settings["sublinear_tf"],
        vocabulary={term: i for i, term in enumerate(terms)},
        dtype=np.float32,
    )
    vectorizer.idf_ = arrays["idf"]
    heads: dict[str, _Head | None] = {}
    for name in ("category", "priority"):
        if f"{name}_classes" not in arrays:
            heads[name] = None
            continue
        coef = arrays[f"{name}_coef"]
        if coef.shape[1] != len(terms):
            raise ValueError(f"{name} weights for {coef.shape[1]} features, {len(terms)} terms")
        classes = [str(c) for c in arrays[f"{name}_classes"]]
        heads[name] = _Head(classes, coef, arrays[f"{name}_intercept"])
    category = heads["category"]
    if category is None:
        raise KeyError("category weights")
    return TextModel(vectorizer, category, heads["priority"], meta)


class _Cached(NamedTuple):
    stamp: tuple[int, int]
    model: TextModel | None


_cache: dict[Path, _Cached] = {}


def current(path: Path) -> TextModel | None:
    """The model at path as it is now (re-read when the file changes); None when there is none
    or it cannot be used (said once in the log per file version: the rules classify alone)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is not None and cached.stamp == stamp:
        return cached.model
    model: TextModel | None
    try:
        model = load(path)
        trained = model.meta.get("trained_at", "?")
        log.info("event=classify.model_loaded path=%s trained_at=%s", path, trained)
    except ModelError as exc:
        log.error("event=classify.model_refused problem=%r", str(exc))
        model = None
    _cache[path] = _Cached(stamp, model)
    return model
