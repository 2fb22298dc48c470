"""What `track_attributes` writes: the per-track record, the annotated frames, the contact sheet.

The decisions are the published rules of `vtfpar_jax.evaluation.decisions` (binary: p >
threshold; multi-class: argmax over the group), applied to each track's
whole-track probabilities.
"""

from __future__ import annotations

import colorsys
import textwrap
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vtfpar_jax import attributes
from vtfpar_jax.evaluation import decisions
from vtfpar_jax.inference.detectors.base import intersections
from vtfpar_jax.inference.mot import Track

LABEL_ITEMS = 3     # decided attributes drawn on the video, the most probable first


def track_record(track: Track, probs: np.ndarray,
                 windows: list[tuple[int, int, np.ndarray]],
                 attribute_set: attributes.AttributeSet, threshold: float) -> dict[str, Any]:
    """tracks.json's entry for one track (`windows`: [(first frame, last frame,
    probabilities (A,))], empty without --window)."""
    decided = decisions.decide(probs, attribute_set, threshold)

    def named(p: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(attribute_set.columns, p, strict=True)}

    return {
        "id": track.id,
        "first_frame": track.boxes[0].frame,
        "last_frame": track.boxes[-1].frame,
        "num_boxes": len(track.boxes),
        "boxes": [[b.frame, round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2)]
                  for b in track.boxes],
        "probabilities": named(probs),
        "decisions": decided,
        "summary": decisions.summary({"decisions": decided}),
        "windows": [{"first_frame": first, "last_frame": last, "probabilities": named(p)}
                    for first, last, p in windows],
    }


def top_decided(record: dict[str, Any], count: int = LABEL_ITEMS) -> list[str]:
    """The `count` most probable decided attributes: present binaries by name, multi-class
    groups as group=value."""
    items = [(d["probability"], d["attribute"]) for d in record["decisions"]
             if d["kind"] == "binary" and d["present"]]
    items += [(d["probability"], f"{d['group']}={d['value']}") for d in record["decisions"]
              if d["kind"] == "multi-class"]
    return [name for _, name in sorted(items, key=lambda item: -item[0])[:count]]


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour per id, far apart for neighbouring ids (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def annotate(frame: np.ndarray, boxes: list[tuple[int, tuple[float, float, float, float]]],
             labels: dict[int, list[str]]) -> np.ndarray:
    """The frame with each (id, (x, y, w, h)) box, its id and its track's top attributes."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(max(10, frame.shape[0] // 40))
    texts, sizes = [], []
    for track_id, (x, y, w, h) in boxes:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=track_colour(track_id), width=2)
        text = "\n".join([f"id {track_id}", *labels.get(track_id, [])])
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
        texts.append((text, top))
        sizes.append((right - left + 4, bottom - top + 4))
    places = place_labels([box for _, box in boxes], sizes, frame.shape[:2])
    for (track_id, _), (text, top), (lx, ly, rx, ry) in zip(boxes, texts, places, strict=True):
        draw.rectangle([lx, ly, rx, ry], fill=(0, 0, 0))
        draw.multiline_text((lx + 2, ly + 2 - top), text, fill=track_colour(track_id),
                            font=font)
    return np.asarray(image)


def place_labels(boxes: list[tuple[float, float, float, float]], sizes: list[tuple[int, int]],
                 frame_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Each label's (x0, y0, x1, y1): above its (x, y, w, h) box, else below it, else inside
    its top, the first that covers none of the labels placed before and no person's box
    (the one covering least if none is free), kept inside the (H, W) frame. People close
    together on a small frame had their labels drawn over each other's."""
    corners = [(x, y, x + w, y + h) for x, y, w, h in boxes]
    placed: list[tuple[float, float, float, float]] = []
    for (x, y, _, h), size in zip(boxes, sizes, strict=True):
        others = placed + corners
        candidates = [_inside((x, y - size[1] - 2), size, frame_size),
                      _inside((x, y + h + 2), size, frame_size),
                      _inside((x + 2, y + 2), size, frame_size)]
        covered = intersections(np.array(candidates), np.array(others)).sum(axis=1)
        placed.append(candidates[int(np.argmin(covered))])
    return placed


def _inside(corner: tuple[float, float], size: tuple[int, int],
            frame_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A (w, h) rectangle at its top-left `corner`, moved into the (H, W) frame."""
    (w, h), (frame_h, frame_w) = size, frame_size
    x = min(max(corner[0], 0), max(frame_w - w, 0))
    y = min(max(corner[1], 0), max(frame_h - h, 0))
    return x, y, x + w, y + h


def contact_sheet(rows: list[dict[str, Any]], frames: int) -> Image.Image:
    """One row per track: id and frame span, its sampled crops, its decided attributes.

    rows: [{'record': track_record(...), 'thumbnails': (T, h, w, 3) uint8}].
    """
    thumb_h, thumb_w = (rows[0]["thumbnails"].shape[1:3] if rows else (96, 48))
    label_w, text_w, pad = 120, 300, 6
    row_h = thumb_h + 2 * pad
    width = label_w + frames * (thumb_w + pad) + text_w
    header_h = 28
    sheet = Image.new("RGB", (width, header_h + max(1, len(rows)) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(14), ImageFont.load_default(11)
    draw.text((pad, 6), f"{len(rows)} track(s); {frames} sampled frames each" if rows else
              "no tracks found", fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        record, top = row["record"], header_h + i * row_h
        draw.text((pad, top + pad), f"id {record['id']}", fill=track_colour(record["id"]),
                  font=font)
        draw.text((pad, top + pad + 20), f"frames {record['first_frame']}-"
                  f"{record['last_frame']}\n{record['num_boxes']} boxes", fill=(0, 0, 0),
                  font=small)
        for t, thumbnail in enumerate(row["thumbnails"]):
            sheet.paste(Image.fromarray(thumbnail), (label_w + t * (thumb_w + pad), top + pad))
        lines = [d["attribute"] for d in record["decisions"]
                 if d["kind"] == "binary" and d["present"]]
        lines = (textwrap.wrap(", ".join(lines), 48) if lines
                 else ["(no binary attribute present)"])
        lines += [f"{d['group']}: {d['value']} ({d['probability']:.2f})"
                  for d in record["decisions"] if d["kind"] == "multi-class"]
        draw.multiline_text((label_w + frames * (thumb_w + pad), top + pad), "\n".join(lines),
                            fill=(0, 0, 0), font=small)
    return sheet
