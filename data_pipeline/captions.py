"""Captions of the procedural world: parsing into items, and the caption-level held-out split.

The procedural world (data_pipeline/primitives.py, `caption`) writes captions of one to three
items, each "a|an [small|large] COLOUR NOUN", joined by a relation for two items ("beside",
"above", "below") or as a list for three ("A, B and C"):

  "a large green cone beside a small orange box"   "a red cube, a blue ring and a grey sphere"

`parse_caption` turns such a caption into `Item(size, colour, shape, noun)`s. The noun is the
caption's word, the shape the primitive it names (primitives.SHAPES): "cube" and "box" are both
shape "box", "ring" is shape "torus".

The held-out split (`caption_split`) removes whole (colour, shape) combinations from training,
so the held-out captions are unseen combinations of seen words (Instant3D stage-1 evaluation,
issue "Stage-1 training", "Data: captioned grids"). For `seed` and `num_heldout = k` the held-out
combinations are `(colours[j], shapes[j mod S])` for j < k, with `colours` and `shapes` the
world's palette and shape list (sorted, then permuted by `np.random.default_rng([seed, 14])`).
So the k combinations have k distinct colours and their shapes are spread evenly; as long as
k < number of colours and every colour comes with more than one shape, each colour and each
shape still occurs in training combinations. An object belongs to the held-out part when any of
its items has a held-out combination, else to the training part.

Roles of the held-out combinations (`heldout_roles`): the first half of them in sorted order
(rounded up) is `val`, the rest `test`. Tuning and model selection look at val captions only;
test captions are scored through the test ledger (instant3d_jax/eval/ledger.py). A held-out
caption's role (`caption_role`) is 'val' when every held-out combination it names is a val
combination, 'test' when every one is a test combination, else 'mixed' (scored in neither).
With seed 0 and 8 held-out combinations the val ones are the four that stage 1's recipe was
tuned on (blue torus, brown cone, cyan cylinder, green cone: configs/mv_sdxl.py's sample
captions), the test ones grey cylinder, orange box, purple sphere and red box.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_pipeline import primitives as P
from instant3d_jax import errors

ARTICLES = ("a", "an")
SIZES = ("small", "large")
RELATIONS = ("beside", "above", "below")
# Caption noun → primitive shape: the inverse of primitives.SHAPE_NOUNS ("box" and "cube" are
# both shape "box").
NOUN_SHAPE = {noun: shape for shape in P.SHAPES for noun in P.SHAPE_NOUNS[shape]}
PARTS = ("train", "heldout")
ROLES = ("val", "test")


@dataclasses.dataclass(frozen=True)
class Item:
  """One object of a caption: size word ("" when none), colour name, shape, caption noun."""
  size: str
  colour: str
  shape: str
  noun: str

  @property
  def combo(self) -> tuple[str, str]:
    return (self.colour, self.shape)


def vocabulary() -> tuple[str, ...]:
  """Every word (and the comma) a procedural caption can contain, in a fixed order."""
  return (ARTICLES + SIZES + tuple(P.COLOURS) + tuple(NOUN_SHAPE) + RELATIONS + ("and", ","))


def _tokens(caption: str) -> list[str]:
  return caption.replace(",", " , ").split()


def parse_caption(caption: str) -> list[Item]:
  """A procedural-world caption → its items, in caption order.

  Raises `records.DataError` naming the caption and the offending word when the caption is not
  of the world's grammar (module docstring), e.g. a free-text caption of an imported data set.
  """
  toks = _tokens(caption)
  items: list[Item] = []
  i = 0

  def fail(what: str):
    found = repr(toks[i]) if i < len(toks) else "the end of the caption"
    raise errors.DataError(f"caption {caption!r}: expected {what} at word {i + 1}, found {found} "
                           "(not a procedural-world caption: 'a [small|large] COLOUR NOUN', "
                           "joined by beside/above/below or ', ' and 'and')")

  while True:
    if i >= len(toks) or toks[i] not in ARTICLES:
      fail("'a' or 'an'")
    i += 1
    size = ""
    if i < len(toks) and toks[i] in SIZES:
      size = toks[i]
      i += 1
    if i >= len(toks) or toks[i] not in P.COLOURS:
      fail(f"a colour ({', '.join(P.COLOURS)})")
    colour = toks[i]
    i += 1
    if i >= len(toks) or toks[i] not in NOUN_SHAPE:
      fail(f"a shape noun ({', '.join(NOUN_SHAPE)})")
    items.append(Item(size=size, colour=colour, shape=NOUN_SHAPE[toks[i]], noun=toks[i]))
    i += 1
    if i == len(toks):
      break
    if toks[i] not in RELATIONS + ("and", ","):
      fail("a relation (beside, above, below), ',' or 'and'")
    i += 1
  return items


def caption_colours(caption: str) -> list[str]:
  """The colour names of a caption's items, in caption order."""
  return [it.colour for it in parse_caption(caption)]


