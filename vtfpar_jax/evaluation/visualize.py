"""Pictures of predictions: a clip's frames above its attribute probabilities.

    fig = prediction_figure(frames_uint8, probs, attribute_set)
    save_prediction("clip.png", frames_uint8, probs, attribute_set)

Built on `matplotlib.figure.Figure`, never pyplot: no global figure state, no GUI
backend (savefig renders a PNG with Agg), safe in a CLI, a test or a notebook.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from vtfpar_jax import attributes
from vtfpar_jax.evaluation import decisions, metrics
from vtfpar_jax.outputs import files

DPI = 100
WIDTH_IN = 11.0
TITLE_IN = 0.45        # heights in inches, top to bottom
FRAMES_IN = 2.4
GAP_IN = 0.75          # frame captions and the legend
BAR_IN = 0.24          # per attribute
BOTTOM_IN = 0.6        # the probability axis
LABELS_IN = 2.4        # left margin for the attribute names
DECIDED = "#d95f02"    # a chosen attribute: present binary or a group's argmax
OTHER = "#c7c7c7"


def figure_size(num_attributes: int) -> tuple[float, float]:
    """(width, height) in inches of `prediction_figure` for A attributes."""
    return WIDTH_IN, TITLE_IN + FRAMES_IN + GAP_IN + BAR_IN * num_attributes + BOTTOM_IN


def pixel_size(num_attributes: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_prediction` writes."""
    width, height = figure_size(num_attributes)
    return round(width * DPI), round(height * DPI)


def prediction_figure(frames_uint8: np.ndarray, probs: np.ndarray,
                      attribute_set: attributes.AttributeSet,
                      threshold: float = metrics.PUBLISHED_THRESHOLD,
                      title: str | None = None) -> Figure:
    """The frames (T, H, W, 3) uint8 in a row; below, one bar per attribute (A,).

    Bars follow the attribute set's column order (binary attributes, then each
    multi-class group together); the decided ones (binary p > threshold, and
    the argmax of every multi-class group) are coloured and their labels bold.
    """
    frames_uint8 = np.asarray(frames_uint8)
    probs = np.asarray(probs, np.float64)
    decided = decisions.decided_columns(decisions.decide(probs, attribute_set, threshold),
                                        attribute_set)
    num = attribute_set.num_attributes
    width, height = figure_size(num)
    fig = Figure(figsize=(width, height), dpi=DPI)
    # Fixed positions in inches, so the size depends only on A (see figure_size).
    frames_top = 1 - TITLE_IN / height
    frames_bottom = frames_top - FRAMES_IN / height
    frame_grid = fig.add_gridspec(1, max(len(frames_uint8), 1), left=0.02, right=0.98,
                                  top=frames_top, bottom=frames_bottom, wspace=0.04)
    for t, frame in enumerate(frames_uint8):
        ax = fig.add_subplot(frame_grid[0, t])
        ax.imshow(frame, interpolation="nearest", aspect="equal")
        ax.set(xticks=[], yticks=[])
        ax.set_xlabel(f"frame {t + 1}", fontsize=8)
    fig.suptitle(f"{title + ': ' if title else ''}{len(frames_uint8)} frames as the model sees "
                 "them, and attribute probabilities", fontsize=11,
                 y=1 - 0.1 / height, va="top")
    ax = fig.add_axes((LABELS_IN / width, BOTTOM_IN / height, 1 - (LABELS_IN + 0.3) / width,
                       BAR_IN * num / height))
    rows = np.arange(num)
    colours = [DECIDED if c in decided else OTHER for c in range(num)]
    bars = ax.barh(rows, probs, color=colours, height=0.75)
    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_yticks(rows, labels=attribute_set.columns, fontsize=8)
    for column in decided:
        ax.get_yticklabels()[column].set_fontweight("bold")
    # A line above each multi-class group, so the group reads as one choice.
    for group in attribute_set.groups:
        if not group.is_binary and group.columns[0] > 0:
            ax.axhline(group.columns[0] - 0.5, color="#888888", linewidth=0.6)
    binary_rows = [g.columns[0] for g in attribute_set.groups if g.is_binary]
    if binary_rows:
        ax.plot([threshold, threshold], [min(binary_rows) - 0.5, max(binary_rows) + 0.5],
                linestyle="--", color="black", linewidth=0.8)
    ax.set(xlim=(0, 1.08), ylim=(num - 0.5, -0.5), xlabel="probability")   # column 0 on top
    ax.legend(handles=[Patch(color=DECIDED, label="decided"),
                       Patch(color=OTHER, label="not chosen"),
                       Line2D([], [], linestyle="--", color="black",
                              label=f"binary threshold {threshold}")],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize=8,
              frameon=False)
    return fig


def save_prediction(path: str | os.PathLike, frames_uint8: np.ndarray, probs: np.ndarray,
                    attribute_set: attributes.AttributeSet,
                    threshold: float = metrics.PUBLISHED_THRESHOLD,
                    title: str | None = None) -> str:
    """Writes `prediction_figure` as a PNG of `pixel_size(A)` pixels; returns the path."""
    fig = prediction_figure(frames_uint8, probs, attribute_set, threshold, title)
    # No bbox_inches='tight': the size stays exactly figure_size * DPI.
    files.save_figure(fig, os.fspath(path), dpi=DPI)
    return os.fspath(path)
