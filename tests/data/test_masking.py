"""`mask_tokens`, BERT's masked-LM corruption: its statistics over a large random batch (the
selected share and the 80/10/10 split), what is never selected, the labels, determinism per
(seed, step), at least one target a row, whole-word masking against words found by hand; and
`word_start_table` for WordPiece (MiniLM's), byte-level BPE and SentencePiece
Unigram vocabularies, checked token by token against the markers; the targets listed per row
(`target_slots`, `gather_targets`) for a model that decodes only those."""

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import jaxformer
from jaxformer.data.masking import (
    IGNORE,
    MaskingError,
    gather_targets,
    mask_tokens,
    target_slots,
    word_start_table,
)

VOCAB = 1000
PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4
SPECIAL = (PAD, CLS, SEP, UNK, MASK)
CORPUS = [
    "the movie was great fun, and the actors were superb",
    "a dull and boring plot; the worst film of the year",
    "loved every scene of it! charming, naive and moving",
] * 30


def batch(rng, b=1024, t=64, shortest=40):
    """[CLS] random ids [SEP], then padding: rows of shortest..t tokens."""
    lengths = rng.integers(shortest, t + 1, b)
    mask = (np.arange(t) < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(len(SPECIAL), VOCAB, (b, t)), PAD)
    ids[:, 0] = CLS
    ids[np.arange(b), lengths - 1] = SEP
    return ids.astype(np.int32), mask


def corrupt(ids, mask, seed=0, step=0, **kwargs):
    return mask_tokens(
        ids,
        mask,
        np.random.default_rng([seed, step]),
        mask_id=MASK,
        vocab_size=VOCAB,
        special_ids=SPECIAL,
        **kwargs,
    )


def candidates(ids, mask):
    return (mask == 1) & ~np.isin(ids, SPECIAL)


def hand_words(is_start, candidate):
    """Words as lists of (row, position), from the definition: a candidate that begins a word,
    or follows a non-candidate, starts one; the candidates after it continue it."""
    words = []
    for r in range(candidate.shape[0]):
        current = None
        for p in range(candidate.shape[1]):
            if not candidate[r, p]:
                current = None
            elif current is None or is_start[r, p]:
                current = [(r, p)]
                words.append(current)
            else:
                current.append((r, p))
    return words


def test_selected_share_and_80_10_10_split(rng):
    ids, mask = batch(rng)
    masked, labels = corrupt(ids, mask)
    selected = labels != -100
    assert abs(selected.sum() / candidates(ids, mask).sum() - 0.15) < 0.01
    n = selected.sum()
    to_mask = (masked == MASK) & selected
    kept = (masked == ids) & selected
    to_random = selected & ~to_mask & ~kept
    assert abs(to_mask.sum() / n - 0.8) < 0.015
    assert abs(to_random.sum() / n - 0.1) < 0.015
    assert abs(kept.sum() / n - 0.1) < 0.015  # a random draw equal to the original counts here


def test_specials_and_padding_never_selected_labels_and_untouched_rest(rng):
    ids, mask = batch(rng, shortest=5)
    ids[:, 3] = UNK  # a special id among the real tokens
    masked, labels = corrupt(ids, mask)
    selected = labels != -100
    assert not selected[~candidates(ids, mask)].any()
    np.testing.assert_array_equal(labels[selected], ids[selected])
    assert set(np.unique(labels[~selected])) == {-100}
    np.testing.assert_array_equal(masked[~selected], ids[~selected])  # padding included
    assert masked.dtype == labels.dtype == np.int32


def test_random_replacements_are_never_special(rng):
    ids, mask = batch(rng)
    masked, labels = corrupt(ids, mask, mask_prob=0.5)
    replaced = (labels != -100) & (masked != MASK) & (masked != ids)
    values = masked[replaced]
    assert replaced.sum() > 1000 and not np.isin(values, SPECIAL).any()
    assert values.min() < len(SPECIAL) + 20 and values.max() > VOCAB - 20  # the whole range


