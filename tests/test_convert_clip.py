"""Weight import: OpenAI files (state dict, TorchScript, unsafe pickles), HF folders, bad input."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.backbones import hf_clip, openai_clip
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.models import clip

torch = pytest.importorskip("torch")

_OPENAI_BLOCK = (  # OpenAI residual-block names -> ours, written out here independently
    ("ln_1.weight", "ln_1/scale", False), ("ln_1.bias", "ln_1/bias", False),
    ("ln_2.weight", "ln_2/scale", False), ("ln_2.bias", "ln_2/bias", False),
    ("attn.in_proj_weight", "attn/qkv/kernel", True),
    ("attn.in_proj_bias", "attn/qkv/bias", False),
    ("attn.out_proj.weight", "attn/out/kernel", True),
    ("attn.out_proj.bias", "attn/out/bias", False),
    ("mlp.c_fc.weight", "fc1/kernel", True), ("mlp.c_fc.bias", "fc1/bias", False),
    ("mlp.c_proj.weight", "fc2/kernel", True), ("mlp.c_proj.bias", "fc2/bias", False),
)


def leaf(params, path):
    for name in path.split("/"):
        params = params[name]
    return np.asarray(params)


def openai_state_dict(cfg, params) -> dict[str, np.ndarray]:
    """Our params under OpenAI's state-dict names and layouts."""
    state = {
        "visual.conv1.weight": leaf(params, "vision/patch_embed/kernel").transpose(3, 2, 0, 1),
        "visual.class_embedding": leaf(params, "vision/class_embedding"),
        "visual.positional_embedding": leaf(params, "vision/position_embedding"),
        "visual.ln_pre.weight": leaf(params, "vision/pre_layernorm/scale"),
        "visual.ln_pre.bias": leaf(params, "vision/pre_layernorm/bias"),
        "visual.ln_post.weight": leaf(params, "vision/post_layernorm/scale"),
        "visual.ln_post.bias": leaf(params, "vision/post_layernorm/bias"),
        "visual.proj": leaf(params, "vision/projection/kernel"),
        "token_embedding.weight": leaf(params, "text/token_embedding/embedding"),
        "positional_embedding": leaf(params, "text/position_embedding"),
        "ln_final.weight": leaf(params, "text/final_layernorm/scale"),
        "ln_final.bias": leaf(params, "text/final_layernorm/bias"),
        "text_projection": leaf(params, "text/projection/kernel"),
        "logit_scale": leaf(params, "logit_scale"),
    }
    for prefix, tower in (("visual.transformer", "vision"), ("transformer", "text")):
        for i in range(getattr(cfg, tower).layers):
            for src, dst, is_linear in _OPENAI_BLOCK:
                value = leaf(params, f"{tower}/layers_{i}/{dst}")
                state[f"{prefix}.resblocks.{i}.{src}"] = value.T.copy() if is_linear else value
    return {k: np.array(v, dtype=np.float32, order="C") for k, v in state.items()}


def assert_same_params(a, b):
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


@pytest.fixture(scope="module")
def tiny():
    """A tiny CLIP with a small vocabulary: (cfg, params, OpenAI-named state dict).

    OpenAI's files do not record head counts: the import infers width // 64 and an
    MLP of 4 x width, as OpenAI's own `build_model` does, so this config follows suit.
    """
    cfg = clip.ClipConfig(vision=clip.TowerConfig(128, 2, 2, 512),
                          text=clip.TowerConfig(64, 2, 1, 256), image_size=32, patch_size=8,
                          vocab_size=1000, projection_dim=32)
    # Every leaf random (LayerNorm scales too), so that any misplaced tensor shows.
    rng = np.random.default_rng(3)
    shapes = jax.eval_shape(lambda: clip.init_params(cfg, jax.random.key(0)))
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    return cfg, params, openai_state_dict(cfg, params)


# ----------------------------------------------------------------------------- OpenAI


@pytest.mark.slow
def test_openai_fixture_text_features(openpar_case):
    """The published model's text features (openpar_parity fixture) from its CLIP weights."""
    case = openpar_case("default")
    state = {k[len("clip/"):]: v for k, v in case["state_dict"].items() if k.startswith("clip/")}
    cfg, params = openai_clip.load(state)
    assert cfg == clip.vit_b16()
    expected = case["expected"]
    features = np.asarray(clip.text_features(cfg, params, jnp.asarray(expected["tokens"])))
    delta = float(np.abs(features - expected["text_features"]).max())
    print("OpenAI fixture text_features max |delta|:", delta)
    assert delta <= 1e-4


def test_openai_state_dict_file(tiny, tmp_path):
    cfg, params, state = tiny
    path = tmp_path / "state.pt"
    # OpenAI's metadata buffers ride along in real files and must be accepted.
    torch.save({**{k: torch.from_numpy(v) for k, v in state.items()},
                "context_length": torch.tensor(77)}, path)
    loaded_cfg, loaded = openai_clip.load(path)
    assert loaded_cfg == cfg
    assert_same_params(loaded, params)


