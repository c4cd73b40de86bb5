"""Benchmark code that must be right whatever the timings: the plain Algorithm 1 matches the library sampler, and
the FLOP table follows the code (masked decoding with the revealed-only head costs what the schedule says)."""

import json

import pytest
import torch
from conftest import randomize_zero_init

from base_model import MaskAudioFlow, MaskAudioFlowConfig
from base_model.sampling import sample_masked
from experiments.benchmarks.run_all import cpu_model, flop_table
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


def test_flop_table_matches_the_flops_of_real_sampler_runs():
    """The table composes per-part counts; here the whole samplers run under the counter and must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    (row,) = flop_table(presets=("tiny",), seconds=(2.5,))
    assert row["frames"] == 78 and 0 < row["masked_over_cfm"] < 1
    model = MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny")).eval().requires_grad_(False)
    text, mask = torch.randn(1, 16, 384), torch.ones(1, 16, dtype=torch.bool)

    def counted(fn):
        with FlopCounterMode(display=False) as c, torch.inference_mode():
            fn()
        return c.get_total_flops() / 1e9

    masked = counted(lambda: sample_masked(model, text, mask, 78, num_iterations=8, num_steps=25, cfg_scale=3.0))
    plain = counted(lambda: naive_algorithm_1(model, text, mask, 78, 8, 25, 3.0, None))
    # the real runs also project the text once and use an unpadded null prompt: a few percent at most
    assert abs(masked - row["masked_gflop"]) < 0.05 * row["masked_gflop"], (masked, row["masked_gflop"])
    assert abs(plain - row["naive_all_frames_gflop"]) < 0.05 * row["naive_all_frames_gflop"], (plain, row)


def test_sampler_bench_keeps_its_rows_when_cut_off(tmp_path, monkeypatch):
    """Every measured row is on disk as soon as it is measured: a run that dies in the length sweep (a lent GPU's
    time running out) leaves the batch rows, marked incomplete; a whole run is marked complete with its summary."""
    import json

    import pytest

    from experiments.benchmarks import sampler

    a = sampler.SamplerBenchArguments(preset="tiny", batch_sizes=[1, 2], clip_seconds=[0.5], main_seconds=0.5,
                                      num_iterations=2, num_steps=2, repeats=1, output=str(tmp_path / "s.json"))  # fmt: skip
    report = sampler.main(a)
    assert report["complete"] and report["summary"]["at_batch"] == 2
    assert json.loads((tmp_path / "s.json").read_text())["complete"] is True

    timed, calls = sampler.timed, []

    def dies_in_the_length_sweep(fn, repeats, device):
        calls.append(1)
        if len(calls) > 9:  # the matmul peak, 4 samplers x 2 batch sizes, then the length sweep
            raise KeyboardInterrupt
        return timed(fn, repeats, device)

    monkeypatch.setattr(sampler, "timed", dies_in_the_length_sweep)
    with pytest.raises(KeyboardInterrupt):
        sampler.main(a)
    partial = json.loads((tmp_path / "s.json").read_text())
    assert partial["complete"] is False and partial["summary"] is None
    assert sorted(partial["results"]["batch"]) == ["1", "2"] and partial["results"]["length"] == {}


def test_gpu_goals_script_runs_on_cpu_shapes_and_keeps_what_it_measured(tmp_path, monkeypatch):
    """The prepared GPU script on CPU shapes: every goal's row is written, a compile failure is recorded without
    stopping the run, and a run cut off mid-way leaves its measured rows marked incomplete."""
    import json

    import pytest

    from experiments.benchmarks import gpu_goals

    out = tmp_path / "g.json"
    a = gpu_goals.GpuGoalsArguments(preset="tiny", seconds=0.5, batch_sizes=[1, 2], compile="true", num_iterations=2,
                                    num_steps=2, repeats=1, rollout_prompts=2, rollout_batch_size=2, output=str(out))  # fmt: skip

    def unsupported(model):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(gpu_goals, "compile_model", unsupported)
    report = gpu_goals.main(a)
    assert report["complete"] and json.loads(out.read_text())["complete"] is True
    eager = report["results"]["generation"]["eager"]
    assert set(eager) == {"1", "2"} and all(r["seconds_per_batch"] > 0 for r in eager.values())
    assert "no compiler here" in report["results"]["generation"]["compiled"]["error"]
    rollout = report["results"]["rollout"]
    assert rollout["clips"] == 2 and abs(sum(rollout["stage_share"].values()) - 1) < 1e-3

    timed, calls = gpu_goals.timed, []

    def dies_at_the_second_batch(fn, repeats, device, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return timed(fn, repeats, device, **kw)

    monkeypatch.setattr(gpu_goals, "timed", dies_at_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        gpu_goals.main(gpu_goals.GpuGoalsArguments(**{**vars(a), "compile": "false"}))
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and list(partial["results"]["generation"]["eager"]) == ["1"]
    with pytest.raises(ValueError, match="--compile"):
        gpu_goals.GpuGoalsArguments(compile="yes")


def test_cpu_model_reads_the_model_name_and_falls_back_without_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert cpu_model(str(info)) == "AMD EPYC 7B13 64-Core Processor"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")  # no model name line
    fallback = cpu_model(str(tmp_path / "missing"))
    assert cpu_model(str(info)) == fallback and fallback and "EPYC 7B13" not in fallback


@pytest.mark.slow
def test_best_of_bench_times_both_ways_and_they_agree(tmp_path):
    from experiments.benchmarks.best_of import BestOfBenchArguments, main

    with pytest.raises(ValueError, match="--prompts must be >= 2"):
        BestOfBenchArguments(prompts=1)
    out = tmp_path / "best_of.json"
    result = main(BestOfBenchArguments(best_of=[1, 2], rerank_rewards=["verifier"], prompts=2, repeats=1,
                                       output=str(out)))  # fmt: skip
    assert result["candidates_generated_per_clip"] == {"separate": 3, "shared": 2}
    assert result["largest_metric_difference"] < 1e-6  # the same clips picked both ways
    assert len(result["seconds"]["separate"]) == len(result["seconds"]["shared"]) == 1 and result["speedup"] > 0
    assert json.loads(out.read_text())["speedup"] == result["speedup"]