def caption_combos(caption: str) -> set[tuple[str, str]]:
  """The (colour, shape) combinations a caption names."""
  return {it.combo for it in parse_caption(caption)}


def heldout_sample_captions(num: int, seed: int = 0, num_heldout: int = 8) -> tuple[str, ...]:
  """Fixed single-object captions of the held-out *val* (colour, shape) combinations (captions a
  model trained on the `caption_split(seed, num_heldout)` training part never saw, and never test
  captions: these are what training's sample grids show), `num` of them, cycling sizes ("",
  "small ", "large ") once the combinations are used up; configs/mv_sdxl.py's sample captions."""
  combos = sorted(heldout_roles(seed, num_heldout)["val"])
  out = []
  sizes = ("", "small ", "large ")
  for i in range(num):
    colour, shape = combos[i % len(combos)]
    phrase = f"{sizes[(i // len(combos)) % 3]}{colour} {P.shape_noun(shape)}"
    out.append(("an " if phrase[0] in "aeiou" else "a ") + phrase)
  return tuple(out)


def heldout_combinations(seed: int = 0, num_heldout: int = 6,
                         colours: Sequence[str] | None = None,
                         shapes: Sequence[str] | None = None) -> frozenset[tuple[str, str]]:
  """The (colour, shape) combinations removed from training (module docstring for the rule)."""
  colours = sorted(P.COLOURS if colours is None else colours)
  shapes = sorted(P.SHAPES if shapes is None else shapes)
  if not 0 <= int(num_heldout) < len(colours):
    raise errors.DataError(f"num_heldout must be in [0, {len(colours)}) (one held-out "
                           f"combination per colour, at least one colour fully seen), found "
                           f"{num_heldout}")
  rng = np.random.default_rng([int(seed), 14])
  cols = [colours[j] for j in rng.permutation(len(colours))]
  shps = [shapes[j] for j in rng.permutation(len(shapes))]
  return frozenset((cols[j], shps[j % len(shps)]) for j in range(int(num_heldout)))


def heldout_roles(seed: int = 0, num_heldout: int = 8) -> dict[str, frozenset]:
  """{"val": …, "test": …}: the held-out combinations split by role (module docstring): the
  first ceil(k/2) in sorted order are val, the rest test."""
  combos = sorted(heldout_combinations(seed, num_heldout))
  half = (len(combos) + 1) // 2
  return {"val": frozenset(combos[:half]), "test": frozenset(combos[half:])}


def caption_role(caption: str, roles: dict[str, frozenset]) -> str | None:
  """'val' / 'test' / 'mixed' for a held-out caption (module docstring), None when it names no
  held-out combination."""
  named = caption_combos(caption)
  val, test = named & roles["val"], named & roles["test"]
  if not val and not test:
    return None
  if val and test:
    return "mixed"
  return "val" if val else "test"


@dataclasses.dataclass(frozen=True)
class CaptionSplit:
  """One part ("train" or "heldout") of the caption-level split defined by `combos`."""
  part: str
  combos: frozenset

  def __post_init__(self):
    if self.part not in PARTS:
      raise errors.DataError(f"caption split part must be one of {PARTS}, found {self.part!r}")

  def is_heldout(self, caption: str) -> bool:
    """True when the caption names any held-out (colour, shape) combination."""
    return bool(caption_combos(caption) & self.combos)

  def keeps(self, caption: str) -> bool:
    """Whether an object with this caption belongs to this part."""
    return self.is_heldout(caption) == (self.part == "heldout")


def caption_split(part: str, *, seed: int = 0, num_heldout: int = 8) -> CaptionSplit:
  """`CaptionSplit(part, heldout_combinations(seed, num_heldout))`."""
  return CaptionSplit(part=part, combos=heldout_combinations(seed, num_heldout))


def as_caption_split(heldout) -> CaptionSplit | None:
  """The loader's `heldout` argument → a `CaptionSplit` (None stays None).

  Accepts a `CaptionSplit`, or a part name ("train" / "heldout") for the default split
  (`caption_split(part)`: seed 0, 8 combinations).
  """
  if heldout is None or isinstance(heldout, CaptionSplit):
    return heldout
  if isinstance(heldout, str):
    return caption_split(heldout)
  raise errors.DataError(f"heldout must be None, 'train', 'heldout' or a captions.CaptionSplit, "
                         f"found {type(heldout).__name__} {heldout!r}")

