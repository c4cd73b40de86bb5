"""The generator interface (base_model/generators.py, docs/generators.md): every backbone the alignment stage drives
passes the same suite. MaskAudioFlow is the bundled one; TangoFlux is proven on a tiny random model saved in exactly
the published layout (config.json, tangoflux.safetensors, vae.safetensors)."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import gen, randomize_zero_init

from base_model.generators import generator_folder, generator_hash, generator_kind, load_generator

CAPTIONS = ["a dog barks", "rain on a roof", "a high beep", "a low tone", "white noise", "clicks", "a sweep"]


def make_tiny_tangoflux(folder, seed: int = 0):
    """A random TangoFlux in the published layout, with a tiny FLAN-T5 stand-in beside it (config.json names it)."""
    from diffusers import AutoencoderOobleck
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from base_model.tangoflux import TangoFluxConfig, TangoFluxFlow

    torch.manual_seed(seed)
    t5 = folder.parent / f"{folder.name}-t5"
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    vocab = [w.lower() for c in CAPTIONS for w in c.split()] + ["followed", "by", "with", "the", "of", "quiet", "loud"]
    tok.train_from_iterator(vocab, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # as T5
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(t5)
    cfg = T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # fmt: skip
    T5EncoderModel(cfg).save_pretrained(t5)
    vae_kwargs = {"encoder_hidden_size": 8, "downsampling_ratios": [8, 8], "channel_multiples": [1, 2],
                  "decoder_channels": 8, "decoder_input_channels": 8, "audio_channels": 2, "sampling_rate": 44100}  # fmt: skip
    config = {"num_layers": 1, "num_single_layers": 1, "in_channels": 8, "attention_head_dim": 16,
              "joint_attention_dim": 32, "num_attention_heads": 2, "audio_seq_len": 172, "max_duration": 30,
              "uncondition": False, "text_encoder_name": str(t5), "clip_seconds": 0.25, "vae": vae_kwargs,
              "axes_dims_rope": [4, 6, 6]}  # fmt: skip
    model = TangoFluxFlow(TangoFluxConfig(**config, text_hidden_size=32))
    randomize_zero_init(model, 0.05)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights |= {f"text_encoder.{k}": v for k, v in T5EncoderModel.from_pretrained(t5).state_dict().items()
                if "embed_tokens" not in k}  # fmt: skip
    save_file(weights, str(folder / "tangoflux.safetensors"))
    save_file(AutoencoderOobleck(**vae_kwargs).state_dict(), str(folder / "vae.safetensors"))
    return folder


@pytest.fixture(scope="module")
def tangoflux_dir(tmp_path_factory):
    return make_tiny_tangoflux(tmp_path_factory.mktemp("tf") / "TangoFlux")


@pytest.fixture(scope="module", params=["maskaudioflow", "tangoflux"])
def generator(request, tangoflux_dir):
    if request.param == "maskaudioflow":
        return load_generator("synthcaps")
    return load_generator(f"tangoflux:{tangoflux_dir}")


# -------------------------------------------------------------------------------------------- the interface suite
def test_samples_with_per_clip_seeds_batch_independent(generator):
    prompts = CAPTIONS[:3]
    out = generator(prompts, seed=[11, 12, 13], num_steps=3, num_iterations=2, decode=False)
    T, C = generator.num_frames(), generator.model.config.latent_channels
    assert out.latents.shape == (3, T, C) and torch.isfinite(out.latents).all()
    alone = generator(prompts[1:2], seed=[12], num_steps=3, num_iterations=2, decode=False).latents[0]
    # per-clip noise; the batch shares only matmuls, so they agree to float round-off (BLAS may reorder sums)
    torch.testing.assert_close(alone, out.latents[1], atol=1e-4, rtol=1e-4)
    wav = generator.vocode(generator.decode_latents(out.latents))
    assert wav.dim() == 2 and wav.shape[0] == 3 and torch.isfinite(wav).all() and generator.sample_rate > 0


def test_per_sample_flow_loss_with_shared_draws(generator):
    model = copy.deepcopy(generator.model).train()
    T, C = generator.num_frames(), model.config.latent_channels
    latents = torch.randn(2, T, C, generator=gen())
    enc = generator.text_encoder(CAPTIONS[:2])
    drawn = model.draw_flow_inputs(latents, generator=gen(), drop_text=True)  # as the trainer draws them
    out = model(latents, enc.hidden_states, enc.padding_mask, **drawn)
    assert out.loss.shape == (2,) and torch.isfinite(out.loss).all() and out.infill_mask.shape == (2, T)
    ref = copy.deepcopy(model).requires_grad_(False)  # a frozen copy is the reference: the same draws, the same loss
    torch.testing.assert_close(ref(latents, enc.hidden_states, enc.padding_mask, **drawn).loss, out.loss)
    out.loss.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_lora_targets_exist_and_disabled_adapter_is_the_base(generator):
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(generator.model).eval()
    T, C = generator.num_frames(), model.config.latent_channels
    latents = torch.randn(1, T, C, generator=gen())
    enc = generator.text_encoder(CAPTIONS[:1])
    drawn = model.draw_flow_inputs(latents, generator=gen(), drop_text=False)
    base = model(latents, enc.hidden_states, enc.padding_mask, **drawn).v_t
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=model.lora_target_modules, init_lora_weights=False))
    assert sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n) > 0
    assert not torch.allclose(peft(latents, enc.hidden_states, enc.padding_mask, **drawn).v_t, base)
    with peft.disable_adapter():
        torch.testing.assert_close(peft(latents, enc.hidden_states, enc.padding_mask, **drawn).v_t, base)


def test_save_and_load_give_the_same_generator(generator, tmp_path):
    generator.save_pretrained(tmp_path / "saved")
    spec = tmp_path / "saved"
    again = load_generator(spec)
    assert generator_kind(spec) == generator_kind(getattr(generator, "name_or_path", "synthcaps"))
    a = generator(CAPTIONS[:2], seed=5, num_steps=2, num_iterations=2, decode=False).latents
    b = again(CAPTIONS[:2], seed=5, num_steps=2, num_iterations=2, decode=False).latents
    torch.testing.assert_close(a, b)
    assert len(generator_hash(spec)) == 16 and generator_folder(spec).is_dir()


# ------------------------------------------------------------------------------------------------- TangoFlux
def test_tangoflux_loss_is_the_hand_computed_flow_matching_target(tangoflux_dir):
    """TangoFlux's time convention: x_σ = (1 − σ) x_1 + σ x_0, target x_0 − x_1, transformer timestep σ."""
    pipe = load_generator(f"tangoflux:{tangoflux_dir}")
    model = pipe.model.eval()
    T, C = pipe.num_frames(), model.config.latent_channels
    x_1, x_0 = torch.randn(2, T, C, generator=gen(1)), torch.randn(2, T, C, generator=gen(2))
    sigma = torch.tensor([0.25, 0.8])
    enc = pipe.text_encoder(CAPTIONS[:2])
    out = model(x_1, enc.hidden_states, enc.padding_mask, t=sigma, noise=x_0)
    # by hand, straight through diffusers' transformer
    x_sigma = (1 - sigma[:, None, None]) * x_1 + sigma[:, None, None] * x_0
    mask = enc.padding_mask[..., None].float()
    pooled = model.fc((enc.hidden_states * mask).sum(1) / mask.sum(1))
    duration = model.duration_emebdder(torch.full((2,), 0.25))
    pred = model.transformer(hidden_states=x_sigma, encoder_hidden_states=torch.cat([enc.hidden_states, duration], 1),
                             pooled_projections=pooled, timestep=sigma, img_ids=torch.arange(T)[:, None].repeat(1, 3).float(),
                             txt_ids=torch.zeros(enc.hidden_states.shape[1] + 1, 3), return_dict=False)[0]  # fmt: skip
    expected = ((pred - (x_0 - x_1)) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.u_t, x_0 - x_1)


