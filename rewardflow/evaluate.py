"""Evaluate pipelines side by side on the same prompts and seeds, the way papers report them.

    python rewardflow/evaluate.py --models synthcaps outputs/finetune/final --max_prompts 48
    python rewardflow/evaluate.py --models synthcaps tuned/ --output_dir outputs/eval      # report.json + report.md
    python rewardflow/evaluate.py --models my_pipeline/ --prompts audiocaps_test.csv --audio_column audio \
        --id_column youtube_id --clap_checkpoint 630k-audioset-best.pt --aesthetics_checkpoint checkpoint.pt
    python rewardflow/evaluate.py --models synthcaps --best_of 4 --rerank_reward clap      # reported as best-of-4
    python rewardflow/evaluate.py --models synthmusic --prompts synthmusic:heldout --rewards clap aesthetics music_verifier

Per model: CLAP score (checkpoint named), aesthetics and its four axes, the corpus verifier's attribute accuracy,
FAD over CLAP audio embeddings (the embedding model named), a Fréchet distance over mel statistics, the paper's KL
between classifier label distributions of each clip and its prompt's reference clip (the bundled SynthCaps or SynthMusic
attribute classifier offline, PANNs Cnn14 with `--kl_classifier panns:<checkpoint>`) with a Fréchet distance over that
classifier's embeddings, the share of clips that classifier reads as degraded (hiss, clipping, muffling; SynthCaps
only), and seconds per clip. Every model generates the same prompts with the same per-clip seeds, derived from the prompt id, so clips are
paired by `(prompt_id, sample_index)`, never by order: each later model's difference to the first comes with a 95%
bootstrap interval over prompts. A metric that cannot be computed says why (`n/a: <reason>`); failures raise.
`evaluate_selections` gives several best-of-N reports (N and rerank reward) from one generation of the candidates.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_model.data import corpus_of_source  # noqa: E402
from base_model.sampling import SamplingConfig  # noqa: E402
from rewardflow.metrics import bootstrap_interval  # noqa: E402
from rewardflow.scoring import RewardArguments  # noqa: E402

logger = logging.getLogger("rewardflow.evaluate")

KL_NO_CLASSIFIER = (
    "n/a: these prompts need an AudioSet classifier: pass --kl_classifier panns:<Cnn14 checkpoint> "
    "(the bundled SynthCaps classifier only knows SynthCaps' attributes)"
)


@dataclass
class EvaluateConfig(RewardArguments, SamplingConfig):
    """Which models, on which prompts, with which metrics; the sampler fields come from `SamplingConfig` and the
    reward fields from `RewardArguments`."""

    models: list[str] = field(
        default_factory=lambda: ["synthcaps"], metadata={"help": "Pipelines to compare (folders or bundled names)."}
    )
    prompts: str = field(
        default="synthcaps:heldout", metadata={"help": "'synthcaps:<split>', 'synthmusic:<split>' or a caption table."}
    )
    caption_column: str = field(default="caption", metadata={"help": "Caption column of a prompt table."})
    id_column: str = field(default="", metadata={"help": "Prompt id column (default: the row number)."})
    audio_column: str = field(
        default="", metadata={"help": "Reference audio column of a caption table (for FAD / Fréchet distances)."}
    )
    max_prompts: int = field(default=48, metadata={"help": "Use N prompts (the first N after --first_prompt)."})
    first_prompt: int = field(
        default=0,
        metadata={
            "help": "Skip the first K prompts: a fresh test set for a recipe whose settings were picked on the "
            "first K."
        },
    )
    num_samples: int = field(default=1, metadata={"help": "Clips per prompt (seeds shared across models)."})
    seed: int = field(default=1000, metadata={"help": "Clip seeds derive from it and the prompt ids."})
    kl_classifier: str = field(
        default="auto",
        metadata={
            "help": "Classifier for KL and its Fréchet distance: 'auto' (the bundled SynthCaps or SynthMusic "
            "classifier on that corpus's prompts), 'synthcaps[:<folder>]', 'synthmusic[:<folder>]', "
            "'panns:<Cnn14 .pth file>', or 'none'."
        },
    )
    best_of: int = field(default=1, metadata={"help": "Generate N per clip and keep the best by --rerank_reward."})
    rerank_reward: str = field(default="clap", metadata={"help": "Score column that picks the best of N."})
    batch_size: int = field(default=16, metadata={"help": "Clips per batch."})
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for the paired intervals."})
    cache_dir: str = field(
        default="", metadata={"help": "Embedding cache (default: ~/.cache/rewardflow/embeddings; 'none' disables)."}
    )
    output_dir: str = field(default="", metadata={"help": "Write report.json and report.md here (atomically)."})
    save_audio: bool = field(
        default=False,
        metadata={
            "help": "Also write every clip to <output_dir>/audio/<model #>/ and its scores to clips.json "
            "(what experiments/report.py builds the listening report from)."
        },
    )
    output_json: str = field(default="", metadata={"help": "Also write the JSON report to this file."})

    def __post_init__(self):
        super().__post_init__()  # the sampler settings
        if self.num_samples < 1 or self.best_of < 1:
            raise ValueError("--num_samples and --best_of must be >= 1.")
        if self.first_prompt < 0:
            raise ValueError(f"--first_prompt must be >= 0, not {self.first_prompt}.")
        if not self.models:
            raise ValueError("--models needs at least one pipeline.")
        if 0 < self.max_prompts * self.num_samples < 2:
            raise ValueError(
                f"--max_prompts {self.max_prompts} × --num_samples {self.num_samples} gives one clip per model; the "
                "Fréchet distances need two or more: raise --max_prompts or --num_samples."
            )
        if self.save_audio and not self.output_dir:
            raise ValueError("--save_audio writes under --output_dir: pass one.")


# ------------------------------------------------------------------------------------------------ inputs
def load_eval_prompts(cfg: EvaluateConfig) -> tuple[list[dict], dict[str, np.ndarray] | None, str]:
    """Prompt rows, the reference audio by prompt id (16 kHz) or None, and why there is none."""
    from rewardflow.prompts import load_prompts

    rows = load_prompts(cfg.prompts, cfg.max_prompts, cfg.caption_column, cfg.id_column, cfg.first_prompt)
    procedural = corpus_of_source(cfg.prompts)
    if procedural:  # the corpus renders each prompt's own reference clip
        module = procedural.module
        split = cfg.prompts.split(":", 1)[1]
        ex = {
            e["id"]: e
            for e in (module.example(i, split) for i in range(cfg.first_prompt, cfg.first_prompt + len(rows)))
        }
        reference = {
            r["prompt_id"]: module.render_audio(ex[r["prompt_id"]]["attributes"], ex[r["prompt_id"]]["seed"])
            for r in rows
        }
        return rows, reference, ""
    if not cfg.audio_column:
        return rows, None, "n/a: no reference audio (pass --audio_column for a caption table with audio)"
    from base_model.data.captions import load_caption_audio

    corpus = load_caption_audio(
        cfg.prompts,
        cfg.audio_column,
        cfg.caption_column,
        cfg.id_column or None,
        max_examples=cfg.first_prompt + len(rows),
    )
    if corpus.unreadable:
        raise RuntimeError(
            f"{len(corpus.unreadable)} reference clips are unreadable ({', '.join(corpus.unreadable[:5])}); "
            "fix or drop them: a distance over a different set would not be comparable."
        )
    return rows, dict(zip(corpus.ids, corpus.audio)), ""


def paired_interval(a: np.ndarray, b: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `b - a` over paired prompts and its 95% percentile-bootstrap interval (NaN pairs excluded)."""
    return bootstrap_interval(np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64), n, seed)


