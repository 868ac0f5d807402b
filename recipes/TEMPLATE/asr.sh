#!/usr/bin/env bash
# Stages 1-7 of every speech recipe, shared (ESPnet's egs2 TEMPLATE in spirit). A corpus's run.sh makes
# the Kaldi data dirs data/<set> (its stage 0) and calls this script from its own dir, where asr.sh is
# a link to recipes/TEMPLATE/asr.sh:
#   1  features: check the data dirs; fbank or frozen-encoder outputs -> dump/<feat tag>/<set>/feats.{ark,scp}; CMVN
#   2  units: sentencepiece model (or the LLM's / Whisper's own tokens)  -> exp/<tag>/tokenizer
#   3  train: X-LLM stage 1, encoder + C-Former (CIF)                     -> exp/<tag>/final
#   4  decode + score: CIF greedy search per test set                     -> exp/<tag>/RESULTS.md
#   5  train: X-LLM stage 2, S-Adapter into the frozen LLM                -> exp/<tag>/<llm tag>/final
#   6  decode: LLM beam search from the speech embeddings                 -> exp/<tag>/<llm tag>/decode_llm_<set>
#   7  score + results: CIF greedy vs every stage-2 LLM scored; export    -> exp/<tag>/RESULTS.md, the export dir
# A stage-1 config of model kind whisper_cformer (Whisper's decoder in the C-Former) is also exported
# alone (fp16) to exp/<tag>/model_cformer in stage 7.
set -euo pipefail

stage=1
stop_stage=7
nj=4                 # parallel jobs for features
train_cmd=asr        # launcher of stages 3 and 5, e.g. "torchrun --standalone --nproc_per_node=8 -m asr.cli.main" (docs/distributed.md)
config=              # stage 1: features, tokenizer, model, train, decode
llm_config=          # stage 2: speech_llm (LLM, adapter, prompt), train, decode
exp_tag=             # default: the stage-1 config's file name
train_set=train
speed_perturb=       # e.g. "0.9 1.0 1.1": stage 1 trains on data/<train_set>_sp, Kaldi's 3-way speed perturbation
valid_set=dev        # validation during stage-1 training
llm_valid_set=       # validation during stage-2 training: "" = --valid-set, "none" = no validation
test_sets=           # decoded and scored in stages 4, 6 and 7
score_opts=          # options of `asr score`, e.g. "--unit char --normalizer chinese" (CER)
export_name=         # stage 7's export dir under exp/<tag>/ (default: <llm tag>/model)
__options="stage stop_stage nj train_cmd config llm_config exp_tag train_set speed_perturb valid_set llm_valid_set test_sets score_opts export_name"
. utils/parse_options.sh
. utils/feat_tag.sh

log() { echo "$(date '+%F %T') [stage $1] $2"; }
die() { echo "$0: $*" >&2; exit 1; }
[ -n "$config" ] || die "--config is required (the stage-1 config)"
[ "$stop_stage" -lt 5 ] || [ -n "$llm_config" ] || die "--llm-config is required for stages 5-7"
[ -n "$test_sets" ] || die "--test-sets is empty"

tag=${exp_tag:-$(basename "$config" .yaml)}
exp=exp/$tag
dump=dump/$(feat_tag "$config")
if [ -n "$speed_perturb" ]; then
  if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    asr perturb-speed "data/$train_set" "data/${train_set}_sp" --factors $speed_perturb
  fi
  train_set=${train_set}_sp
fi
all_sets=$(echo "$train_set" "$valid_set" $test_sets | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  asr validate-data-dir $(for s in $all_sets; do echo "data/$s"; done)
  log 1 "features ($(asr config-get "$config" features.type --default fbank)) -> $dump"
  for set in $all_sets; do
    asr make-feats --config "$config" --nj "$nj" "data/$set" "$dump/$set"
  done
  asr compute-cmvn "$dump/$train_set/feats.scp" "$dump/$train_set/cmvn.ark"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log 2 "tokenizer -> $exp/tokenizer"
  asr train-tokenizer --config "$config" "$dump/$train_set/text" "$exp/tokenizer/units"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log 3 "training (X-LLM stage 1) with $train_cmd -> $exp"
  $train_cmd train --config "$config" --train-dir "$dump/$train_set" --valid-dir "$dump/$valid_set" \
    --tokenizer "$exp/tokenizer/units" --exp-dir "$exp"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log 4 "CIF greedy decoding and scoring"
  batch_frames=$(asr config-get "$config" decode.batch_frames --default 40000)
  dirs=()
  for set in $test_sets; do
    asr decode --model-dir "$exp/final" --data-dir "$dump/$set" --out-dir "$exp/decode_cif_$set" --batch-frames "$batch_frames"
    asr score $score_opts "$exp/decode_cif_$set"
    dirs+=("$exp/decode_cif_$set")
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
fi

[ "$stop_stage" -ge 5 ] || exit 0
llm_exp=$exp/$(basename "$llm_config" .yaml)
decode_opt() { asr config-get "$llm_config" "decode.$1" --default "$2"; }
beam_size=$(decode_opt beam_size 1)
cif_weight=$(decode_opt cif_weight 0.0)

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log 5 "training (X-LLM stage 2: S-Adapter into the frozen LLM) with $train_cmd -> $llm_exp"
  valid_opt=()
  case "${llm_valid_set:-$valid_set}" in none) ;; *) valid_opt=(--valid-dir "$dump/${llm_valid_set:-$valid_set}") ;; esac
  $train_cmd train-llm --config "$llm_config" --stage1 "$exp/final" --train-dir "$dump/$train_set" \
    "${valid_opt[@]}" --exp-dir "$llm_exp"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log 6 "LLM decoding (beam $beam_size, CIF weight $cif_weight)"
  for set in $test_sets; do
    asr decode-llm --model-dir "$llm_exp/final" --data-dir "$dump/$set" --out-dir "$llm_exp/decode_llm_$set" \
      --beam-size "$beam_size" --batch-size "$(decode_opt batch_size 8)" --cif-weight "$cif_weight"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  export_dir=$exp/${export_name:-$(basename "$llm_config" .yaml)/model}
  log 7 "scoring: CIF greedy (stage 1) vs LLM (stage 2); export -> $export_dir"
  dirs=()
  for set in $test_sets; do
    asr score $score_opts "$llm_exp/decode_llm_$set"
    dirs+=("$exp/decode_cif_$set")
    for d in "$exp"/*/decode_llm_"$set"; do   # every stage-2 LLM scored so far, side by side
      [ -f "$d/scores.json" ] && dirs+=("$d")
    done
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
  asr export --model-dir "$llm_exp/final" --out "$export_dir" --beam-size "$beam_size" --cif-weight "$cif_weight"
  if [ "$(asr config-get "$config" model.kind --default cif_asr)" = whisper_cformer ]; then
    asr export --model-dir "$exp/final" --out "$exp/model_cformer" --dtype float16
  fi
fi
