"""Kaldi-style speed perturbation of a data dir (``utils/data/perturb_data_dir_speed_3way.sh``).

Each factor f other than 1 adds a copy of every utterance read f times as fast (tempo and pitch
together, as resampling does), as a ``sox ... speed f |`` pipe in ``wav.scp``: nothing is written
to disk until features are extracted. Copies get ``sp<f>-`` before their utterance, speaker and
recording ids, so a speaker at another speed is another speaker (CMVN and batching see them
apart); ``segments`` times are divided by f. Transcripts are unchanged.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from asr.data.datadir import DataDir


def speed_prefix(factor: float) -> str:
    """The id prefix of a copy at ``factor`` ("sp0.9-"); the original (1.0) keeps its ids."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def speed_pipe(source: str, factor: float) -> str:
    """A wav.scp entry reading ``source`` (a path or a ``cmd |`` pipe) at ``factor`` x speed."""
    if factor == 1.0:
        return source
    if source.endswith("|"):
        return f"{source[:-1].strip()} | sox -t wav - -t wav - speed {factor:g} |"
    return f"sox {shlex.quote(source)} -t wav - speed {factor:g} |"


def speed_perturb_data_dir(src: str | Path, dst: str | Path, factors: list[float] = (0.9, 1.0, 1.1)) -> DataDir:
    """Write ``dst``: the utterances of ``src`` at each speed factor (1.0 = the originals)."""
    factors = list(dict.fromkeys(float(f) for f in factors))
    bad = [f for f in factors if not 0.5 <= f <= 2.0]
    if not factors or bad:
        raise ValueError(f"speed factors must lie in [0.5, 2.0] (Kaldi uses 0.9 1.0 1.1); got {factors}")
    d = DataDir.read(src)
    out = DataDir(Path(dst))
    if d.segments is not None:
        out.segments = {}
    for f in factors:
        pre = speed_prefix(f)
        for utt, spk in d.utt2spk.items():
            out.utt2spk[pre + utt] = pre + spk
            if utt in d.text:
                out.text[pre + utt] = d.text[utt]
        for key, source in d.wav_scp.items():  # keyed by recording when there are segments
            out.wav_scp[pre + key] = speed_pipe(source, f)
        for utt, (rec, start, end) in (d.segments or {}).items():
            out.segments[pre + utt] = (pre + rec, start / f, end / f if end >= 0 else end)
    out.write()
    return out
