"""A word-level tokenizer in CLIP's format for the procedural world (the `tiny` stage-1 model).

The toy letter-level BPE tokenizer of random-weight pipelines (convert/sdxl_pipeline.py
`write_toy_tokenizer`) cuts a caption after a few words; this one gives every word of the world's
captions ("a large green cone beside a small orange box", data_pipeline/primitives.py `caption`)
its own id, so a 24-token window holds the longest caption. Output is what the CLIP tokenizers
give the sampler (diffusion/sampling.py `tokenize`): `[B, max_length] int32`, BOS first, EOS after
the last word, then padding; the EOS id is the largest id, so CLIP's pooled-token rule (first EOS,
or the legacy argmax) finds it.

Vocabulary: the colour names (`primitives.COLOURS`), the nouns the captions use for
`primitives.SHAPES` (`primitives.SHAPE_NOUNS`: a box with equal sides is a "cube", a torus a
"ring"), size words, relation
and function words, and ","; words outside it map to `<unk>` (`unknown_words` lists them).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from instant3d_jax import errors

# Words the caption code writes besides colour names and nouns (primitives.caption, _phrase,
# _article): articles, size words, relations, "and".
FUNCTION_WORDS = ("a", "an", "and", "small", "large", "beside", "above", "below", ",")
SPECIALS = ("<unk>", "<|startoftext|>", "<|endoftext|>")
_SPLIT = re.compile(r"[a-z]+|[^\sa-z]")


def world_vocabulary() -> tuple[str, ...]:
  """The procedural world's words, in a fixed order (colours, nouns, function words)."""
  from data_pipeline import primitives as P
  nouns = [noun for shape in P.SHAPES for noun in P.SHAPE_NOUNS[shape]]
  words = list(P.COLOURS) + nouns + list(FUNCTION_WORDS)
  return tuple(dict.fromkeys(words))  # first occurrence wins, order kept


def split_words(text: str) -> list[str]:
  """Lower-case words and punctuation marks (each mark its own token)."""
  return _SPLIT.findall(text.lower())


class WordTokenizer:
  """Callable like a transformers CLIP tokenizer for what the sampler and trainer use:
  `tok(texts, padding="max_length", max_length=L, truncation=True, return_tensors="np")
  ["input_ids"]` → `[B, L] int32`; `model_max_length`, `bos_token_id`, `eos_token_id`,
  `pad_token_id`, `vocab_size`, `save_pretrained(folder)` / `from_pretrained(folder)`.

  Ids: words 0..N−1, `<unk>` N, BOS N+1, EOS N+2 (the largest); padding uses EOS, as CLIP-L's
  tokenizer does, unless `pad_token_id` names another id.
  """

  def __init__(self, words: Sequence[str] | None = None, model_max_length: int = 24,
               pad_token_id: int | None = None):
    words = tuple(world_vocabulary() if words is None else words)
    if len(set(words)) != len(words) or any(w in SPECIALS for w in words):
      raise errors.ConfigError(f"word tokenizer: words must be distinct and not special tokens, "
                               f"got {list(words)}")
    if model_max_length < 3:
      raise errors.ConfigError(f"word tokenizer: model_max_length must be >= 3 (BOS, a word, "
                               f"EOS), got {model_max_length}")
    self.words = words
    self.vocab = {w: i for i, w in enumerate(words)}
    self.unk_token_id = len(words)
    self.bos_token_id = len(words) + 1
    self.eos_token_id = len(words) + 2
    self.pad_token_id = self.eos_token_id if pad_token_id is None else int(pad_token_id)
    if not 0 <= self.pad_token_id <= self.eos_token_id:
      raise errors.ConfigError(f"word tokenizer: pad_token_id {pad_token_id} outside the "
                               f"vocabulary [0, {self.eos_token_id}]")
    self.vocab_size = len(words) + len(SPECIALS)
    self.model_max_length = int(model_max_length)

  def unknown_words(self, text: str) -> list[str]:
    """The words of `text` outside the vocabulary (they would become `<unk>`)."""
    return [w for w in split_words(text) if w not in self.vocab]

  def encode(self, text: str) -> list[int]:
    """BOS, the word ids, EOS (no padding, no truncation)."""
    return ([self.bos_token_id] + [self.vocab.get(w, self.unk_token_id)
                                   for w in split_words(text)] + [self.eos_token_id])

  def decode(self, ids: Sequence[int]) -> str:
    """The words of `ids` up to the first EOS (BOS skipped)."""
    out = []
    for i in (int(x) for x in ids):
      if i == self.eos_token_id:
        break
      if i == self.bos_token_id:
        continue
      out.append(self.words[i] if i < len(self.words) else SPECIALS[i - len(self.words)])
    return " ".join(out).replace(" ,", ",")

  def __call__(self, texts: str | Sequence[str], padding: str | bool = "max_length",
               max_length: int | None = None, truncation: bool = True,
               return_tensors: str | None = "np") -> dict[str, np.ndarray]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    length = int(max_length or self.model_max_length)
    if padding not in ("max_length", True):
      raise errors.ConfigError(f"word tokenizer: only padding='max_length' is supported, got "
                               f"{padding!r}")
    ids = np.full((len(texts), length), self.pad_token_id, np.int32)
    for row, text in enumerate(texts):
      seq = self.encode(text)
      if len(seq) > length:
        if not truncation:
          raise errors.InputError(f"caption {text!r} has {len(seq)} tokens, more than "
                                  f"max_length={length}")
        seq = seq[:length - 1] + [self.eos_token_id]  # CLIP keeps the EOS when truncating
      ids[row, :len(seq)] = seq
    return {"input_ids": ids, "attention_mask": (np.arange(length)[None] <
                                                  np.asarray([min(len(self.encode(t)), length)
                                                              for t in texts])[:, None]
                                                  ).astype(np.int32)}

  # -- persistence (a folder, like a transformers tokenizer) --------------------------------
  FILE = "word_tokenizer.json"

  def save_pretrained(self, folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / self.FILE).write_text(json.dumps({
        "words": list(self.words), "model_max_length": self.model_max_length,
        "pad_token_id": self.pad_token_id}, indent=1))
    return folder

  @classmethod
  def from_pretrained(cls, folder: str | os.PathLike) -> "WordTokenizer":
    path = Path(folder) / cls.FILE
    if not path.is_file():
      raise errors.WeightsError(f"word tokenizer folder {folder} lacks {cls.FILE}")
    d = json.loads(path.read_text())
    return cls(d["words"], int(d["model_max_length"]), int(d["pad_token_id"]))
