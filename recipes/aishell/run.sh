#!/usr/bin/env bash
# AISHELL-1 (openslr.org/33, Mandarin read speech, 178 h, scored by CER) with X-LLM's speech interface.
# Stages (run a range with --stage N --stop-stage M):
#   0    data: the official AISHELL-1 layout under --corpus-dir (speaker archives unpacked) -> data/{train,dev,test}
#   1-7  the shared stages of asr.sh (recipes/TEMPLATE/asr.sh): features, units (characters or the LLM's
#        own tokens), X-LLM stage 1 (C-Former), CIF decoding, X-LLM stage 2 (S-Adapter + frozen LLM),
#        LLM decoding, scoring by CER and export to exp/<tag>/<llm tag>/model
# Options of asr.sh (--config, --llm-config, --train-cmd, --exp-tag, ...) pass through: ./asr.sh --help.
# Example: ./run.sh --corpus-dir /data/aishell --nj 16
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
nj=4                                   # parallel jobs for data preparation and features
corpus_dir=                            # folder holding data_aishell/ (or data_aishell.tgz) from openslr.org/33
remove_archives=false                  # true: delete data_aishell/wav/<speaker>.tar.gz once unpacked (as Kaldi does)
config=conf/cformer_conformer.yaml     # stage 1: features, tokenizer, model, train, decode
llm_config=conf/llm_qwen2.5_1.5b.yaml  # stage 2: speech_llm (LLM, adapter, prompt), train, decode
__options="stage stop_stage nj config llm_config corpus_dir remove_archives"
__passthrough=()
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  [ -n "$corpus_dir" ] || { echo "$0: --corpus-dir is required for stage 0 (the folder holding data_aishell/)" >&2; exit 1; }
  echo "$(date '+%F %T') [stage 0] data dirs from $corpus_dir"
  opts=(); [ "$remove_archives" = true ] && opts+=(--remove-archives)
  python local/data_prep.py --corpus-dir "$corpus_dir" --data data --nj "$nj" "${opts[@]}"
fi
[ "$stop_stage" -ge 1 ] || exit 0

./asr.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --valid-set dev --test-sets "dev test" \
  --score-opts "--unit char --normalizer chinese" \
  --config "$config" --llm-config "$llm_config" "${__passthrough[@]}"
