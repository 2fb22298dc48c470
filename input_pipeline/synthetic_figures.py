"""Procedural pedestrian tracklets whose looks follow `vtfpar_jax.attributes.SYNTHETIC`.

A tracklet is drawn from one `numpy.random.Generator`, so the same seed gives
the same frames and labels on any machine. Every column of the label vector
has a visible cause in the pixels (that is the point: a model that learns
here has learnt to look):

- top / bottom colour: the torso and legs are filled with that colour;
- top short: forearms in skin colour; bottom short: lower legs in skin colour;
- shoulder bag: a strap across the torso and a bag at the hip;
- backpack: a box on the back (whole from behind, jutting out from the side,
  only the straps from the front);
- hat: a brimmed hat; long hair: hair down to the shoulders;
- female: narrower shoulders and a flared, skirt-like hip line;
- pose: frontal (eyes and mouth), lateral (profile with a nose, narrow body),
  back (no face, hair covers the head);
- motion: legs and arms swing and the figure drifts: slowly when walking,
  fast and far when running, not at all when staying.

Nuisances that a real detector crop has too: a cluttered static background,
an occluding block on some frames, blur, jitter of scale and position, and
JPEG compression at a random quality.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vtfpar_jax import attributes

SYN = attributes.SYNTHETIC
# RGB of the colour classes, in the column order of the attribute set.
TOP_RGB = {"black": (25, 25, 25), "white": (235, 235, 235), "red": (200, 30, 30),
           "blue": (30, 60, 200), "green": (30, 150, 50), "yellow": (230, 205, 30)}
BOTTOM_RGB = {"black": (25, 25, 25), "white": (230, 230, 230), "blue": (40, 60, 160),
              "brown": (115, 70, 30), "gray": (128, 128, 128)}
# Drawing happens at this multiple of the stored size, then a box filter
# downsamples: thin limbs stay visible instead of aliasing away.
SUPERSAMPLE = 4


def _column(name: str) -> int:
    return SYN.columns.index(name)


def _group(name: str) -> tuple[int, ...]:
    return next(g.columns for g in SYN.groups if g.name == name)


def _class_names(group: str) -> list[str]:
    return [SYN.columns[c].split(": ", 1)[1] for c in _group(group)]


@dataclasses.dataclass(frozen=True)
class Look:
    """The attributes of one tracklet, drawn once and shared by all its frames."""

    top_short: bool
    bottom_short: bool
    shoulder_bag: bool
    backpack: bool
    hat: bool
    long_hair: bool
    female: bool
    pose: str      # 'frontal' | 'lateral' | 'back'
    motion: str    # 'walking' | 'running' | 'staying'
    top: str
    bottom: str

    def labels(self) -> np.ndarray:
        """(A,) uint8 0/1 vector in SYNTHETIC column order."""
        out = np.zeros(SYN.num_attributes, np.uint8)
        for name, on in [("top length (short)", self.top_short),
                         ("bottom length (short)", self.bottom_short),
                         ("shoulder bag", self.shoulder_bag), ("backpack", self.backpack),
                         ("hat", self.hat), ("hair (long)", self.long_hair),
                         ("gender (female)", self.female)]:
            out[_column(name)] = on
        for group, value in [("pose", self.pose), ("motion", self.motion),
                             ("top colour", self.top), ("bottom colour", self.bottom)]:
            out[_column(f"{group}: {value}")] = 1
        return out


def draw_look(rng: np.random.Generator) -> Look:
    """Attributes with positive rates of roughly 0.3..0.5, so every column is learnable."""
    female = rng.random() < 0.45
    return Look(
        top_short=rng.random() < 0.4, bottom_short=rng.random() < 0.35,
        shoulder_bag=rng.random() < 0.35, backpack=rng.random() < 0.35,
        hat=rng.random() < 0.3,
        # Correlated with gender as in real data, yet each alone stays decidable.
        long_hair=rng.random() < (0.65 if female else 0.25),
        female=female,
        pose=str(rng.choice(_class_names("pose"))),
        motion=str(rng.choice(_class_names("motion"))),
        top=str(rng.choice(_class_names("top colour"))),
        bottom=str(rng.choice(_class_names("bottom colour"))))


def _jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int],
                amount: int = 15) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _muted(rng: np.random.Generator, low: int = 50, high: int = 200) -> np.ndarray:
    """A greyish colour: streets and walls are far less saturated than clothes, which
    is what lets a person be told from the background by colour at all."""
    return np.clip(rng.integers(low, high) + rng.integers(-25, 26, size=3), 0, 255)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A static street-like background: a vertical gradient plus random blocks."""
    h, w = size
    top, bottom = _muted(rng), _muted(rng)
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):
        x0, x1 = sorted(rng.integers(-w // 4, w + w // 4, size=2))
        y0, y1 = sorted(rng.integers(-h // 4, h + h // 4, size=2))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in _muted(rng, 30, 230)))
    return image


@dataclasses.dataclass
class _Style:
    """Per-tracklet colours and motion constants derived from a Look."""

    skin: tuple[int, ...]
    hair: tuple[int, ...]
    top: tuple[int, ...]
    bottom: tuple[int, ...]
    hat: tuple[int, ...]
    bag: tuple[int, ...]
    facing: int           # +1 right, -1 left (lateral pose and drift direction)
    swing: float          # leg swing amplitude, in figure widths
    speed: float          # swing phase advance per frame, radians
    drift: float          # horizontal drift per frame, in figure widths


def _style(rng: np.random.Generator, look: Look) -> _Style:
    swing, speed, drift = {"walking": (0.18, 0.7, 0.03), "running": (0.35, 1.5, 0.09),
                           "staying": (0.0, 0.0, 0.0)}[look.motion]
    return _Style(
        skin=_jitter_rgb(rng, (225, 180, 140), 20),
        hair=_jitter_rgb(rng, ((55, 35, 20), (140, 100, 50))[rng.random() < 0.3], 10),
        top=_jitter_rgb(rng, TOP_RGB[look.top]), bottom=_jitter_rgb(rng, BOTTOM_RGB[look.bottom]),
        hat=_jitter_rgb(rng, (90, 60, 140), 60), bag=_jitter_rgb(rng, (150, 100, 40), 40),
        facing=1 if rng.random() < 0.5 else -1, swing=swing, speed=speed, drift=drift)


def _draw_figure(draw: ImageDraw.ImageDraw, look: Look, style: _Style, cx: float, top_y: float,
                 height: float, phase: float) -> None:
    """One pose of the figure; (cx, top_y) is the crown of the head, units are pixels."""
    u = height / 8.0                                  # one head height
    lateral = look.pose == "lateral"
    shoulder = (0.75 if look.female else 1.0) * (0.7 if lateral else 1.0) * u
    hip = (0.85 if look.female else 0.7) * (0.7 if lateral else 1.0) * u
    neck_y, hip_y, knee_y, foot_y = top_y + u, top_y + 3.6 * u, top_y + 5.8 * u, top_y + 8 * u
    swing = np.sin(phase) * style.swing * 2 * u
    limb = max(1.0, 0.32 * u)

    def leg(sign: float) -> None:
        if lateral:
            foot = (cx + sign * swing, foot_y)
            knee = (cx + sign * swing * 0.5, knee_y)
        else:   # seen from front/back a swinging leg shows as a lifted foot
            lift = max(0.0, sign * np.sin(phase)) * style.swing * u
            foot = (cx + sign * 0.35 * u, foot_y - lift)
            knee = (cx + sign * 0.35 * u, knee_y - lift / 2)
        start = (cx + (0 if lateral else sign * 0.35 * u), hip_y)
        draw.line([start, knee], fill=style.bottom, width=int(limb * 1.3))
        draw.line([knee, foot], fill=style.skin if look.bottom_short else style.bottom,
                  width=int(limb * 1.2))
        draw.line([foot, (foot[0] + (style.facing * 0.3 * u if lateral else 0), foot[1])],
                  fill=(20, 20, 20), width=int(limb))

    def arm(sign: float) -> None:
        reach = -sign * swing * 0.8 if lateral else 0.0
        shoulder_xy = (cx + (0 if lateral else sign * shoulder), neck_y + 0.3 * u)
        elbow = (shoulder_xy[0] + reach * 0.5 + (0 if lateral else sign * 0.15 * u),
                 neck_y + 1.5 * u)
        hand = (shoulder_xy[0] + reach + (0 if lateral else sign * 0.2 * u), neck_y + 2.7 * u)
        draw.line([shoulder_xy, elbow], fill=style.top, width=int(limb))
        draw.line([elbow, hand], fill=style.skin if look.top_short else style.top,
                  width=int(limb * 0.9))

    # Back layer: things hidden behind the body in this view.
    if look.backpack and lateral:
        bx = cx - style.facing * shoulder
        draw.rectangle([min(bx, bx - style.facing * 0.7 * u), neck_y + 0.3 * u,
                        max(bx, bx - style.facing * 0.7 * u), neck_y + 2.0 * u], fill=style.bag)
    if look.long_hair and not lateral:
        draw.rectangle([cx - 0.6 * u, top_y + 0.4 * u, cx + 0.6 * u, neck_y + 0.9 * u],
                       fill=style.hair)
    leg(1.0)
    leg(-1.0)
    # Torso: a trapezoid, flared at the hip for the female cue (skirt-like line).
    draw.polygon([(cx - shoulder, neck_y + 0.2 * u), (cx + shoulder, neck_y + 0.2 * u),
                  (cx + hip, hip_y), (cx - hip, hip_y)], fill=style.top)
    if look.female and not look.bottom_short:
        draw.polygon([(cx - hip, hip_y - 0.3 * u), (cx + hip, hip_y - 0.3 * u),
                      (cx + hip * 1.4, hip_y + 1.0 * u), (cx - hip * 1.4, hip_y + 1.0 * u)],
                     fill=style.bottom)
    else:
        draw.rectangle([cx - hip, hip_y - 0.3 * u, cx + hip, hip_y + 0.3 * u], fill=style.bottom)
    arm(1.0)
    if not lateral:
        arm(-1.0)
    if look.backpack and look.pose == "back":
        draw.rectangle([cx - 0.8 * shoulder, neck_y + 0.4 * u, cx + 0.8 * shoulder,
                        neck_y + 2.1 * u], fill=style.bag)
    if look.backpack and look.pose == "frontal":   # only the straps show from the front
        for sign in (-1, 1):
            x = cx + sign * 0.55 * shoulder
            draw.line([(x, neck_y + 0.2 * u), (x, neck_y + 1.6 * u)], fill=style.bag,
                      width=int(limb * 0.6))
    if look.shoulder_bag:
        side = style.facing if lateral else 1
        draw.line([(cx - side * shoulder * 0.8, neck_y + 0.3 * u),
                   (cx + side * hip * 1.1, hip_y - 0.2 * u)], fill=style.bag,
                  width=int(limb * 0.5))
        bag_x = cx + side * hip * 1.1
        draw.rectangle([bag_x - 0.35 * u, hip_y - 0.4 * u, bag_x + 0.35 * u, hip_y + 0.4 * u],
                       fill=style.bag)
    # Head.
    head = [cx - 0.45 * u, top_y, cx + 0.45 * u, top_y + u]
    draw.ellipse(head, fill=style.hair if look.pose == "back" else style.skin)
    if look.pose == "frontal":
        for sign in (-1, 1):
            ex = cx + sign * 0.18 * u
            draw.ellipse([ex - 0.07 * u, top_y + 0.4 * u, ex + 0.07 * u, top_y + 0.52 * u],
                         fill=(20, 20, 20))
        draw.line([(cx - 0.15 * u, top_y + 0.75 * u), (cx + 0.15 * u, top_y + 0.75 * u)],
                  fill=(150, 40, 40), width=max(1, int(0.08 * u)))
    elif lateral:
        nose = cx + style.facing * 0.45 * u
        draw.polygon([(nose, top_y + 0.45 * u), (nose + style.facing * 0.18 * u, top_y + 0.6 * u),
                      (nose, top_y + 0.7 * u)], fill=style.skin)
        ex = cx + style.facing * 0.22 * u
        draw.ellipse([ex - 0.07 * u, top_y + 0.4 * u, ex + 0.07 * u, top_y + 0.52 * u],
                     fill=(20, 20, 20))
        back = cx - style.facing * 0.45 * u
        # Hair over the back half of the profile (PIL angles run clockwise from 3 o'clock).
        start = 90 if style.facing > 0 else 270
        draw.pieslice(head, start, start + 180, fill=style.hair)
        if look.long_hair:
            draw.rectangle([min(back, back + style.facing * 0.35 * u), top_y + 0.4 * u,
                            max(back, back + style.facing * 0.35 * u), neck_y + 0.9 * u],
                           fill=style.hair)
    if look.pose != "back":   # a hairline over the forehead
        draw.chord([head[0], top_y - 0.05 * u, head[2], top_y + 0.55 * u], 180, 360,
                   fill=style.hair)
    if look.hat:
        draw.rectangle([cx - 0.65 * u, top_y + 0.05 * u, cx + 0.65 * u, top_y + 0.22 * u],
                       fill=style.hat)
        draw.rectangle([cx - 0.42 * u, top_y - 0.3 * u, cx + 0.42 * u, top_y + 0.12 * u],
                       fill=style.hat)


def draw_tracklet(rng: np.random.Generator, size: tuple[int, int],
                  num_frames: int, grain: float = 0.0) -> tuple[Look, list[bytes]]:
    """A look and `num_frames` JPEG-encoded frames of shape (H, W, 3) = `size`.

    grain: standard deviation, in levels of 255, of pixel noise added before
    encoding. Flat drawn colour compresses to a few coefficients and decodes
    faster than a photograph; grain gives JPEGs of a camera's size and decoding
    cost (input-pipeline benchmarks). With 0 no draw is made: builds stay as they were.
    """
    look = draw_look(rng)
    style = _style(rng, look)
    h, w = size
    big = (h * SUPERSAMPLE, w * SUPERSAMPLE)
    background = _background(rng, big)
    blur = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.3 else 0.0
    quality = int(rng.integers(70, 96))
    height0 = big[0] * rng.uniform(0.8, 0.92)
    # The figure is about height/3.3 wide; drift in those units, starting so it stays in view.
    width_px = height0 / 3.3
    direction = style.facing if look.pose == "lateral" else (1 if rng.random() < 0.5 else -1)
    travel = style.drift * width_px * (num_frames - 1)
    cx0 = big[1] / 2 - direction * travel / 2 + rng.uniform(-0.05, 0.05) * big[1]
    phase0 = rng.uniform(0, 2 * np.pi)
    occluded = np.zeros(num_frames, bool)
    if rng.random() < 0.3:   # an occluder passes in front for a run of frames
        start = rng.integers(0, num_frames)
        occluded[start:start + rng.integers(1, max(2, num_frames // 2))] = True
    occluder_rgb = tuple(int(c) for c in _muted(rng, 30, 230))
    occluder_side = rng.random() < 0.5
    frames = []
    for t in range(num_frames):
        image = background.copy()
        draw = ImageDraw.Draw(image)
        height = height0 * rng.uniform(0.96, 1.04)
        bounce = abs(np.sin(style.speed * t + phase0)) * 0.02 * height * (look.motion == "running")
        cx = cx0 + direction * style.drift * width_px * t + rng.normal(0, 0.01) * big[1]
        top_y = (big[0] - height) / 2 + rng.normal(0, 0.01) * big[0] - bounce
        _draw_figure(draw, look, style, cx, top_y, height, style.speed * t + phase0)
        if occluded[t]:
            x0 = 0 if occluder_side else big[1] * 0.6
            draw.rectangle([x0, big[0] * 0.35, x0 + big[1] * 0.4, big[0]], fill=occluder_rgb)
        image = image.resize((w, h), Image.Resampling.BOX)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        if grain:
            noisy = np.asarray(image, np.float32) + rng.normal(0.0, grain, (h, w, 3))
            image = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        frames.append(buffer.getvalue())
    return look, frames
