"""Our Flax SigLIP against transformers' PyTorch `SiglipModel`, through the HF checkpoint import.

The reference model is saved with `save_pretrained` and read back with
`hf_siglip.load`, so each test checks the import (names, q/k/v packing, the
pooling head's packed in-projection, layouts) and the towers together, on
every layer's tokens, the text features and the pooled image embeddings.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.backbones import hf_siglip
from vtfpar_jax.models import siglip

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def torch_siglip(cfg: siglip.SiglipConfig, seed: int = 0):
    """transformers' SiglipModel of shape `cfg`, random, float32, eval mode.

    HF's init leaves LayerNorms at 1/0 and biases at 0, which would hide a swapped
    or missing mapping; every vector is therefore perturbed as well.
    """
    torch.manual_seed(seed)
    model = transformers.SiglipModel(cfg.to_hf()).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim <= 1 or param.shape[:2] == (1, 1):   # vectors and the head's probe
                param.add_(0.1 * torch.randn_like(param))
    return model


def random_inputs(cfg: siglip.SiglipConfig, images: int, texts: int, seed: int = 0):
    """Normalised images (N, 3, H, W) and SigLIP-layout token rows: ids, then the
    end-of-text id 1, padded with it to the context length.

    Pixels are uniform in [-1, 1], the range of SigLIP's normalisation (mean and std
    0.5): SigLIP has no LayerNorm before its first block, so the size of the
    embeddings (and of float32's rounding in them) follows the pixels' directly.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(-1, 1, (images, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    tokens = np.ones((texts, cfg.context_length), np.int64)
    for row, length in zip(tokens, np.linspace(1, cfg.context_length - 1, texts).astype(int),
                           strict=True):
        row[:length] = rng.integers(2, cfg.vocab_size, length)
    return pixels, tokens


def max_deltas(model, cfg, params, pixels, tokens) -> dict[str, float]:
    """max |ours - transformers'| for each layer's tokens, text features, image embeddings."""
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=torch.from_numpy(pixels),
                                    output_hidden_states=True).hidden_states
        text = model.get_text_features(input_ids=torch.from_numpy(tokens)).pooler_output.numpy()
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
    assert text.shape == (len(tokens), cfg.projection_dim)
    assert image.shape == (len(pixels), cfg.vision.width)
    assert len(hidden) == cfg.vision.layers + 1

    images_nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    ours_layers = np.asarray(siglip.image_features(cfg, params, images_nhwc))
    assert ours_layers.shape == (cfg.vision.layers + 1, len(pixels), cfg.grid_size ** 2,
                                 cfg.vision.width)
    deltas = {f"layer_{i}": float(np.abs(ours_layers[i] - h.numpy()).max())
              for i, h in enumerate(hidden)}
    ours_text = np.asarray(siglip.text_features(cfg, params, jnp.asarray(tokens, jnp.int32)))
    deltas["text_features"] = float(np.abs(ours_text - text).max())
    ours_image = np.asarray(siglip.VisionTower.embeddings(cfg, params, images_nhwc))
    deltas["image_embeddings"] = float(np.abs(ours_image - image.numpy()).max())
    # A check that compares near-zero numbers proves nothing: the references must be sizeable.
    assert np.abs(hidden[-1].numpy()).max() > 0.5 and np.abs(text).max() > 0.1
    assert np.abs(image.numpy()).max() > 0.1
    return deltas


def max_sizes(model, pixels) -> dict[str, float]:
    """max |x| of transformers' tokens, per layer."""
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=torch.from_numpy(pixels),
                                    output_hidden_states=True).hidden_states
    return {f"layer_{i}": float(h.abs().max()) for i, h in enumerate(hidden)}


def import_reference(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    return hf_siglip.load(folder)


def test_tiny_parity(tmp_path):
    cfg = siglip.tiny()
    model = torch_siglip(cfg)
    loaded_cfg, params = import_reference(model, tmp_path)
    assert loaded_cfg == cfg
    deltas = max_deltas(model, cfg, params, *random_inputs(cfg, images=3, texts=5))
    print("tiny max |delta|:", deltas)
    assert max(deltas.values()) <= 1e-5, deltas


@pytest.mark.slow
def test_base16_parity_and_bfloat16(tmp_path):
    cfg = siglip.base16()
    model = torch_siglip(cfg)
    loaded_cfg, params = import_reference(model, tmp_path)
    assert loaded_cfg == cfg
    # Every parameter of the reference lands in our tree, no more, no less.
    ours = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert ours == sum(p.numel() for p in model.parameters())

    pixels, tokens = random_inputs(cfg, images=2, texts=4)
    deltas = max_deltas(model, cfg, params, pixels, tokens)
    print("SigLIP B/16 max |delta| float32:", deltas)
    # SigLIP normalises nothing before its first block, so its residual stream grows
    # with depth: under transformers' random init the last layers reach |x| ~ 14, where
    # one float32 ulp is 9.5e-7, and torch's and XLA's matmuls sum 768-3072 products
    # in different orders. There 1e-5 is about ten ulps (measured: 1.2e-5 at layer 12,
    # 4e-6 at layer 0, the patch embedding alone); so the bound is 1e-5 times the
    # layer's size where that exceeds one, 1e-5 itself elsewhere.
    sizes = max_sizes(model, pixels)
    for name, delta in deltas.items():
        assert delta <= 1e-5 * max(1.0, sizes.get(name, 1.0)), (name, delta, sizes.get(name))
    # Against transformers in float64 (exact, for this purpose), our float32 is within
    # 1e-5 on every layer and the text features: the difference above is both sides'
    # float32 rounding (torch's float32 is 4e-6 to 7e-6 from float64 on these layers).
    images_nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    ours = np.asarray(siglip.image_features(cfg, params, images_nhwc))
    ours_text = np.asarray(siglip.text_features(cfg, params, jnp.asarray(tokens, jnp.int32)))
    exact = model.double()
    with torch.no_grad():
        hidden = exact.vision_model(pixel_values=torch.from_numpy(pixels).double(),
                                    output_hidden_states=True).hidden_states
        text = exact.get_text_features(input_ids=torch.from_numpy(tokens)).pooler_output
    to_exact = {f"layer_{i}": float(np.abs(ours[i] - h.numpy()).max())
                for i, h in enumerate(hidden)}
    to_exact["text_features"] = float(np.abs(ours_text - text.numpy()).max())
    print("SigLIP B/16 max |delta| float32 vs transformers float64:", to_exact)
    assert max(to_exact.values()) <= 1e-5, to_exact

    # bfloat16 compute (float32 params): the error relative to each layer's size, as
    # for CLIP (tests/test_clip.py says why an absolute bound cannot hold).
    images = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    full = np.asarray(siglip.image_features(cfg, params, images))
    half = np.asarray(siglip.image_features(cfg, params, images, dtype=jnp.bfloat16),
                      np.float32)
    error = half - full
    rms = np.sqrt((error ** 2).mean(axis=(1, 2, 3)) / (full ** 2).mean(axis=(1, 2, 3)))
    print("SigLIP B/16 bfloat16 vs float32 per layer: rms(delta) / rms(x)",
          rms.round(5).tolist())
    assert rms.max() <= 2e-2, rms


def test_so400m_shapes():
    """So400m's tree and feature shapes, traced only (no weights are allocated), and its
    parameter count against transformers' model built on the meta device."""
    cfg = siglip.so400m14()
    shapes = jax.eval_shape(lambda: siglip.init_params(cfg, jax.random.key(0)))
    with torch.device("meta"):
        reference = transformers.SiglipModel(cfg.to_hf())
    assert (sum(leaf.size for leaf in jax.tree.leaves(shapes))
            == sum(p.numel() for p in reference.parameters()))
    images = jax.ShapeDtypeStruct((2, 384, 384, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((3, 64), jnp.int32)
    feats = jax.eval_shape(lambda p, x: siglip.image_features(cfg, p, x), shapes, images)
    assert feats.shape == (28, 2, 729, 1152)
    text = jax.eval_shape(lambda p, t: siglip.text_features(cfg, p, t), shapes, tokens)
    assert text.shape == (3, 1152)
