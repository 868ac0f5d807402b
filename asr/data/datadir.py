"""Kaldi data directories: read, write and validate.

A data dir holds ``wav.scp`` (utt -> path or ``cmd |``), ``text`` (utt -> transcript),
``utt2spk`` and ``spk2utt``, optionally ``segments`` (utt -> rec start end), and after feature
extraction ``feats.scp``, ``utt2num_frames`` and ``cmvn.scp``. Every file is sorted by key in
C-locale (byte) order and all per-utterance files name the same utterances, as Kaldi's
``utils/validate_data_dir.sh`` demands. Validation errors name the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asr.io_utils import write_table


class DataDirError(ValueError):
    """A data dir file is missing or malformed; the message names the file and line."""


def read_table(path: str | Path, *, allow_empty_value: bool = False, check_sorted: bool = True) -> dict[str, str]:
    """Read a ``key value...`` file into an ordered dict, checking encoding, sorting and duplicates."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file is missing")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line_no = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataDirError(f"{path}:{line_no}: not valid UTF-8 ({exc.reason})") from None
    table: dict[str, str] = {}
    prev = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DataDirError(f"{path}:{n}: empty line")
        parts = line.split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise DataDirError(f"{path}:{n}: key {key!r} has no value")
        if key in table:
            raise DataDirError(f"{path}:{n}: duplicate key {key!r}")
        if check_sorted and prev is not None and key.encode() < prev.encode():
            raise DataDirError(f"{path}:{n}: not sorted: {key!r} comes after {prev!r} (sort with LC_ALL=C)")
        table[key] = value
        prev = key
    return table


