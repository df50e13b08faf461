"""Text → token ids for GLIDE: GPT-2 byte-level BPE (OpenAI's models) or raw UTF-8 bytes.

GLIDE's rules (see the golden README): lower-case with ``str.lower``, no start/end token, the
literal text ``<|endoftext|>`` is ordinary text, keep the FIRST ``ctx`` ids, pad on the right
with the pad id, mask True on real tokens. The mask is not an attention mask.
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GlidectlError, cause, got, takes
from .prompt_files import check_text

if TYPE_CHECKING:
    import tiktoken
    import torch

VOCAB_ENV = "GLIDECTL_GPT2_VOCAB"
GPT2_N_VOCAB = 50257
GPT2_END_TOKEN = 50256
ENDOFTEXT = "<|endoftext|>"
# GPT-2's split regex as tiktoken writes it ("r50k"); same pieces as GLIDE's bpe.py regex.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
VOCAB_FILES = ("encoder.json", "vocab.bpe")

_ENCODINGS: dict[str, tiktoken.Encoding] = {}
_LOCK = threading.Lock()
_FILES_FIX = "use a folder holding GPT-2's encoder.json and vocab.bpe"
# :func:`vocab_named`'s words for --vocab-dir (``vocab_dir=`` to a library caller) and for a
# config's model.vocab_dir
FLAG_VOCAB = ("given with --vocab-dir", "pass --vocab-dir DIR with GPT-2's encoder.json and "
              "vocab.bpe, or leave it out for the default vocabulary", "Pass --vocab-dir DIR,")
CONFIG_VOCAB = ("set as model.vocab_dir", "set model.vocab_dir to a folder holding GPT-2's "
                "encoder.json and vocab.bpe, or leave it empty for the default vocabulary",
                "Set model.vocab_dir to")


class VocabFolderError(GlidectlError):
    """A GPT-2 vocabulary folder that is not there, lacks its files or holds others;
    :func:`vocab_named` says who named it and what to do."""

    folder = ""
    problem = ""  # "does not exist", "lacks vocab.bpe", ...
    from_env = False  # named by $GLIDECTL_GPT2_VOCAB, which its own sentence names


def vocab_folder_error(folder: str, problem: str, named: str = "",
                       fix: str = _FILES_FIX) -> VocabFolderError:
    """The one sentence for vocabulary folder ``folder`` with ``problem``, ``named``
    ("given with --vocab-dir") saying where it came from and ``fix`` what to do."""
    exc = VocabFolderError(f"The GPT-2 vocabulary folder {folder!r}"
                           f"{' ' + named if named else ''} {problem}; {fix}.")
    exc.folder, exc.problem = folder, problem
    return exc


def vocab_folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """What keeps ``folder`` from being a GPT-2 vocabulary folder ("does not exist",
    "lacks vocab.bpe"), or None when encoder.json and vocab.bpe are there."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        return "is a file, not a folder" if path.exists() else "does not exist"
    missing = [f for f in VOCAB_FILES if not (path / f).is_file()]
    return f"lacks {', '.join(missing)}" if missing else None


class VocabUnavailableError(GlidectlError):
    """No vocabulary folder named and tiktoken's GPT-2 cannot be loaded or downloaded;
    :func:`vocab_named` says how the caller names a folder."""

    reason = ""  # the exception's type name: ConnectionError, ...


def vocab_unavailable(reason: str, name_one: str = "Set model.vocab_dir to") -> str:
    """The sentence for a GPT-2 vocabulary tiktoken could not give (``reason``), with
    ``name_one`` ("Pass --vocab-dir DIR,", "Set model.vocab_dir to") saying how to name a folder."""
    return ("The GPT-2 vocabulary is not available: tiktoken could not load or download 'gpt2' "
            f"({reason}). {name_one} a folder with encoder.json and vocab.bpe (or set the "
            f"{VOCAB_ENV} environment variable to one), or run once with internet access so "
            "tiktoken caches it.")


@contextmanager
def vocab_named(named: str, fix: str, name_one: str = "") -> Iterator[None]:
    """A vocabulary folder the caller gave that fails to load inside is said to come from
    ``named`` ("given with --vocab-dir", "set as model.vocab_dir"), with ``fix``; a missing
    default vocabulary says how ``name_one`` ("Pass --vocab-dir DIR,") names a folder."""
    try:
        yield
    except VocabFolderError as exc:
        if exc.from_env or not exc.folder:
            raise
        raise vocab_folder_error(exc.folder, exc.problem, named, fix) from None
    except VocabUnavailableError as exc:
        if not name_one:
            raise
        raise VocabUnavailableError(vocab_unavailable(exc.reason, name_one)) from exc.__cause__


