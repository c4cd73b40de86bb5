"""Benchmark code that must be right whatever the timings: the plain Algorithm 1 matches the library sampler, and
the FLOP table follows the code (masked decoding with the revealed-only head costs what the schedule says)."""

import torch
from conftest import randomize_zero_init

from base_model import MaskAudioFlow, MaskAudioFlowConfig
from base_model.sampling import sample_masked
from experiments.benchmarks.run_all import flop_table
from experiments.benchmarks.sampler import naive_algorithm_1


def test_plain_algorithm_1_equals_the_library_sampler():
    model = randomize_zero_init(MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny", text_hidden_size=32)).eval())
    text = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False

    def gens():
        return [torch.Generator().manual_seed(7 + i) for i in range(3)]

    fast = sample_masked(model, text, mask, 40, num_iterations=4, num_steps=5, cfg_scale=3.0, generator=gens())
    plain = naive_algorithm_1(model, text, mask, 40, 4, 5, 3.0, gens())
    torch.testing.assert_close(fast.latents, plain, rtol=1e-4, atol=1e-5)


def test_flop_table_follows_the_schedule():
    (row,) = flop_table(presets=("tiny",), seconds=(2.5,))
    # revealed-only: the head integrates every frame once; naive: every frame in every one of the 8 iterations
    head = row["masked_gflop"] - 8 * row["backbone_pass_gflop"]
    assert (
        abs((row["naive_all_frames_gflop"] - 8 * row["backbone_pass_gflop"]) - 8 * head)
        < 1e-6 * row["naive_all_frames_gflop"]
    )
    assert row["frames"] == 78 and 0 < row["masked_over_cfm"] < 1
