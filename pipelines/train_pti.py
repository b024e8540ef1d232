"""SDXL pivotal tuning (Astria's `model_type: pti`): new tokens in both text encoders, plus a UNet LoRA.

As diffusers' `train_dreambooth_lora_sdxl_advanced.py` with `--train_text_encoder_ti` (the reference, itself from
replicate's cog-sdxl), with these choices:
- `num_new_tokens` tokens `<s0>`, `<s1>`… are added to both tokenizers, and the captions say `<s0><s1> woman`
  where the LoRA trainer's say `ohwx woman`. Their rows start as Gaussian noise at the table's std, as in the
  reference.
- Only those rows train. They are a small fp32 tensor per text encoder, spliced into the embedding lookup by a
  forward hook: no other row can move, and AdamW keeps state for [tokens, width] rather than for two
  49408-row tables (the reference trains whole tables and copies the other rows back after each step). After each
  step the new rows are pulled toward the table's std by `(std / rows.std()) ** 0.1`, as the reference does.
- The rows train during the first `train_text_encoder_ti_frac` of the steps, at `ti_learning_rate`; the UNet
  LoRA trains throughout. While they train, the captions are re-encoded every step (the text encoders stay loaded;
  the VAE goes once the latents are cached). At the pivot the rows are written into the tables, the captions'
  embeddings are cached one last time and the text encoders are freed: the rest is as fast as the LoRA trainer.
- Output: `pytorch_lora_weights.safetensors` (the UNet LoRA, as the LoRA trainer writes it) and
  `embeddings.safetensors` with `clip_l` [tokens, 768] and `clip_g` [tokens, 1280], the reference's layout:
  stock diffusers loads them with `load_lora_weights` and `load_textual_inversion` (what `load_pivotal` does).
  The metadata lists the tokens (`pti_tokens`).
- The checkpoint adds the rows and the pivot step to what the LoRA trainer saves, so a run resumed inside the
  first phase continues it exactly (the settings of the phase are in the run's fingerprint too).
- The text encoders run as stock diffusers runs them after `load_textual_inversion`. Where a CLIP config keeps the
  legacy `eos_token_id: 2`, transformers pools at the highest token id, which is then a new token's position: the
  reference trains that way too, and training and generation agree.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.device import Placement
from pipelines.errors import TrainingCancelledError
from pipelines.train import (
    CHECKPOINT_NAME,
    METADATA_NAME,
    TrainConfig,
    TrainProgress,
    TrainResult,
    _add_lora,
    _Encoder,
    _fingerprint,
    _metadata,
    _prepare_batches,
    _release_memory,
    _save_lora,
    _train_step,
    _UNetFamily,
    _write_json_atomically,
    ensure_class_images,
)
from pipelines.train import (
    _save_checkpoint as _save_lora_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from pipelines.photos import TrainingImage

EMBEDDINGS_NAME = "embeddings.safetensors"
TI_WEIGHT_DECAY = 1e-3  # the reference's --adam_weight_decay_text_encoder
# (key in the embeddings file, text encoder, tokenizer): CLIP ViT-L and OpenCLIP ViT-bigG, the reference's names
TEXT_ENCODERS = (("clip_l", "text_encoder", "tokenizer"), ("clip_g", "text_encoder_2", "tokenizer_2"))


@dataclass(frozen=True)
class SDXLPivotalFamily(_UNetFamily):
    """SDXL with `model_type="pti"`: the UNet hooks of the LoRA trainer; `train_pivotal` is its loop."""

    family: str = "sdxl"


def pivotal_tokens(count: int) -> list[str]:
    """The new tokens of a run: `<s0>`, `<s1>`, …"""
    return [f"<s{i}>" for i in range(count)]


def pivotal_prompt(text: str, token: str, tokens: Sequence[str]) -> str:
    """`text` with the whole word `token` (any case) replaced by the joined tokens: "ohwx man" -> "<s0><s1> man"."""
    joined = "".join(tokens)
    return re.sub(rf"(?<!\w){re.escape(token)}(?!\w)", lambda _: joined, text, flags=re.IGNORECASE)


def ti_steps(config: TrainConfig) -> int:
    """How many of the first steps train the token embeddings (at least one)."""
    return max(1, round(config.steps * config.train_text_encoder_ti_frac))


def load_pivotal(pipe: Any, lora_dir: Path | str, *, tokens: Sequence[str] | None = None) -> list[str]:
    """Load a run's token embeddings into both text encoders of an SDXL pipeline (the LoRA is loaded apart).

    Tokens of the same names already there (another tune's) are replaced. Put the returned tokens in the prompt
    with `pivotal_prompt(prompt, tune_token, tokens)`.

    Args:
        pipe: a `StableDiffusionXLPipeline` (or another with both text encoders and tokenizers).
        lora_dir: the output folder of a pivotal run (holding `EMBEDDINGS_NAME`).
        tokens: names to load them under; default the trained ones (`<s0>`, `<s1>`…).

    Returns:
        The tokens, in order.

    Raises:
        FileNotFoundError: the folder has no embeddings file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(lora_dir) / EMBEDDINGS_NAME
    state = load_file(path)
    with safe_open(path, framework="pt") as file:
        trained = json.loads((file.metadata() or {}).get("pti_tokens", "null"))
    tokens = list(tokens or trained or pivotal_tokens(state["clip_l"].shape[0]))
    for key, encoder_name, tokenizer_name in TEXT_ENCODERS:
        text_encoder, tokenizer = getattr(pipe, encoder_name), getattr(pipe, tokenizer_name)
        present = [token for token in tokens if token in tokenizer.get_vocab()]
        if present:
            pipe.unload_textual_inversion(tokens=present, text_encoder=text_encoder, tokenizer=tokenizer)
        pipe.load_textual_inversion(state[key], token=tokens, text_encoder=text_encoder, tokenizer=tokenizer)
    return tokens


def unload_pivotal(pipe: Any, tokens: Sequence[str]) -> None:
    """Take tokens loaded by `load_pivotal` out of both text encoders again (their rows and tokenizer entries)."""
    for _, encoder_name, tokenizer_name in TEXT_ENCODERS:
        text_encoder, tokenizer = getattr(pipe, encoder_name), getattr(pipe, tokenizer_name)
        present = [token for token in tokens if token in tokenizer.get_vocab()]
        if present:
            pipe.unload_textual_inversion(tokens=present, text_encoder=text_encoder, tokenizer=tokenizer)


@dataclass
class _NewTokens:
    """The trainable rows of the new tokens in one text encoder, spliced into its embedding lookup by a hook."""

    key: str
    embedding: Any  # the encoder's (resized) nn.Embedding; None once the rows are written into it
    ids: torch.Tensor
    rows: torch.Tensor  # fp32 leaf, [tokens, width]
    std: float  # of the original table: the reference keeps the new rows near it
    hook: Any = None

    def splice(self, module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        import torch

        match = args[0].unsqueeze(-1) == self.ids  # [batch, length, tokens]
        new = self.rows[match.long().argmax(-1)].to(output.dtype)
        return torch.where(match.any(-1, keepdim=True), new, output)

    def keep_std(self) -> None:
        import torch

        with torch.no_grad():
            self.rows.mul_((self.std / self.rows.std()) ** 0.1)

    def write_into_table(self) -> None:
        """Put the rows into the table and drop the hook: the encoder is then as `load_textual_inversion` leaves it."""
        import torch

        with torch.no_grad():
            self.embedding.weight[self.ids] = self.rows.to(self.embedding.weight.dtype)
        self.hook.remove()
        self.embedding = self.hook = None  # the text encoder is freed next; only the rows are still needed


def _add_new_tokens(pipe: Any, tokens: list[str], seed: int) -> list[_NewTokens]:
    """Add the tokens to both tokenizers and tables; their rows start as noise at the table's std (from `seed`)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    added = []
    for key, encoder_name, tokenizer_name in TEXT_ENCODERS:
        text_encoder, tokenizer = getattr(pipe, encoder_name), getattr(pipe, tokenizer_name)
        text_encoder.requires_grad_(False)  # gradients flow through it to the new rows only
        text_encoder.eval()
        std = float(text_encoder.get_input_embeddings().weight.float().std())
        tokenizer.add_tokens(tokens)
        if len(tokenizer) > text_encoder.get_input_embeddings().num_embeddings:
            with torch.random.fork_rng(devices=[]):  # the new rows are overwritten; keep the global RNG untouched
                text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embedding = text_encoder.get_input_embeddings()
        embedding.requires_grad_(False)
        device = embedding.weight.device
        rows = torch.randn((len(tokens), embedding.embedding_dim), generator=generator) * std
        ids = torch.tensor(tokenizer.convert_tokens_to_ids(tokens), device=device)
        new = _NewTokens(key, embedding, ids, rows.to(device).requires_grad_(True), std)
        new.hook = embedding.register_forward_hook(new.splice)
        added.append(new)
    return added


def _encode_captions(encoder: _Encoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Conditioning rows by sample, as `_prepare_batches` caches them (here with gradients, if enabled)."""
    import torch

    unique = sorted(set(captions))
    embeddings = encoder.captions(unique)
    row = torch.tensor([unique.index(c) for c in captions], device=encoder.placement.device)
    return {name: tensor[row] for name, tensor in embeddings.items()}


def _pivot(pipe: Any, encoder: _Encoder, captions: list[str], new_tokens: list[_NewTokens]) -> dict:
    """End of the embedding phase: rows into the tables, captions encoded a last time, text encoders freed."""
    import torch

    for new in new_tokens:
        new.write_into_table()
    with torch.no_grad():
        cond = _encode_captions(encoder, captions)
    for _, encoder_name, _ in TEXT_ENCODERS:
        setattr(pipe, encoder_name, None)
    _release_memory(encoder.placement)
    return cond


def train_pivotal(
    config: TrainConfig,
    images: Sequence[TrainingImage],
    output_dir: Path,
    *,
    family: SDXLPivotalFamily,
    placement: Placement,
    model_dir: Path | None,
    pipeline: Any,
    class_images_dir: Path | None,
    on_progress: Callable[[TrainProgress], None],
    should_cancel: Callable[[], bool] | None,
) -> TrainResult:
    """The loop of `train_lora` for `model_type="pti"`; `train_lora` checked the inputs and calls this.

    Writes the UNet LoRA and `EMBEDDINGS_NAME` to `output_dir`; the metadata adds `pti_tokens` and `ti_steps`.

    Raises:
        TrainingCancelledError: `should_cancel` returned True; resume by calling `train_lora` again.
    """
    import torch

    report = on_progress
    started = time.monotonic()
    tokens = pivotal_tokens(config.num_new_tokens)
    pivot = ti_steps(config)

    # 2. Load the base model
    report(TrainProgress("preparing", 0, config.steps, message="loading base model"))
    pipe = pipeline if pipeline is not None else family.load(model_dir, placement)
    family.place(pipe, placement, whole=config.prior_preservation)
    fingerprint = _fingerprint(config, images)

    # 3. Class images for prior preservation (of the plain class, so made before the new tokens exist)
    class_images = []
    if config.prior_preservation:
        report(TrainProgress("preparing", 0, config.steps, message="generating class images"))
        class_images = ensure_class_images(pipe, config, Path(class_images_dir), placement)

    # 4. The new tokens: in both tokenizers, their trainable rows spliced into both embedding tables
    new_tokens = _add_new_tokens(pipe, tokens, config.seed)

    # 5. Encode latents once and free the VAE; the captions are encoded again each step of the embedding phase
    report(TrainProgress("preparing", 0, config.steps, message="encoding photos and captions"))
    encoder = _Encoder(pipe, config, placement, family)
    captions = [pivotal_prompt(item.caption, config.token, tokens) for item in images]
    instance = _prepare_batches(encoder, [item.image for item in images], captions, cache_latents=True)
    prior = None
    if class_images:
        class_captions = [config.class_name] * len(class_images)
        prior = _prepare_batches(encoder, class_images, class_captions, cache_latents=True)
    pipe.vae = None  # no collection here: the allocator reuses its memory, and the pivot collects

    # 6. LoRA on the UNet; one optimizer for the LoRA and the new rows
    unet = family.denoiser(pipe)
    noise_scheduler = family.training_scheduler(pipe)
    params = _add_lora(unet, config, placement, family)
    rows = [new.rows for new in new_tokens]
    optimizer = torch.optim.AdamW(
        [{"params": params}, {"params": rows, "lr": config.ti_learning_rate, "weight_decay": TI_WEIGHT_DECAY}],
        lr=config.learning_rate,
        weight_decay=1e-2,
    )
    scaler = torch.amp.GradScaler("cuda") if placement.dtype == torch.float16 and placement.is_cuda else None

    # 7. Resume from the last checkpoint of the same run, if any
    checkpoint_path = output_dir / CHECKPOINT_NAME
    start_step, losses = _load_checkpoint(checkpoint_path, fingerprint, unet, optimizer, new_tokens, pivot)
    resumed_from = start_step or None
    if resumed_from:
        report(TrainProgress("preparing", start_step, config.steps, message=f"resuming from step {start_step}"))

    # 8. The loop: embeddings and LoRA until the pivot, then the LoRA alone on cached embeddings
    loop_started = time.monotonic()
    unet.train()
    for step in range(start_step, config.steps):
        if should_cancel is not None and should_cancel():
            _save_checkpoint(checkpoint_path, fingerprint, step, unet, optimizer, losses, new_tokens, pivot)
            raise TrainingCancelledError(step)
        if step < pivot:
            instance.cond = _encode_captions(encoder, instance.captions)
        elif encoder is not None:
            instance.cond = _pivot(pipe, encoder, instance.captions, new_tokens)
            encoder = None
        loss = _train_step(
            family, unet, noise_scheduler, optimizer, scaler, config, instance, prior, None, step, placement
        )
        if step < pivot:
            for new in new_tokens:
                new.keep_std()
        losses.append(loss)
        done = step + 1
        per_step = (time.monotonic() - loop_started) / (done - start_step)
        phase = "token embeddings and LoRA" if step < pivot else "LoRA"
        eta = per_step * (config.steps - done)
        report(TrainProgress("training", done, config.steps, loss=loss, eta_seconds=eta, message=phase))
        if done % config.checkpoint_every == 0 and done < config.steps:
            _save_checkpoint(checkpoint_path, fingerprint, done, unet, optimizer, losses, new_tokens, pivot)
    if encoder is not None:  # the embedding phase lasted the whole run
        _pivot(pipe, encoder, instance.captions, new_tokens)

    # 9. Save the LoRA and the embeddings, then the metadata that marks the folder complete
    report(TrainProgress("saving", config.steps, config.steps, loss=losses[-1] if losses else None))
    lora_path = _save_lora(unet, family, output_dir)
    _save_embeddings(new_tokens, tokens, output_dir)
    metadata = _metadata(config, images, losses, time.monotonic() - started, placement, resumed_from, family)
    metadata.update(
        instance_prompt=pivotal_prompt(config.instance_caption, config.token, tokens),
        pti_tokens=tokens,
        embeddings_file=EMBEDDINGS_NAME,
        ti_steps=pivot,
        ti_learning_rate=config.ti_learning_rate,
    )
    _write_json_atomically(output_dir / METADATA_NAME, metadata)
    checkpoint_path.unlink(missing_ok=True)
    del pipe, unet, params, optimizer, new_tokens, rows
    _release_memory(placement)
    return TrainResult(output_dir, lora_path, metadata, resumed_from)


def _save_embeddings(new_tokens: list[_NewTokens], tokens: list[str], output_dir: Path) -> Path:
    from safetensors.torch import save_file

    state = {new.key: new.rows.detach().float().cpu().contiguous() for new in new_tokens}
    path = output_dir / EMBEDDINGS_NAME
    tmp = path.with_suffix(".tmp")
    save_file(state, tmp, metadata={"pti_tokens": json.dumps(tokens)})
    os.replace(tmp, path)
    return path


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    step: int,
    unet: Any,
    optimizer: Any,
    losses: list[float],
    new_tokens: list[_NewTokens],
    pivot: int,
) -> None:
    """The LoRA trainer's checkpoint plus the new rows and the pivot step, written atomically."""
    extra = {"embeddings": {new.key: new.rows.detach().cpu() for new in new_tokens}, "ti_steps": pivot}
    _save_lora_checkpoint(path, fingerprint, step, unet, optimizer, losses, extra)


def _load_checkpoint(
    path: Path, fingerprint: str, unet: Any, optimizer: Any, new_tokens: list[_NewTokens], pivot: int
) -> tuple[int, list[float]]:
    """Restore a checkpoint of the same run, in the same phase. Returns (step to continue from, losses so far)."""
    import torch
    from peft.utils import set_peft_model_state_dict

    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: start over rather than fail the tune
        path.unlink(missing_ok=True)
        return 0, []
    if state.get("fingerprint") != fingerprint or state.get("ti_steps") != pivot:
        path.unlink(missing_ok=True)
        return 0, []
    set_peft_model_state_dict(unet, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    with torch.no_grad():
        for new in new_tokens:
            new.rows.copy_(state["embeddings"][new.key])
    return int(state["step"]), list(state["losses"])
