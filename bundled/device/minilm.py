"""Carry the default text encoder to the device machine within its 64 MiB limit: every tensor but the word
embeddings (fp32, unchanged), plus the embedding rows of the tokens SynthCaps captions use. `unpack` rebuilds a
transformers folder whose other rows are zero and checks that every caption of the run tokenizes into kept rows,
so the encodings of those captions are the full model's."""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

KEY = "embeddings.word_embeddings.weight"


def captions(n_train):
    from base_model.data import synthcaps
    from base_model.data.synthcaps import SynthCapsConfig

    c = SynthCapsConfig(0, 4.0)
    caps = [synthcaps.example(i, "train", c)["caption"] for i in range(n_train)]
    caps += [synthcaps.example(i, "heldout", c)["caption"] for i in range(2048)]
    caps += [synthcaps.example(i, "validation", c)["caption"] for i in range(2048)]
    return caps


def pack(src, dst, n_train):
    from transformers import AutoTokenizer

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(src)
    ids = set(tok.all_special_ids)
    for ids_ in tok(captions(n_train), truncation=True, max_length=64)["input_ids"]:
        ids.update(ids_)
    weights = load_file(str(src / "model.safetensors"))
    keep = torch.tensor(sorted(ids))
    rows = weights.pop(KEY)
    save_file(weights, str(dst / "layers.safetensors"))
    save_file(
        {"ids": keep, "rows": rows[keep].contiguous(), "shape": torch.tensor(rows.shape)},
        str(dst / "rows.safetensors"),
    )
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors" and f.suffix in {".json", ".txt"}:
            shutil.copy(f, dst / f.name)
    print("kept rows", len(keep))


def unpack(src, dst, n_train):
    from transformers import AutoTokenizer

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(src / "layers.safetensors"))
    r = load_file(str(src / "rows.safetensors"))
    full = torch.zeros(tuple(r["shape"].tolist()), dtype=r["rows"].dtype)
    full[r["ids"]] = r["rows"]
    weights[KEY] = full
    save_file(weights, str(dst / "model.safetensors"))
    for f in src.iterdir():
        if f.suffix in {".json", ".txt"}:
            shutil.copy(f, dst / f.name)
    tok = AutoTokenizer.from_pretrained(dst)
    kept = set(r["ids"].tolist())
    for ids_ in tok(captions(n_train), truncation=True, max_length=64)["input_ids"]:
        missing = set(ids_) - kept
        if missing:
            raise SystemExit(f"token ids {sorted(missing)} not kept")
    print("unpacked; every caption's tokens kept")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    {"pack": pack, "unpack": unpack}[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]))
