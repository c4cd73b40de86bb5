"""Within-prompt agreement of a reward with a referee (rewardflow/agreement.py)."""

import json

import numpy as np
import pytest

from rewardflow.agreement import pair_orders, pairwise_agreement, per_prompt, within_prompt_agreement

GROUPS = [p for p in range(30) for _ in range(4)]


def _referee(seed=0):
    return np.random.default_rng(seed).random(len(GROUPS))


def test_reward_equal_to_referee_is_perfect():
    q = _referee()
    a = within_prompt_agreement(q, q, GROUPS, bootstrap=200)
    assert a["spearman"][0] == pytest.approx(1.0)
    assert a["top1_gain"] == pytest.approx(a["oracle_gain"])
    expected = np.mean([q[i * 4 : i * 4 + 4].max() - q[i * 4 : i * 4 + 4].mean() for i in range(30)])
    assert a["oracle_gain"][0] == pytest.approx(expected)
    assert a["top1_gain"][1] > 0 and a["prompts"] == a["prompts_ranked"] == 30


def test_reversed_reward_picks_the_worst_and_a_monotone_transform_changes_nothing():
    q = _referee()
    worst = within_prompt_agreement(-q, q, GROUPS, bootstrap=200)
    assert worst["spearman"][0] == pytest.approx(-1.0) and worst["top1_gain"][2] < 0
    expected = np.mean([q[i * 4 : i * 4 + 4].min() - q[i * 4 : i * 4 + 4].mean() for i in range(30)])
    assert worst["top1_gain"][0] == pytest.approx(expected)
    # a prompt-dependent offset and a monotone map leave within-prompt rankings as they were
    r = np.exp(3 * q) + np.asarray(GROUPS) * 10.0
    assert within_prompt_agreement(r, q, GROUPS, bootstrap=200) == within_prompt_agreement(q, q, GROUPS, bootstrap=200)


def test_independent_reward_has_no_gain_and_constant_reward_is_skipped_from_ranking():
    q = _referee()
    noise = within_prompt_agreement(_referee(1), q, GROUPS, bootstrap=500)
    assert noise["top1_gain"][1] < 0 < noise["top1_gain"][2]
    assert abs(noise["top1_gain"][0]) < 0.5 * noise["oracle_gain"][0]
    flat = within_prompt_agreement(np.ones(len(q)), q, GROUPS, bootstrap=200)
    assert flat["top1_gain"][0] == pytest.approx(0.0, abs=1e-12)  # ties: the prompt's mean, no gain
    assert flat["prompts_ranked"] == 0 and np.isnan(flat["spearman"][0])


def test_nan_rows_are_left_out_and_shapes_are_checked():
    q = _referee()
    r = q.copy()
    r[::4] = np.nan  # one sample of every prompt unscored
    a = within_prompt_agreement(r, q, GROUPS, bootstrap=200)
    assert a["prompts"] == 30 and a["spearman"][0] == pytest.approx(1.0)
    r[:] = np.nan
    assert within_prompt_agreement(r, q, GROUPS, bootstrap=200)["prompts"] == 0
    with pytest.raises(ValueError, match="must all be"):
        within_prompt_agreement(q[:-1], q, GROUPS)


