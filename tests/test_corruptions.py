"""Each corruption does what the table in vtfpar_jax/experiments/corruptions.py states,
deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from vtfpar_jax.experiments import corruptions
from vtfpar_jax.experiments.corruptions import CORRUPTIONS, CorruptionError, corrupt_clip

# Corruptions that draw something per tracklet (the others are fixed functions of the clip).
RANDOM = ("occlusion", "moving_occlusion", "motion_blur", "gaussian_noise", "dropped_frames",
          "dropped_frames_black")


def clip(frames=6, height=64, width=32, seed=0) -> np.ndarray:
    """Random pixels: no occluder colour, repeat or blur can go unseen in them."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), np.uint8)


def smooth_clip(frames=6, height=64, width=32) -> np.ndarray:
    """Gradients and a bar: an image where blur and JPEG lose detail gradually."""
    y, x = np.mgrid[:height, :width]
    frame = np.stack([255 * y / height, 255 * x / width, 128 + 100 * np.sin(x / 3.0)], -1)
    frame[height // 3: height // 2, width // 4: 3 * width // 4] = (250, 20, 20)
    return np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[None], frames, 0)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_zero_is_the_clip_and_others_keep_shape_and_dtype(name):
    video = clip()
    assert corrupt_clip(video, name, 0, seed=0, tracklet=3) is video
    for severity in corruptions.SEVERITIES:
        out = corrupt_clip(video, name, severity, seed=0, tracklet=3)
        assert out.shape == video.shape and out.dtype == np.uint8
        assert not np.array_equal(out, video), (name, severity)
    np.testing.assert_array_equal(video, clip())  # the input is never written to


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_seed_same_clip(name):
    a = corrupt_clip(clip(), name, 3, seed=7, tracklet=11)
    b = corrupt_clip(clip(), name, 3, seed=7, tracklet=11)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", RANDOM)
def test_another_tracklet_or_seed_another_draw(name):
    # Dropping 3 of frames 2..6 has only 10 outcomes, so one other draw may repeat it by
    # chance (1 in 10); three others all repeating it would not be chance.
    a = corrupt_clip(clip(), name, 3, seed=7, tracklet=11)
    assert any(not np.array_equal(a, corrupt_clip(clip(), name, 3, seed=7, tracklet=t))
               for t in (12, 13, 14))
    assert any(not np.array_equal(a, corrupt_clip(clip(), name, 3, seed=s, tracklet=11))
               for s in (8, 9, 10))


def _occluded(video, out):
    return (out != video).any(axis=-1)  # (T, H, W): pixels the occluder changed


@pytest.mark.parametrize("height, width", [(64, 32), (48, 48), (256, 128), (37, 23)])
@pytest.mark.parametrize("name", ["occlusion", "moving_occlusion"])
def test_occluded_area_is_the_stated_share_within_one_row(name, height, width):
    corruption = CORRUPTIONS[name]
    for tracklet in range(8):
        video = clip(height=height, width=width, seed=tracklet)
        for severity, share in zip(corruptions.SEVERITIES, corruption.levels, strict=True):
            masks = _occluded(video, corrupt_clip(video, name, severity, 0, tracklet))
            for mask in masks:
                rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
                # One solid rectangle ...
                assert mask.sum() == len(rows) * len(cols)
                assert np.ptp(rows) + 1 == len(rows) and np.ptp(cols) + 1 == len(cols)
                # ... whose area is the stated share to within one of its rows.
                assert abs(mask.sum() - share * height * width) <= len(cols), (severity, share)
            if name == "occlusion":
                assert all(np.array_equal(m, masks[0]) for m in masks)


def test_moving_occluder_moves():
    moved = 0
    for tracklet in range(10):
        video = clip(seed=tracklet)
        masks = _occluded(video, corrupt_clip(video, "moving_occlusion", 2, 0, tracklet))
        moved += not np.array_equal(masks[0], masks[-1])
    assert moved >= 8


@pytest.mark.parametrize("length", [2, 3, 8, 15, 38])
def test_motion_blur_kernel_sums_to_one_and_has_the_stated_length(length):
    for angle, axis in ((0.0, 0), (np.pi / 2, 1)):
        kernel = corruptions.motion_blur_kernel(length, angle)
        assert kernel.shape == (length, length)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
        assert (kernel >= 0).all()
        # Along the blur direction it spans exactly `length` pixels.
        assert np.count_nonzero(kernel.any(axis=axis)) == length
    diagonal = corruptions.motion_blur_kernel(length, np.pi / 4)
    assert diagonal.sum() == pytest.approx(1.0, abs=1e-12)
    # A 45 degree line of that length spans length / sqrt(2) pixels on each axis.
    assert np.count_nonzero(diagonal.any(axis=0)) <= int(np.ceil(length / np.sqrt(2))) + 1


def test_motion_blur_lengths_follow_the_frame_height():
    levels = CORRUPTIONS["motion_blur"].levels
    assert [corruptions.motion_blur_length(256, f) for f in levels] == [8, 15, 23, 31, 38]
    assert corruptions.motion_blur_length(48, levels[0]) == 2  # never the identity


