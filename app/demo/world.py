"""The demo world: procedural clips of simple objects doing actions that need time to recognise, with ground
truth (actions with times, a caption, question/answer pairs), deterministic from a seed.

A clip is a :class:`ClipSpec` (pure data); :mod:`app.demo.render` turns it into pixels. Object motion is a
function of time (:func:`object_state`), shared by the renderer and the ground-truth tests.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

ACTIONS = ("moving left", "moving right", "moving up", "moving down", "rotating clockwise",
           "rotating counter-clockwise", "growing", "shrinking", "bouncing", "appearing", "disappearing",
           "swapping places")
VERB = {"moving left": "moves left", "moving right": "moves right", "moving up": "moves up",
        "moving down": "moves down", "rotating clockwise": "rotates clockwise",
        "rotating counter-clockwise": "rotates counter-clockwise", "growing": "grows", "shrinking": "shrinks",
        "bouncing": "bounces", "appearing": "appears", "disappearing": "disappears",
        "swapping places": "swaps places"}
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
           "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "bar")
ROTATING_SHAPES = ("triangle",)  # no rotational symmetry: a quarter turn either way ends in a different pose
SIZES = {"small": 0.11, "large": 0.17}  # half-size as a fraction of the frame's shorter side
BACKGROUNDS = ("stripes", "checks", "gradient", "noise")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    size: str
    x: float  # centre, fraction of the width
    y: float  # centre, fraction of the height
    angle: float = 0.0  # degrees, clockwise on screen

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class ActionSpec:
    """``actor`` (index into the objects) does ``action`` from ``start`` to ``end`` seconds; ``partner`` is the
    other object of a swap."""

    action: str
    actor: int
    start: float
    end: float
    partner: int | None = None

    @property
    def label(self) -> int:
        return ACTIONS.index(self.action)


@dataclass(frozen=True)
class ClipSpec:
    name: str
    width: int
    height: int
    fps: int
    duration: float
    background: str
    background_colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    objects: tuple[ObjectSpec, ...]
    actions: tuple[ActionSpec, ...]
    seed: int

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipSpec":
        data = dict(data)
        data["objects"] = tuple(ObjectSpec(**o) for o in data["objects"])
        data["actions"] = tuple(ActionSpec(**a) for a in data["actions"])
        data["background_colours"] = tuple(tuple(c) for c in data["background_colours"])
        return cls(**data)


@dataclass
class ObjectState:
    x: float
    y: float
    scale: float
    angle: float
    visible: bool


def object_state(spec: ClipSpec, index: int, t: float) -> ObjectState:
    """Where object ``index`` is at time ``t`` (seconds): its actions applied in time order."""
    obj = spec.objects[index]
    state = ObjectState(obj.x, obj.y, 1.0, obj.angle, True)
    for action in spec.actions:
        if action.actor != index and action.partner != index:
            continue
        progress = min(max((t - action.start) / (action.end - action.start), 0.0), 1.0)
        smooth = progress * progress * (3 - 2 * progress)
        _apply(spec, action, index, smooth, progress, state)
    return state


SHIFT = 0.4  # how far a move goes, in frame fractions


def _apply(spec: ClipSpec, action: ActionSpec, index: int, smooth: float, progress: float, s: ObjectState) -> None:
    kind = action.action
    if kind == "moving left":
        s.x -= SHIFT * smooth
    elif kind == "moving right":
        s.x += SHIFT * smooth
    elif kind == "moving up":
        s.y -= SHIFT * smooth
    elif kind == "moving down":
        s.y += SHIFT * smooth
    elif kind == "rotating clockwise":
        s.angle += 90 * smooth
    elif kind == "rotating counter-clockwise":
        s.angle -= 90 * smooth
    elif kind == "growing":
        s.scale *= 1 + 0.9 * smooth
    elif kind == "shrinking":
        s.scale *= 1 - 0.6 * smooth
    elif kind == "bouncing":
        s.y -= 0.25 * abs(math.sin(2 * math.pi * progress))  # two hops
    elif kind == "appearing":
        s.visible = s.visible and progress > 0.5
    elif kind == "disappearing":
        s.visible = s.visible and progress <= 0.5
    elif kind == "swapping places":
        other = spec.objects[action.partner if index == action.actor else action.actor]
        me = spec.objects[index]
        s.x += (other.x - me.x) * smooth
        s.y += (other.y - me.y) * smooth - 0.15 * math.sin(math.pi * smooth) * (1 if index == action.actor else -1)


# -- sampling a world -------------------------------------------------------------------------------------------
FRAME_SIZES = ((160, 120), (144, 144), (176, 132), (128, 96))
FRAME_RATES = (8, 10, 12)


@dataclass
class WorldConfig:
    train: int = 600
    val: int = 60
    test: int = 120
    seed: int = 0
    long_fraction: float = 0.15  # clips with 2-3 actions in sequence (for moment search)


def sample_clip(rng: random.Random, name: str, long: bool) -> ClipSpec:
    """One clip: 1-3 objects of distinct colours; a single action (3-5 s) or 2-3 actions in sequence."""
    width, height = rng.choice(FRAME_SIZES)
    fps = rng.choice(FRAME_RATES)
    count = rng.choice((1, 2, 2, 3))
    steps = rng.choice((2, 3)) if long else 1
    actions_wanted = [rng.choice(ACTIONS) for _ in range(steps)]
    if steps > 1:
        actions_wanted = _sequence(rng, steps)
    if "swapping places" in actions_wanted:
        count = max(count, 2)
    colours = rng.sample(sorted(COLOURS), count)
    rotates = any(a.startswith("rotating") for a in actions_wanted)
    objects = []
    slots = _slots(rng, count)
    for i in range(count):
        shape = rng.choice(ROTATING_SHAPES) if i == 0 and rotates else rng.choice(SHAPES)
        x, y = slots[i]
        objects.append(ObjectSpec(shape, colours[i], rng.choice(sorted(SIZES)), x, y,
                                  rng.choice((0.0, 15.0, -15.0)) if i == 0 and rotates else 0.0))
    duration = 0.0
    actions = []
    for kind in actions_wanted:
        length = rng.uniform(3.0, 4.5)
        start = duration + (0.5 if not actions else 0.3)
        partner = 1 if kind == "swapping places" else None
        actions.append(ActionSpec(kind, 0, round(start, 2), round(start + length, 2), partner))
        duration = start + length
    duration = round(duration + 0.5, 2)
    dark, light = _background_colours(rng)
    spec = ClipSpec(name, width, height, fps, duration, rng.choice(BACKGROUNDS), (dark, light), tuple(objects),
                    tuple(actions), rng.randrange(2**31))
    return _keep_inside(spec)


MOVES = ("moving left", "moving right", "moving up", "moving down")


def _sequence(rng: random.Random, steps: int) -> list[str]:
    """Actions of a long clip: at most one move (so the path stays in view and clear of the others), no swap,
    appearing only first and disappearing only last (the object is seen in every step)."""
    still = [a for a in ACTIONS if a not in MOVES + ("swapping places", "appearing", "disappearing")]
    chosen = rng.sample(still, steps)
    if rng.random() < 0.5:
        chosen[rng.randrange(steps)] = rng.choice(MOVES)
    if rng.random() < 0.2:
        chosen[0] = "appearing"
    elif rng.random() < 0.2:
        chosen[-1] = "disappearing"
    return chosen


def _slots(rng: random.Random, count: int) -> list[tuple[float, float]]:
    """Starting centres far enough apart that objects do not overlap, and away from the borders."""
    columns = [0.25, 0.5, 0.75]
    rng.shuffle(columns)
    return [(c, rng.choice((0.35, 0.5, 0.65))) for c in columns[:count]]


def _background_colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    base = rng.randint(40, 90)
    tint = [rng.randint(-15, 15) for _ in range(3)]
    dark = tuple(max(0, base + t) for t in tint)
    light = tuple(min(255, c + rng.randint(25, 45)) for c in dark)
    return dark, light  # muted: the coloured objects stay the brightest, most saturated things in view


def _keep_inside(spec: ClipSpec) -> ClipSpec:
    """Lay out a moving actor: it travels along the middle row (or column) from where its move stays in the
    frame, and the other objects sit on the rows (columns) above and below its path."""
    move = next((a.action for a in spec.actions if a.action in MOVES), None)
    if move is None:
        return spec
    objects = list(spec.objects)
    actor = objects[0]
    start = {"moving left": 0.3 + SHIFT, "moving right": 0.7 - SHIFT, "moving up": 0.3 + SHIFT,
             "moving down": 0.7 - SHIFT}[move]
    horizontal = move in ("moving left", "moving right")
    x, y = (start, 0.5) if horizontal else (0.5, start)
    objects[0] = ObjectSpec(actor.shape, actor.colour, actor.size, x, y, actor.angle)
    for i in range(1, len(objects)):
        o, side = objects[i], (0.2 if i == 1 else 0.8)
        ox, oy = (o.x, side) if horizontal else (side, o.y)
        objects[i] = ObjectSpec(o.shape, o.colour, o.size, ox, oy, o.angle)
    return ClipSpec(spec.name, spec.width, spec.height, spec.fps, spec.duration, spec.background,
                    spec.background_colours, tuple(objects), spec.actions, spec.seed)


# -- ground truth in words --------------------------------------------------------------------------------------
def describe_object(spec: ClipSpec, index: int) -> str:
    o = spec.objects[index]
    return f"{o.size} {o.colour} {o.shape}"


def caption(spec: ClipSpec, action: ActionSpec | None = None) -> str:
    """E.g. "a large red circle moves left, next to a blue square" (one action, or all of them in order)."""
    steps = [action] if action is not None else list(spec.actions)
    actor = describe_object(spec, steps[0].actor)
    parts = []
    for step in steps:
        text = VERB[step.action]
        if step.action == "swapping places":
            text += f" with the {describe_object(spec, step.partner)}"
        parts.append(text)
    sentence = f"a {actor} " + (", then ".join(parts))
    others = [describe_object(spec, i) for i in range(len(spec.objects)) if i != steps[0].actor
              and not any(s.partner == i for s in steps)]
    if others:
        sentence += " next to a " + " and a ".join(others)
    return sentence


#: The action a hard-negative caption names instead: the opposite where there is one (the hardest to tell apart).
OPPOSITE = {"moving left": "moving right", "moving right": "moving left", "moving up": "moving down",
            "moving down": "moving up", "rotating clockwise": "rotating counter-clockwise",
            "rotating counter-clockwise": "rotating clockwise", "growing": "shrinking", "shrinking": "growing",
            "appearing": "disappearing", "disappearing": "appearing"}


def negative_captions(spec: ClipSpec, action: ActionSpec | None = None) -> list[str]:
    """Captions one change away from ``caption(spec, action)`` and wrong for the clip: the actor's shape, its
    colour (one no object has), its first action (the opposite, else another), and for several actions their
    order reversed. Flux-CLIP's hard negatives: a batch of random clips rarely needs shape or direction to tell
    its captions apart, so without them the tower learns to ignore both."""
    steps = [action] if action is not None else list(spec.actions)
    index = steps[0].actor
    actor = spec.objects[index]
    rng = random.Random(f"{spec.seed}/negatives/{spec.actions.index(steps[0])}/{len(steps)}")

    def with_actor(**changes: Any) -> str:
        objects = tuple(replace(o, **changes) if i == index else o for i, o in enumerate(spec.objects))
        return caption(replace(spec, objects=objects, actions=tuple(steps)))

    used = {o.colour for o in spec.objects}
    out = [with_actor(shape=rng.choice([s for s in SHAPES if s != actor.shape])),
           with_actor(colour=rng.choice([c for c in COLOURS if c not in used]))]
    first = steps[0]
    other = OPPOSITE.get(first.action) or rng.choice(
        [a for a in ACTIONS if a not in (first.action, "swapping places")])
    changed = (replace(first, action=other, partner=None), *steps[1:])
    out.append(caption(replace(spec, actions=changed)))
    if len(steps) > 1 and len({s.action for s in steps}) > 1:
        out.append(caption(replace(spec, actions=tuple(reversed(steps)))))
    return out


#: The kinds of question the world asks, by how each starts (``fluxvid demo eval`` scores the chat per kind).
QUESTION_KINDS = {"colour": "What colour is the object that ", "count": "How many objects ", "action": "What does the ",
                  "shape": "What shape is the ", "order": "What happens after the ", "swap": "Which objects swap "}


def question_kind(question: str) -> str:
    """The kind (a key of :data:`QUESTION_KINDS`) of one of the world's questions."""
    kind = next((kind for kind, start in QUESTION_KINDS.items() if question.startswith(start)), None)
    if kind is None:
        raise ValueError(f"not a question the demo world asks: {question!r}")
    return kind


def questions(spec: ClipSpec) -> list[tuple[str, str]]:
    """Question/answer pairs the video answers: colour of the actor by its action, count, shape, order."""
    pairs = []
    first = spec.actions[0]
    actor = spec.objects[first.actor]
    if first.action == "swapping places":
        partner = spec.objects[first.partner]
        pairs.append(("Which objects swap places?", f"the {actor.name} and the {partner.name}"))
    else:
        pairs.append((f"What colour is the object that {VERB[first.action]}?", actor.colour))
    pairs.append(("How many objects are there?", COUNT_WORDS[len(spec.objects)]))
    pairs.append((f"What does the {actor.colour} {actor.shape} do?", VERB[first.action]))
    pairs.append((f"What shape is the {actor.colour} object?", actor.shape))
    for before, after in zip(spec.actions, spec.actions[1:]):
        pairs.append((f"What happens after the {actor.colour} {actor.shape} {VERB[before.action]}?",
                      f"it {VERB[after.action]}"))
    return pairs