def load_kl_classifier(cfg: EvaluateConfig, device) -> tuple[object | None, str]:
    """The classifier behind KL, or None and why not."""
    from reward_models.classifiers import load_classifier

    spec = cfg.kl_classifier
    if spec == "none":
        return None, "n/a: switched off (--kl_classifier none)"
    if spec == "auto":  # a procedural corpus's own bundled classifier
        procedural = corpus_of_source(cfg.prompts)
        if procedural is None:
            return None, KL_NO_CLASSIFIER
        spec = procedural.key
    return load_classifier(spec, device), ""


# ---------------------------------------------------------------------------------------------- evaluate
class References:
    """The reference side of the distances: reference clips' CLAP embeddings, mel statistics and classifier outputs,
    computed once and compared with every model's clips. Without reference audio (or a classifier) the metrics it
    cannot give say why."""

    def __init__(self, cfg: EvaluateConfig, rows: list[dict], reference, no_ref_reason: str, clap, device):
        from base_model import MelSpectrogram
        from rewardflow.embeddings import EmbeddingCache
        from rewardflow.metrics import mel_statistics

        cache_dir = (
            None if cfg.cache_dir == "none" else (cfg.cache_dir or Path.home() / ".cache/rewardflow/embeddings")
        )
        self.embedder = EmbeddingCache(clap.embed_audio, f"clap:{clap.model_id}:{clap.checkpoint_hash}", cache_dir)
        self.mel_fn, self.no_ref_reason, self.clap = MelSpectrogram(), no_ref_reason, clap
        self.available = reference is not None
        # KL needs the reference clips: without them the classifier is not loaded at all
        self.classifier, self.no_kl_reason = (
            (None, no_ref_reason) if reference is None else load_kl_classifier(cfg, device)
        )
        if self.available:
            self.wav = torch.from_numpy(np.stack([reference[r["prompt_id"]] for r in rows]))
            self.emb, self.mel = self.embedder.embed(self.wav, 16000), mel_statistics(self.mel_fn(self.wav))
        if self.classifier is not None:
            # one classifier pass per set of clips gives both the label probabilities (KL) and the embeddings (FD)
            probs, self.cls_emb = self.classifier.probs_and_embed(self.wav, 16000)
            self.probs = dict(zip((r["prompt_id"] for r in rows), probs.numpy()))

    def metric_info(self, rewards: dict) -> dict:
        from reward_models.classifiers import degradation_labels

        clap, c = self.clap, self.classifier
        if c is not None:
            kl = (
                f"mean over clips of KL(P_ref || P_gen) between {c.model_id} label distributions (checkpoint "
                f"{c.checkpoint_hash[:12]}; per-label probabilities normalised to sum to 1) of each generated clip "
                "and its prompt's reference clip, paired by prompt id"
            )
            fd = f"Fréchet distance between {c.model_id} embeddings of generated and reference clips"
        else:
            kl = fd = self.no_kl_reason
        degraded = {}
        if c is not None and degradation_labels(getattr(c, "labels", [])):
            degraded["degraded"] = (
                f"share of clips whose most probable {c.model_id} degradation label is not `none` (hiss, clipping or "
                "muffling, read from the audio)"
            )
        return {
            "clap": f"mean cosine(text, audio) of {clap.model_id} (checkpoint {clap.checkpoint_hash[:12]})",
            "fad_clap": f"Fréchet distance between {clap.model_id} audio embeddings of generated and reference clips",
            "mel_frechet": "Fréchet distance between per-clip mel-bin mean/std statistics (2 x 80 dims)",
            "kl": kl,
            "fd_classifier": fd,
            **degraded,
            **{n: f"{r.model_id} (checkpoint {r.checkpoint_hash[:12]})" for n, r in rewards.items() if n != "clap"},
        }

    def distances(self, gen: torch.Tensor, keys: list, scores: dict) -> dict:
        """FAD, mel and classifier Fréchet distances of one model's clips `(N, samples)`; adds each clip's KL to
        `scores`, and with a SynthCaps classifier whether the clip reads degraded (`degraded`, 1 or 0) and as which
        kind (`degradation/<kind>`, 1 for its most probable degradation label, 0 for the others)."""
        from reward_models.classifiers import degradation_kinds, degradation_labels, kl_divergence
        from rewardflow.metrics import frechet_distance, mel_statistics

        out = {}
        if self.available:
            n = min(gen.shape[1], self.wav.shape[1])
            out["fad_clap"] = frechet_distance(self.embedder.embed(gen, 16000), self.emb)
            out["mel_frechet"] = frechet_distance(mel_statistics(self.mel_fn(gen[:, :n])), self.mel)
        else:
            out["fad_clap"] = out["mel_frechet"] = self.no_ref_reason
        if self.classifier is not None:
            gen_p, gen_emb = self.classifier.probs_and_embed(gen, 16000)
            kl = kl_divergence(np.stack([self.probs[p] for p, _ in keys]), gen_p.numpy())
            for key, value in zip(keys, kl):
                scores[key]["kl"] = float(value)
            labels = getattr(self.classifier, "labels", [])
            kinds, every = degradation_kinds(gen_p, labels), degradation_labels(labels).values()
            for key, kind in zip(keys, kinds or []):  # a SynthCaps classifier also hears hiss, clipping, muffling
                scores[key]["degraded"] = float(kind != "none")
                scores[key].update({f"degradation/{k}": float(k == kind) for k in every})
            out["fd_classifier"] = frechet_distance(gen_emb.numpy(), self.cls_emb.numpy())
        else:
            out["kl"] = out["fd_classifier"] = self.no_kl_reason
        return out


