"""Sampler benchmark: the library's masked sampler vs a plain Algorithm 1, masked vs CFM, FLOPs and the machine peak.

    python experiments/benchmarks/sampler.py                                   # `small` preset, this machine
    python experiments/benchmarks/sampler.py --preset base --seconds 10 --batch_sizes 1 16 --clip_seconds 10

All timings are medians of `--repeats` runs after one warm-up, measured side by side in one process:
- `naive`: paper Algorithm 1 written plainly here (the head integrated on all frames every iteration, separate
  conditional and unconditional passes, torchdiffeq with default options); its output is checked equal to the
  library's (`base_model.sampling.sample_masked`) within tolerance, same seeds;
- masked with the per-token MLP head and with the transformer head, and the CFM baseline at 25 steps;
- FLOPs counted by `torch.utils.flop_counter` on the real modules (matmuls and attention), so the analytic count
  follows the code; the machine peak is a large GEMM in the same dtype, timed here.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@dataclass
class SamplerBenchArguments:
    preset: str = field(default="small", metadata={"help": "Model size preset (tiny, small, base)."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={"help": "Batch sizes timed."})
    clip_seconds: list[float] = field(default_factory=lambda: [2.5, 5.0, 10.0], metadata={"help": "Lengths timed."})
    main_seconds: float = field(default=5.0, metadata={"help": "Clip length of the batch-size sweep."})
    frames_per_second: float = field(default=31.25, metadata={"help": "Latent frames per second (16k/256/2)."})
    text_tokens: int = field(default=16, metadata={"help": "Prompt tokens."})
    num_iterations: int = field(default=8, metadata={"help": "Decoding iterations."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps (per iteration; CFM total)."})
    repeats: int = field(default=3, metadata={"help": "Timed runs per setting (median)."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: default)."})
    dtype: str = field(default="float32", metadata={"help": "Model and sampler dtype: float32 or bfloat16."})
    static_shapes: str = field(
        default="auto", metadata={"help": "Masked sampler's static-shape path: auto (on for CUDA), true or false."}
    )

    def __post_init__(self):
        if self.static_shapes not in ("auto", "true", "false"):
            raise ValueError(f"--static_shapes must be auto, true or false, got {self.static_shapes!r}.")

    output: str = field(
        default="", metadata={"help": "JSON results (default: results/sampler-<preset>-<device>.json)."}
    )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device, warmups: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmups` untimed ones (compilation, graph capture)."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fill_zero_init(model: torch.nn.Module) -> torch.nn.Module:
    """Gives the all-zero tensors of a fresh model (AdaLN-Zero layers output 0 at init) small random weights, so a
    timed untrained model computes something that means something; in place, returned for chaining."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model


def matmul_peak(device, dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large GEMM in the sampler's dtype (n = 8192 on CUDA)."""
    n = 8192 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, repeats, device)


# ---------------------------------------------------------------------------------------- naive Algorithm 1
@torch.inference_mode()
def naive_algorithm_1(model, text, text_mask, num_frames, num_iterations, num_steps, cfg_scale, generators):
    """Algorithm 1 as the paper states it, nothing skipped: every iteration runs the backbone twice (with and
    without text) and integrates the head on **all** frames, then keeps the frames revealed in that iteration."""
    from torchdiffeq import odeint

    from base_model.flow import num_spans, spans_to_frames
    from base_model.sampling import classifier_free_guidance, decoding_schedule, draw_noise_and_order

    cfg = model.config
    B, T, C, L = text.shape[0], num_frames, cfg.latent_channels, cfg.span_length
    N = num_spans(T, L)
    x_0, prio = draw_noise_and_order(B, T, C, N, generators, text.device, text.dtype)
    rank = prio.argsort(dim=1).argsort(dim=1)
    ctx, ctx_mask = model.encode_context(text, text_mask)
    null, null_mask = model.null_context(B)
    x = torch.zeros(B, T, C, device=text.device, dtype=text.dtype)
    masked = N
    for masked_next in decoding_schedule(N, num_iterations):
        infill = spans_to_frames(rank >= N - masked, L, T)
        reveal = infill & ~spans_to_frames(rank >= N - masked_next, L, T)
        z_cond = model.backbone(x, ctx, ctx_mask, infill_mask=infill)
        z_uncond = model.backbone(x, null, null_mask, infill_mask=infill)

        def velocity(t, x_t, z_cond=z_cond, z_uncond=z_uncond):
            t_tok = t.expand(B, T)
            v_cond = model.velocity(x_t, t_tok, z_cond)
            v_uncond = model.velocity(x_t, t_tok, z_uncond)
            return classifier_free_guidance(torch.cat([v_cond, v_uncond]), cfg_scale)

        grid = torch.linspace(0, 1, num_steps + 1, device=text.device)
        x_new = odeint(velocity, x_0, grid, method="euler")[-1]
        x = torch.where(reveal[..., None], x_new, x)
        masked = masked_next
    return x


