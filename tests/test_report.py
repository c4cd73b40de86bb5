"""Listening report and MOS pages: built from a saved evaluation, opened from disk in headless Chromium (slow)."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from experiments.report import ReportArguments, build_listen, build_mos, score_mos


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    from base_model.pipeline import resolve_pipeline_path
    from rewardflow.evaluate import main, make_parser

    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(resolve_pipeline_path("synthcaps"), root / "copy")
    out = root / "eval"
    argv = ["--models", "synthcaps", str(root / "copy"), "--max_prompts", "3", "--num_steps", "2"]
    argv += ["--num_iterations", "2", "--rewards", "verifier", "--output_dir", str(out), "--save_audio", "true"]
    argv += ["--cache_dir", "none", "--bootstrap", "100"]
    main(*make_parser().parse_args_and_config(args=argv))
    return out


def test_listen_page_links_exist(eval_dir):
    page = build_listen(ReportArguments(eval_dir=str(eval_dir)))
    text = page.read_text()
    srcs = [s.split('"')[0] for s in text.split('src="')[1:]]
    assert len([s for s in srcs if s.endswith(".wav")]) == 6 and len([s for s in srcs if s.endswith(".png")]) == 6
    assert all((eval_dir / s).is_file() and not s.startswith("/") for s in srcs)  # relative, on disk


def test_mos_page_is_blind_and_scores(eval_dir, tmp_path):
    page = build_mos(ReportArguments(eval_dir=str(eval_dir), mode="mos", seed=3))
    key = json.loads((eval_dir / "mos_key.json").read_text())
    text = page.read_text()
    assert len(key) == 6 and "model-" not in text and "copy" not in text  # nothing in the page names a system
    assert all((eval_dir / "mos_audio" / f"{item}.wav").is_file() for item in key)
    items = list(key)
    answers = tmp_path / "a.csv"
    with open(answers, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rater", "item", "mos_q", "mos_f"])
        for i, item in enumerate(items):
            w.writerow(["r1", item, 20 * (1 + i % 5), 100])
    result = score_mos(ReportArguments(eval_dir=str(eval_dir), mode="score", answers=[str(answers)]))
    expect = {}
    for i, item in enumerate(items):
        expect.setdefault(key[item]["model"], []).append(20 * (1 + i % 5))
    for model, v in expect.items():
        assert result[model]["mos_q"]["mean"] == pytest.approx(sum(v) / len(v)) and result[model]["mos_q"]["n"] == 3
        assert result[model]["mos_f"]["mean"] == 100 and result[model]["mos_f"]["ci95"] == 0
    bad = tmp_path / "b.csv"
    bad.write_text(f"rater,item,mos_q,mos_f\nr1,{items[0]},55,100\n")
    with pytest.raises(ValueError, match="not on the scale"):
        score_mos(ReportArguments(eval_dir=str(eval_dir), mode="score", answers=[str(bad)]))


def _open(browser, page_path: Path):
    page = browser.new_page(accept_downloads=True)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors


@pytest.mark.slow
def test_listen_report_loads_in_chromium(eval_dir, browser):
    page, errors = _open(browser, build_listen(ReportArguments(eval_dir=str(eval_dir))))
    page.wait_for_function(
        "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)", timeout=20000
    )
    audio = page.evaluate(
        "[...document.querySelectorAll('audio')].map(a => ({err: a.error && a.error.code, dur: a.duration}))"
    )
    images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(audio) == 6 and all(a["err"] is None and a["dur"] > 3.5 for a in audio), audio
    assert len(images) == 6 and all(images)
    assert errors == []


@pytest.mark.slow
def test_mos_page_answers_download_as_csv(eval_dir, browser, tmp_path):
    path = build_mos(ReportArguments(eval_dir=str(eval_dir), mode="mos", seed=5))
    key = json.loads((eval_dir / "mos_key.json").read_text())
    page, errors = _open(browser, path)
    items = list(key)[:3]
    for n, item in enumerate(items):
        page.check(f'input[name="{item}-mos_q"][value="{20 * (n + 2)}"]')
        page.check(f'input[name="{item}-mos_f"][value="100"]')
    page.fill("#rater", "tester")
    assert page.inner_text("#count") == "3"
    page.reload()  # answers survive a reload (kept in the page's storage)
    assert page.is_checked(f'input[name="{items[0]}-mos_q"][value="40"]')
    with page.expect_download() as dl:
        page.fill("#rater", "tester")
        page.click("#download")
    out = tmp_path / "answers.csv"
    dl.value.save_as(out)
    rows = list(csv.DictReader(open(out)))
    assert [(r["rater"], r["item"], r["mos_q"], r["mos_f"]) for r in rows] == [
        ("tester", item, str(20 * (n + 2)), "100") for n, item in enumerate(items)
    ]
    assert errors == []
    result = score_mos(ReportArguments(eval_dir=str(eval_dir), mode="score", answers=[str(out)]))
    assert sum(r["mos_q"]["n"] for r in result.values()) == 3