class _Holder(torch.nn.Module):
    """A module tree whose state dict has exactly the given dotted names."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        super().__init__()
        children: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            if rest:
                children.setdefault(head, {})[rest] = value
            else:
                self.register_parameter(head, torch.nn.Parameter(torch.from_numpy(value)))
        for name, sub in children.items():
            self.add_module(name, _Holder(sub))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_openai_torchscript_archive(tiny, tmp_path):
    """OpenAI's released files are TorchScript archives: torch.jit.load, not a pickle."""
    cfg, params, state = tiny
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(_Holder(state)).save(str(path))
    loaded_cfg, loaded = openai_clip.load(path)
    assert loaded_cfg == cfg
    assert_same_params(loaded, params)


class _RunsCode:
    """Unpickling this calls open(marker, 'w'): code execution, which must never happen."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def unsafe_pickle(tiny, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "unsafe.pt"
    state = {k: torch.from_numpy(v) for k, v in tiny[2].items()}
    torch.save({**state, "payload": _RunsCode(str(marker))}, path)
    assert not marker.exists()
    return path, marker


def test_openai_refuses_pickle_that_runs_code(unsafe_pickle):
    path, marker = unsafe_pickle
    with pytest.raises(WeightImportError) as info:
        openai_clip.load(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "unpickling ran code"


def test_openai_refusal_explains_why(unsafe_pickle):
    path, _ = unsafe_pickle
    with pytest.raises(WeightImportError) as info:
        openai_clip.load(path)
    message = str(info.value)
    assert "\x1b" not in message
    assert any(word in message for word in ("run code", "not allowed", "unsafe", "untrusted"))


def test_openai_missing_file(tmp_path):
    with pytest.raises(WeightImportError, match="no such file") as info:
        openai_clip.load(tmp_path / "absent.pt")
    assert "absent.pt" in str(info.value)


def test_openai_other_architecture(tmp_path):
    """A torchvision-like ResNet state dict: the first missing CLIP key is named."""
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512),
                "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(WeightImportError, match="visual.conv1.weight") as info:
        openai_clip.load(path)
    assert str(path) in str(info.value)


def test_openai_wrong_shape(tiny, tmp_path):
    path = tmp_path / "bad.pt"
    state = dict(tiny[2])
    state["visual.ln_post.bias"] = np.zeros(65, np.float32)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    with pytest.raises(WeightImportError) as info:
        openai_clip.load(path)
    message = str(info.value)
    assert all(s in message for s in (str(path), "visual.ln_post.bias", "(65,)", "(128,)"))


def test_openai_unexpected_key(tiny):
    state = {**tiny[2], "visual.extra_head.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightImportError, match="visual.extra_head.weight"):
        openai_clip.load(state)


# ----------------------------------------------------------------------------- HuggingFace


@pytest.fixture(scope="module")
def hf_folder(tiny, tmp_path_factory):
    cfg, params, _ = tiny
    folder = tmp_path_factory.mktemp("hf_tiny")
    hf_clip.save(cfg, params, folder)
    return folder


def torch_model(tiny, folder):
    """transformers' CLIPModel holding the tiny params (written with `save`)."""
    transformers = pytest.importorskip("transformers")
    hf_clip.save(tiny[0], tiny[1], folder)
    return transformers.CLIPModel.from_pretrained(folder)


def test_hf_round_trip(tiny, hf_folder):
    cfg, params, _ = tiny
    loaded_cfg, loaded = hf_clip.load(hf_folder)
    assert loaded_cfg == cfg
    assert_same_params(loaded, params)


def test_hf_save_is_read_by_transformers(tiny, hf_folder, tmp_path):
    """transformers reads what `save` wrote with nothing missing; its own save reads back."""
    transformers = pytest.importorskip("transformers")
    model, info = transformers.CLIPModel.from_pretrained(hf_folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert_same_params(hf_clip.load(tmp_path)[1], tiny[1])


def test_hf_sharded_and_position_ids(tiny, tmp_path):
    model = torch_model(tiny, tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "sharded" / hf_clip.INDEX_FILE).is_file()
    assert not (tmp_path / "sharded" / hf_clip.WEIGHTS_FILE).exists()
    # Older checkpoints also carry the position_ids buffers; they are recognised and dropped.
    import safetensors.numpy

    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[0]
    tensors = safetensors.numpy.load_file(shard)
    tensors["text_model.embeddings.position_ids"] = np.arange(77)[None]
    safetensors.numpy.save_file(tensors, shard, metadata={"format": "pt"})
    assert_same_params(hf_clip.load(tmp_path / "sharded")[1], tiny[1])


def test_hf_bfloat16_checkpoint(tiny, tmp_path):
    """numpy cannot hold bfloat16; such checkpoints still load, widened to float32."""
    model = torch_model(tiny, tmp_path / "f32")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", safe_serialization=True)
    _, loaded = hf_clip.load(tmp_path / "bf16")
    rounded = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16).astype(np.float32), tiny[1])
    assert_same_params(loaded, rounded)


