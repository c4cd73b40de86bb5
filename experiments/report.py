"""HTML listening report and blind MOS test pages, built from an evaluation run saved with `--save_audio`.

    python rewardflow/evaluate.py --models synthcaps outputs/demo/finetune/final --max_prompts 16 \
        --output_dir outputs/eval --save_audio true
    python experiments/report.py --eval_dir outputs/eval                     # outputs/eval/report.html
    python experiments/report.py --eval_dir outputs/eval --mode mos           # outputs/eval/mos.html + mos_key.json
    python experiments/report.py --mode score --eval_dir outputs/eval --answers answers1.csv answers2.csv

`listen`: per prompt, audio players and spectrograms of every model side by side with their scores. `mos`: the
paper's subjective tests (Appendix D): clips blind and shuffled, MOS-Q (overall quality / naturalness) and MOS-F
(faithfulness to the text) on the 20–100 scale in five steps; answers stay in the page (browser storage) and
download as CSV; which system made which clip is only in `mos_key.json`, never in the page. `score`: collected
CSVs + the key -> MOS per system with 95% confidence intervals (t distribution over ratings).
Pages use relative links only and open from disk with no server.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALE = (20, 40, 60, 80, 100)
QUESTIONS = {
    "mos_q": "Overall quality: how natural and clean does this clip sound?",
    "mos_f": "Faithfulness: how well does the clip match the text?",
}


@dataclass
class ReportArguments:
    eval_dir: str = field(default="outputs/eval", metadata={"help": "An evaluate.py --output_dir with --save_audio."})
    mode: str = field(default="listen", metadata={"help": "listen, mos or score."})
    max_prompts: int = field(default=0, metadata={"help": "Limit the prompts shown (0: all)."})
    seed: int = field(default=0, metadata={"help": "Shuffle seed of the MOS page."})
    answers: list[str] = field(default_factory=list, metadata={"help": "score: collected MOS CSV files."})


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def load_clips(eval_dir: Path) -> dict:
    path = eval_dir / "clips.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run rewardflow/evaluate.py with --output_dir {eval_dir} --save_audio true first."
        )
    return json.loads(path.read_text())


def spectrogram(eval_dir: Path, rel_audio: str) -> str:
    """PNG of the clip's log-mel next to the WAV (made once); returns its relative path."""
    import soundfile as sf
    import torch

    from base_model import MelSpectrogram
    from base_model.plotting import save_spectrograms

    png = Path(rel_audio).with_suffix(".png")
    if not (eval_dir / png).is_file():
        wav, sr = sf.read(str(eval_dir / rel_audio), dtype="float32")
        save_spectrograms(eval_dir / png, [MelSpectrogram()(torch.from_numpy(wav)[None])[0]], [""], sample_rate=sr)
    return str(png)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; }}
