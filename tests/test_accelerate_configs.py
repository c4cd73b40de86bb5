"""The named accelerate configs parse as accelerate's own config class and say what they claim."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "accelerate_configs"
EXPECTED = {
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu.yaml": ("MULTI_GPU", 1, 8),
    "multi_node.yaml": ("MULTI_GPU", 2, 16),
    "fsdp.yaml": ("FSDP", 1, 8),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 1, 8),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses(name):
    cfg = load_config_from_file(str(CONFIGS / name))
    kind, machines, processes = EXPECTED[name]
    assert str(cfg.distributed_type).split(".")[-1] == kind
    assert (cfg.num_machines, cfg.num_processes, str(cfg.mixed_precision)) == (machines, processes, "bf16")
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 2
    if kind == "FSDP":
        from base_model import modeling_maskaudioflow

        # every class named for auto-wrapping exists in the model
        for cls in cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(modeling_maskaudioflow, cls), cls