Selection = tuple[str, int]  # (rerank reward, N): keep the best of a clip's first N candidates by that reward


def generate_and_score(cfg: EvaluateConfig, pipe, rewards: dict, keys: list, by_id: dict,
                       selections: list[Selection]) -> dict[Selection, tuple[dict, dict]]:  # fmt: skip
    """Every clip of `keys` for one pipeline, once per selection `(reward, n)`: the best of the clip's first `n`
    candidates by `reward/<reward>`, with its scores, as `{selection: ({key: {score: value}}, {key: waveform})}`.
    Each clip's candidates are generated and scored once, up to the largest `n`; candidate `j`'s seed depends on the
    clip and `j` alone, so a selection picks what a run of that selection alone would."""
    from tqdm.auto import tqdm

    from rewardflow.prompts import sample_seed
    from rewardflow.scoring import score_batch

    picked: dict[Selection, tuple[dict, dict]] = {sel: ({}, {}) for sel in selections}
    candidates = max(n for _, n in selections)
    for b in tqdm(range(0, len(keys), cfg.batch_size), desc=f"evaluate {pipe.name_or_path}", unit="batch"):
        chunk = keys[b : b + cfg.batch_size]
        texts = [by_id[p]["prompt"] for p, _ in chunk]
        attrs = [by_id[p]["attributes"] for p, _ in chunk]
        best: dict[Selection, dict[tuple, tuple[float, dict, torch.Tensor]]] = {sel: {} for sel in selections}
        for j in range(candidates):
            # candidate j of sample s: candidate 0 is the plain sample, so best-of-1 == no selection
            seeds = [sample_seed(cfg.seed, p if j == 0 else f"{p}#candidate-{j}", s) for p, s in chunk]
            out = pipe(texts, **cfg.sampler_kwargs(), seed=seeds)
            wav = out.waveforms.cpu()
            cols = score_batch(rewards, wav, out.sample_rate, texts, attrs)
            rows = [{k: float(v[i]) for k, v in cols.items()} for i in range(len(chunk))]
            for (reward, n), kept in best.items():
                if j >= n:
                    continue
                if f"reward/{reward}" not in cols:
                    raise ValueError(f"--rerank_reward {reward!r} is not among the scores {sorted(cols)}.")
                for i, (key, row) in enumerate(zip(chunk, rows)):
                    r = row[f"reward/{reward}"]
                    if key not in kept or (np.isfinite(r) and not r <= kept[key][0]):
                        kept[key] = (r, row, wav[i])
        for sel, kept in best.items():
            for key, (_, row, w) in kept.items():
                picked[sel][0][key], picked[sel][1][key] = row, w
    return picked


