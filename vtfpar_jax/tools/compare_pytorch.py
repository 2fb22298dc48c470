"""Side by side with the published PyTorch VTFPAR++: same weights, same clip, parity and speed.

    vtfpar compare-pytorch --openpar /path/to/OpenPAR/VTFPAR++
        [--batch 2] [--frames 6] [--device cpu|cuda] [--steps 5] [--json out.json]
    vtfpar compare-pytorch --openpar /path/to/OpenPAR/VTFPAR++ \
        --model runs/mars --clips walk.mp4 frames_dir/ [--device cpu|cuda] [--json out.json]
    vtfpar compare-pytorch --openpar /path/to/OpenPAR/VTFPAR++ --train_steps 3 \
        [--optimizer sgd|adam] [--head attribute|group] [--frames 2] [--json out.json] \
        [--record DIR]

With `--train_steps`, both sides train from the same weights on the same batches
(vtfpar_jax.tools.compare_training; docs/published-model.md §14). With `--model`, a
model dir trained here runs exported in the published code beside this package, on
the same clips (docs/sharing.md, "Checking a model in the published code"). Without
either, the published model on a random ViT-B/16 CLIP and its weights converted here
run on one clip: max |delta logits|, prediction and train speed, CUDA peaks
(docs/performance.md, "`vtfpar compare-pytorch`").

Needs a local checkout of the published code (never vendored here) and torch + timm;
vtfpar_jax.tools.published_code imports it and says what it stands in for.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
from typing import Any

import numpy as np

from vtfpar_jax import cli_errors
from vtfpar_jax.outputs import files
from vtfpar_jax.tools.published_code import (
    attribute_step,
    freeze_backbone,
    published_code,
    published_net,
)

VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
               vision_patch_size=16, context_length=77, vocab_size=49408,
               transformer_width=512, transformer_heads=8, transformer_layers=12)


def _run_published(openpar_dir: str, batch: int, frames: int, device: str, steps: int,
                   warmup: int, seed: int, train: bool, clip_fp16: bool) -> dict[str, Any]:
    """The published model on a random ViT-B/16 CLIP: its weights converted to ours,
    the clip, its logits, and its timings and CUDA peaks. Its own function so that
    every PyTorch tensor is freed on return, before JAX allocates on the same GPU."""
    import torch

    from vtfpar_jax import attributes
    from vtfpar_jax.convert import openpar
    from vtfpar_jax.tools import bench

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    phrases = list(attributes.get("mars").phrases("published"))
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with published_code(openpar_dir, {"frames": frames}, device) as pub:
        # A random CLIP in OpenAI's names, through the checkout's own build_model
        # (which converts it to fp16, as clip.load does on a GPU).
        state = {k: v.clone() for k, v in pub.clip_model.CLIP(**VIT_B16).state_dict().items()}
        clip_torch = pub.clip_model.build_model(state).to(device)
        if not clip_fp16:
            clip_torch = clip_torch.float()
        model = pub.base_block.TransformerClassifier(clip_torch, len(phrases),
                                                     attr_words=phrases).to(device)
        freeze_backbone(model)
        with torch.no_grad():  # running statistics that are not the identity
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
        source = {f"{prefix}/{k}": v.detach().float().cpu().numpy()
                  for prefix, module in (("model", model), ("clip", clip_torch))
                  for k, v in module.state_dict().items()}
        cfg, variables = openpar.convert(source, frames=frames, source="published model")
        tokens = model.text.cpu().numpy()
        video = rng.standard_normal((batch, frames, 3, 224, 224)).astype(np.float32)
        video_t = torch.from_numpy(video).to(device)

        model.eval()

        def torch_predict():
            with torch.no_grad():
                return model(video_t, clip_torch)

        def timed(fn) -> tuple[float, int | None]:
            """Median seconds of `fn`, and the CUDA peak over its calls (None on CPU)."""
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds = statistics.median(bench.timed(fn, steps, warmup, sync))
            return seconds, torch.cuda.max_memory_allocated() if cuda else None

        logits_torch = torch_predict().float().cpu().numpy()
        torch_predict_s, torch_predict_peak = timed(torch_predict)

        torch_train_s = torch_train_peak = None
        if train:
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                         lr=1e-3)
            labels = torch.from_numpy((rng.uniform(size=(batch, len(phrases))) < 0.3)
                                      .astype(np.float32)).to(device)
            torch_step = attribute_step(model, clip_torch, optimizer,
                                        torch.full((len(phrases),), 0.3, device=device))
            torch_train_s, torch_train_peak = timed(lambda: torch_step(video_t, labels))
    return {"cfg": cfg, "variables": variables, "tokens": tokens, "video": video,
            "phrases": phrases, "logits": logits_torch, "predict_s": torch_predict_s,
            "predict_peak": torch_predict_peak, "train_s": torch_train_s,
            "train_peak": torch_train_peak, "torch_version": torch.__version__}


def compare(openpar_dir: str, batch: int = 2, frames: int = 6, device: str = "cpu",
            steps: int = 5, warmup: int = 1, seed: int = 0, train: bool = True,
            clip_fp16: bool | None = None, jax_dtype: str = "float32",
            jax_clip_dtype: str | None = None) -> dict[str, Any]:
    """Both models on the same weights and clip. The JAX side computes in the
    published dtypes unless `jax_dtype` (side nets) or `jax_clip_dtype` say
    otherwise; the logit difference then includes theirs."""
    # Both frameworks share one GPU: JAX must not grab 75 % of it up front (read
    # when its GPU backend starts, which is after the PyTorch half below).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    from vtfpar_jax.models import clip
    from vtfpar_jax.tools import bench

    clip_fp16 = device == "cuda" if clip_fp16 is None else clip_fp16
    pub = _run_published(openpar_dir, batch, frames, device, steps, warmup, seed, train,
                         clip_fp16)
    if device == "cuda":
        import torch
        gc.collect()
        torch.cuda.empty_cache()
    cfg, variables, video, phrases, tokens = (
        pub[k] for k in ("cfg", "variables", "video", "phrases", "tokens"))
    # Our side, on the converted weights and the same clip (NCHW -> NHWC at the border).
    jax_clip_dtype = jax_clip_dtype or ("float16" if clip_fp16 else "float32")
    text = clip.text_features(cfg.backbone, variables["backbone"], tokens)
    setup = bench.build(backbone_cfg=cfg.backbone, batch=batch, frames=frames, dtype=jax_dtype,
                        backbone_dtype=jax_clip_dtype,
                        num_attributes=len(phrases), seed=seed,
                        backbone_params=variables["backbone"],
                        variables={"params": variables["params"],
                                   "batch_stats": variables["batch_stats"]},
                        text_features=text, video=video.transpose(0, 1, 3, 4, 2))

    def predict():
        return jax.block_until_ready(setup.predict(
            setup.state.trainable, setup.state.batch_stats, setup.frozen, setup.batch["video"]))

    logits_jax = np.asarray(predict())
    ours = bench.measure(setup, steps=steps, warmup=warmup) if train else {}
    jax_predict_s = (ours["predict_s_median"] if ours
                     else statistics.mean(bench.timed(predict, steps, warmup=0)))
    return {
        "batch": batch, "frames": frames, "device": device, "clip_fp16": clip_fp16,
        "jax_device": str(jax.devices()[0].device_kind), "torch_version": pub["torch_version"],
        "jax_version": jax.__version__, "jax_dtype": jax_dtype, "jax_clip_dtype": jax_clip_dtype,
        "max_abs_logit_diff": float(np.abs(logits_jax - pub["logits"]).max()),
        "max_abs_logit": float(np.abs(pub["logits"]).max()),
        "published": {"predict_s": pub["predict_s"],
                      "predict_clips_per_s": batch / pub["predict_s"],
                      "train_s_per_step": pub["train_s"],
                      "train_clips_per_s": batch / pub["train_s"] if pub["train_s"] else None,
                      "predict_peak_bytes": pub["predict_peak"],
                      "train_peak_bytes": pub["train_peak"]},
        "jax": {"predict_s": jax_predict_s, "predict_clips_per_s": batch / jax_predict_s,
                "train_s_per_step": ours.get("step_s_median"),
                "train_clips_per_s": ours.get("clips_per_s"),
                "compile_s": ours.get("compile_s"),
                "predict_peak_bytes": ours.get("predict_peak_bytes"),
                "train_peak_bytes": ours.get("peak_bytes")},
        "steps": steps, "memory_note": None if device == "cuda" else
        "CPU: no peak-memory counter on either side (None)",
    }


def _published_logits(openpar_dir: str, model: str, loaded, phrases: list[str],
                      video: np.ndarray, device: str) -> tuple[np.ndarray, dict]:
    """The published model's logits on `video` (N, T, H, W, 3), from the checkpoint that
    `to_openpar` writes for `loaded`, and what was written (step, epoch, options)."""
    import tempfile

    import torch

    from vtfpar_jax.backbones import openai_clip
    from vtfpar_jax.convert import to_openpar

    cfg = loaded.model_cfg
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exported.pth")
        written = to_openpar.write_checkpoint(loaded, model, path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    with published_code(openpar_dir, written["openpar_options"], device) as pub:
        net, clip_torch = published_net(
            pub, openai_clip.tensors_from_params(cfg.backbone, loaded.variables()["backbone"]),
            phrases, checkpoint["model_state_dict"], group=cfg.head == "group", device=device)
        net.eval()
        with torch.no_grad():
            frames = torch.from_numpy(video.transpose(0, 1, 4, 2, 3).copy()).to(device)
            logits = net(frames, clip_torch).float().cpu().numpy()
    return logits, written


def compare_model(openpar_dir: str, model: str, clips: list[str], device: str = "cpu"
                  ) -> dict[str, Any]:
    """Model dir `model` here and, exported, in the published code, on the same clips."""
    from vtfpar_jax.evaluation import decisions, metrics
    from vtfpar_jax.inference import predict, video
    from vtfpar_jax.state import model_dir

    loaded = model_dir.load(model)
    cfg, attribute_set = loaded.model_cfg, loaded.attribute_set
    size = cfg.backbone.image_size
    inputs = np.stack([video.model_input(video.read_frames(c, cfg.frames), (size, size),
                                         loaded.normalization)[1] for c in clips])
    run = model_dir.read_run_file(model)
    published, written = _published_logits(openpar_dir, model, loaded, run["phrases"], inputs,
                                           device)
    ours = np.asarray(predict.compute_logits(cfg, loaded.variables(), inputs,
                                             np.asarray(run["tokens"], np.int32)))
    per_clip = []
    threshold = decisions.default_threshold(cfg.head)
    for clip, mine, theirs in zip(clips, ours, published, strict=True):
        jax_side, published_side = (decisions.prediction_record(
            metrics.probabilities(logits[None], cfg)[0], attribute_set, threshold, cfg.head)
            for logits in (mine, theirs))
        per_clip.append({"clip": str(clip),
                         "max_abs_logit_diff": float(np.abs(mine - theirs).max()),
                         "jax": decisions.summary(jax_side),
                         "published": decisions.summary(published_side),
                         "same_decisions": decisions.decided_columns(
                             jax_side["decisions"], attribute_set) == decisions.decided_columns(
                             published_side["decisions"], attribute_set)})
    return {"model": model_dir.identity(model), "step": written["step"],
            "openpar_options": written["openpar_options"], "device": device,
            "max_abs_logit_diff": float(np.abs(ours - published).max()),
            "max_abs_logit": float(np.abs(published).max()), "clips": per_clip}


def model_summary(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} (step {r['step']}) in the published code on {r['device']}: "
             f"max |dlogits| {r['max_abs_logit_diff']:.2e} over {len(r['clips'])} clip(s)"]
    for c in r["clips"]:
        same = "same decisions" if c["same_decisions"] else "DIFFERENT decisions"
        lines.append(f"{c['clip']}: {same}; max |dlogits| {c['max_abs_logit_diff']:.2e}\n"
                     f"  jax:       {c['jax']}\n  published: {c['published']}")
    return "\n".join(lines)


def summary(r: dict[str, Any]) -> str:
    p, j = r["published"], r["jax"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "n/a"

    train = (f"train {p['train_s_per_step']:.3f} vs {j['train_s_per_step']:.3f} s/step "
             f"({ratio(p['train_s_per_step'], j['train_s_per_step'])} faster)"
             if p["train_s_per_step"] else "train not run")
    memory = ""
    if p["train_peak_bytes"] and j["train_peak_bytes"]:
        memory = (f"; train peak {p['train_peak_bytes'] / 2 ** 30:.2f} vs "
                  f"{j['train_peak_bytes'] / 2 ** 30:.2f} GiB "
                  f"({j['train_peak_bytes'] / p['train_peak_bytes']:.0%} of published)")
    jax_dtypes = f"{r['jax_dtype']}, CLIP {r['jax_clip_dtype']}"
    return (f"batch {r['batch']} x {r['frames']} frames on {r['device']} (JAX {jax_dtypes}): "
            f"max |dlogits| {r['max_abs_logit_diff']:.2e}; predict "
            f"{p['predict_clips_per_s']:.2f} vs {j['predict_clips_per_s']:.2f} clips/s "
            f"(published vs JAX, {ratio(j['predict_clips_per_s'], p['predict_clips_per_s'])}); "
            f"{train}{memory}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from vtfpar_jax.tools import compare_training
    from vtfpar_jax.tools.bench import DTYPES

    p = argparse.ArgumentParser(prog="vtfpar compare-pytorch",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--openpar", required=True, help="the VTFPAR++ folder of an OpenPAR checkout")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="the PyTorch device (JAX uses its default device)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-train", action="store_true", help="parity and prediction only")
    p.add_argument("--clip-fp16", default=None, action=argparse.BooleanOptionalAction,
                   help="CLIP in fp16 on both sides (default: on for cuda, as published)")
    p.add_argument("--jax-dtype", default="float32", choices=DTYPES,
                   help="the JAX side's side-net dtype (default: float32, as published)")
    p.add_argument("--jax-clip-dtype", default=None, choices=DTYPES,
                   help="the JAX side's CLIP dtype (default: the published side's)")
    p.add_argument("--model", default=None,
                   help="a model dir: export it to the published format and compare both on "
                   "--clips (instead of random weights)")
    p.add_argument("--clips", nargs="+", default=[],
                   help="with --model: video files or frame folders, read as predict does")
    p.add_argument("--train_steps", type=int, default=None,
                   help="train both sides this many steps from the same weights on the same "
                   "batches and compare the trajectories (vtfpar_jax.tools.compare_training)")
    p.add_argument("--optimizer", default="sgd", choices=compare_training.OPTIMIZERS,
                   help="with --train_steps: the optimiser on both sides")
    p.add_argument("--head", default="attribute", choices=compare_training.HEADS,
                   help="with --train_steps: the published head to train")
    p.add_argument("--lr", type=float, default=1e-3, help="with --train_steps: learning rate")
    p.add_argument("--record", default=None,
                   help="with --train_steps: write the trajectory fixture to this folder")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.model is not None and not args.clips:
        p.error("--model needs --clips (video files or frame folders)")
    return cli_errors.run(lambda: _compare(p, args))


def _compare(p: argparse.ArgumentParser, args) -> dict[str, Any]:
    from vtfpar_jax.errors import UserError
    from vtfpar_jax.tools import compare_training
    try:
        if args.train_steps is not None:
            result = compare_training.compare(
                args.openpar, args.train_steps, args.optimizer, args.head, args.batch,
                args.frames, args.lr, record=args.record)
        elif args.model is not None:
            result = compare_model(args.openpar, args.model, args.clips, args.device)
        else:
            result = compare(args.openpar, args.batch, args.frames, args.device, args.steps,
                             args.warmup, train=not args.no_train, clip_fp16=args.clip_fp16,
                             jax_dtype=args.jax_dtype, jax_clip_dtype=args.jax_clip_dtype)
    except UserError:  # a refused model, a missing clip (some are FileNotFoundErrors too)
        raise               # one line, by cli_errors.run
    except (FileNotFoundError, ImportError) as e:
        p.error(str(e))
    if args.json:
        files.write_json(args.json, result, indent=1)
    if args.train_steps is not None:
        print(compare_training.summary(result))
    else:
        print(model_summary(result) if args.model is not None else summary(result))
    return result
