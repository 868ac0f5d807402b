#!/usr/bin/env bash
# AISHELL-1 (openslr.org/33, Mandarin read speech, 178 h, scored by CER) with X-LLM's speech interface.
# Stages (run a range with --stage N --stop-stage M):
#   0  data: the official AISHELL-1 layout under --corpus-dir (speaker archives unpacked) -> data/{train,dev,test}
#   1  features: fbank or frozen-encoder outputs -> dump/<features>/<set>/feats.{ark,scp}; global CMVN
#   2  units: characters (sentencepiece char) or the LLM's own tokens, from data/train/text
#   3  train: X-LLM stage 1, encoder + C-Former (CIF) + classifier     -> exp/<tag>/final
#   4  decode + score: CIF greedy search, CER per test set             -> exp/<tag>/RESULTS.md
#   5  train: X-LLM stage 2, S-Adapter into the frozen LLM             -> exp/<tag>/<llm tag>/final
#   6  decode: LLM beam search from the speech embeddings              -> .../decode_llm_<set>
#   7  score + results: CIF greedy vs LLM on every test set, export    -> exp/<tag>/RESULTS.md, exp/<tag>/<llm tag>/model
# Example: ./run.sh --corpus-dir /data/aishell --nj 16
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
nj=4                                   # parallel jobs for data preparation and features
corpus_dir=                            # folder holding data_aishell/ (or data_aishell.tgz) from openslr.org/33
remove_archives=false                  # true: delete data_aishell/wav/<speaker>.tar.gz once unpacked (as Kaldi does)
config=conf/cformer_conformer.yaml     # stage 1: features, tokenizer, model, train
llm_config=conf/llm_qwen2.5_1.5b.yaml  # stage 2: speech_llm (LLM, adapter, prompt), train, decode
exp_tag=                               # default: the config's file name
train_cmd=asr                          # launcher of stages 3 and 5, e.g. "torchrun --standalone --nproc_per_node=8 -m asr.cli.main" (docs/distributed.md)
valid_set=dev                          # validation during training
test_sets="dev test"
__options="stage stop_stage nj train_cmd corpus_dir remove_archives config llm_config exp_tag valid_set test_sets"
. utils/parse_options.sh

score_opts=(--unit char --normalizer chinese)   # CER: characters; punctuation and spaces removed
tag=${exp_tag:-$(basename "$config" .yaml)}
exp=exp/$tag
# settings read from the configs in one go: feature type, its dump dir, decoding batch sizes
settings=$(python - "$config" "$llm_config" <<'EOF'
import shlex, sys
from asr.config import load_config
c, l = load_config(sys.argv[1]), load_config(sys.argv[2])
f = c.get("features") or {}
ftype, opts = f.get("type", "fbank"), f.get("options") or {}
# a frozen encoder's outputs depend on the encoder: one dump dir per model and pooling
tag = ftype if ftype == "fbank" else f"{ftype}_{str(opts.get('model', 'packaged')).rstrip('/').split('/')[-1]}_pool{opts.get('pool', 1)}"
print(f"feat_type={shlex.quote(ftype)} feat_tag={shlex.quote(tag)}")
print(f"batch_frames={int((c.get('decode') or {}).get('batch_frames', 40000))}")
d = l.get("decode") or {}
print(f"beam_size={int(d.get('beam_size', 1))} batch_size={int(d.get('batch_size', 8))} cif_weight={float(d.get('cif_weight', 0.0))}")
EOF
)
eval "$settings"
dump=dump/$feat_tag
log() { echo "$(date '+%F %T') [stage $1] $2"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  [ -n "$corpus_dir" ] || { echo "$0: --corpus-dir is required for stage 0 (the folder holding data_aishell/)" >&2; exit 1; }
  log 0 "data dirs from $corpus_dir"
  opts=(); [ "$remove_archives" = true ] && opts+=(--remove-archives)
  python local/data_prep.py --corpus-dir "$corpus_dir" --data data --nj "$nj" "${opts[@]}"
fi

all_sets=$(echo train "$valid_set" $test_sets | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ')

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  asr validate-data-dir $(for s in $all_sets; do echo "data/$s"; done)
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log 1 "features ($feat_type) -> $dump"
  for set in $all_sets; do
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
  $train_cmd train --config "$config" --train-dir "$dump/train" --valid-dir "$dump/$valid_set" \
    --tokenizer "$exp/tokenizer/units" --exp-dir "$exp"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log 4 "CIF greedy decoding and scoring"
  dirs=()
  for set in $test_sets; do
    asr decode --model-dir "$exp/final" --data-dir "$dump/$set" --out-dir "$exp/decode_cif_$set" --batch-frames "$batch_frames"
    asr score "${score_opts[@]}" "$exp/decode_cif_$set"
    dirs+=("$exp/decode_cif_$set")
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
fi

llm_exp=$exp/$(basename "$llm_config" .yaml)

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log 5 "training (X-LLM stage 2: S-Adapter into the frozen LLM) with $train_cmd -> $llm_exp"
  $train_cmd train-llm --config "$llm_config" --stage1 "$exp/final" --train-dir "$dump/train" \
    --valid-dir "$dump/$valid_set" --exp-dir "$llm_exp"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log 6 "LLM decoding (beam $beam_size, CIF weight $cif_weight)"
  for set in $test_sets; do
    asr decode-llm --model-dir "$llm_exp/final" --data-dir "$dump/$set" --out-dir "$llm_exp/decode_llm_$set" \
      --beam-size "$beam_size" --batch-size "$batch_size" --cif-weight "$cif_weight"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log 7 "scoring: CIF greedy (stage 1) vs LLM (stage 2); export -> $llm_exp/model"
  dirs=()
  for set in $test_sets; do
    asr score "${score_opts[@]}" "$llm_exp/decode_llm_$set"
    dirs+=("$exp/decode_cif_$set")
    for d in "$exp"/*/decode_llm_"$set"; do   # every stage-2 LLM scored so far, side by side
      [ -f "$d/scores.json" ] && dirs+=("$d")
    done
  done
  asr results --format markdown --out "$exp/RESULTS.md" "${dirs[@]}"
  asr export --model-dir "$llm_exp/final" --out "$llm_exp/model" --beam-size "$beam_size" --cif-weight "$cif_weight"
fi
