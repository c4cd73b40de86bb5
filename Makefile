# rewardflow: `make demo` and `make test` work on a fresh machine (they create .venv when needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow demo bench experiments render lint format clean

setup: $(STAMP)

# Reinstall only when the project's dependency list changes, so `make setup` is quick when done.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# audiobox-aesthetics declares torchaudio, which has no build for this torch; its model code needs none.
	$(PY) -m pip install -q --no-deps "audiobox-aesthetics>=0.0.4"
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

test-slow: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

demo: setup
	HF_HUB_OFFLINE=1 $(PY) experiments/alignment_demo.py --output_dir outputs/demo

# The benchmarks (FLOPs, sampler, fine-tuning step, rollout, vocoder, generation); writes
# experiments/benchmarks/results/latest.json.
bench: setup
	HF_HUB_OFFLINE=1 $(PY) experiments/benchmarks/run_all.py

# Regenerates the committed experiment results (experiments/results/) on the embedded default, then the tables.
experiments: setup
	HF_HUB_OFFLINE=1 $(PY) experiments/decoding_scaling.py
	HF_HUB_OFFLINE=1 $(PY) experiments/masking_ablation.py
	HF_HUB_OFFLINE=1 $(PY) experiments/alignment_study.py
	$(PY) experiments/render_results.py

# Re-renders every table of figures in README.md and experiments/README.md from the committed JSON.
render: setup
	$(PY) experiments/render_results.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) outputs
