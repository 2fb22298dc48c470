"""Attribute sets: column order, groups, and the phrases fed to CLIP's text tower.

Every dataset of this project labels a tracklet with a 0/1 vector whose columns
follow one of the `AttributeSet`s below. Groups drive the metrics (reference
section 9): each binary attribute is a group of its own, each multi-class
attribute (pose, motion, colours, age) is one group of one-hot columns.

Two ways to name a column for CLIP:
- `published_phrases`: exactly the strings the published code tokenises. A
  released checkpoint was trained on them, quirks included (MARS swaps the
  phrases of positions 1 and 8; Duke's phrases keep their typos).
- `expanded_phrases` + a prompt template: the paper's "split, expand, prompt",
  e.g. 'top short' -> 'A pedestrian whose upper body wears short sleeves.'.
"""

from __future__ import annotations

import dataclasses

DEFAULT_PROMPT_TEMPLATE = "A pedestrian whose {}."


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    columns: tuple[int, ...]

    @property
    def is_binary(self) -> bool:
        return len(self.columns) == 1


@dataclasses.dataclass(frozen=True)
class AttributeSet:
    """Names, groups and CLIP phrases of one dataset's label vector."""

    name: str
    columns: tuple[str, ...]
    groups: tuple[Group, ...]
    published_phrases: tuple[str, ...]
    expanded_phrases: tuple[str, ...]

    def __post_init__(self):
        n = len(self.columns)
        for field in ("published_phrases", "expanded_phrases"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"attribute set {self.name!r}: {field} has "
                                 f"{len(getattr(self, field))} entries, columns has {n}")
        covered = sorted(c for g in self.groups for c in g.columns)
        if covered != list(range(n)):
            raise ValueError(f"attribute set {self.name!r}: groups do not cover columns 0..{n - 1}"
                             " exactly once")

    @property
    def num_attributes(self) -> int:
        return len(self.columns)

    @property
    def head_groups(self) -> tuple[tuple[int, ...], ...]:
        """The label columns of each group, in group order: the layout of the group head
        (model.head = 'group', vtfpar_jax/models/group_head.py). Binary groups become
        2-way softmaxes, so MARS has 14 groups of [2]*9 + [6, 5, 9, 10, 4] classes, as
        published; DukeMTMC-VID has 12 of [2]*8 + [6, 5, 9, 8], where the published
        code's 11 cannot run (docs/quirks.md)."""
        return tuple(g.columns for g in self.groups)

    def phrases(self, text: str = "published",
                template: str = DEFAULT_PROMPT_TEMPLATE) -> tuple[str, ...]:
        """The strings to tokenise: `published` or `expanded` (through `template`)."""
        if text == "published":
            return self.published_phrases
        if text == "expanded":
            if "{}" not in template:
                raise ValueError(f"prompt template {template!r} has no '{{}}' for the phrase")
            return tuple(template.format(p) for p in self.expanded_phrases)
        raise ValueError(f"attribute text {text!r}: expected 'published' or 'expanded'")


def _build(name, binary, multiclass, published):
    """binary: [(column, expanded)], multiclass: [(group, [(column, expanded)])]."""
    columns, groups, expanded_all = [], [], []
    for column, phrase in binary:
        groups.append(Group(column, (len(columns),)))
        columns.append(column)
        expanded_all.append(phrase)
    for group, members in multiclass:
        start = len(columns)
        for column, phrase in members:
            columns.append(f"{group}: {column}")
            expanded_all.append(phrase)
        groups.append(Group(group, tuple(range(start, len(columns)))))
    return AttributeSet(name, tuple(columns), tuple(groups), tuple(published),
                        tuple(expanded_all))


def _colours(part, names):
    return [(c, f"{part} is {c}" if c != "complex" else f"{part} has several colours")
            for c in names]


_POSE = [("frontal", "body faces the camera"),
         ("lateral-frontal", "body is turned halfway towards the camera"),
         ("lateral", "body is seen from the side"),
         ("lateral-back", "body is turned halfway away from the camera"),
         ("back", "back faces the camera"),
         ("varies", "body turns while walking")]
_MOTION = [("walking", "walks"), ("running", "runs"), ("riding", "rides a bike"),
           ("staying", "stands still"), ("varies", "motion changes")]

_MARS_BINARY = [("top length (short)", "upper body wears short sleeves"),
                ("bottom length (short)", "lower body wears shorts"),
                ("shoulder bag", "shoulder carries a shoulder bag"),
                ("backpack", "back carries a backpack"),
                ("hat", "head wears a hat"),
                ("hand bag", "hand carries a hand bag"),
                ("hair (long)", "hair is long"),
                ("gender (female)", "gender is female"),
                ("bottom type (skirt or dress)", "lower body wears a skirt or dress")]