def test_tangoflux_sampler_is_flow_matching_euler_from_noise(tangoflux_dir):
    """One Euler step from σ = 1 to 0 moves the noise by −v: x_0 − (x_0 − x_1) = x_1 for an exact velocity."""
    pipe = load_generator(f"tangoflux:{tangoflux_dir}")
    T, C = pipe.num_frames(), pipe.model.config.latent_channels
    target = torch.randn(T, C, generator=gen(3))
    noise = torch.randn(T, C, generator=torch.Generator().manual_seed(9))
    pipe.model.velocity = lambda x, sigma, context, pooled: x - target  # the exact field towards `target`
    out = pipe(["a dog barks"], seed=[9], num_steps=1, cfg_scale=1.0, decode=False)
    torch.testing.assert_close(out.latents[0], target, atol=1e-5, rtol=1e-5)
    assert noise.shape == out.latents[0].shape


def test_every_generator_takes_the_sampler_temperature(generator):
    kw = dict(seed=[11], num_steps=2, num_iterations=2, decode=False)
    trained, cooled = (generator(CAPTIONS[:1], temperature=t, **kw).latents for t in (1.0, 0.5))
    assert torch.isfinite(cooled).all() and (cooled - trained).abs().max() > 1e-3


def test_tangoflux_temperature_scales_the_starting_noise(tangoflux_dir):
    pipe = load_generator(f"tangoflux:{tangoflux_dir}")
    noise = torch.randn(pipe.num_frames(), pipe.model.config.latent_channels, generator=gen(9))
    pipe.model.velocity = lambda x, *args: torch.zeros_like(x)  # every step keeps the start
    out = pipe(["a dog barks"], seed=[9], num_steps=2, cfg_scale=1.0, temperature=0.5, decode=False)
    torch.testing.assert_close(out.latents[0], 0.5 * noise)
    with pytest.raises(ValueError, match="--temperature must be a finite number > 0"):
        pipe(["a dog barks"], seed=[9], num_steps=2, temperature=0.0, decode=False)


