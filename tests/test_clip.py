"""Our Flax CLIP against transformers' PyTorch `CLIPModel`, through the HF checkpoint import.

The reference model is saved with `save_pretrained` and read back with
`hf_clip.load`, so each test checks the import (names, q/k/v packing, layouts)
and the towers together, on every layer's tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.backbones import hf_clip
from vtfpar_jax.models import clip

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def torch_clip(cfg: clip.ClipConfig, seed: int = 0):
    """transformers' CLIPModel of shape `cfg`, random, float32, eval mode.

    HF's init leaves LayerNorms at 1/0 and some biases at 0, which would hide a
    swapped or missing mapping; every vector is therefore perturbed as well.
    """
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg.to_hf()).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim <= 1:
                param.add_(0.1 * torch.randn_like(param))
    return model


def random_inputs(cfg: clip.ClipConfig, images: int, texts: int, seed: int = 0):
    """Normalised images (N, 3, H, W) and OpenAI-layout token rows of varied lengths."""
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((images, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    tokens = np.zeros((texts, cfg.context_length), np.int64)
    for row, length in zip(tokens, np.linspace(1, cfg.context_length - 2, texts).astype(int),
                           strict=True):
        row[0] = 49406
        row[1:length + 1] = rng.integers(1, 49406, length)
        row[length + 1] = 49407
    return pixels, tokens


def max_deltas(model, cfg, params, pixels, tokens) -> dict[str, float]:
    """max |ours - transformers'| for each layer's tokens, text features, image embeddings."""
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=torch.from_numpy(pixels),
                                    output_hidden_states=True).hidden_states
        text = model.get_text_features(input_ids=torch.from_numpy(tokens))
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels))
    # transformers 5 returns output objects whose pooler_output is the projection.
    text = getattr(text, "pooler_output", text).numpy()
    image = getattr(image, "pooler_output", image).numpy()
    assert text.shape == (len(tokens), cfg.projection_dim)
    assert image.shape == (len(pixels), cfg.projection_dim)
    assert len(hidden) == cfg.vision.layers + 1

    images_nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    ours_layers = np.asarray(clip.image_features(cfg, params, images_nhwc))
    assert ours_layers.shape == (cfg.vision.layers + 1, len(pixels), cfg.grid_size ** 2 + 1,
                                 cfg.vision.width)
    deltas = {f"layer_{i}": float(np.abs(ours_layers[i] - h.numpy()).max())
              for i, h in enumerate(hidden)}
    ours_text = np.asarray(clip.text_features(cfg, params, jnp.asarray(tokens, jnp.int32)))
    deltas["text_features"] = float(np.abs(ours_text - text).max())
    ours_image = np.asarray(clip.VisionTower.embeddings(cfg, params, images_nhwc))
    deltas["image_embeddings"] = float(np.abs(ours_image - image).max())
    # A check that compares near-zero numbers proves nothing: the references must be sizeable.
    assert np.abs(hidden[-1].numpy()).max() > 0.5 and np.abs(text).max() > 0.1
    return deltas


def import_reference(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    return hf_clip.load(folder)


def test_tiny_parity(tmp_path):
    cfg = clip.tiny()
    model = torch_clip(cfg)
    loaded_cfg, params = import_reference(model, tmp_path)
    assert loaded_cfg == cfg
    deltas = max_deltas(model, cfg, params, *random_inputs(cfg, images=3, texts=5))
    print("tiny max |delta|:", deltas)
    assert max(deltas.values()) <= 1e-5, deltas


@pytest.mark.slow
def test_vit_b16_parity_and_bfloat16(tmp_path):
    cfg = clip.vit_b16()
    model = torch_clip(cfg)
    loaded_cfg, params = import_reference(model, tmp_path)
    assert loaded_cfg == cfg
    # Every parameter of the reference lands in our tree, no more, no less.
    ours = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert ours == sum(p.numel() for p in model.parameters()) == 149_620_737

    pixels, tokens = random_inputs(cfg, images=2, texts=4)
    deltas = max_deltas(model, cfg, params, pixels, tokens)
    print("ViT-B/16 max |delta| float32:", deltas)
    assert max(deltas.values()) <= 1e-5, deltas

    # bfloat16 compute (float32 params) against float32, layer by layer. An absolute bound
    # of 2e-2 cannot hold: the tokens reach |x| ~ 5-7, where one bfloat16 rounding (8-bit
    # mantissa) is already up to ~0.016, before twelve blocks of bfloat16 matmuls and a
    # bfloat16 residual stream. So the bound is on the error relative to each layer's
    # size (root mean square); the worst element relative to the layer's largest is printed.
    images = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    full = np.asarray(clip.image_features(cfg, params, images))
    half = np.asarray(clip.image_features(cfg, params, images, dtype=jnp.bfloat16), np.float32)
    error = half - full
    absolute = np.abs(error).max(axis=(1, 2, 3))
    worst = absolute / np.abs(full).max(axis=(1, 2, 3))
    rms = np.sqrt((error ** 2).mean(axis=(1, 2, 3)) / (full ** 2).mean(axis=(1, 2, 3)))
    print("ViT-B/16 bfloat16 vs float32 per layer: max |delta|", absolute.round(4).tolist(),
          "| max |delta| / max |x|", worst.round(4).tolist(),
          "| rms(delta) / rms(x)", rms.round(5).tolist())
    assert rms.max() <= 2e-2, rms
    # The error is bfloat16 rounding, not a different computation: it stays well under 5%.
    assert worst.max() <= 5e-2, worst


def test_vit_l14_shapes():
    """ViT-L/14's tree and feature shapes, traced only (no weights are allocated)."""
    cfg = clip.vit_l14()
    shapes = jax.eval_shape(lambda: clip.init_params(cfg, jax.random.key(0)))
    # The parameter count of transformers' openai/clip-vit-large-patch14.
    assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 427_616_513
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((3, 77), jnp.int32)
    feats = jax.eval_shape(lambda p, x: clip.image_features(cfg, p, x), shapes, images)
    assert feats.shape == (25, 2, 257, 1024)
    text = jax.eval_shape(lambda p, t: clip.text_features(cfg, p, t), shapes, tokens)
    assert text.shape == (3, 768)