MARS = _build(
    "mars",
    binary=_MARS_BINARY,
    multiclass=[
        ("pose", _POSE),
        ("motion", _MOTION),
        ("top colour", _colours("upper body clothing",
                                ["black", "purple", "green", "blue", "gray", "white",
                                 "yellow", "red", "complex"])),
        ("bottom colour", _colours("lower body clothing",
                                   ["white", "purple", "black", "green", "gray", "pink",
                                    "yellow", "blue", "brown", "complex"])),
        ("age", [("young", "age is under 13"), ("teenager", "age is between 13 and 18"),
                 ("adult", "age is between 18 and 60"), ("old", "age is over 60")]),
    ],
    # Positions 1 and 8 carry each other's phrase (docs/published-model.md §10): kept,
    # since released checkpoints were trained on exactly these strings.
    published=["top short", "bottom skirt", "shoulder bag", "backpack", "hat", "hand bag",
               "long hair", "female", "bottom short",
               "frontal", "lateral-frontal", "lateral", "lateral-back", "back", "pose varies",
               "walking", "running", "riding", "staying", "motion varies",
               "top black", "top purple", "top green", "top blue", "top gray", "top white",
               "top yellow", "top red", "top complex",
               "bottom white", "bottom purple", "bottom black", "bottom green", "bottom gray",
               "bottom pink", "bottom yellow", "bottom blue", "bottom brown", "bottom complex",
               "young", "teenager", "adult", "old"],
)

DUKE = _build(
    "duke",
    binary=[("backpack", "back carries a backpack"),
            ("shoulder bag", "shoulder carries a shoulder bag"),
            ("hand bag", "hand carries a hand bag"),
            ("boots", "feet wear boots"),
            ("gender (female)", "gender is female"),
            ("hat", "head wears a hat"),
            ("shoes (light)", "shoes are light coloured"),
            ("top length (long)", "upper body wears long sleeves")],
    multiclass=[
        ("pose", _POSE),
        ("motion", _MOTION),
        ("top colour", _colours("upper body clothing",
                                ["black", "white", "red", "purple", "gray", "blue", "green",
                                 "brown", "complex"])),
        ("bottom colour", _colours("lower body clothing",
                                   ["black", "white", "red", "grey", "blue", "green", "brown",
                                    "complex"])),
    ],
    # As published, typos included ('carring', 'heaed'): the ids must match.
    published=["carring backpack", "carring shoulder bag", "carring hand bag", "shoes boots",
               "female", "heaed hat", "shoes", "top long",
               "pose frontal", "pose lateral-frontal", "pose lateral", "pose lateral-back",
               "pose back", "pose varies",
               "motion walking", "motion running", "motion riding", "motion staying",
               "motion varies",
               "top color black", "top color white", "top color red", "top color purple",
               "top color gray", "top color blue", "top color green", "top color brown",
               "top color complex",
               "bottom color black", "bottom color white", "bottom color red",
               "bottom color grey", "bottom color blue", "bottom color green",
               "bottom color brown", "bottom color complex"],
)

# The synthetic set (input_pipeline/synthetic.py) draws figures whose looks
# follow these columns; it is MARS-like but small enough to learn on a CPU.
_SYN_TOP = ["black", "white", "red", "blue", "green", "yellow"]
_SYN_BOTTOM = ["black", "white", "blue", "brown", "gray"]
SYNTHETIC = _build(
    "synthetic",
    # MARS's binary attributes but the hand bag and the skirt, in MARS's order.
    binary=[b for b in _MARS_BINARY if b[0] not in ("hand bag", "bottom type (skirt or dress)")],
    multiclass=[
        ("pose", [p for p in _POSE if p[0] in ("frontal", "lateral", "back")]),
        ("motion", [m for m in _MOTION if m[0] in ("walking", "running", "staying")]),
        ("top colour", _colours("upper body clothing", _SYN_TOP)),
        ("bottom colour", _colours("lower body clothing", _SYN_BOTTOM)),
    ],
    published=["top short", "bottom short", "shoulder bag", "backpack", "hat", "long hair",
               "female", "frontal", "lateral", "back", "walking", "running", "staying"]
              + [f"top {c}" for c in _SYN_TOP] + [f"bottom {c}" for c in _SYN_BOTTOM],
)

ATTRIBUTE_SETS = {s.name: s for s in (MARS, DUKE, SYNTHETIC)}


def get(name: str) -> AttributeSet:
    try:
        return ATTRIBUTE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown attribute set {name!r}; "
                         f"known: {sorted(ATTRIBUTE_SETS)}") from None