img {{ width: 320px; display: block; }} .scores {{ font-size: 12px; color: #333; }}
.item {{ border: 1px solid #ccc; padding: 10px; margin: 10px 0; }} .q {{ margin: 6px 0; }}
</style></head><body>
{body}
</body></html>
"""


def build_listen(a: ReportArguments) -> Path:
    eval_dir = Path(a.eval_dir)
    data = load_clips(eval_dir)
    models = data["models"]
    prompts: dict[tuple, dict] = {}
    for c in data["clips"]:
        prompts.setdefault((c["prompt_id"], c["sample_index"]), {})[c["model"]] = c
    keys = sorted(prompts)[: a.max_prompts or None]
    report = json.loads((eval_dir / "report.json").read_text()) if (eval_dir / "report.json").is_file() else {}
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    rows = []
    for key in keys:
        first = next(iter(prompts[key].values()))
        cells = []
        for m in models:
            c = prompts[key].get(m)
            if c is None:
                cells.append("<td>missing</td>")
                continue
            scores = ", ".join(
                f"{k} {v:.3f}"
                for k, v in c.items()
                if k in ("clap", "aesthetics", "verifier") and _clean(v) is not None
            )
            cells.append(
                f'<td><audio controls preload="metadata" src="{html.escape(c["audio"])}"></audio>'
                f'<img alt="spectrogram" src="{html.escape(spectrogram(eval_dir, c["audio"]))}">'
                f'<div class="scores">{html.escape(scores)}</div></td>'
            )
        rows.append(
            f"<tr><td><b>{html.escape(first['prompt'])}</b><br><small>{html.escape(str(key[0]))} / "
            f"{key[1]}</small></td>{''.join(cells)}</tr>"
        )
    summary = f"<pre>{html.escape(report.get('table', ''))}</pre>" if report else ""
    body = (
        f"<h1>Listening report</h1><p>{len(keys)} prompts, same seeds for every model.</p>{summary}"
        f"<table><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"
    )
    out = eval_dir / "report.html"
    from base_model.files import atomic_write_text

    atomic_write_text(out, PAGE.format(title="rewardflow listening report", body=body))
    return out


MOS_SCRIPT = """
<script>
const ITEMS = __ITEMS__;
const KEY = "rewardflow-mos-" + __PAGE_ID__;
function load() { try { return JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { return {}; } }
function save(a) { try { localStorage.setItem(KEY, JSON.stringify(a)); } catch (e) {} }
let answers = load();
function record(el) {
  answers[el.dataset.item] = answers[el.dataset.item] || {};
  answers[el.dataset.item][el.dataset.q] = Number(el.value);
  save(answers);
  document.getElementById("count").textContent = Object.keys(answers).length;
}
function csv() {
  const rater = document.getElementById("rater").value.replace(/[^A-Za-z0-9_-]/g, "") || "anonymous";
  const lines = ["rater,item,mos_q,mos_f"];
  for (const it of ITEMS) {
    const a = answers[it];
    if (a) lines.push([rater, it, a.mos_q ?? "", a.mos_f ?? ""].join(","));
  }
  return lines.join("\\n") + "\\n";
}
function download() {
  const blob = new Blob([csv()], {type: "text/csv"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "mos_answers.csv";
  document.body.appendChild(link); link.click(); link.remove();
}
for (const el of document.querySelectorAll("input[type=radio]")) {
  const a = answers[el.dataset.item];
  if (a && a[el.dataset.q] === Number(el.value)) el.checked = true;
  el.addEventListener("change", () => record(el));
}
document.getElementById("count").textContent = Object.keys(answers).length;
document.getElementById("download").addEventListener("click", download);
</script>
"""


def build_mos(a: ReportArguments) -> Path:
    import hashlib
    import random

    from base_model.files import atomic_write_text

    eval_dir = Path(a.eval_dir)
    data = load_clips(eval_dir)
    clips = sorted(data["clips"], key=lambda c: (c["prompt_id"], c["sample_index"], c["model"]))
    if a.max_prompts:
        keep = sorted({(c["prompt_id"], c["sample_index"]) for c in clips})[: a.max_prompts]
        clips = [c for c in clips if (c["prompt_id"], c["sample_index"]) in keep]
    random.Random(a.seed).shuffle(clips)
    key, blocks = {}, []
    for n, c in enumerate(clips):
        # the item id hides the system: a hash of the seed and the clip's position, nothing else
        item = hashlib.sha1(f"{a.seed}:{n}:{c['audio']}".encode()).hexdigest()[:10]
        key[item] = {"model": c["model"], "prompt_id": c["prompt_id"], "sample_index": c["sample_index"]}
        # a copy named by the item alone: the original path (audio/model-<k>/...) would tell the systems apart
        blind = f"mos_audio/{item}.wav"
        (eval_dir / "mos_audio").mkdir(exist_ok=True)
        shutil.copyfile(eval_dir / c["audio"], eval_dir / blind)
        qs = []
        for q, text in QUESTIONS.items():
            radios = "".join(
                f'<label><input type="radio" name="{item}-{q}" value="{v}" data-item="{item}" data-q="{q}">{v}</label> '
                for v in SCALE
            )
            qs.append(f'<div class="q">{html.escape(text)}<br>{radios}</div>')
        blocks.append(
            f'<div class="item" id="item-{item}"><b>{n + 1}.</b> Text: <i>{html.escape(c["prompt"])}</i><br>'
            f'<audio controls preload="metadata" src="{blind}"></audio>{"".join(qs)}</div>'
        )
    page_id = hashlib.sha1(json.dumps(sorted(key)).encode()).hexdigest()[:8]
    script = MOS_SCRIPT.replace("__ITEMS__", json.dumps(list(key))).replace("__PAGE_ID__", json.dumps(page_id))
    body = (
        "<h1>Listening test</h1><p>Listen to each clip, then rate it on both questions (20 = bad, 100 = excellent). "
        "Your answers are kept in this browser; press <b>Download answers</b> when done and send the CSV.</p>"
        '<p>Your name or id: <input id="rater" value=""> Answered: <span id="count">0</span> / '
        f'{len(clips)} <button id="download">Download answers</button></p>{"".join(blocks)}{script}'
    )
    out = eval_dir / "mos.html"
    atomic_write_text(out, PAGE.format(title="Listening test", body=body))
    atomic_write_text(eval_dir / "mos_key.json", json.dumps(key, indent=2))
    return out


def score_mos(a: ReportArguments) -> dict:
    """MOS-Q and MOS-F per system with 95% t-intervals over all ratings from the collected CSVs."""
    import csv

    from scipy import stats

    key = json.loads((Path(a.eval_dir) / "mos_key.json").read_text())
    if not a.answers:
        raise ValueError("--answers: pass the collected mos_answers.csv files.")
    ratings: dict[str, dict[str, list[float]]] = {}
    unknown = []
    for path in a.answers:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["item"] not in key:
                    unknown.append(row["item"])
                    continue
                model = key[row["item"]]["model"]
                for q in QUESTIONS:
                    if row.get(q):
                        v = float(row[q])
                        if v not in SCALE:
                            raise ValueError(f"{path}: rating {v} for item {row['item']} is not on the scale {SCALE}.")
                        ratings.setdefault(model, {}).setdefault(q, []).append(v)
    if unknown:
        raise ValueError(f"{len(unknown)} answers name items not in mos_key.json (another page?): {unknown[:5]}")
    result = {}
    for model, qs in ratings.items():
        result[model] = {}
        for q, v in qs.items():
            n, mean = len(v), sum(v) / len(v)
            half = float(stats.t.ppf(0.975, n - 1) * statistics.stdev(v) / math.sqrt(n)) if n > 1 else float("nan")
            result[model][q] = {"mean": mean, "ci95": half, "n": n}
    for model, qs in result.items():
        print(model + ": " + "; ".join(f"{q} {r['mean']:.1f} ± {r['ci95']:.1f} (n={r['n']})" for q, r in qs.items()))
    return result


def main(a: ReportArguments):
    if a.mode == "listen":
        out = build_listen(a)
    elif a.mode == "mos":
        out = build_mos(a)
    elif a.mode == "score":
        return score_mos(a)
    else:
        raise ValueError(f"--mode must be listen, mos or score, got {a.mode!r}.")
    print(f"wrote {out} (open it from disk: file://{out.resolve()})")
    return out


def make_parser():
    from trl import TrlParser

    return TrlParser((ReportArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