def test_tangoflux_unconditional_half_is_t5_of_empty_padded_to_the_prompts(tangoflux_dir):
    """As TangoFlux's `encode_text_classifier_free`: `""` is tokenized to the conditional batch's length and T5
    encodes the pad tokens too, since Flux's joint attention sees every text position (no mask)."""
    pipe = load_generator(f"tangoflux:{tangoflux_dir}")
    cond = pipe.text_encoder(["a dog barks", "rain on a roof"])
    null = pipe.text_encoder([""] * 2, pad_to=cond.hidden_states.shape[1])
    L = cond.hidden_states.shape[1]
    assert null.hidden_states.shape == cond.hidden_states.shape and L > 1
    assert null.padding_mask[:, 0].all() and not null.padding_mask[:, 1:].any()  # "" is </s> alone, then padding
    assert null.hidden_states[:, 1:].abs().sum() > 0  # T5's outputs at the pad positions, not zeros
    seen = []
    velocity = pipe.model.velocity
    pipe.model.velocity = lambda x, sigma, context, pooled: seen.append(context) or velocity(x, sigma, context, pooled)
    pipe(["a dog barks", "rain on a roof"], seed=[1, 2], num_steps=1, cfg_scale=4.5, decode=False)
    torch.testing.assert_close(seen[0][2:, :L], null.hidden_states)  # the second half is the padded ""


def test_missing_files_name_the_file_and_the_published_weights(tmp_path):
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"missing tangoflux\.safetensors, vae\.safetensors.*declare-lab/TangoFlux"
    ):
        load_generator(f"tangoflux:{tmp_path / 'incomplete'}")


def test_tangoflux_end_to_end_rollout_finetune_lora_evaluate(tangoflux_dir, tmp_path):
    """load -> rollout -> fine-tune with --reward clap --tau 0.1 and LoRA -> resume -> evaluate, unchanged code."""
    from rewardflow import evaluate as evaluate_cli
    from rewardflow import finetune as finetune_cli
    from rewardflow import rollout as rollout_cli
    from rewardflow.rollout_table import load_rollout

    spec = f"tangoflux:{tangoflux_dir}"
    ro = tmp_path / "ro"
    argv = ["--model", spec, "--output_dir", str(ro), "--max_prompts", "3", "--num_generations", "2", "--num_steps",
            "2", "--cfg_scale", "4.5", "--batch_size", "3", "--rewards", "clap", "aesthetics"]  # fmt: skip
    rollout_cli.main(*rollout_cli.make_parser().parse_args_and_config(args=argv))
    ds = load_rollout(ro)
    assert len(ds) == 6 and list(ds[0]["latent_shape"]) == [172, 8] and np.isfinite(ds["reward/clap"]).all()
    ft = tmp_path / "ft"
    argv = ["--rollout", str(ro), "--output_dir", str(ft), "--reward", "clap", "--tau", "0.1", "--use_peft", "true",
            "--lora_r", "2", "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_steps", "1",
            "--logging_steps", "1", "--gradient_checkpointing", "true", "--report_to", "none"]  # fmt: skip
    metrics = finetune_cli.main(*finetune_cli.make_parser().parse_args_and_config(args=argv))
    assert metrics["steps"] == 2 and metrics["trainable_parameters"] > 0
    resumed = finetune_cli.main(*finetune_cli.make_parser().parse_args_and_config(
        args=[*argv[:-2], "--max_steps", "3", "--resume_from_checkpoint", "latest", "--report_to", "none"]))  # fmt: skip
    assert resumed["steps"] == 3
    tuned = ft / "final"
    assert (tuned / "tangoflux.safetensors").is_file() and (tuned / "adapter").is_dir()
    argv = ["--models", spec, str(tuned), "--max_prompts", "2", "--num_steps", "2", "--rewards", "clap", "verifier",
            "--kl_classifier", "none"]  # fmt: skip
    report = evaluate_cli.main(*evaluate_cli.make_parser().parse_args_and_config(args=argv))
    assert set(report["models"]) == {spec, str(tuned)} and "verifier" in report["paired_vs_first"][str(tuned)]