class Tokenizer(ABC):
    """A prompt tokenizer with GLIDE's padding, truncation and mask rules."""

    name: str
    n_vocab: int
    pad_id: int

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """All ids of the lower-cased text (no truncation, no special tokens)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of real (non-pad) ids; invalid UTF-8 is replaced, an id outside the
        vocabulary is a GlidectlError naming it."""

    def real_ids(self, ids: Sequence[int]) -> list[int]:
        """``ids`` less the pad id, for :meth:`decode`; an id outside the vocabulary is one
        sentence naming it (GPT-2's was a KeyError or OverflowError, bytes' dropped)."""
        out = [int(i) for i in ids]
        bad = next((i for i in out if not 0 <= i < self.n_vocab), None)
        if bad is not None:
            raise GlidectlError(f"decode(): token id {bad} is outside the {self.name} "
                                f"tokenizer's vocabulary of {self.n_vocab} ids (0 to "
                                f"{self.n_vocab - 1}).")
        return [i for i in out if i != self.pad_id]

    def count(self, text: str) -> int:
        """Number of ids before truncation."""
        return len(self.encode(text))

    def padded_tokens_and_mask(
        self, ids: Sequence[int], ctx: int
    ) -> tuple[list[int], list[bool]]:
        """Keep the first ``ctx`` ids, right-pad with ``pad_id``; mask True on real ids."""
        _check_ctx(ctx, "padded_tokens_and_mask()")
        kept = list(ids[:ctx])
        padding = ctx - len(kept)
        return kept + [self.pad_id] * padding, [True] * len(kept) + [False] * padding

    def encode_batch(
        self, texts: Sequence[str], ctx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``LongTensor[B, ctx]`` and mask ``BoolTensor[B, ctx]`` for many prompts
        (a list of strings: one string alone is not read as a list of its characters)."""
        import torch

        if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):
            one = f"; pass [{texts!r:.40}] for one prompt" if isinstance(texts, str) else ""
            raise GlidectlError(f"encode_batch() takes a list of prompt strings, got "
                                f"{got(texts)}{one}.")
        _check_ctx(ctx, "encode_batch()")
        rows = [self.padded_tokens_and_mask(self.encode(t), ctx) for t in texts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).reshape(len(rows), ctx)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).reshape(len(rows), ctx)
        return tokens, mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab})"


def _check_ctx(ctx: Any, call: str) -> None:
    """One sentence unless ``ctx`` (the model's ``text_ctx``) is a whole number >= 1: a
    negative one kept all but the last ids, and a float was a TypeError from slicing."""
    import numbers

    if isinstance(ctx, bool) or not isinstance(ctx, numbers.Integral) or ctx < 1:
        raise takes(f"{call}: ctx=", "a whole number of tokens >= 1 (the model's text_ctx)",
                    ctx)


def prompt_text(text: Any) -> str:
    """``text`` if it is a prompt a tokenizer can read (a str that UTF-8 holds), else one
    sentence (``encode(None)`` was an AttributeError from inside)."""
    if not isinstance(text, str):
        raise takes("encode()", "a prompt string", text)
    return check_text(text)


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE through tiktoken, exactly as GLIDE's ``bpe.get_encoder()``."""

    name = "gpt2"
    n_vocab = GPT2_N_VOCAB
    pad_id = GPT2_END_TOKEN

    def __init__(self, encoding: tiktoken.Encoding, source: str) -> None:
        self.encoding = encoding
        self.source = source

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(prompt_text(text).lower())

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(self.real_ids(ids))

    @cached_property
    def sha256(self) -> str:
        """What identifies the vocabulary: the sha256 of each token's bytes in id order, so
        GPT-2's files give one digest wherever they lie (a folder, tiktoken's cache)."""
        digest = hashlib.sha256()
        for i in range(self.encoding.n_vocab):
            piece = self.encoding.decode_single_token_bytes(i)
            digest.update(len(piece).to_bytes(4, "big") + piece)
        return digest.hexdigest()


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes of the lower-cased text (ids 0..255), pad 256: for models trained from
    scratch, needing no vocabulary file."""

    name = "byte"
    n_vocab = 257
    pad_id = 256

    def encode(self, text: str) -> list[int]:
        return list(prompt_text(text).lower().encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self.real_ids(ids)).decode("utf-8", errors="replace")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encoding_from_folder(folder: Path) -> tiktoken.Encoding:
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    if problem := vocab_folder_problem(folder):
        raise vocab_folder_error(str(folder), problem)
    bpe, enc = folder / "vocab.bpe", folder / "encoder.json"
    try:
        # The content hashes make tiktoken's file cache notice an edited file at the same path.
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(bpe),
            encoder_json_file=str(enc),
            vocab_bpe_hash=_sha256(bpe),
            encoder_json_hash=_sha256(enc),
        )
    except (AssertionError, ValueError, KeyError, UnicodeDecodeError, OSError) as exc:
        raise vocab_folder_error(
            str(folder), f"holds files that are not GPT-2's matching encoder.json and "
            f"vocab.bpe ({cause(exc, 100)})") from exc
    if len(ranks) != GPT2_END_TOKEN:
        raise vocab_folder_error(str(folder), f"holds {len(ranks)} tokens, not GPT-2's "
                                 f"{GPT2_END_TOKEN}")
    return tiktoken.Encoding(
        name=f"glidectl-gpt2:{folder}",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_END_TOKEN},
        explicit_n_vocab=GPT2_N_VOCAB,
    )


def _encoding_from_tiktoken() -> tiktoken.Encoding:
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:  # network, cache or hash errors all mean "not available here"
        error = VocabUnavailableError(vocab_unavailable(type(exc).__name__))
        error.reason = type(exc).__name__
        raise error from exc


def load_gpt2_encoding(vocab_dir: str | os.PathLike[str] | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding from ``vocab_dir``, else ``$GLIDECTL_GPT2_VOCAB``, else tiktoken's
    "gpt2" (downloaded once and cached). Loaded encodings are cached per source."""
    folder = str(vocab_dir) if vocab_dir else os.environ.get(VOCAB_ENV, "")
    key = str(Path(folder).expanduser().resolve()) if folder else "tiktoken:gpt2"
    with _LOCK:
        if key not in _ENCODINGS:
            if folder:
                try:
                    _ENCODINGS[key] = _encoding_from_folder(Path(key))
                except VocabFolderError as exc:
                    if vocab_dir:
                        raise
                    env = vocab_folder_error(key, exc.problem, f"(${VOCAB_ENV})", (
                        f"set {VOCAB_ENV} to a folder holding GPT-2's encoder.json and "
                        "vocab.bpe, or unset it to use tiktoken's"))
                    env.from_env = True
                    raise env from None
            else:
                _ENCODINGS[key] = _encoding_from_tiktoken()
        return _ENCODINGS[key]


def clear_cache() -> None:
    """Forget loaded GPT-2 encodings (tests; a vocabulary folder that changed)."""
    with _LOCK:
        _ENCODINGS.clear()


def vocab_sha256(vocab_dir: str | os.PathLike[str] | None = None) -> str:
    """:attr:`GPT2Tokenizer.sha256` of the vocabulary in ``vocab_dir`` (else the default
    one, as :func:`load_gpt2_encoding` finds it)."""
    tokenizer = get_tokenizer("gpt2", vocab_dir)
    assert isinstance(tokenizer, GPT2Tokenizer)
    return tokenizer.sha256


def vocab_record(tokenizers: Sequence[Any], vocab_dir: str | os.PathLike[str] | None
                 ) -> dict[str, Any]:
    """What a picture records of the GPT-2 vocabulary that tokenized its prompt, given the
    tokenizers of the stages that ran: ``vocab_sha256`` (:attr:`GPT2Tokenizer.sha256`) and
    ``vocab_dir`` as given (None: the default one); {} when no stage read GPT-2's. Other
    vocabulary files give other tokens, and so other pictures."""
    used = [tok for tok in tokenizers if isinstance(tok, GPT2Tokenizer)]
    if not used:
        return {}
    return {"vocab_sha256": used[0].sha256, "vocab_dir": str(vocab_dir) if vocab_dir else None}


def get_tokenizer(name: str = "gpt2", vocab_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
    """The tokenizer called ``name`` ("gpt2" or "byte"); ``vocab_dir`` is for gpt2 only."""
    if name == "gpt2":
        source: Any = vocab_dir or os.environ.get(VOCAB_ENV) or "tiktoken:gpt2"
        return GPT2Tokenizer(load_gpt2_encoding(vocab_dir), str(source))
    if name == "byte":
        return ByteTokenizer()
    raise GlidectlError(f"Unknown tokenizer {name!r}; use 'gpt2' or 'byte'.")