@dataclass
class DataDir:
    """An in-memory Kaldi data dir. ``wav_scp``, ``text`` and ``utt2spk`` are keyed by utterance."""

    path: Path
    wav_scp: dict[str, str] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    segments: dict[str, tuple[str, float, float]] | None = None

    @property
    def utts(self) -> list[str]:
        return sorted(self.utt2spk, key=str.encode)

    def spk2utt(self) -> dict[str, str]:
        groups: dict[str, list[str]] = {}
        for utt in self.utts:
            groups.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: " ".join(utts) for spk, utts in groups.items()}

    def write(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_table(self.path / "wav.scp", self.wav_scp)
        write_table(self.path / "text", self.text)
        write_table(self.path / "utt2spk", self.utt2spk)
        write_table(self.path / "spk2utt", self.spk2utt())
        if self.segments is not None:
            write_table(self.path / "segments", {u: f"{r} {s:.3f} {e:.3f}" for u, (r, s, e) in self.segments.items()})

    @classmethod
    def read(cls, path: str | Path, validate: bool = True) -> DataDir:
        path = Path(path)
        if validate:
            validate_data_dir(path)
        d = cls(path)
        d.wav_scp = read_table(path / "wav.scp")
        d.text = read_table(path / "text", allow_empty_value=True) if (path / "text").exists() else {}
        d.utt2spk = read_table(path / "utt2spk")
        if (path / "segments").exists():
            d.segments = {}
            for utt, value in read_table(path / "segments").items():
                rec, start, end = value.split()
                d.segments[utt] = (rec, float(start), float(end))
        return d


def _check_same_keys(ref_name: str, ref: dict, name: str, other: dict, path: Path) -> None:
    extra = [(n, k) for n, k in enumerate(other, 1) if k not in ref]
    missing = [(n, k) for n, k in enumerate(ref, 1) if k not in other]
    if extra:
        n, k = extra[0]
        raise DataDirError(f"{path / name}:{n}: utterance {k!r} not in {ref_name} ({len(extra)} such)")
    if missing:
        n, k = missing[0]
        raise DataDirError(
            f"{path / name}: {len(missing)} utterance(s) of {ref_name} missing, first {k!r} ({path / ref_name}:{n})"
        )


def validate_data_dir(path: str | Path, *, require_text: bool = True, require_feats: bool = False) -> int:
    """Check a data dir the way ``utils/validate_data_dir.sh`` does. Returns the utterance count.

    Raises :class:`DataDirError` naming the file (and line) of the first problem found.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: not a directory")
    utt2spk = read_table(path / "utt2spk")
    for n, (utt, spk) in enumerate(utt2spk.items(), 1):
        if len(spk.split()) != 1:
            raise DataDirError(f"{path / 'utt2spk'}:{n}: expected 'utt spk', got {len(spk.split())} fields after {utt!r}")
        if not utt.startswith(spk):
            # Kaldi requires speaker ids to prefix utterance ids so both sort the same way.
            raise DataDirError(f"{path / 'utt2spk'}:{n}: speaker {spk!r} is not a prefix of utterance {utt!r}")
    spk2utt = read_table(path / "spk2utt")
    listed: set[str] = set()
    for n, (spk, utts) in enumerate(spk2utt.items(), 1):
        for utt in utts.split():
            if utt in listed or utt2spk.get(utt) != spk:
                why = "listed twice" if utt in listed else f"utt2spk says {utt2spk.get(utt)!r}"
                raise DataDirError(f"{path / 'spk2utt'}:{n}: utterance {utt!r} under speaker {spk!r}, but {why}; regenerate it")
            listed.add(utt)
    for n, utt in enumerate(utt2spk, 1):
        if utt not in listed:
            raise DataDirError(f"{path / 'spk2utt'}: utterance {utt!r} ({path / 'utt2spk'}:{n}) is missing; regenerate it")
    if (path / "segments").exists():
        segments = read_table(path / "segments")
        _check_same_keys("utt2spk", utt2spk, "segments", segments, path)
        wav = read_table(path / "wav.scp")
        for n, (utt, value) in enumerate(segments.items(), 1):
            fields = value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise DataDirError(f"{path / 'segments'}:{n}: expected 'utt rec start end', got {utt} {value!r}") from None
            if rec not in wav:
                raise DataDirError(f"{path / 'segments'}:{n}: recording {rec!r} not in wav.scp")
            if not (0 <= start < end or end == -1):
                raise DataDirError(f"{path / 'segments'}:{n}: bad times start={start} end={end}")
    else:
        _check_same_keys("utt2spk", utt2spk, "wav.scp", read_table(path / "wav.scp"), path)
    if require_text or (path / "text").exists():
        text = read_table(path / "text", allow_empty_value=True)
        _check_same_keys("utt2spk", utt2spk, "text", text, path)
        for n, (utt, words) in enumerate(text.items(), 1):
            if not words.strip():
                raise DataDirError(f"{path / 'text'}:{n}: empty transcript for {utt!r}")
    for name in ("feats.scp", "utt2num_frames", "utt2dur"):
        if (path / name).exists() or (require_feats and name != "utt2dur"):
            table = read_table(path / name)
            # features may be missing for utterances whose audio was bad (they are listed in bad_utts)
            extra = [(n, k) for n, k in enumerate(table, 1) if k not in utt2spk]
            if extra:
                raise DataDirError(f"{path / name}:{extra[0][0]}: utterance {extra[0][1]!r} not in utt2spk")
            if require_feats and name == "feats.scp" and not table:
                raise DataDirError(f"{path / name}: no features")
    return len(utt2spk)


def subset_data_dir(src: str | Path, dst: str | Path, utts: list[str]) -> DataDir:
    """Copy the listed utterances of ``src`` into a new data dir ``dst`` (wav.scp, text, utt2spk, spk2utt)."""
    d = DataDir.read(src)
    keep = set(utts)
    out = DataDir(Path(dst))
    out.utt2spk = {u: s for u, s in d.utt2spk.items() if u in keep}
    out.text = {u: t for u, t in d.text.items() if u in keep}
    if d.segments is not None:
        out.segments = {u: seg for u, seg in d.segments.items() if u in keep}
        recs = {seg[0] for seg in out.segments.values()}
        out.wav_scp = {r: p for r, p in d.wav_scp.items() if r in recs}
    else:
        out.wav_scp = {u: p for u, p in d.wav_scp.items() if u in keep}
    out.write()
    return out
