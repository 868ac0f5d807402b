#!/usr/bin/env bash
# Kaldi-style option parsing: "--foo-bar value" sets the shell variable foo_bar, which must already
# exist (declared with its default before this file is sourced). "--help" prints the defaults.
# A script that hands options on to another (a corpus's run.sh to asr.sh) declares the array
# __passthrough=() first: options it does not declare are collected there instead of refused.
# Sourced, not executed: `. utils/parse_options.sh`.

while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      echo "usage: $0 [options]"; echo "options (current values):"
      for v in $(compgen -v); do
        case " ${__options:-} " in *" $v "*) printf '  --%s %s\n' "${v//_/-}" "${!v}";; esac
      done
      if declare -p __passthrough >/dev/null 2>&1; then
        echo "any other option goes on to the shared stages: ./asr.sh --help lists them"
      fi
      exit 0 ;;
    --*=*) __name="${1%%=*}"; __value="${1#*=}"; __given=("$1"); shift ;;
    --*) __name="$1"; __value="${2-}"; [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
         __given=("$1" "$2"); shift 2 ;;
    *) break ;;
  esac
  __var="${__name#--}"; __var="${__var//-/_}"
  if ! declare -p "$__var" >/dev/null 2>&1 || [[ "$__var" == __* ]]; then
    if declare -p __passthrough >/dev/null 2>&1; then
      __passthrough+=("${__given[@]}"); continue
    fi
    echo "$0: unknown option $__name" >&2; exit 1
  fi
  printf -v "$__var" '%s' "$__value"
done
unset __name __value __var __given