# -------------------------------------------------------------------------------------------------- FLOPs
def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(a: SamplerBenchArguments) -> dict:
    from base_model import MaskAudioFlow, MaskAudioFlowConfig
    from base_model.files import atomic_write_text
    from base_model.sampling import sample_cfm, sample_masked

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)

    def build(**kw):
        cfg = MaskAudioFlowConfig.from_preset(a.preset, **kw)
        m = MaskAudioFlow(cfg).eval().to(device, dtype).requires_grad_(False)  # FlopCounterMode needs no autograd here
        return fill_zero_init(m)

    models = {"mlp": build(), "transformer": build(head_type="transformer"), "cfm": build(flow_type="cfm")}
    D_text = models["mlp"].config.text_hidden_size

    def inputs(B, seconds):
        g = torch.Generator().manual_seed(1)
        text = torch.randn(B, a.text_tokens, D_text, generator=g).to(device, dtype)
        mask = torch.ones(B, a.text_tokens, dtype=torch.bool, device=device)
        return text, mask, int(round(seconds * a.frames_per_second))

    def gens(B):
        return [torch.Generator(device).manual_seed(100 + i) for i in range(B)]

    def run(kind, B, seconds):
        text, mask, T = inputs(B, seconds)
        if kind == "naive":
            return lambda: naive_algorithm_1(models["mlp"], text, mask, T, a.num_iterations, a.num_steps, 3.0, gens(B))
        if kind == "cfm":
            return lambda: sample_cfm(models["cfm"], text, mask, T, num_steps=a.num_steps, generator=gens(B))
        static = {"auto": None, "true": True, "false": False}[a.static_shapes]
        return lambda: sample_masked(models[kind], text, mask, T, num_iterations=a.num_iterations,
                                     num_steps=a.num_steps, generator=gens(B), static_shapes=static)  # fmt: skip

    # equality of the library sampler and the plain Algorithm 1 (same seeds)
    fast, naive = run("mlp", 4, a.main_seconds)().latents, run("naive", 4, a.main_seconds)()
    max_diff = float((fast - naive).abs().max())
    scale = float(naive.abs().max())
    tol = 1e-4 if dtype == torch.float32 else 5e-2  # bf16: ~3 significant digits per step
    if not max_diff <= tol * max(scale, 1.0):
        raise AssertionError(f"library sampler and plain Algorithm 1 disagree: max |diff| {max_diff:.3g}")

    peak = matmul_peak(device, dtype)
    results: dict = {"batch": {}, "length": {}}
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    tag = "cuda" if device.type == "cuda" else "cpu"
    out = Path(a.output or ROOT / "experiments/benchmarks/results" / f"sampler-{a.preset}-{tag}-{a.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(summary: dict | None) -> dict:
        """Written after every measured row, so a run cut off (a lent GPU's time running out) still leaves its rows;
        `complete` is true only once the summary is in."""
        report = {"settings": asdict(a), "device": dev_name, "torch": torch.__version__, "complete": summary is not None,
                  "summary": summary, "results": results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        atomic_write_text(out, json.dumps(report, indent=2, default=str))
        return report

    for B in a.batch_sizes:
        row = {k: timed(run(k, B, a.main_seconds), a.repeats, device) for k in ("naive", "mlp", "transformer", "cfm")}
        flops = count_flops(run("mlp", B, a.main_seconds))
        row["mlp_flops"] = flops
        row["mlp_flops_per_s"] = flops / row["mlp"]
        row["cfm_flops"] = count_flops(run("cfm", B, a.main_seconds))
        results["batch"][B] = row
        save(None)
    for s in a.clip_seconds:
        results["length"][s] = {k: timed(run(k, 1, s), a.repeats, device) for k in ("mlp", "cfm")}
        save(None)

    Bmax = max(a.batch_sizes)
    big = results["batch"][Bmax]
    summary = {
        "speedup_vs_naive": big["naive"] / big["mlp"],
        "masked_over_cfm": big["mlp"] / big["cfm"],
        "masked_over_cfm_flops": big["mlp_flops"] / big["cfm_flops"],
        "fraction_of_peak": big["mlp_flops_per_s"] / peak,
        "peak_flops_per_s": peak,
        "equal_to_naive_max_abs_diff": max_diff,
        "at_batch": Bmax,
    }
    print(f"\nsampler, {a.preset} preset, {a.dtype}, {a.main_seconds} s clips, {a.num_iterations} iterations x {a.num_steps} steps, "
          f"CFG 3, {dev_name}")  # fmt: skip
    print("| batch | naive Alg. 1 s | masked (MLP head) s | speed-up | masked (transformer head) s | CFM 25 steps s |"
          " masked / CFM | masked GFLOP | achieved GFLOP/s | % of peak |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for B, r in results["batch"].items():
        print(
            f"| {B} | {r['naive']:.3f} | {r['mlp']:.3f} | {r['naive'] / r['mlp']:.2f}x | {r['transformer']:.3f} | "
            f"{r['cfm']:.3f} | {r['mlp'] / r['cfm']:.2f} | {r['mlp_flops'] / 1e9:.2f} | "
            f"{r['mlp_flops_per_s'] / 1e9:.1f} | {100 * r['mlp_flops_per_s'] / peak:.1f} |"
        )
    print(f"\nmatmul peak {peak / 1e9:.1f} GFLOP/s; library vs plain Algorithm 1 max |diff| {max_diff:.2e}")
    print("| clip seconds (batch 1) | masked s | CFM s |\n|---|---|---|")
    for s, r in results["length"].items():
        print(f"| {s} | {r['mlp']:.3f} | {r['cfm']:.3f} |")
    report = save(summary)
    return report


def make_parser():
    from transformers import HfArgumentParser  # not TrlParser: this also runs where trl is not installed

    return HfArgumentParser(SamplerBenchArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