def test_hf_hub_id_from_cache(tiny, hf_folder, tmp_path, monkeypatch):
    """A hub id resolves through the local cache when offline."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-clip"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in (hf_clip.CONFIG_FILE, hf_clip.WEIGHTS_FILE):
        (snapshot / name).write_bytes((hf_folder / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    cfg, _ = hf_clip.load("someone/tiny-clip")
    assert cfg == tiny[0]
    with pytest.raises(WeightImportError, match="neither an existing folder nor") as info:
        hf_clip.load("someone/not-cached")
    assert "someone/not-cached" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_hf_missing_folder_is_named_never_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    absent = str(tmp_path / "absent")
    with pytest.raises(WeightImportError, match="no such folder .a path, so not a "
                       "HuggingFace hub id.; was it moved") as info:
        hf_clip.load(absent)
    assert absent in str(info.value)


def test_hf_hub_id_neither_cached_nor_reachable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightImportError, match="'someone/absent' is neither an existing "
                       "folder nor a HuggingFace hub repo that is cached or reachable"):
        hf_clip.load("someone/absent")


def test_hf_file_instead_of_folder(hf_folder):
    with pytest.raises(WeightImportError, match="is a file"):
        hf_clip.load(hf_folder / hf_clip.WEIGHTS_FILE)


def _copy(folder, dest, skip=()):
    dest.mkdir()
    for name in os.listdir(folder):
        if name not in skip:
            (dest / name).write_bytes((folder / name).read_bytes())
    return dest


def test_hf_missing_config(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path / "c", skip=(hf_clip.CONFIG_FILE,))
    with pytest.raises(WeightImportError, match="config.json: no such file") as info:
        hf_clip.load(folder)
    assert str(folder) in str(info.value)


def test_hf_missing_weights(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path / "w", skip=(hf_clip.WEIGHTS_FILE,))
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(WeightImportError, match="model.safetensors: no such file") as info:
        hf_clip.load(folder)
    assert "pytorch_model.bin" in str(info.value) and "safe_serialization" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_hf_truncated_weights(hf_folder, tmp_path, keep):
    folder = _copy(hf_folder, tmp_path / "t")
    data = (folder / hf_clip.WEIGHTS_FILE).read_bytes()
    (folder / hf_clip.WEIGHTS_FILE).write_bytes(data[:max(int(len(data) * keep), 5)])
    with pytest.raises(WeightImportError, match="truncated or corrupted") as info:
        hf_clip.load(folder)
    assert str(folder / hf_clip.WEIGHTS_FILE) in str(info.value)


def test_hf_missing_shard(tiny, tmp_path):
    model = torch_model(tiny, tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="100KB")
    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(WeightImportError, match="no such file") as info:
        hf_clip.load(tmp_path / "sharded")
    assert shard.name in str(info.value)


def test_hf_other_model_type(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path / "m")
    config = json.loads((folder / hf_clip.CONFIG_FILE).read_text())
    config["model_type"] = "siglip"
    (folder / hf_clip.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(WeightImportError, match="'siglip', expected 'clip'") as info:
        hf_clip.load(folder)
    assert hf_clip.CONFIG_FILE in str(info.value)


@pytest.mark.parametrize("key, shape, expected", [
    ("text_model.encoder.layers.1.self_attn.k_proj.weight", (64, 32), "(64, 64)"),
    ("vision_model.post_layernorm.bias", (65,), "(128,)"),
])
def test_hf_wrong_shape(hf_folder, tmp_path, key, shape, expected):
    import safetensors.numpy

    folder = _copy(hf_folder, tmp_path / "s")
    file = folder / hf_clip.WEIGHTS_FILE
    tensors = safetensors.numpy.load_file(file)
    tensors[key] = np.zeros(shape, np.float32)
    safetensors.numpy.save_file(tensors, file)
    with pytest.raises(WeightImportError) as info:
        hf_clip.load(folder)
    message = str(info.value)
    assert all(s in message for s in (str(file), key, str(shape), expected)), message


def test_hf_unexpected_key(hf_folder, tmp_path):
    import safetensors.numpy

    folder = _copy(hf_folder, tmp_path / "u")
    file = folder / hf_clip.WEIGHTS_FILE
    tensors = safetensors.numpy.load_file(file)
    tensors["vision_model.encoder.layers.2.mlp.fc1.bias"] = np.zeros(512, np.float32)
    safetensors.numpy.save_file(tensors, file)
    with pytest.raises(WeightImportError, match="layers.2.mlp.fc1.bias") as info:
        hf_clip.load(folder)
    assert str(file) in str(info.value)


def test_random_bytes_are_not_a_checkpoint_not_a_dangerous_pickle(tmp_path):
    path = tmp_path / "random.pt"
    # Random bytes that start like neither torch.save's zip archive nor a pickle.
    path.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4095))
    with pytest.raises(WeightImportError) as info:
        openai_clip.load(path)
    message = str(info.value)
    assert f"{path}: not a PyTorch checkpoint" in message
    assert "run code" not in message


def test_a_damaged_pickle_is_called_damaged(tmp_path):
    path = tmp_path / "damaged.pt"
    path.write_bytes(pickle.PROTO + bytes([2, 37, 37, 37]))
    with pytest.raises(WeightImportError, match="its pickle is damaged") as info:
        openai_clip.load(path)
    assert "run code" not in str(info.value)
