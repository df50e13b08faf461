"""The tokenizer reproduces GLIDE's GPT-2 BPE ids, padding and masks exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glidectl import tokenizer as tok
from glidectl.errors import GlidectlError


def _cases(carried: Path) -> list[dict]:
    return json.loads((carried / "tokenizer_golden.json").read_text())["cases"]


@pytest.fixture(scope="module")
def gpt2(gpt2_vocab: Path) -> tok.Tokenizer:
    return tok.get_tokenizer("gpt2", vocab_dir=gpt2_vocab)


def test_gpt2_matches_every_golden_case(carried: Path, gpt2: tok.Tokenizer) -> None:
    cases = _cases(carried)
    assert len(cases) == 41
    for case in cases:
        ids = gpt2.encode(case["text"])
        assert ids == case["ids"], case["category"]
        assert gpt2.count(case["text"]) == case["num_ids"]
        tokens, mask = gpt2.padded_tokens_and_mask(ids, 128)
        assert tokens == case["padded_tokens"], case["category"]
        assert mask == case["padded_mask"], case["category"]
        assert case["truncated"] == (len(ids) > 128)
        assert gpt2.decode(ids) == case["decoded"]


def test_gpt2_constants(gpt2: tok.Tokenizer) -> None:
    assert (gpt2.name, gpt2.n_vocab, gpt2.pad_id) == ("gpt2", 50257, 50256)


def test_endoftext_is_ordinary_text(gpt2: tok.Tokenizer) -> None:
    ids = gpt2.encode("<|endoftext|>")
    assert 50256 not in ids and len(ids) > 1


def test_encode_batch_truncates_keeping_first_ids(gpt2: tok.Tokenizer) -> None:
    texts = ["A Red Cube", "", "one two three four five six seven"]
    tokens, mask = gpt2.encode_batch(texts, 4)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert tokens.shape == mask.shape == (3, 4)
    assert tokens[0].tolist()[:3] == gpt2.encode("a red cube")
    assert mask[0].tolist() == [True, True, True, False]
    assert tokens[1].tolist() == [50256] * 4 and not mask[1].any()
    assert tokens[2].tolist() == gpt2.encode("one two three four five six seven")[:4]
    assert mask[2].all()


def test_encode_batch_of_nothing_has_shape(gpt2: tok.Tokenizer) -> None:
    tokens, mask = gpt2.encode_batch([], 16)
    assert tokens.shape == mask.shape == (0, 16)


def test_vocab_from_environment(monkeypatch: pytest.MonkeyPatch, gpt2_vocab: Path) -> None:
    monkeypatch.setenv(tok.VOCAB_ENV, str(gpt2_vocab))
    t = tok.get_tokenizer("gpt2")
    assert t.encode("an oil painting of a corgi") == [272, 3056, 12036, 286, 257, 1162, 12397]


def test_loaded_encoding_is_cached(gpt2_vocab: Path) -> None:
    a = tok.load_gpt2_encoding(gpt2_vocab)
    assert tok.load_gpt2_encoding(str(gpt2_vocab)) is a


def test_byte_tokenizer() -> None:
    b = tok.get_tokenizer("byte")
    assert (b.n_vocab, b.pad_id) == (257, 256)
    assert b.encode("Ab É") == list("ab é".encode())
    tokens, mask = b.encode_batch(["Hi", "x" * 10], 5)
    assert tokens.tolist() == [[104, 105, 256, 256, 256], [120] * 5]
    assert mask.tolist() == [[True, True, False, False, False], [True] * 5]
    assert b.decode(tokens[0].tolist()) == "hi"
    assert b.count("héllo") == 6


def test_a_lone_surrogate_is_one_sentence_for_both_tokenizers(gpt2: tok.Tokenizer) -> None:
    """``sample $'a\\xffb'`` (argv decodes the byte as U+DCFF) was a UnicodeEncodeError
    traceback with the byte tokenizer, and tiktoken replaced it without a word."""
    for tokenizer in (gpt2, tok.ByteTokenizer()):
        with pytest.raises(GlidectlError, match=r"^Prompt 'a\\udcffb' is not valid text"):
            tokenizer.encode("a\udcffb")


def test_a_tokenizer_given_no_prompt_list_or_no_context_says_so(gpt2: tok.Tokenizer) -> None:
    """``encode_batch("a cat", 128)`` tokenized each character as a prompt of its own (3
    rows for "abc"), ``encode(None)`` was an AttributeError from inside, and a ctx of -1
    kept all but the last id (a float: a TypeError from slicing)."""
    for tokenizer in (gpt2, tok.ByteTokenizer()):
        with pytest.raises(GlidectlError) as error:
            tokenizer.encode_batch("abc", 4)
        assert str(error.value) == ("encode_batch() takes a list of prompt strings, got 'abc' "
                                    "(str); pass ['abc'] for one prompt.")
        for bad in (None, b"abc", 5):
            with pytest.raises(GlidectlError, match=r"^encode\(\) takes a prompt string, got "):
                tokenizer.encode(bad)
        with pytest.raises(GlidectlError, match=r"^encode\(\) takes a prompt string, got None"):
            tokenizer.encode_batch(["a", None], 4)
        for ctx in (0, -1, 4.0, "4", True):
            with pytest.raises(GlidectlError, match=r"ctx= takes a whole number of tokens >= 1"):
                tokenizer.encode_batch(["abc"], ctx)
            with pytest.raises(GlidectlError, match=r"^padded_tokens_and_mask\(\): ctx= "):
                tokenizer.padded_tokens_and_mask([1, 2, 3], ctx)
        tokens, _ = tokenizer.encode_batch(("abc",), np.int64(4))  # a tuple, numpy's ints
        assert tokens.shape == (1, 4)


def test_an_id_outside_the_vocabulary_is_one_sentence_naming_it(gpt2: tok.Tokenizer) -> None:
    """GPT-2's decode of id 50257 was a KeyError, of -1 an OverflowError; bytes' dropped them."""
    for tokenizer, size in ((gpt2, 50257), (tok.ByteTokenizer(), 257)):
        for bad in (size, -1, 10**20):
            with pytest.raises(GlidectlError) as error:
                tokenizer.decode([97, bad, tokenizer.pad_id])
            assert str(error.value) == (
                f"decode(): token id {bad} is outside the {tokenizer.name} tokenizer's "
                f"vocabulary of {size} ids (0 to {size - 1}).")
        assert tokenizer.decode(torch.tensor([64, size - 1])) == tokenizer.decode([64])


def test_unknown_tokenizer_is_a_user_error() -> None:
    with pytest.raises(GlidectlError, match="Unknown tokenizer"):
        tok.get_tokenizer("clip")


def test_vocab_folder_missing_files_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(GlidectlError, match="vocab.bpe"):
        tok.get_tokenizer("gpt2", vocab_dir=tmp_path)


def test_offline_without_vocab_says_how_to_provide_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tiktoken.load
    import tiktoken.registry

    def no_network(blobpath: str) -> bytes:
        raise ConnectionError(f"network blocked in test: {blobpath}")

    monkeypatch.delenv(tok.VOCAB_ENV, raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    monkeypatch.setattr(tok, "_ENCODINGS", {})
    with pytest.raises(GlidectlError) as info:
        tok.get_tokenizer("gpt2")
    message = str(info.value)
    assert "model.vocab_dir" in message and tok.VOCAB_ENV in message and "internet" in message
