"""`rewardflow <command> [flags]`: the entry points as one console command.

    rewardflow rollout --max_prompts 64          # = accelerate launch rewardflow/rollout.py ...
    rewardflow finetune --reward clap --tau 0.1  # = accelerate launch rewardflow/finetune.py ...
    rewardflow evaluate --models synthcaps outputs/finetune/final
    rewardflow agreement --rollout outputs/rollout --referee verifier  # does the reward rank samples as the referee?

Multi-process runs still start through `accelerate launch` / `torchrun` on the script files.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "rollout": "rewardflow.rollout",
    "finetune": "rewardflow.finetune",
    "evaluate": "rewardflow.evaluate",
    "agreement": "rewardflow.agreement",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
            raise SystemExit(2)
        return
    module = importlib.import_module(COMMANDS[argv[0]])
    module.main(*module.make_parser().parse_args_and_config(args=argv[1:]))


if __name__ == "__main__":
    main()
