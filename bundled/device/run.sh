#!/bin/bash
# One GPU call (see README.md beside this): unpack the text encoder, render and encode the corpus once, train
# MaskAudioFlow and its CFM baseline side by side for SECS seconds each, exporting EMA checkpoints to $OUT.
set -x
PY=${PY:-python3}; SECS=${SECS:-330}; N=${N:-120000}; B=/tmp/build
T0=$(date +%s)
[ -n "$SKIP_PIP" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site bundled/device/whl/*.whl; export PYTHONPATH=/tmp/site:$PWD:$PWD/bundled/device/stub${EXTRA_PP:+:$EXTRA_PP}
nvidia-smi --query-gpu=name,memory.used --format=csv
$PY bundled/device/minilm.py unpack bundled/device/minilm /tmp/minilm 0 || exit 1
mkdir -p $B/vae && cp -r base_model/pretrained/synthcaps/vae $B/vae/final
echo "prep start $(( $(date +%s) - T0 ))s"
$PY - <<PY || exit 1
import sys, time, torch
sys.path.insert(0, ".")
from base_model import MelVAE
from base_model.pretrain import latent_cache
from base_model.train_vae import CorpusArguments, corpus_mels
from base_model.training import encode_latents
import gpu_librosa  # the mel filterbank, without librosa (transformers is imported already, so it never sees it)
sys.modules["librosa"] = gpu_librosa
t = time.time()
data = CorpusArguments(dataset="synthcaps", num_train_examples=$N, render_workers=15)
vae = MelVAE.from_pretrained("$B/vae/final").eval()
mels, caps, _ = corpus_mels(data, "train", $N, vae.downsample_factor)
vae.to("cuda" if torch.cuda.is_available() else "cpu")
print("rendered", mels.shape, round(time.time() - t, 1), flush=True)
lat = encode_latents(vae, mels, batch_size=512, cache=latent_cache(data, "$B/vae/final", mels))
print("latents", tuple(lat.shape), round(time.time() - t, 1), flush=True)
PY
echo "prep done $(( $(date +%s) - T0 ))s"
$PY bundled/device/export.py $B $OUT 40 > $OUT/export.log 2>&1 &
$PY bundled/build_synthcaps.py --output_dir $B --stages flow --train_examples $N --hidden_size 256 --num_layers 5 \
  --batch_size 256 --learning_rate 8e-4 --lr_schedule constant_with_warmup --flow_steps 1000000 --flow_seconds $SECS \
  --flow_save_steps 500 --bf16 ${BF16:-true} --render_workers 15 --text_encoder /tmp/minilm --measure_prompts 0 --seed 0
echo "train rc $? at $(( $(date +%s) - T0 ))s"
tail -n 30 $B/flow-masked.log $B/flow-cfm.log
touch $B/stop; wait
ls -la $OUT $OUT/*
echo "all done $(( $(date +%s) - T0 ))s"
