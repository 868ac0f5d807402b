#!/usr/bin/env bash
# The mini_vis recipe: image-grounded speech (X-LLM's image interface and image-conditioned ASR).
# Scenes of coloured objects are rendered as pictures and described by sentences that TTS voices
# read; test speech comes clean, at 10/5/0 dB SNR and with content words masked by noise bursts.
# Stages (run a range with --stage N --stop-stage M):
#   0  corpus: scenes -> pictures + sentences -> word-by-word TTS -> Kaldi data dirs
#      data/{train,dev,test_clean,test_10db,test_5db,test_0db,test_masked} (+ utt2image, word_spans,
#      masked_words, utt2image_mismatch) and caption lists data/{captions,captions_dev}
#   1  train: X-LLM image stages 1-2 on the captions, in two runs: (a) image-text contrastive
#      pretraining of encoder + Q-Former + I-Adapter (no LLM forward)  -> exp/<itc tag>/final
#      (b) from there, the frozen LLM's caption loss (+ contrastive); the encoder is frozen
#      afterwards                                                        -> exp/<image tag>/final
# Not built yet (their numbers are reserved here):
#   2  speech features, tokens and X-LLM speech stage 1 (CIF ASR) on data/train: the mini recipe's
#      stages 1-3 run on these data dirs
#   3  X-LLM speech stage 2 (S-Adapter into the same frozen LLM): mini's stage 5
#   4  X-LLM stage 3: joint image + speech instruction training ("transcribe this speech faithfully
#      according to the image") on data/train with utt2image
#   5  decoding and scoring per condition, with the true picture, with utt2image_mismatch and
#      with no picture; WER on the masked words (masked_words) separately
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=1
nj=2                                         # parallel synthesis jobs
corpus_config=conf/corpus_quick.yaml         # corpus size and voices (conf/corpus_tiny.yaml: a smoke test)
itc_config=conf/image_itc_quick.yaml         # stage 1a: contrastive pretraining ("" skips it)
image_config=conf/image_smollm2_quick.yaml   # stage 1b: image_x2l, llm, prompt, loss, train, eval
image_tag=                                   # default: the image config's file name
__options="stage stop_stage nj corpus_config itc_config image_config image_tag"
. utils/parse_options.sh

image_exp=exp/${image_tag:-$(basename "$image_config" .yaml)}
itc_exp=exp/$(basename "${itc_config:-none}" .yaml)
log() { echo "$(date '+%F %T') [stage $1] $2"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log 0 "image-grounded corpus from $corpus_config"
  python local/make_corpus.py --config "$corpus_config" --data data --nj "$nj"
  asr validate-data-dir data/train data/dev data/test_clean data/test_10db data/test_5db data/test_0db data/test_masked
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  init=()
  if [ -n "$itc_config" ]; then
    log 1 "image stage, run a: contrastive pretraining of the image interface -> $itc_exp"
    python -m asr.training.train_image --config "$itc_config" --captions data/captions \
      --valid-captions data/captions_dev --exp-dir "$itc_exp"
    init=(--init "$itc_exp/final")
  fi
  log 1 "image stage, run b: captions through the frozen LLM (X-LLM image stages 1-2) -> $image_exp"
  python -m asr.training.train_image --config "$image_config" --captions data/captions \
    --valid-captions data/captions_dev --exp-dir "$image_exp" "${init[@]}"
  head -12 "$image_exp/final/eval.json"
fi
