#!/usr/bin/env bash
# LibriSpeech (openslr.org/12, English read speech, scored by WER) with X-LLM's speech interface.
# Stages (run a range with --stage N --stop-stage M):
#   0    data: the official LibriSpeech layout under --corpus-dir -> data/{train,dev_clean,...}
#   1-7  the shared stages of asr.sh (recipes/TEMPLATE/asr.sh): features, units, X-LLM stage 1 (C-Former),
#        CIF decoding, X-LLM stage 2 (S-Adapter + frozen LLM), LLM decoding, scoring and export to
#        exp/<tag>/<llm tag>/model
# Options of asr.sh (--config, --llm-config, --train-cmd, --exp-tag, ...) pass through: ./asr.sh --help.
# Example: ./run.sh --corpus-dir /data/librispeech --train-subsets train-clean-100 --nj 16
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
nj=4                                   # parallel jobs for data preparation and features
corpus_dir=                            # folder holding LibriSpeech/ (the unpacked openslr.org/12 archives)
train_subsets=auto                     # "auto": every train-* subset present (960 h with all three), or e.g. "train-clean-100"
test_subsets=auto                      # "auto": every dev-*/test-* subset present
case=lower                             # transcript case in data/ (the corpus is upper case; scoring ignores case)
valid_set=dev_clean                    # validation during training
test_sets=auto                         # "auto": the data dirs of --test-subsets made in stage 0
config=conf/cformer_conformer.yaml     # stage 1: features, tokenizer, model, train, decode
llm_config=conf/llm_qwen2.5_1.5b.yaml  # stage 2: speech_llm (LLM, adapter, prompt), train, decode
__options="stage stop_stage nj config llm_config corpus_dir train_subsets test_subsets case valid_set test_sets"
__passthrough=()
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  [ -n "$corpus_dir" ] || { echo "$0: --corpus-dir is required for stage 0 (the folder holding LibriSpeech/)" >&2; exit 1; }
  echo "$(date '+%F %T') [stage 0] data dirs from $corpus_dir (train: $train_subsets; test: $test_subsets)"
  python local/data_prep.py --corpus-dir "$corpus_dir" --data data --train-subsets $train_subsets \
    --test-subsets $test_subsets --case "$case" --nj "$nj"
fi
[ "$stop_stage" -ge 1 ] || exit 0

if [ "$test_sets" = auto ]; then
  [ -f data/local/data_prep.json ] || { echo "$0: data/local/data_prep.json missing: run stage 0 first" >&2; exit 1; }
  test_sets=$(python -c "import json; print(' '.join(s.replace('-', '_') for s in json.load(open('data/local/data_prep.json'))['test_subsets']))")
fi
[ -n "$test_sets" ] || { echo "$0: no test sets (no dev-*/test-* subset in the corpus; give --test-sets)" >&2; exit 1; }

./asr.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --valid-set "$valid_set" --test-sets "$test_sets" \
  --config "$config" --llm-config "$llm_config" "${__passthrough[@]}"