def check_inputs(cfg: EvaluateConfig, rows: list[dict]) -> None:
    """What can fail after generation is checked before it: the pipelines exist, the rewards apply."""
    from base_model.generators import generator_folder
    from rewardflow.scoring import check_rewards_apply

    for name in cfg.models:
        generator_folder(name)
    cfg.check_rewards()
    check_rewards_apply(cfg.rewards, rows)
    if cfg.best_of > 1 and cfg.rerank_reward.split("/")[0] not in cfg.rewards:
        raise ValueError(f"--rerank_reward {cfg.rerank_reward!r} is not scored: add it to --rewards.")


@torch.inference_mode()
def evaluate(cfg: EvaluateConfig) -> dict:
    """The report of `cfg`'s models (each clip the best of `--best_of` by `--rerank_reward`), printed and written to
    `--output_dir` / `--output_json`."""
    report = evaluate_selections(cfg, [(cfg.rerank_reward, cfg.best_of)])[(cfg.rerank_reward, cfg.best_of)]
    print(report["table"])
    _write(cfg, report)
    return report


@torch.inference_mode()
def evaluate_selections(cfg: EvaluateConfig, selections: list[Selection]) -> dict[Selection, dict]:
    """For each `(rerank_reward, best_of)` in `selections`, the report `evaluate` gives with those two settings, from
    one generation: each clip's candidates are made and scored once, up to the largest N, and every selection picks
    from them (the best-of-N comparisons of a study at a fraction of the cost). Each report's `settings` are its own
    selection's; with several selections `seconds_per_clip` is the shared generation's and `shares_candidates_with`
    names the others. Writes nothing; `--save_audio` saves a single selection's clips only."""
    from base_model.generators import load_generator
    from rewardflow.distributed import process_state
    from rewardflow.scoring import build_rewards

    selections = list(dict.fromkeys(selections))
    if not selections or any(n < 1 for _, n in selections):
        raise ValueError(f"selections must name one or more (rerank_reward, best_of >= 1), got {selections}.")
    if cfg.save_audio and len(selections) > 1:
        raise ValueError("--save_audio saves one selection's clips: evaluate one (rerank_reward, best_of) at a time.")
    device = process_state().device
    rows, reference, no_ref_reason = load_eval_prompts(cfg)
    configs = {(r, n): replace(cfg, rerank_reward=r, best_of=n) for r, n in selections}
    for c in configs.values():
        check_inputs(c, rows)
    names = list(dict.fromkeys(cfg.rewards + (["clap"] if "clap" not in cfg.rewards else [])))  # FAD needs CLAP
    rewards = build_rewards(names, cfg.clap_checkpoint, cfg.aesthetics_checkpoint, device)
    refs = References(cfg, rows, reference, no_ref_reason, rewards["clap"], device)
    keys = [(r["prompt_id"], s) for r in rows for s in range(cfg.num_samples)]  # pairing key of every clip
    by_id = {r["prompt_id"]: r for r in rows}
    info = refs.metric_info(rewards)
    reports: dict[Selection, dict] = {}
    for (r, n), c in configs.items():
        reports[(r, n)] = {
            "settings": asdict(c),
            "selection": f"best-of-{n} by {r}" if n > 1 else "single sample",
            "metric_info": info,
            "models": {},
        }
        if len(selections) > 1:
            reports[(r, n)]["shares_candidates_with"] = [
                f"best-of-{m} by {q}" for q, m in selections if (q, m) != (r, n)
            ]
    per_clip: dict[Selection, dict[str, dict[str, dict]]] = {sel: {} for sel in selections}
    for index, name in enumerate(cfg.models):
        pipe = load_generator(name, device=device)
        start = time.perf_counter()
        picked = generate_and_score(cfg, pipe, rewards, keys, by_id, selections)
        seconds = time.perf_counter() - start
        for sel, (scores, waves) in picked.items():
            scores = {k: dict(row) for k, row in scores.items()}  # selections may pick the same candidate's row
            gen = torch.stack([waves[k] for k in keys])
            if pipe.sample_rate != 16000:  # the distances' front ends (mel, classifier, references) are at 16 kHz
                from reward_models.base import resample

                gen = resample(gen, pipe.sample_rate, 16000)
            summary = refs.distances(gen, keys, scores)
            per_clip[sel][name] = scores
            if cfg.save_audio:
                _save_clips(cfg, index, name, keys, by_id, waves, scores, pipe.sample_rate)
            reports[sel]["models"][name] = {
                **_summarise(scores, keys),
                **summary,
                "seconds_per_clip": round(seconds / len(keys), 3),
            }
    for sel, report in reports.items():
        c = configs[sel]
        report["paired_vs_first"] = _paired(c, per_clip[sel], keys, rows)
        report["per_prompt"] = per_prompt_means(c, per_clip[sel], rows)
        by_attribute = {
            name: verifier_by_attribute(scores, keys, c.bootstrap) for name, scores in per_clip[sel].items()
        }
        if any(by_attribute.values()):
            report["verifier_by_attribute"] = by_attribute
            paired = _paired(c, per_clip[sel], keys, rows, keep=lambda col: col.startswith("reward/verifier/"))
            report["paired_by_attribute"] = {
                name: {k.removeprefix("verifier/"): v for k, v in diffs.items()} for name, diffs in paired.items()
            }
        if "degraded" in next(iter(per_clip[sel].values()))[keys[0]]:
            report["degradation_by_kind"] = {
                name: degradation_by_kind(scores, keys) for name, scores in per_clip[sel].items()
            }
        report["table"] = format_table(report)
    return reports


