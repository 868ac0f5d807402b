"""X-LLM's image interface (X2L): pictures as a foreign language for the same frozen LLM.

    images (B, 3, H, W) in [0, 1]
      -> image encoder (frozen after the image stage)        patch features   (B, N, D)
      -> Q-Former: Q learned queries, self-attention among
         the queries, cross-attention to the patches          query outputs    (B, Q, hidden)
      -> I-Adapter (linear or MLP)                            image embeddings (B, Q, H)  H = the LLM's hidden size

so the LLM reads exactly ``num_queries`` image positions, whatever the picture size.

Encoders (:class:`ImageEncoderConfig`):

* ``small_cnn``: a small convolutional patch encoder for 48-128 px pictures (strided 3x3 conv
  stages, x/y coordinate channels so that features know where they are, then optional
  transformer layers over the patch grid: ViT-ish). No vision weights ship offline here, so the
  embedded recipe trains it in its own image stage (``asr.training.train_image``) and freezes it.
* ``hf``: any transformers vision model from a hub id or a local folder, loaded with ``AutoModel``
  (a CLIP/SigLIP/BLIP-2 wrapper contributes its ``vision_model``) and ``AutoImageProcessor``
  (its mean/std and input size are applied here, in torch); the patch features are the chosen
  hidden state ``(B, N, D)``.

The Q-Former is transformers' ``Blip2QFormerModel`` (cross-attention every
``cross_attention_frequency`` layers) fed with learned query tokens, as in BLIP-2 / X-LLM.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from asr.config import dataclass_from_dict
from asr.io_utils import load_weights, read_model_config, save_config_and_weights

log = logging.getLogger(__name__)

KIND = "image_x2l"
CONFIG_NAME = "image_x2l.json"
WEIGHTS_NAME = "image_x2l.safetensors"  # dirs of old: image_x2l.pt


# ---- configuration ----------------------------------------------------------------------------
@dataclass
class ImageEncoderConfig:
    type: str = "small_cnn"  # small_cnn | hf
    name_or_path: str | None = None  # hf: hub id or local folder of a transformers vision model
    trust_remote_code: bool = False  # hf
    hidden_layer: int = -1  # hf: which hidden state gives the patch features (-1: the last)
    image_size: int = 96  # small_cnn: the picture size it is built for (other sizes work: more/fewer patches)
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])  # small_cnn: one stride-2 stage each
    dim: int = 192  # small_cnn: patch feature width D
    num_layers: int = 1  # small_cnn: transformer layers over the patches (0: convolution only)
    num_heads: int = 4
    dropout: float = 0.1

    def __post_init__(self):
        if self.type not in ("small_cnn", "hf"):
            raise ValueError(f"image encoder type must be 'small_cnn' or 'hf', not {self.type!r}")
        if self.type == "hf" and not self.name_or_path:
            raise ValueError("image encoder type 'hf' needs name_or_path (a hub id or a local model folder)")
        if self.type == "small_cnn" and (not self.channels or self.dim % self.num_heads):
            raise ValueError(f"small_cnn needs channels and dim divisible by num_heads (dim {self.dim}, heads {self.num_heads})")

    @classmethod
    def from_dict(cls, d: dict | None) -> ImageEncoderConfig:
        return dataclass_from_dict(cls, d, "image encoder config")


@dataclass
class QFormerConfig:
    num_queries: int = 32  # image positions the LLM sees
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 0  # 0: 4 x hidden_size
    cross_attention_frequency: int = 1  # cross-attention to the patches every N layers (BLIP-2: 2)
    dropout: float = 0.1

    def __post_init__(self):
        if self.num_queries < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"Q-Former: need num_queries >= 1 and hidden_size divisible by num_heads "
                f"(got {self.num_queries}, {self.hidden_size}, {self.num_heads})"
            )
        if not 1 <= self.cross_attention_frequency <= max(1, self.num_layers):
            raise ValueError(f"Q-Former: cross_attention_frequency {self.cross_attention_frequency} must be in 1..num_layers")

    @classmethod
    def from_dict(cls, d: dict | None) -> QFormerConfig:
        return dataclass_from_dict(cls, d, "q-former config")


@dataclass
class IAdapterConfig:
    type: str = "linear"  # linear (X-LLM) | mlp
    hidden_dim: int = 1024  # mlp only

    def __post_init__(self):
        if self.type not in ("linear", "mlp"):
            raise ValueError(f"I-Adapter type must be 'linear' or 'mlp', not {self.type!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> IAdapterConfig:
        return dataclass_from_dict(cls, d, "i-adapter config")


@dataclass
class ImageX2LConfig:
    encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    adapter: IAdapterConfig = field(default_factory=IAdapterConfig)
    llm_hidden_size: int = 0  # H, set from the LLM when the model is built
    freeze_encoder: bool = False  # True after the image stage: the encoder is not trained again

    @classmethod
    def from_dict(cls, d: dict | None) -> ImageX2LConfig:
        return dataclass_from_dict(cls, d, "image_x2l config")


# ---- encoders ---------------------------------------------------------------------------------
class SmallCnnEncoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, N, D), N = ceil(H / 2^S) * ceil(W / 2^S) for S conv stages."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3 + 2  # RGB + x/y coordinates (CoordConv): absolute position survives the convolutions
        for c in config.channels:
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(min(8, c), c),
                nn.GELU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(min(8, c), c),
                nn.GELU(),
            ]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in + 2, config.dim)  # + the patch centre's coordinates again
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.dim, config.num_heads, 4 * config.dim, config.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.dim = config.dim

    @staticmethod
    def _coords(b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
        xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, h, w): x, y
        return grid.unsqueeze(0).expand(b, -1, -1, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        x = (images - 0.5) / 0.25
        x = torch.cat([x, self._coords(b, h, w, x)], dim=1)  # (B, 5, H, W)
        x = self.convs(x)  # (B, C, h, w)
        x = torch.cat([x, self._coords(b, x.shape[2], x.shape[3], x)], dim=1)
        x = self.proj(x.flatten(2).transpose(1, 2))  # (B, N = h*w, D)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class HfImageEncoder(nn.Module):
    """A transformers vision model: (B, 3, H, W) in [0, 1] -> its patch features (B, N, D).

    Resizing and normalisation follow the model's ``AutoImageProcessor`` (``size``, ``image_mean``,
    ``image_std``), done in torch so that the pipeline stays differentiable and batched.
    """

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        from transformers import AutoImageProcessor, AutoModel

        self.config = config
        src = _resolve_vision_source(config.name_or_path)
        try:
            model = AutoModel.from_pretrained(src, trust_remote_code=config.trust_remote_code)
            processor = AutoImageProcessor.from_pretrained(src, trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError) as e:
            where = "local folder" if Path(src).is_dir() else "hub id (no network here?)"
            raise OSError(
                f"image encoder {config.name_or_path!r} ({where}) could not be loaded as a transformers "
                f"vision model with its image processor: {e}"
            ) from e
        self.model = getattr(model, "vision_model", model)  # CLIP / SigLIP / BLIP-2 wrappers: the vision tower
        vcfg = getattr(model.config, "vision_config", None) or model.config
        self.dim = int(getattr(vcfg, "hidden_size", 0) or getattr(vcfg, "hidden_sizes", [0])[-1])
        if not self.dim:
            raise ValueError(f"image encoder {config.name_or_path!r}: cannot tell its feature width from the config")
        size = getattr(processor, "size", None) or {}
        if "height" in size:
            self.size = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            self.size = (int(size["shortest_edge"]),) * 2
        else:
            raise ValueError(f"image encoder {config.name_or_path!r}: unsupported image processor size {size!r}")
        self.register_buffer("mean", torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=x.to(dtype), output_hidden_states=self.config.hidden_layer != -1)
        feats = out.last_hidden_state if self.config.hidden_layer == -1 else out.hidden_states[self.config.hidden_layer]
        if feats.dim() == 4:  # convolutional backbones: (B, D, h, w) -> (B, h*w, D)
            feats = feats.flatten(2).transpose(1, 2)
        return feats.float()


def _resolve_vision_source(name: str) -> str:
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"image encoder folder {path} has no config.json")
        return str(path)
    if name.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"image encoder folder {path} does not exist")
    return name  # a hub id


def build_image_encoder(config: ImageEncoderConfig) -> nn.Module:
    return SmallCnnEncoder(config) if config.type == "small_cnn" else HfImageEncoder(config)


# ---- Q-Former and I-Adapter -------------------------------------------------------------------
class QFormer(nn.Module):
    """Learned queries (1, Q, hidden) attend to the patches: (B, N, D) -> (B, Q, hidden)."""

    def __init__(self, config: QFormerConfig, encoder_dim: int):
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        self.config = config
        qcfg = Blip2QFormerConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size or 4 * config.hidden_size,
            cross_attention_frequency=config.cross_attention_frequency,
            encoder_hidden_size=encoder_dim,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
        )
        self.qformer = Blip2QFormerModel(qcfg)
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_queries, config.hidden_size) * 0.02)

    def forward(self, patches: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        queries = self.query_tokens.expand(patches.shape[0], -1, -1)  # (B, Q, hidden)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=patches, encoder_attention_mask=patch_mask)
        return out.last_hidden_state[:, : self.config.num_queries]  # (B, Q, hidden)


class IAdapter(nn.Module):
    """(B, Q, hidden) -> (B, Q, H): X-LLM's linear I-Adapter, or a two-layer MLP."""

    def __init__(self, config: IAdapterConfig, in_dim: int, llm_dim: int):
        super().__init__()
        self.config = config
        if config.type == "linear":
            self.net = nn.Linear(in_dim, llm_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, llm_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---- the interface ----------------------------------------------------------------------------
class ImageX2L(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> LLM input embeddings (B, num_queries, llm_hidden_size)."""

    def __init__(self, config: ImageX2LConfig, llm_hidden_size: int | None = None):
        super().__init__()
        if llm_hidden_size is not None:
            config = dataclasses.replace(config, llm_hidden_size=int(llm_hidden_size))
        if config.llm_hidden_size <= 0:
            raise ValueError("ImageX2L needs llm_hidden_size (the LLM's input-embedding width)")
        self.config = config
        self.encoder = build_image_encoder(config.encoder)
        self.qformer = QFormer(config.qformer, self.encoder.dim)
        self.adapter = IAdapter(config.adapter, config.qformer.hidden_size, config.llm_hidden_size)
        if config.freeze_encoder:
            self.freeze_encoder()

    @property
    def num_positions(self) -> int:
        return self.config.qformer.num_queries

    def picture_size(self) -> tuple[int, int]:
        """(height, width) that pictures are resized to when loaded, so that pictures of any size batch
        together and mean what they meant in training: small_cnn's ``image_size`` (it would take another
        size as more or fewer patches, not as the same picture); an hf encoder's processor size (the
        size it resizes to itself)."""
        if isinstance(self.encoder, HfImageEncoder):
            return self.encoder.size
        return (self.config.encoder.image_size,) * 2

    def freeze_encoder(self) -> None:
        """Freeze the image encoder (after the image stage): no gradients, always in eval mode."""
        self.config = dataclasses.replace(self.config, freeze_encoder=True)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D); no graph through a frozen encoder."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if self.config.freeze_encoder:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch_features(images)  # (B, N, D)
        return self.adapter(self.qformer(patches))  # (B, Q, H)

    # ---- persistence -------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        """Everything, except a frozen transformers encoder (it is named by name_or_path, reloaded from there)."""
        state = self.state_dict()
        if self.config.encoder.type == "hf" and self.config.freeze_encoder:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        return state

    def save_pretrained(self, out_dir: str | Path) -> None:
        save_config_and_weights(out_dir, CONFIG_NAME, asdict(self.config), WEIGHTS_NAME, self._saved_state(), kind=KIND)

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, freeze_encoder: bool | None = None, map_location: str | torch.device = "cpu"
    ) -> ImageX2L:
        model_dir = Path(model_dir)
        cfg_file = model_dir / CONFIG_NAME
        try:
            config = ImageX2LConfig.from_dict(read_model_config(cfg_file, KIND))
        except TypeError as e:
            raise ValueError(f"{cfg_file}: {e}") from None
        except ValueError as e:
            raise ValueError(e if str(cfg_file) in str(e) else f"{cfg_file}: {e}") from None
        state = load_weights(model_dir, stem="image_x2l", map_location=map_location)
        weights = model_dir / WEIGHTS_NAME
        model = cls(dataclasses.replace(config, freeze_encoder=False))
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = config.encoder.type == "hf" and config.freeze_encoder
        missing = [k for k in missing if not (allowed and k.startswith("encoder."))]
        if missing or unexpected:
            raise ValueError(f"{weights}: does not match {cfg_file} (missing {missing[:5]}, unexpected {unexpected[:5]})")
        if freeze_encoder if freeze_encoder is not None else config.freeze_encoder:
            model.freeze_encoder()
        return model
