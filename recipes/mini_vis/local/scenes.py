"""Image-grounded scenes for recipes/mini_vis: generation, PIL rendering, sentences, captions, checks.

A :class:`Scene` is one to ``max_groups`` groups of identical objects; a group has a count (1-4),
a colour, a shape and a position (a region of the picture):

    left   x in [0.00, 0.30], y in [0.20, 0.80]        top    x in [0.30, 0.70], y in [0.00, 0.30]
    right  x in [0.70, 1.00], y in [0.20, 0.80]        bottom x in [0.30, 0.70], y in [0.70, 1.00]
    center x in [0.30, 0.70], y in [0.30, 0.70]

Groups of one scene have different positions. Each region is cut into square slots of the object
size; the objects of a group take distinct slots (a random jitter inside the slot, a one-pixel
margin), so objects never touch and every object is one connected blob of its palette colour.
Rendering is without anti-aliasing: every object pixel has exactly its palette colour, which is
what :func:`check_render` relies on to count the objects back from the picture.

Sentences (what the TTS voices read) describe a scene in one of several templates
(:data:`TEMPLATES`), e.g. "there are two red circles on the left and a blue square at the top",
"I can see three green stars left of one yellow diamond". The content words the picture
disambiguates (counts, colours, shapes, position words, relations) are marked in
:class:`Sentence.content` so that the corpus can mask exactly those. :func:`caption` gives the
canonical description used to train the image interface. :func:`verify` parses a sentence back
(independently of how it was generated) and lists every disagreement with a scene.

Everything is deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (40, 70, 225),
    "yellow": (240, 205, 20),
    "purple": (135, 45, 170),
    "orange": (250, 125, 15),
    "black": (20, 20, 20),
    "pink": (250, 125, 195),
}
BACKGROUNDS = [(236, 236, 236), (225, 232, 240), (240, 234, 222), (230, 240, 230)]  # never a palette colour
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
PLURAL = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "cross": "crosses",
}
SINGULAR = {v: k for k, v in PLURAL.items()}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
WORD_COUNTS = {v: k for k, v in COUNT_WORDS.items()}
# position -> (phrase words, region (x0, y0, x1, y1) in [0, 1] picture coordinates)
POSITIONS: dict[str, tuple[tuple[str, ...], tuple[float, float, float, float]]] = {
    "left": (("on", "the", "left"), (0.0, 0.2, 0.3, 0.8)),
    "right": (("on", "the", "right"), (0.7, 0.2, 1.0, 0.8)),
    "top": (("at", "the", "top"), (0.3, 0.0, 0.7, 0.3)),
    "bottom": (("at", "the", "bottom"), (0.3, 0.7, 0.7, 1.0)),
    "center": (("in", "the", "center"), (0.3, 0.3, 0.7, 0.7)),
}
# binary relations a template may state between group 1 and group 2, and the positions they need
RELATIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("left", "right"): ("left", "of"),
    ("right", "left"): ("right", "of"),
    ("top", "bottom"): ("above",),
    ("bottom", "top"): ("below",),
    ("left", "center"): ("left", "of"),
    ("center", "right"): ("left", "of"),
    ("right", "center"): ("right", "of"),
    ("center", "left"): ("right", "of"),
    ("top", "center"): ("above",),
    ("center", "bottom"): ("above",),
    ("bottom", "center"): ("below",),
    ("center", "top"): ("below",),
}
# content-word categories: what the picture tells and a masked word may hide
CONTENT_CATEGORIES = ("count", "colour", "shape", "position", "relation")


@dataclass(frozen=True)
class Group:
    count: int
    colour: str
    shape: str
    position: str


@dataclass
class Scene:
    scene_id: str
    groups: list[Group]
    background: tuple[int, int, int] = BACKGROUNDS[0]
    # per group, the (cx, cy, size) of each object in pixels, filled by :func:`layout`
    objects: list[list[tuple[float, float, float]]] = field(default_factory=list)
    image_size: int = 96

    def to_json(self) -> dict:
        return {
            "scene_id": self.scene_id,
            "groups": [asdict(g) for g in self.groups],
            "background": list(self.background),
            "objects": self.objects,
            "image_size": self.image_size,
        }

    @classmethod
    def from_json(cls, d: dict) -> Scene:
        return cls(
            d["scene_id"],
            [Group(**g) for g in d["groups"]],
            tuple(d["background"]),
            [[tuple(o) for o in objs] for objs in d["objects"]],
            int(d["image_size"]),
        )


@dataclass
class Sentence:
    """Words of a sentence and, per word index, its content category (absent: a function word)."""

    words: list[str]
    content: dict[int, str]
    template: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


# ---------------------------------------------------------------- scenes


def object_size(image_size: int) -> int:
    """Slot size in pixels: half the shortest region side (14 px at 96 px), so 2 x 2 slots fit everywhere."""
    return int(round(0.3 * image_size)) // 2


def slots(position: str, image_size: int) -> list[tuple[int, int, int]]:
    """Square slots (x0, y0, size) of a region; every region has at least 4 (checked)."""
    x0, y0, x1, y1 = (int(round(v * image_size)) for v in POSITIONS[position][1])
    s = object_size(image_size)
    nx, ny = (x1 - x0) // s, (y1 - y0) // s
    if nx * ny < 4:
        raise ValueError(f"image_size {image_size}: region {position!r} holds only {nx * ny} objects of {s} px (need 4)")
    ox, oy = x0 + ((x1 - x0) - nx * s) // 2, y0 + ((y1 - y0) - ny * s) // 2
    return [(ox + i * s, oy + j * s, s) for j in range(ny) for i in range(nx)]


def random_scene(
    rnd: random.Random, scene_id: str, image_size: int = 96, max_groups: int = 2, two_group_prob: float = 0.75
) -> Scene:
    """A scene of 1..max_groups groups at distinct positions, laid out (see :func:`layout`)."""
    n = 1 if max_groups == 1 or rnd.random() >= two_group_prob else rnd.randint(2, max_groups)
    positions = rnd.sample(list(POSITIONS), n)
    groups = [Group(rnd.randint(1, 4), rnd.choice(list(COLOURS)), rnd.choice(SHAPES), p) for p in positions]
    scene = Scene(scene_id, groups, rnd.choice(BACKGROUNDS), image_size=image_size)
    layout(scene, rnd)
    return scene


def layout(scene: Scene, rnd: random.Random) -> None:
    """Place each group's objects in distinct slots of its region, jittered, sized 70-100% of the slot."""
    scene.objects = []
    for g in scene.groups:
        objs = []
        for x0, y0, s in rnd.sample(slots(g.position, scene.image_size), g.count):
            size = rnd.uniform(0.7, 1.0) * (s - 2)  # one pixel of margin on each side
            slack = (s - 2 - size) / 2
            cx = x0 + s / 2 + rnd.uniform(-slack, slack)
            cy = y0 + s / 2 + rnd.uniform(-slack, slack)
            objs.append((round(cx, 2), round(cy, 2), round(size, 2)))
        scene.objects.append(objs)