@pytest.mark.parametrize("radius", [0.6, 1.0, 3.1, 7.7])
def test_disk_kernel_sums_to_one_within_its_radius(radius):
    kernel = corruptions.disk_kernel(radius)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    half = kernel.shape[0] // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    distance = np.hypot(yy, xx)
    assert (kernel[distance >= radius + 0.5] == 0).all()
    assert (kernel[distance <= radius - 0.5] == kernel.max()).all()


def test_blur_is_the_convolution_of_the_stated_kernel():
    from scipy import signal
    video = smooth_clip()
    out = corrupt_clip(video, "defocus_blur", 5, seed=0, tracklet=0)
    kernel = corruptions.disk_kernel(0.05 * video.shape[1])
    padded = np.pad(video[0, :, :, 0].astype(np.float64), kernel.shape[0] // 2, mode="edge")
    expected = signal.convolve2d(padded, kernel, mode="valid")
    assert np.abs(out[0, :, :, 0] - np.clip(np.rint(expected), 0, 255)).max() <= 1


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_noise_has_the_stated_sigma(severity):
    sigma = CORRUPTIONS["gaussian_noise"].levels[severity - 1]
    grey = np.full((6, 128, 64, 3), 128, np.uint8)   # mid-grey: nothing clips below 3 sigma
    noise = corrupt_clip(grey, "gaussian_noise", severity, 0, 0).astype(np.float64) - 128
    # Rounding to whole levels adds a variance of 1/12.
    assert np.sqrt(noise.var() - 1 / 12) == pytest.approx(sigma, rel=0.02)
    assert abs(noise.mean()) < 0.5


def test_light_and_contrast_scale_as_stated():
    video = smooth_clip()
    for severity, factor in zip(corruptions.SEVERITIES, CORRUPTIONS["low_light"].levels,
                                strict=True):
        out = corrupt_clip(video, "low_light", severity, 0, 0)
        np.testing.assert_array_equal(out, np.clip(np.rint(video * np.float32(factor)), 0, 255))
    for severity, factor in zip(corruptions.SEVERITIES, CORRUPTIONS["low_contrast"].levels,
                                strict=True):
        out = corrupt_clip(video, "low_contrast", severity, 0, 0).astype(np.float64)
        assert out.std() == pytest.approx(factor * video.astype(np.float64).std(), rel=0.02)
        assert out.mean() == pytest.approx(video.mean(), abs=0.5)


def test_jpeg_loses_more_at_each_severity():
    video = smooth_clip()
    errors = [np.abs(corrupt_clip(video, "jpeg", s, 0, 0).astype(int) - video).mean()
              for s in corruptions.SEVERITIES]
    assert errors == sorted(errors) and errors[0] > 0


@pytest.mark.parametrize("frames", [3, 6, 8])
@pytest.mark.parametrize("black", [False, True])
def test_dropped_frames_are_exactly_the_stated_share(frames, black):
    name = "dropped_frames_black" if black else "dropped_frames"
    video = clip(frames=frames)
    for severity, share in zip(corruptions.SEVERITIES, CORRUPTIONS[name].levels, strict=True):
        out = corrupt_clip(video, name, severity, seed=0, tracklet=5)
        kept = [f for f in range(frames) if np.array_equal(out[f], video[f])]
        dropped = [f for f in range(frames) if f not in kept]
        assert len(dropped) == min(frames - 1, int(np.floor(share * frames + 0.5)))
        assert 0 in kept
        for f in dropped:
            if black:
                assert not out[f].any()
            else:   # the last kept frame before it
                assert np.array_equal(out[f], video[max(k for k in kept if k < f)])
    assert [corruptions.dropped_count(6, s) for s in CORRUPTIONS[name].levels] == [1, 2, 3, 4, 5]


def test_batch_leaves_padding_rows_and_corrupts_each_row_as_its_tracklet():
    video = np.stack([clip(seed=0), clip(seed=1), np.zeros_like(clip())])
    out = corruptions.corrupt_batch(video, np.array([4, 9, -1]), "occlusion", 4, seed=2)
    np.testing.assert_array_equal(out[2], video[2])
    np.testing.assert_array_equal(out[1], corrupt_clip(video[1], "occlusion", 4, 2, 9))
    np.testing.assert_array_equal(out[0], corrupt_clip(video[0], "occlusion", 4, 2, 4))


def test_bad_names_and_severities_list_the_valid_ones():
    with pytest.raises(CorruptionError, match="did you mean 'occlusion'.*valid: occlusion, "):
        corruptions.parse_names("oclusion,motion_blur")
    assert corruptions.parse_names("all") == list(CORRUPTIONS)
    with pytest.raises(CorruptionError, match="valid severities are 1, 2, 3, 4, 5"):
        corruptions.parse_severities("1,6")
    with pytest.raises(CorruptionError, match="'high' is not a whole number"):
        corruptions.parse_severities("high")
    with pytest.raises(CorruptionError, match=r"0 \(clean\) and 1, 2, 3, 4, 5"):
        corrupt_clip(clip(), "jpeg", 9, 0, 0)
    assert corruptions.parse_severities("5,1,3") == [1, 3, 5]
    with pytest.raises(CorruptionError, match="severity 1 given more than once"):
        corruptions.parse_severities("1,1")
    with pytest.raises(CorruptionError, match="corruption occlusion given more than once"):
        corruptions.parse_names("occlusion,occlusion")
