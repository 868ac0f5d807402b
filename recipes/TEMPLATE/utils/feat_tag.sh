#!/usr/bin/env bash
# feat_tag CONFIG: the dump dir name of a stage-1 config's features. Fbank is "fbank"; a frozen
# encoder's outputs depend on the encoder and its pooling: "<type>_<model name>_pool<N>", e.g.
# whisper_encoder_packaged_pool1. Sourced: `. utils/feat_tag.sh; dump=dump/$(feat_tag "$config")`.
feat_tag() {
  local type model
  type=$(asr config-get "$1" features.type --default fbank)
  if [ "$type" = fbank ]; then echo fbank; return; fi
  model=$(asr config-get "$1" features.options.model --default packaged)
  model=${model%/}
  echo "${type}_${model##*/}_pool$(asr config-get "$1" features.options.pool --default 1)"
}
