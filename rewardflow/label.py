"""A local A/B labelling page over a rollout: two clips of one prompt, side by side, and a judgement.

    rewardflow label --rollout outputs/rollout                       # http://127.0.0.1:8765
    rewardflow label --rollout outputs/rollout --strategy close --cover_prompts true --port 9000

Each answer is appended atomically to `<rollout>/preferences/` (`rewardflow/preferences.py`): a second labeller or a
restart loses and duplicates nothing. The server binds to 127.0.0.1 unless `--host` says otherwise, serves only the
rollout's own audio (by clip id, never by path) and spectrograms it renders from them, and answers unknown ids and
malformed requests with a 4xx and a JSON error. API:

    GET  /                          the page
    GET  /api/next?labeller=NAME    {"pair_id", "prompt", "a": {clip_id, audio_url, spectrogram_url}, "b": ...,
                                     "progress": {"done", "total"}} or {"done": true, "progress": ...}
    POST /api/answer                {"labeller", "clip_a", "clip_b", "choice": "a" | "b" | "tie" | "skip"}
    GET  /audio/<prompt_id>/<i>     the clip (FLAC/WAV as stored)
    GET  /spectrogram/<prompt_id>/<i>.png
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardflow.preferences import CHOICES, PairChooser, check_labeller, load_preferences, pair_id, write_answer  # noqa: E402

PAGE = Path(__file__).resolve().parent / "static" / "label.html"
MAX_BODY = 4096


@dataclass
class LabelConfig:
    rollout: str = field(default="outputs/rollout", metadata={"help": "Rollout folder with audio (rollout.py)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (127.0.0.1: this machine only)."})
    port: int = field(default=8765, metadata={"help": "Port (0: any free port)."})
    strategy: str = field(default="disagree", metadata={"help": "Pairs first: disagree, close or random."})
    rewards: list[str] = field(
        default_factory=lambda: ["clap", "aesthetics"], metadata={"help": "Scores that order pairs."}
    )
    cover_prompts: bool = field(
        default=True, metadata={"help": "One pair per prompt before any prompt gets a second."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the pair order's random parts."})


class LabelServer:
    """The state behind the page: the rollout's clips, the pair chooser, and what each labeller has answered."""

    def __init__(self, cfg: LabelConfig):
        from rewardflow.rollout_table import load_rollout

        self.root = Path(cfg.rollout)
        table = load_rollout(self.root)
        if not any(table["audio_path"]):
            raise ValueError(f"{self.root} was rolled out with --audio_format none: there is no audio to label.")
        self.chooser = PairChooser(table, cfg.rewards, cfg.strategy, cfg.cover_prompts, cfg.seed)
        self.lock = threading.Lock()
        self.answered: dict[str, set[str]] = {}
        for row in load_preferences(self.root, answered_only=False):
            self.answered.setdefault(row["labeller"], set()).add(row["pair_id"])
        self.spectrograms = self.root / "preferences" / ".spectrograms"

    def next_for(self, labeller: str) -> dict:
        with self.lock:
            done = self.answered.setdefault(labeller, set())
            pair = self.chooser.next_pair(done)
            progress = {"done": len(done), "total": self.chooser.total()}
        if pair is None:
            return {"done": True, "progress": progress}
        a, b = pair
        side = lambda c: {"clip_id": c, "audio_url": f"/audio/{c}", "spectrogram_url": f"/spectrogram/{c}.png"}  # noqa: E731
        return {"done": False, "pair_id": pair_id(a, b), "prompt": self.chooser.clips[a]["prompt"], "a": side(a),
                "b": side(b), "progress": progress}  # fmt: skip

    def answer(self, body: dict) -> dict:
        labeller = check_labeller(body.get("labeller", ""))
        a, b, choice = body.get("clip_a"), body.get("clip_b"), body.get("choice")
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}.")
        for c in (a, b):
            if c not in self.chooser.clips:
                raise KeyError(f"unknown clip id {c!r}")
        if a == b or self.chooser.clips[a]["prompt_id"] != self.chooser.clips[b]["prompt_id"]:
            raise ValueError("clip_a and clip_b must be two different clips of one prompt.")
        pid = pair_id(a, b)
        record = {"pair_id": pid, "prompt_id": self.chooser.clips[a]["prompt_id"], "prompt": self.chooser.clips[a]["prompt"],
                  "clip_a": a, "clip_b": b, "choice": choice, "labeller": labeller, "timestamp": time.time()}  # fmt: skip
        write_answer(self.root, record)
        with self.lock:
            self.answered.setdefault(labeller, set()).add(pid)
        return {"saved": pid}

    def audio_file(self, cid: str) -> Path:
        if cid not in self.chooser.clips:
            raise KeyError(f"unknown clip id {cid!r}")
        return self.root / self.chooser.clips[cid]["audio_path"]

    def spectrogram(self, cid: str) -> Path:
        path = self.spectrograms / (cid.replace("/", "__") + ".png")
        if not path.is_file():
            import torch

            from base_model import MelSpectrogram
            from base_model.plotting import save_spectrograms
            from rewardflow.rollout_table import read_audio

            wav, sr = read_audio(self.audio_file(cid))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{threading.get_ident()}.png")
            save_spectrograms(tmp, [MelSpectrogram()(torch.from_numpy(wav)[None].float())[0]], [""], sr)
            tmp.replace(path)
        return path


def make_handler(server: LabelServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: one line per request would drown the console
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser dropped a clip it no longer wants
                pass

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            try:
                if url.path == "/":
                    return self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                if url.path == "/api/next":
                    labeller = parse_qs(url.query).get("labeller", [""])[0]
                    return self._json(200, server.next_for(check_labeller(labeller)))
                if url.path.startswith("/audio/"):
                    path = server.audio_file(unquote(url.path[len("/audio/") :]))
                    kind = "audio/flac" if path.suffix == ".flac" else "audio/wav"
                    return self._send(200, path.read_bytes(), kind)
                if url.path.startswith("/spectrogram/") and url.path.endswith(".png"):
                    path = server.spectrogram(unquote(url.path[len("/spectrogram/") : -len(".png")]))
                    return self._send(200, path.read_bytes(), "image/png")
                return self._json(404, {"error": f"no such page: {url.path}"})
            except KeyError as e:
                return self._json(404, {"error": str(e).strip("'\"")})
            except ValueError as e:
                return self._json(400, {"error": str(e)})

        def do_POST(self):  # noqa: N802
            if urlparse(self.path).path != "/api/answer":
                return self._json(404, {"error": f"no such endpoint: {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self._json(400, {"error": "bad Content-Length"})
            if not 0 < length <= MAX_BODY:
                return self._json(
                    413 if length > MAX_BODY else 400, {"error": "a JSON body of at most 4 KB is needed"}
                )
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                return self._json(200, server.answer(body))
            except KeyError as e:
                return self._json(404, {"error": str(e).strip("'\"")})
            except (ValueError, json.JSONDecodeError) as e:
                return self._json(400, {"error": str(e)})

    return Handler


def serve(cfg: LabelConfig) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); `server.server_address` has the port when `--port 0`."""
    httpd = ThreadingHTTPServer((cfg.host, cfg.port), make_handler(LabelServer(cfg)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def make_parser():
    from trl import TrlParser

    return TrlParser((LabelConfig,))


def main(cfg: LabelConfig) -> None:
    httpd = ThreadingHTTPServer((cfg.host, cfg.port), make_handler(LabelServer(cfg)))
    host, port = httpd.server_address[:2]
    print(f"labelling {cfg.rollout} at http://{host}:{port}/ (Ctrl-C stops; answers are saved as they come)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
