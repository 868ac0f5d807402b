"""xllm-asr: X-LLM's speech interface as a Kaldi-style speech recognition toolkit.

Data flows one way through the subpackages:
``asr.data`` (Kaldi data dirs, audio) -> ``asr.features`` (fbank, CMVN, ark/scp)
-> ``asr.models`` (encoders, CIF C-Former) -> ``asr.training`` -> ``asr.decoding``
-> ``evaluation`` (WER/CER, sclite-style reports).
"""

__version__ = "0.1.0"


def load_model(name_or_path=None, device: str = "auto", **options):
    """``asr.load_model().transcribe("talk.wav")``: see :mod:`asr.api` (imported on first use)."""
    from asr.api import load_model as _load

    return _load(name_or_path, device=device, **options)
