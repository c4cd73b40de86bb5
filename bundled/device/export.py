"""Copies each flow run's newest complete EMA checkpoint to $OUT (two safetensors halves under 16 MiB, and a
meta.json with the model config, step and loss log), every `interval` seconds until `stop` exists, then once more."""

import json
import os
import sys
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

build, out, interval = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
done = {}


def export():
    for run in sorted(build.glob("flow-*")):
        ckpts = sorted(
            (
                p
                for p in run.glob("checkpoint-*")
                if (p / "trainer_state.json").is_file() and (p / "ema.safetensors").is_file()
            ),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        if not ckpts or done.get(run.name) == ckpts[-1].name:
            continue
        c = ckpts[-1]
        try:
            w = load_file(str(c / "ema.safetensors"))
            state = json.loads((c / "trainer_state.json").read_text())
            config = json.loads((c / "config.json").read_text())
        except Exception as e:  # a checkpoint being deleted under us: next round
            print("export skipped", c, e, flush=True)
            continue
        dest = out / run.name
        dest.mkdir(parents=True, exist_ok=True)
        keys = sorted(w)
        half, acc, parts = sum(v.numel() * v.element_size() for v in w.values()) / 2, 0, ([], [])
        for k in keys:
            parts[0 if acc < half else 1].append(k)
            acc += w[k].numel() * w[k].element_size()
        for i, ks in enumerate(parts):
            tmp = dest / f".ema-{i}.tmp"
            save_file({k: w[k].contiguous() for k in ks}, str(tmp))
            os.replace(tmp, dest / f"ema-{i}.safetensors")
        meta = {
            "step": state["global_step"],
            "config": config,
            "log_history": state["log_history"],
            "sittings": json.loads((run / "sittings.json").read_text()) if (run / "sittings.json").is_file() else None,
        }
        (dest / ".meta.tmp").write_text(json.dumps(meta))
        os.replace(dest / ".meta.tmp", dest / "meta.json")
        done[run.name] = c.name
        print(f"exported {run.name} {c.name} at {time.strftime('%H:%M:%S')}", flush=True)


while not (build / "stop").exists():
    export()
    time.sleep(interval)
export()