def test_a_pure_function_of_seed_and_step(rng):
    ids, mask = batch(rng, b=64)
    first, again, other = corrupt(ids, mask), corrupt(ids, mask), corrupt(ids, mask, step=1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    masked, _ = corrupt(ids, mask)
    assert not np.shares_memory(masked, ids) and not np.array_equal(masked, ids)


def test_every_row_with_a_candidate_gets_a_target():
    ids = np.array([[CLS, 7, SEP, PAD], [CLS, SEP, PAD, PAD], [PAD] * 4] * 50, np.int32)
    mask = (ids != PAD).astype(np.int32)
    for step in range(5):
        _, labels = corrupt(ids, mask, step=step)
        np.testing.assert_array_equal((labels != -100).sum(axis=1), [1, 0, 0] * 50)
        assert (labels[::3, 1] == 7).all()


def test_whole_words_are_selected_and_decided_together(rng):
    ids, mask = batch(rng)
    starts = np.random.default_rng(1).random(VOCAB) < 0.5  # words of 2 tokens on average
    masked, labels = corrupt(ids, mask, word_starts=starts)
    selected = labels != -100
    cand = candidates(ids, mask)
    words = hand_words(starts[ids], cand)
    assert sum(len(w) for w in words) == cand.sum()
    picked = {"mask": 0, "other": 0}
    n_words = 0
    for word in words:
        r, p = zip(*word, strict=True)
        chosen = selected[r, p]
        assert chosen.all() or not chosen.any(), f"part of word {word} selected"
        if chosen.any():
            n_words += 1
            hidden = masked[r, p] == MASK
            assert hidden.all() or not hidden.any(), f"word {word} partly masked"
            picked["mask" if hidden.all() else "other"] += 1
    assert abs(selected.sum() / cand.sum() - 0.15) < 0.015
    assert abs(picked["mask"] / n_words - 0.8) < 0.02


def test_whole_words_of_a_wordpiece_text(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir, max_length=64)
    texts = ["unbelievably charming storytelling, overwhelmingly heartwarming"] * 200
    enc = tok(texts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = sorted(tok.tokenizer.token_to_id(t) for t in tok.special_tokens.values())
    masked, labels = mask_tokens(
        ids,
        mask,
        np.random.default_rng([3, 0]),
        mask_id=tok.tokenizer.token_to_id("[MASK]"),
        vocab_size=tok.vocab_size,
        special_ids=special,
        word_starts=word_start_table(tok),
    )
    pieces = np.vectorize(tok.tokenizer.id_to_token)(ids)
    words = hand_words(~np.char.startswith(pieces, "##"), (mask == 1) & ~np.isin(ids, special))
    assert max(len(w) for w in words) >= 3  # the text has words of several pieces
    selected = labels != -100
    for word in words:
        r, p = zip(*word, strict=True)
        assert selected[r, p].all() or not selected[r, p].any()
    assert selected.any(axis=1).all()


def test_bad_inputs_give_one_clear_error(rng):
    ids, mask = batch(rng, b=4)
    with pytest.raises(MaskingError, match=r"same \(batch, length\) shape"):
        corrupt(ids, mask[:, :-1])
    with pytest.raises(MaskingError, match=r"mask_prob=0\.0; it must be in \(0, 1\]"):
        corrupt(ids, mask, mask_prob=0.0)
    with pytest.raises(MaskingError, match=r"shape \(1000,\), one entry per token id"):
        corrupt(ids, mask, word_starts=np.ones(10, bool))
    with pytest.raises(MaskingError, match=r"outside the vocabulary \[0, 1000\)"):
        corrupt(np.where(mask == 1, ids + VOCAB, ids), mask)


# --- word_start_table ---


def test_word_start_table_of_wordpiece(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir)
    table = word_start_table(tok)
    assert table.shape == (tok.vocab_size,) == (30522,) and table.dtype == bool
    vocab = tok.tokenizer.get_vocab()
    for token, i in vocab.items():
        assert table[i] == (not token.startswith("##")), token
    assert table[vocab["play"]] and not table[vocab["##ing"]] and table[vocab["[CLS]"]]


def trained(model, pre_tokenizer, decoder, trainer):
    tok = Tokenizer(model)
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoder
    tok.train_from_iterator(CORPUS, trainer)
    return jaxformer.Tokenizer(
        tok, special_tokens={"cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>"}
    )


@pytest.mark.parametrize("kind", ["byte_level_bpe", "unigram"])
def test_word_start_table_of_bpe_and_sentencepiece(kind):
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    if kind == "byte_level_bpe":
        marker = "Ġ"
        tok = trained(
            models.BPE(),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            decoders.ByteLevel(),
            trainers.BpeTrainer(
                vocab_size=150,
                special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            ),
        )
    else:
        marker = "▁"
        tok = trained(
            models.Unigram(),
            pre_tokenizers.Metaspace(),
            decoders.Metaspace(),
            trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>"),
        )
    table = word_start_table(tok)
    vocab = tok.tokenizer.get_vocab()
    assert table.shape == (tok.vocab_size,) == (len(vocab),)
    for token, i in vocab.items():
        assert table[i] == (token in specials or token.startswith(marker)), token
    assert table.any() and not table.all()
    # In a text, the starts are the tokens after a space.
    enc = tok.tokenizer.encode("the movie was superb", add_special_tokens=False)
    spaced = [t.startswith(marker) for t in enc.tokens]
    assert list(table[enc.ids]) == spaced and sum(spaced) >= 3


def test_target_slots_hold_the_targets_of_independent_draws(rng):
    assert [target_slots(t, 0.15) for t in (16, 64, 128, 512)] == [16, 32, 48, 128]
    assert target_slots(4, 0.5) == 4  # capped at the length
    ids, mask = batch(rng, t=128, shortest=128)
    _, labels = corrupt(ids, mask, mask_prob=0.15)
    most = (labels != IGNORE).sum(1).max()
    assert most <= target_slots(128, 0.15) < 128


def test_gather_targets_by_hand():
    labels = np.full((3, 10), IGNORE, np.int32)
    labels[0, [2, 5, 9]] = [11, 12, 13]
    labels[1, [0]] = [21]  # row 2: no target (a filler row)
    positions, targets = gather_targets(labels, 4)
    np.testing.assert_array_equal(positions, [[2, 5, 9, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        targets, [[11, 12, 13, IGNORE], [21, IGNORE, IGNORE, IGNORE], [IGNORE] * 4]
    )
    assert positions.dtype == targets.dtype == np.int32
    # Scattered back, the targets are the labels.
    back = np.full_like(labels, IGNORE)
    rows = np.arange(3)[:, None]
    used = targets != IGNORE
    back[np.broadcast_to(rows, used.shape)[used], positions[used]] = targets[used]
    np.testing.assert_array_equal(back, labels)


def test_gather_targets_widens_a_batch_with_more_targets_than_slots():
    labels = np.full((2, 40), IGNORE, np.int32)
    labels[1, :19] = np.arange(19)
    positions, targets = gather_targets(labels, 8)
    assert positions.shape == targets.shape == (2, 32)  # the next power of two over 19
    np.testing.assert_array_equal(positions[1, :19], np.arange(19))
    np.testing.assert_array_equal(targets[1, :19], np.arange(19))
    assert (targets[1, 19:] == IGNORE).all() and (targets[0] == IGNORE).all()
    assert gather_targets(np.zeros((1, 24), np.int32), 8)[0].shape == (1, 24)  # capped at t
    assert gather_targets(labels, 100)[0].shape == (2, 40)


def test_gather_targets_bad_inputs():
    with pytest.raises(MaskingError, match=r"labels \(5,\) must be \(batch, length\)"):
        gather_targets(np.zeros(5, np.int32), 8)
    with pytest.raises(MaskingError, match="slots=0"):
        gather_targets(np.zeros((2, 5), np.int32), 0)