def _polygon(shape: str, cx: float, cy: float, size: float) -> list[tuple[float, float]]:
    r = size / 2
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.5
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.36
        return [
            (cx - t, cy - r),
            (cx + t, cy - r),
            (cx + t, cy - t),
            (cx + r, cy - t),
            (cx + r, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + r),
            (cx - t, cy + r),
            (cx - t, cy + t),
            (cx - r, cy + t),
            (cx - r, cy - t),
            (cx - t, cy - t),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene):
    """The scene as an RGB PIL image (no anti-aliasing: object pixels are exactly palette colours)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (scene.image_size, scene.image_size), tuple(scene.background))
    draw = ImageDraw.Draw(img)
    for g, objs in zip(scene.groups, scene.objects):
        colour = COLOURS[g.colour]
        for cx, cy, size in objs:
            if g.shape == "circle":
                r = size / 2
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon(_polygon(g.shape, cx, cy, size), fill=colour)
    return img


def save_png(scene: Scene, path: str | Path) -> None:
    """Render and write atomically."""
    from asr.io_utils import atomic_path

    with atomic_path(path) as tmp:
        render(scene).save(tmp, format="PNG")


def check_render(scene: Scene, image) -> list[str]:
    """Count each group's objects back from the picture (blobs of its exact colour in its region).

    Returns the disagreements (empty when the picture shows what the scene says).
    """
    from scipy import ndimage

    arr = np.asarray(image.convert("RGB"))
    errors = []
    size = scene.image_size
    for g in scene.groups:
        mask = np.all(arr == np.array(COLOURS[g.colour], dtype=arr.dtype), axis=-1)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))  # 8-connected: thin star tips stay joined
        x0, y0, x1, y1 = (v * size for v in POSITIONS[g.position][1])
        found = 0
        for cy, cx in ndimage.center_of_mass(mask, labels, range(1, n + 1)) if n else []:
            if x0 <= cx < x1 and y0 <= cy < y1:
                found += 1
        if found != g.count:
            errors.append(f"{g.colour} {g.shape}s at {g.position}: {found} blobs in the picture, scene says {g.count}")
    return errors


# ---------------------------------------------------------------- sentences and captions


def _group_words(g: Group, rnd: random.Random | None, article_prob: float = 0.5) -> tuple[list[str], list[str]]:
    """('two red circles' words, their categories); a single object is 'a'/'an' or 'one'."""
    if g.count == 1:
        count = "one" if rnd is None or rnd.random() >= article_prob else ("an" if g.colour == "orange" else "a")
        shape = g.shape
    else:
        count, shape = COUNT_WORDS[g.count], PLURAL[g.shape]
    cats = ["count" if count not in ("a", "an") else "", "colour", "shape"]
    return [count, g.colour, shape], cats


def _pos_words(g: Group) -> tuple[list[str], list[str]]:
    words = list(POSITIONS[g.position][0])
    return words, [""] * (len(words) - 1) + ["position"]


def _be(g: Group) -> str:
    return "is" if g.count == 1 else "are"


class _Builder:
    def __init__(self):
        self.words: list[str] = []
        self.content: dict[int, str] = {}

    def add(self, words: list[str] | str, cats: list[str] | None = None) -> _Builder:
        words = words.split() if isinstance(words, str) else words
        for i, w in enumerate(words):
            if cats and cats[i]:
                self.content[len(self.words)] = cats[i]
            self.words.append(w)
        return self

    def group(self, g: Group, rnd) -> _Builder:
        return self.add(*_group_words(g, rnd))

    def pos(self, g: Group) -> _Builder:
        return self.add(*_pos_words(g))


def _t_list(scene, rnd, b, lead):
    """[lead] G1 P1 and G2 P2 (e.g. 'I can see two red circles on the left and a blue star at the top')."""
    if lead:
        b.add(lead)
    for k, g in enumerate(scene.groups):
        if k:
            b.add("and")
        b.group(g, rnd).pos(g)


def _t_there(scene, rnd, b):
    """there are G1 P1 and G2 P2 (agreement with the first group)."""
    b.add(["there", _be(scene.groups[0])])
    _t_list(scene, rnd, b, None)


def _t_front(scene, rnd, b):
    """P1 there are G1 and P2 there is G2."""
    for k, g in enumerate(scene.groups):
        if k:
            b.add("and")
        b.pos(g).add(["there", _be(g)]).group(g, rnd)


def _t_relation(scene, rnd, b):
    """G1 REL G2 (e.g. 'two red circles left of a blue square'); needs a related pair of positions."""
    g1, g2 = scene.groups[:2]
    b.group(g1, rnd).add(
        list(RELATIONS[(g1.position, g2.position)]), ["relation"] + [""] * (len(RELATIONS[(g1.position, g2.position)]) - 1)
    )
    b.group(g2, rnd)


def _t_shows(scene, rnd, b):
    """the picture shows G1 P1 and G2 P2."""
    _t_list(scene, rnd, b, "the picture shows")


def _t_look(scene, rnd, b):
    """look at the G1 P1 and the G2 P2 (no count words, but 'one' when single)."""
    _t_list(scene, rnd, b, "look at")


TEMPLATES = {
    "list": lambda s, r, b: _t_list(s, r, b, None),
    "see": lambda s, r, b: _t_list(s, r, b, "I can see"),
    "there": _t_there,
    "front": _t_front,
    "shows": _t_shows,
    "look": _t_look,
    "relation": _t_relation,
}


def templates_for(scene: Scene) -> list[str]:
    """Templates that can describe ``scene`` (the relation template needs two related groups)."""
    names = [n for n in TEMPLATES if n != "relation"]
    if len(scene.groups) == 2 and (scene.groups[0].position, scene.groups[1].position) in RELATIONS:
        names.append("relation")
    return names


def sentence(scene: Scene, rnd: random.Random, template: str | None = None) -> Sentence:
    """A sentence describing ``scene`` (random template unless given); lowercase words, no punctuation."""
    names = templates_for(scene)
    name = template or rnd.choice(names)
    if name not in names:
        raise ValueError(f"template {name!r} cannot describe scene {scene.scene_id} (usable: {names})")
    b = _Builder()
    TEMPLATES[name](scene, rnd, b)
    return Sentence([w.lower() for w in b.words], b.content, name)


def caption(scene: Scene, style: int = 0) -> str:
    """Canonical descriptions for the image stage: style 0 'two red circles on the left and ...',
    style 1 'on the left there are two red circles and ...' (counts always as number words)."""
    rnd = None  # counts as number words: the caption names every attribute explicitly
    b = _Builder()
    if style == 0:
        _t_list(scene, rnd, b, None)
    elif style == 1:
        _t_front(scene, rnd, b)
    else:
        raise ValueError(f"caption style must be 0 or 1, not {style}")
    return " ".join(b.words)


# ---------------------------------------------------------------- verification


_COUNT_RE = "one|two|three|four|a|an"
_GROUP_RE = re.compile(
    rf"\b(?P<count>{_COUNT_RE}) (?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(list(SHAPES) + list(PLURAL.values()))})\b"
)
_POS_RE = re.compile(r"\b(on the left|on the right|at the top|at the bottom|in the center)\b")
_REL_RE = re.compile(r"\b(left of|right of|above|below)\b")
_POS_OF = {" ".join(words): name for name, (words, _) in POSITIONS.items()}


def parse(text: str) -> tuple[list[dict], list[str]]:
    """Group mentions in ``text``: count, colour, shape, their position (the nearest position phrase
    right after or right before it, in the same clause) and relations between consecutive mentions.

    Returns (mentions, problems found while parsing, e.g. 'two red circle' or a dangling phrase).
    """
    text = " ".join(text.lower().split())
    problems = []
    mentions = []
    for m in _GROUP_RE.finditer(text):
        cw, shape = m["count"], m["shape"]
        count = 1 if cw in ("a", "an") else WORD_COUNTS[cw]
        plural = shape in SINGULAR
        if plural != (count > 1):
            problems.append(f"number disagreement in {m.group(0)!r}")
        if cw == "an" and m["colour"] != "orange" or cw == "a" and m["colour"] == "orange":
            problems.append(f"wrong article in {m.group(0)!r}")
        mentions.append(
            {
                "count": count,
                "colour": m["colour"],
                "shape": SINGULAR.get(shape, shape),
                "start": m.start(),
                "end": m.end(),
                "position": None,
            }
        )
    positions = [(m.start(), m.end(), _POS_OF[m.group(0)]) for m in _POS_RE.finditer(text)]
    used = set()
    for k, men in enumerate(mentions):
        # 'G on the left' (phrase directly after) or 'on the left there are G' (phrase before)
        nxt_start = mentions[k + 1]["start"] if k + 1 < len(mentions) else len(text)
        after = [p for p in positions if men["end"] <= p[0] < nxt_start and text[men["end"] : p[0]].strip() == ""]
        prv_end = mentions[k - 1]["end"] if k else 0
        before = [
            p
            for p in positions
            if prv_end <= p[0]
            and p[1] <= men["start"]
            and p not in used
            and re.fullmatch(r"\s*(there (is|are)\s*)?", text[p[1] : men["start"]])
        ]
        pick = after[0] if after else (before[-1] if before else None)
        if pick is not None:
            if pick in used:
                problems.append(f"position phrase {text[pick[0] : pick[1]]!r} claimed twice")
            used.add(pick)
            men["position"] = pick[2]
    for p in positions:
        if p not in used:
            problems.append(f"position phrase {text[p[0] : p[1]]!r} belongs to no object")
    for m in _REL_RE.finditer(text):
        left = [k for k, men in enumerate(mentions) if men["end"] <= m.start()]
        right = [k for k, men in enumerate(mentions) if men["start"] >= m.end()]
        if not left or not right:
            problems.append(f"relation {m.group(0)!r} without an object on both sides")
            continue
        mentions[left[-1]].setdefault("relations", []).append((m.group(0), right[0]))
    return mentions, problems


def _centre(scene: Scene, k: int) -> tuple[float, float]:
    objs = scene.objects[k]
    return float(np.mean([o[0] for o in objs])), float(np.mean([o[1] for o in objs]))


def verify(text: str, scene: Scene, complete: bool = True) -> list[str]:
    """Every disagreement between ``text`` and ``scene`` (empty list: the text describes the scene).

    Each mentioned group must be a group of the scene (count, colour, shape, and its position when
    one is said); relations must hold between the groups' centres; with ``complete`` every group of
    the scene must be mentioned exactly once.
    """
    mentions, errors = parse(text)
    if not mentions:
        return errors + [f"no object mentioned in {text!r}"]
    matched = []
    for men in mentions:
        cands = [
            k
            for k, g in enumerate(scene.groups)
            if (g.count, g.colour, g.shape) == (men["count"], men["colour"], men["shape"])
            and (men["position"] is None or men["position"] == g.position)
        ]
        desc = f"{men['count']} {men['colour']} {men['shape']}" + (f" at {men['position']}" if men["position"] else "")
        if not cands:
            errors.append(f"scene {scene.scene_id} has no {desc}")
            matched.append(None)
        else:
            matched.append(cands[0])
    for k, men in enumerate(mentions):
        for rel, other in men.get("relations", []):
            a, b = matched[k], matched[other]
            if a is None or b is None:
                continue
            (ax, ay), (bx, by) = _centre(scene, a), _centre(scene, b)
            ok = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]
            if not ok:
                errors.append(f"relation {rel!r} does not hold between groups {a} and {b} of scene {scene.scene_id}")
    if complete:
        for k in range(len(scene.groups)):
            n = matched.count(k)
            if n != 1:
                errors.append(f"group {k} ({scene.groups[k]}) mentioned {n} times")
    return errors