def _save_clips(cfg, index: int, name: str, keys, by_id, waves, scores, sample_rate: int) -> None:
    """`audio/model-<index>/<prompt_id>-<sample>.wav` and an entry per clip in `clips.json` (updated atomically)."""
    from base_model.files import atomic_write_text, save_wav

    folder = Path(cfg.output_dir) / "audio" / f"model-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    index_file = Path(cfg.output_dir) / "clips.json"
    clips = json.loads(index_file.read_text()) if index_file.is_file() and index else {"models": [], "clips": []}
    clips["models"].append(name)
    for p, s in keys:
        rel = f"audio/model-{index}/{p}-{s}.wav"
        save_wav(Path(cfg.output_dir) / rel, waves[(p, s)], sample_rate)
        entry = {
            k.removeprefix("reward/"): v
            for k, v in scores[(p, s)].items()
            if not k.startswith(("reward/verifier/", "degradation/"))
        }
        clips["clips"].append(
            {"model": name, "prompt_id": p, "sample_index": s, "prompt": by_id[p]["prompt"], "audio": rel, **entry}
        )
    atomic_write_text(index_file, json.dumps(clips, indent=2))


def _summarise(scores: dict, keys: list) -> dict:
    """Mean of each score over clips; NaN-only scores (e.g. the verifier on prompts without attributes) say why."""
    out = {}
    for col in scores[keys[0]]:
        if col.startswith(("reward/verifier/", "degradation/")):
            continue  # per-attribute and per-kind diagnostics: `verifier_by_attribute`, `degradation_by_kind`
        v = np.array([scores[k][col] for k in keys], dtype=np.float64)
        if np.isfinite(v).any():
            out[col.removeprefix("reward/")] = float(np.nanmean(v))
        elif col == "reward/verifier":
            out["verifier"] = "n/a: prompts carry no SynthCaps attributes"
        else:
            raise RuntimeError(f"every {col} score is NaN/inf: the reward model failed on these clips.")
    return out