def test_cli_on_a_rollout(tmp_path):
    """A tiny real rollout: the verifier as reward agrees perfectly with itself; a bad referee name lists columns."""
    from rewardflow.agreement import main, make_parser
    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser as rollout_parser

    out = tmp_path / "r"
    # enough steps that a prompt's clips differ on the verifier (with 2 steps they can all tie: nothing to rank)
    argv = ["--output_dir", str(out), "--max_prompts", "3", "--num_generations", "3", "--num_iterations", "2"]
    argv += ["--num_steps", "4", "--batch_size", "9", "--rewards", "verifier", "--audio_format", "none"]
    rollout_main(*rollout_parser().parse_args_and_config(args=argv))
    (cfg,) = make_parser().parse_args_and_config(args=["--rollout", str(out), "--rewards", "verifier", "verifier:-1"])
    result = main(cfg)
    saved = json.loads((out / "agreement-verifier.json").read_text())
    assert json.dumps(saved["rewards"]) == json.dumps(result["rewards"]) and saved["rows"] == 9  # NaN-safe
    same, reverse = result["rewards"]["verifier"], result["rewards"]["verifier:-1"]
    assert same["prompts_ranked"] > 0 and same["top1_gain"] == same["oracle_gain"] and same["top1_gain"][0] > 0
    assert reverse["top1_gain"][0] <= 0 and "| verifier:-1 |" in result["table"]
    # by part: the verifier and each of its attribute columns, the reversed reward ordering every told-apart pair wrong
    parts = result["by_part"]["verifier"]
    assert {"verifier", "type", "fade", "loudness"} <= set(parts) and saved["by_part"][
        "verifier"
    ].keys() == parts.keys()
    assert parts["verifier"]["pairs"] > 0 and parts["verifier"]["share"] == [1.0, 1.0, 1.0]
    assert result["by_part"]["verifier:-1"]["verifier"]["share"][0] == 0.0 and "| fade |" in result["table"]
    (bad,) = make_parser().parse_args_and_config(args=["--rollout", str(out), "--referee", "nope"])
    with pytest.raises(ValueError, match="Available: verifier"):
        main(bad)


def test_per_prompt_values_line_up_with_the_summary():
    """`per_prompt` gives the values `within_prompt_agreement` summarises, one per prompt in the same order for any
    reward on one table, so two rewards can be differenced prompt by prompt."""
    rng = np.random.default_rng(0)
    groups = [f"p{i // 4}" for i in range(40)]
    referee = rng.random(40)
    a, b = rng.random(40), referee + 0.1 * rng.random(40)
    pa, pb = per_prompt(a, referee, groups), per_prompt(b, referee, groups)
    assert len(pa["top1"]) == len(pb["top1"]) == 10 and pa["oracle"] == pb["oracle"]
    assert np.mean(pa["top1"]) == pytest.approx(within_prompt_agreement(a, referee, groups)["top1_gain"][0])
    # b ranks almost as the referee does and a at random, so b's top-1 gain is higher prompt by prompt on average
    assert np.mean(np.subtract(pb["top1"], pa["top1"])) > 0


def test_pairwise_agreement_counts_the_pairs_the_referee_tells_apart():
    """Of one prompt's pairs the referee tells apart, the share the reward orders alike: 1 for the referee itself,
    0 reversed, 0.5 for a constant reward (ties count half); tied and NaN referee values make no pair."""
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    q = np.array([1.0, 0.0, 0.0, 0.5, 0.5, 1.0, np.nan])  # a: 2 pairs told apart, b: tied, c: one value left
    r = np.array([0.9, 0.1, 0.95, 0.0, 1.0, 0.0, 0.0])  # a: orders (0,1) alike and (0,2) the other way
    agree, pairs = pair_orders(r, q, groups)
    assert pairs.tolist() == [2] and agree.tolist() == [1.0]
    assert pairwise_agreement(r, q, groups, bootstrap=50) == {"share": [0.5, 0.5, 0.5], "pairs": 2, "prompts": 1}
    q = _referee()
    assert pairwise_agreement(q, q, GROUPS, bootstrap=200)["share"] == [1.0, 1.0, 1.0]
    assert pairwise_agreement(-q, q, GROUPS, bootstrap=200)["share"] == [0.0, 0.0, 0.0]
    flat = pairwise_agreement(np.ones(len(q)), q, GROUPS, bootstrap=200)
    assert flat["share"] == [0.5, 0.5, 0.5] and flat["pairs"] == 6 * 30
    noise = pairwise_agreement(_referee(1), q, GROUPS, bootstrap=500)
    assert noise["share"][1] < 0.5 < noise["share"][2]
    r = np.where(np.arange(len(q)) % 4 == 0, np.nan, q)  # one sample of each prompt unscored: 3 pairs left of 6
    assert pairwise_agreement(r, q, GROUPS, bootstrap=200)["pairs"] == 3 * 30
    assert pairwise_agreement(np.full(len(q), np.nan), q, GROUPS)["prompts"] == 0