def verifier_by_attribute(scores: dict, keys: list, n: int = 2000) -> dict:
    """`{attribute: {"accuracy": mean, "ci95": [lo, hi], "checked": clips}}` of the verifier's per-attribute checks,
    over the clips whose prompt names the attribute (the others score NaN). The interval bootstraps over prompts
    (each prompt's clips averaged first: they share the attribute and are not independent); empty when the verifier
    did not run."""
    out = {}
    ids = sorted({p for p, _ in keys})
    for col in scores[keys[0]]:
        if col.startswith("reward/verifier/"):
            v = np.array([scores[k][col] for k in keys], dtype=np.float64)
            checked = int(np.isfinite(v).sum())
            if checked:
                by_prompt = {p: [] for p in ids}
                for k, x in zip(keys, v):
                    if np.isfinite(x):
                        by_prompt[k[0]].append(x)
                _, lo, hi = bootstrap_interval(np.array([np.mean(x) for x in by_prompt.values() if x]), n)
                out[col.removeprefix("reward/verifier/")] = {
                    "accuracy": float(np.nanmean(v)), "ci95": [lo, hi], "checked": checked,
                }  # fmt: skip
    return out


def degradation_by_kind(scores: dict, keys: list) -> dict:
    """`{kind: share of clips}` over each degradation kind the classifier reads (`none` included; they sum to 1)."""
    kinds = [c.removeprefix("degradation/") for c in scores[keys[0]] if c.startswith("degradation/")]
    return {k: float(np.mean([scores[key][f"degradation/{k}"] for key in keys])) for k in kinds}


def _summary_column(col: str) -> bool:
    """The scores `paired_vs_first` differences: every top-level score and aesthetics' axes (not the verifier's
    per-attribute checks, which `paired_by_attribute` has)."""
    return "/" not in col.removeprefix("reward/") or col.startswith("reward/aesthetics/")


def _paired(cfg: EvaluateConfig, per_clip: dict, keys: list, rows: list[dict], keep=_summary_column) -> dict:
    """Each later model minus the first for every score `keep(column)` admits, averaged per prompt first (clips of
    one prompt are not independent), over prompts sorted by id so the interval does not depend on file order;
    prompts where a score is NaN for either model (an attribute the prompt does not name) are left out."""
    first, out = cfg.models[0], {}
    ids = sorted(r["prompt_id"] for r in rows)
    for name in cfg.models[1:]:
        diffs = {}
        for col in per_clip[first][keys[0]]:
            if not keep(col):
                continue

            def per_prompt(model, col=col):
                return np.array(
                    [np.nanmean([per_clip[model][(p, s)][col] for s in range(cfg.num_samples)]) for p in ids]
                )

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN prompts give NaN, dropped below
                a, b = per_prompt(first), per_prompt(name)
            if not np.isfinite(a - b).any():
                continue
            mean, lo, hi = paired_interval(a, b, cfg.bootstrap)
            diffs[col.removeprefix("reward/")] = {"mean": mean, "ci95": [lo, hi]}
        out[name] = diffs
    return out


def per_prompt_means(cfg: EvaluateConfig, per_clip: dict, rows: list[dict]) -> dict:
    """`{model: {"prompt_ids": [...], score: [per-prompt mean, ...]}}` over prompts sorted by id, for every top-level
    score: what any two models' paired difference is computed from."""
    ids = sorted(r["prompt_id"] for r in rows)
    out = {}
    for name, scores in per_clip.items():
        cols = [c for c in next(iter(scores.values())) if "/" not in c.removeprefix("reward/")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name] = {"prompt_ids": ids} | {
                c.removeprefix("reward/"): [
                    float(np.nanmean([scores[(p, s)][c] for s in range(cfg.num_samples)])) for p in ids
                ]
                for c in cols
            }
    return out


def _write(cfg: EvaluateConfig, report: dict) -> None:
    from base_model.files import atomic_write_text

    targets = []
    if cfg.output_dir:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        targets.append(Path(cfg.output_dir) / "report.json")
        atomic_write_text(Path(cfg.output_dir) / "report.md", report["table"] + "\n")
    if cfg.output_json:
        Path(cfg.output_json).parent.mkdir(parents=True, exist_ok=True)
        targets.append(Path(cfg.output_json))
    for path in targets:
        atomic_write_text(path, json.dumps(report, indent=2))


def format_table(report: dict) -> str:
    """A markdown table: one row per model, one column per metric (`n/a: <reason>` spelled out below the table),
    then paired differences to the first model with 95% intervals."""
    models = report["models"]
    keys = list(next(iter(models.values())))
    lines = [f"Selection: {report.get('selection', 'single sample')}.", ""]
    lines.append("| model | " + " | ".join(keys) + " |")
    lines.append("|" + "---|" * (len(keys) + 1))
    reasons = {}
    for name, m in models.items():
        cells = []
        for k in keys:
            v = m.get(k)
            if isinstance(v, str):
                reasons[k] = v
                cells.append("n/a")
            else:
                cells.append(f"{v:.4g}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    for k, why in reasons.items():
        lines.append(f"\n{k}: {why}")
    for name, diffs in report.get("paired_vs_first", {}).items():
        parts = [f"{k} {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" for k, d in diffs.items()]
        lines.append(f"\n`{name}` minus `{next(iter(models))}` (paired by prompt, 95% CI): " + "; ".join(parts))
    return "\n".join(lines)


def make_parser():
    from trl import TrlParser

    return TrlParser((EvaluateConfig,))


def main(cfg: EvaluateConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return evaluate(cfg)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
