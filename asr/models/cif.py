"""Continuous integrate-and-fire (CIF): frame-level features -> one vector per token.

CIF is the length-compressing step of a Paraformer-style ASR model and of X-LLM's C-Former
(REFERENCE.md sections 1-2).  Each encoder frame ``h_t`` gets a weight ``alpha_t >= 0``.
Walking over the frames we accumulate the weights; every time the accumulated weight reaches
``threshold`` (1.0) the integrator *fires* and emits the alpha-weighted sum of the frames
integrated since the previous fire.  The frame on which the threshold is crossed is split:
the part of its alpha that completes the token goes to this token, the remainder carries
over to the next one.  A frame with ``alpha_t > threshold`` can make several tokens fire.

Equivalently, in "cumulative weight" coordinates: let ``C_t = alpha_0 + ... + alpha_t``
(``C_{-1} = 0``).  Frame ``t`` covers the interval ``[C_{t-1}, C_t]`` and token ``j``
(1-based) covers ``[(j-1) * threshold, j * threshold]``; the weight of frame ``t`` in token
``j`` is the length of the overlap of the two intervals.  Token ``j`` fires on the first
frame with ``C_t >= j * threshold``.

Contents, top to bottom:

* :func:`cif_reference` - the specification: a plain Python loop over the frames of ONE
  utterance.  Slow, obviously correct, used by the tests.
* :func:`cif` - the batched, loop-free implementation used for training and decoding.
* :func:`quantity_loss` - ``mean_b |sum_t alpha_bt - threshold * target_b|``.
* :class:`CifPredictor` - predicts the alphas from encoder features
  (``sigmoid(Linear(ReLU(Conv1d(h))))``), scales them to the target length when training
  (teacher forcing), adds the tail weight when decoding, and integrates with :func:`cif`.

Shapes in comments: B = batch, T = frames, D = feature dim, N = tokens (fires).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cif_reference",
    "cif",
    "CifResult",
    "quantity_loss",
    "CifOutput",
    "CifPredictor",
]


# --------------------------------------------------------------------------------------
# 1. The specification: one utterance, one frame at a time
# --------------------------------------------------------------------------------------
def cif_reference(
    hidden: torch.Tensor,
    alphas: torch.Tensor,
    threshold: float = 1.0,
    final_tolerance: float = 0.0,
) -> tuple[torch.Tensor, list[int]]:
    """Integrate-and-fire over ONE utterance with a plain loop (the reference semantics).

    Args:
        hidden: (T, D) frame features.
        alphas: (T,) non-negative frame weights.
        threshold: accumulated weight at which a token fires.
        final_tolerance: in [0, threshold).  If > 0, weight left over at the end that is
            within this much of ``threshold`` still fires one last token, on the last frame
            with alpha > 0 (a tiny value guards against float rounding when the alphas were
            scaled to an integer sum; ``tail_threshold`` is inference tail handling).
            0 = the pure spec: the leftover weight is NOT emitted.

    Returns:
        outputs: (N, D) one alpha-weighted sum of frames per fire, dtype of ``hidden``.
        fire_frames: list of N frame indices, the frame on which each token fired
            (non-decreasing; repeated when one frame fires several tokens).
    """
    assert hidden.dim() == 2 and alphas.dim() == 1 and hidden.shape[0] == alphas.shape[0]
    h = hidden.detach().to(torch.float64)  # (T, D)
    a = alphas.detach().to(torch.float64).tolist()  # T floats
    dim = h.shape[1]

    outputs: list[torch.Tensor] = []
    fire_frames: list[int] = []
    acc = 0.0  # weight integrated since the last fire, always < threshold between frames
    vec = torch.zeros(dim, dtype=torch.float64)  # (D,) the token being integrated
    last_weighted = -1  # last frame with alpha > 0 (fire frame of a tolerance token)
    for t, a_t in enumerate(a):
        if a_t < 0:
            raise ValueError("alphas must be non-negative")
        if a_t > 0:
            last_weighted = t
        rest = a_t  # part of this frame's weight not yet assigned to a token
        # A frame may complete several tokens when its alpha is large (> threshold).
        while acc + rest >= threshold:
            need = threshold - acc  # weight that completes the current token
            vec = vec + need * h[t]
            outputs.append(vec)
            fire_frames.append(t)
            rest = rest - need  # the remainder carries over to the next token
            acc = 0.0
            vec = torch.zeros(dim, dtype=torch.float64)
        acc += rest
        vec = vec + rest * h[t]

    # Leftover weight ``acc`` is dropped, unless it is within ``final_tolerance`` of a token.
    if final_tolerance > 0 and acc > 0 and acc >= threshold - final_tolerance:
        outputs.append(vec)
        fire_frames.append(last_weighted)

    if outputs:
        out = torch.stack(outputs)  # (N, D)
    else:
        out = torch.zeros(0, dim, dtype=torch.float64)
    return out.to(hidden.dtype), fire_frames


# --------------------------------------------------------------------------------------
# 2. Batched, loop-free CIF
# --------------------------------------------------------------------------------------
class CifResult(NamedTuple):
    """Result of :func:`cif`.

    outputs: (B, N_max, D) token vectors, zero beyond ``lengths``.
    lengths: (B,) long, number of fires per utterance.
    fire_frames: (B, N_max) long, frame index of each fire, -1 beyond ``lengths``.
    """

    outputs: torch.Tensor
    lengths: torch.Tensor
    fire_frames: torch.Tensor


def cif(
    hidden: torch.Tensor,
    alphas: torch.Tensor,
    threshold: float = 1.0,
    mask: torch.Tensor | None = None,
    final_tolerance: float = 0.0,
) -> CifResult:
    """Batched integrate-and-fire without a Python loop over frames.

    Same semantics as :func:`cif_reference` applied to every utterance (padding frames must
    have alpha 0, or pass ``mask``).  Differentiable w.r.t. ``hidden`` and ``alphas``
    (fire positions are piecewise constant, the weights of the frames are not).

    Method, for one utterance (all steps are batched tensor ops):
      C_t = cumsum(alpha)     prefix sums of the weights, in float64 (no float32 drift:
                              they decide where tokens fire)
      b_j = j * threshold     the j-th token is complete at cumulative weight b_j
      f_j = first t with C_t >= b_j         (searchsorted: where floor(C/threshold) rises)
      S_j = sum of alpha_t * h_t over f_{j-1} < t <= f_j
            = P_{f_j} - P_{f_{j-1}}, the difference of the prefix sums P of alpha*h,
            computed directly as a segment sum (one index_add) in the working dtype:
            no cancellation between large prefix sums, and 5x cheaper on CPU than a
            float64 cumsum over (B, T, D)
      o_j = C_{f_j} - b_j     overflow of the crossing frame beyond the token boundary
      out_j = S_j - o_j * h_{f_j} + o_{j-1} * h_{f_{j-1}}   (o_0 = 0)
            the crossing frame f_j gives back its overflow, which opens the next token;
            also right when f_j == f_{j-1} (one frame firing several tokens: S_j = 0 and
            out_j = (o_{j-1} - o_j) * h = threshold * h).

    Args:
        hidden: (B, T, D) frame features.
        alphas: (B, T) non-negative weights, 0 on padding.
        threshold: firing threshold.
        mask: optional (B, T) bool, True = valid frame; padding frames then get alpha 0 and
            their features are ignored even if they hold NaN/inf.
        final_tolerance: in [0, threshold).  Leftover weight >= threshold - final_tolerance
            at the end of an utterance fires one more token, on the last frame with alpha > 0
            (see :func:`cif_reference`); 0 = pure spec.  Two uses: a tiny value guards the
            last token against float rounding (training); ``tail_threshold`` is inference
            tail handling, identical to adding that weight on a zero frame after the end.

    Returns:
        :class:`CifResult` (outputs in ``hidden.dtype``).
    """
    assert hidden.dim() == 3 and alphas.shape == hidden.shape[:2], (hidden.shape, alphas.shape)
    batch, frames, dim = hidden.shape
    device = hidden.device
    if mask is not None:
        mask = mask.to(torch.bool)
        # torch.where (not a product) so that NaN/inf padding neither leaks forward nor
        # produces NaN gradients.
        hidden = torch.where(mask.unsqueeze(-1), hidden, hidden.new_zeros(()))
        alphas = torch.where(mask, alphas, alphas.new_zeros(()))
    if not 0.0 <= final_tolerance < threshold:
        raise ValueError("final_tolerance must be in [0, threshold)")
    if frames > 0 and bool((alphas < 0).any()):
        raise ValueError("alphas must be non-negative")

    if frames == 0:
        return CifResult(
            hidden.new_zeros(batch, 0, dim),
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.zeros(batch, 0, dtype=torch.long, device=device),
        )

    work = torch.promote_types(hidden.dtype, torch.float32)  # float32 (float64 stays)
    a64 = alphas.to(torch.float64)  # (B, T)
    csum = torch.cumsum(a64, dim=1)  # (B, T)   C_t, non-decreasing
    total = csum[:, -1]  # (B,)     total weight per utterance

    # Upper bound on the number of fires (+1 for a possible tolerance token).
    n_cap = int(torch.floor(total.detach().max() / threshold).item()) + 1
    bounds = torch.arange(1, n_cap + 1, device=device, dtype=torch.float64) * threshold
    bounds = bounds.unsqueeze(0).expand(batch, n_cap)  # (B, n_cap)  b_j

    if final_tolerance > 0:
        # The first unreached boundary, if the leftover is within tolerance of it, is
        # moved down to the total weight so that it fires on the last weighted frame.
        tot = total.detach().unsqueeze(1)  # (B, 1)
        near = (bounds > tot) & (bounds - final_tolerance <= tot)  # (B, n_cap), <= 1 per row
        bounds = torch.where(near, tot.expand_as(bounds), bounds)

    # f_j: first frame whose cumulative weight reaches b_j; == T when never reached.
    fire = torch.searchsorted(csum.detach().contiguous(), bounds.contiguous())  # (B, n_cap)
    fired = fire < frames  # (B, n_cap) True for j <= number of fires (contiguous prefix)
    lengths = fired.sum(dim=1)  # (B,)
    n_max = int(lengths.max().item())
    fire, fired, bounds = fire[:, :n_max].contiguous(), fired[:, :n_max], bounds[:, :n_max]

    # Segment of frame t = number of fires on frames < t (0-based token index); frames
    # after the last fire get index n_max (the unfinished token, dropped).
    steps = torch.arange(frames, device=device).unsqueeze(0).expand(batch, frames)
    seg = torch.searchsorted(fire, steps.contiguous())  # (B, T) in [0, n_max]
    seg = seg + torch.arange(batch, device=device).unsqueeze(1) * (n_max + 1)  # flat rows
    weighted = (alphas.to(work).unsqueeze(-1) * hidden.to(work)).reshape(batch * frames, dim)
    seg_sum = weighted.new_zeros(batch * (n_max + 1), dim).index_add(0, seg.reshape(-1), weighted)
    seg_sum = seg_sum.view(batch, n_max + 1, dim)[:, :n_max]  # (B, N, D)  S_j

    idx = fire.clamp(max=frames - 1)  # (B, N) safe gather index
    h_at = hidden.to(work).gather(1, idx.unsqueeze(-1).expand(batch, n_max, dim))  # h_{f_j}
    overflow = (csum.gather(1, idx) - bounds).to(work)  # (B, N)  o_j >= 0
    give_back = overflow.unsqueeze(-1) * h_at  # (B, N, D)  o_j * h_{f_j}
    carried = F.pad(give_back[:, :-1], (0, 0, 1, 0))  # (B, N, D)  o_{j-1} * h_{f_{j-1}}
    out = (seg_sum - give_back + carried) * fired.unsqueeze(-1)  # (B, N, D) 0 past lengths

    fire_frames = torch.where(fired, fire, torch.full_like(fire, -1))  # (B, N)
    return CifResult(out.to(hidden.dtype), lengths, fire_frames)


# --------------------------------------------------------------------------------------
# 3. Quantity loss
# --------------------------------------------------------------------------------------
def quantity_loss(alpha_sum: torch.Tensor, target_lengths: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """L1 quantity loss ``mean over the batch of |alpha_sum_b - threshold * target_b|``.

    ``alpha_sum`` (B,) is the sum of the UNSCALED alphas (CifOutput.alpha_sum); the predicted
    token count is ``alpha_sum / threshold``.  Not normalised by target length.
    """
    target = target_lengths.to(alpha_sum.dtype) * threshold
    return (alpha_sum - target).abs().mean()


# --------------------------------------------------------------------------------------
# 4. The predictor module
# --------------------------------------------------------------------------------------
@dataclass
class CifOutput:
    """Output of :class:`CifPredictor`.

    outputs: (B, N, D) token vectors (training: N = max target length).
    lengths: (B,) long, tokens per utterance (training: == target_lengths).
    fire_frames: (B, N) long, frame of each fire (token-to-frame alignment), -1 on padding.
    alphas: (B, T) the weights that were integrated (training: AFTER scaling to the target
        length; inference: the predicted weights, without the tail weight); 0 on padding.
    alpha_sum: (B,) sum of the predicted alphas BEFORE scaling; compare to target lengths.
    threshold: the firing threshold used.
    """

    outputs: torch.Tensor
    lengths: torch.Tensor
    fire_frames: torch.Tensor
    alphas: torch.Tensor
    alpha_sum: torch.Tensor
    threshold: float = 1.0

    @property
    def token_mask(self) -> torch.Tensor:
        """(B, N) bool, True for real tokens."""
        steps = torch.arange(self.outputs.shape[1], device=self.lengths.device)
        return steps.unsqueeze(0) < self.lengths.unsqueeze(1)

    def quantity_loss(self, target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``|alpha_sum - threshold * target_lengths|`` (L1)."""
        return quantity_loss(self.alpha_sum, target_lengths, self.threshold)


class CifPredictor(nn.Module):
    """Predicts CIF weights from encoder features and integrates the features into tokens.

    alpha_t = sigmoid(Linear(Dropout(ReLU(Conv1d(h)))))_t, then
    alpha_t <- relu(alpha_t * smooth_factor - noise_threshold), then 0 on padding.

    * Training (``target_lengths`` given): the alphas are rescaled so that each utterance's
      weights sum to exactly ``threshold * target_length`` (teacher forcing), hence exactly
      ``target_length`` fires; a leftover within 1e-4 * threshold of a token at the end still
      fires (float rounding).  Outputs are padded/truncated to ``max(target_lengths)``.
      (An utterance whose predicted alphas are all exactly 0 cannot be scaled: it fires
      nothing; with sigmoid alphas and noise_threshold = 0 this cannot happen.)
    * Inference (``target_lengths`` None): ``tail_threshold`` weight is added on a virtual
      zero frame after the last valid frame, so a last token that is at least
      ``threshold - tail_threshold`` complete fires; its fire frame is the last frame with
      alpha > 0.  The token count is the number of fires,
      floor((alpha_sum + tail_threshold) / threshold).

    Args:
        input_dim: D, encoder feature size (the integrated vectors have this size too).
        conv_channels: Conv1d output channels (default: input_dim).
        kernel_size: Conv1d width, 'same' padding (zeros outside the valid frames).
        dropout: dropout after the ReLU.
        threshold: firing threshold.
        tail_threshold: weight added at the end when decoding.
        smooth_factor, noise_threshold: alpha <- relu(alpha * smooth_factor - noise_threshold);
            the defaults (1.0, 0.0) leave the alphas unchanged.
    """

    TRAIN_FIRE_TOLERANCE = 1e-4  # relative to threshold

    def __init__(
        self,
        input_dim: int,
        conv_channels: int | None = None,
        kernel_size: int = 3,
        dropout: float = 0.1,
        threshold: float = 1.0,
        tail_threshold: float = 0.45,
        smooth_factor: float = 1.0,
        noise_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError("kernel_size must be >= 1")
        if threshold <= 0:
            raise ValueError("threshold must be > 0")
        if not 0.0 <= tail_threshold < threshold:
            raise ValueError("tail_threshold must be in [0, threshold)")
        conv_channels = conv_channels or input_dim
        self.input_dim = input_dim
        self.kernel_size = kernel_size
        self.threshold = float(threshold)
        self.tail_threshold = float(tail_threshold)
        self.smooth_factor = float(smooth_factor)
        self.noise_threshold = float(noise_threshold)
        # 'same' padding done by hand so that even kernel sizes work too.
        self.pad_left = (kernel_size - 1) // 2
        self.pad_right = kernel_size - 1 - self.pad_left
        self.conv = nn.Conv1d(input_dim, conv_channels, kernel_size)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(conv_channels, 1)

    # -- step 1: weights ------------------------------------------------------------------
    def set_tail_threshold(self, value: float) -> None:
        """Change the end-of-utterance weight used when decoding (a decoding setting, tuned on dev)."""
        if not 0.0 <= value < self.threshold:
            raise ValueError(f"tail threshold must be in [0, {self.threshold}), got {value}")
        self.tail_threshold = float(value)

    def compute_alphas(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D), (B, T) bool -> (B, T) alphas in [0, 1], exactly 0 on padding."""
        x = torch.where(mask.unsqueeze(-1), hidden, hidden.new_zeros(()))  # (B, T, D)
        return self._alphas(x, mask)

    def _alphas(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) already zero on padding -> alphas (B, T)."""
        y = F.pad(x.transpose(1, 2), (self.pad_left, self.pad_right))  # (B, D, T + k - 1)
        y = torch.relu(self.conv(y)).transpose(1, 2)  # (B, T, C)
        y = self.dropout(y)
        alphas = torch.sigmoid(self.linear(y).squeeze(-1))  # (B, T)
        if self.smooth_factor != 1.0 or self.noise_threshold != 0.0:
            alphas = torch.relu(alphas * self.smooth_factor - self.noise_threshold)
        return torch.where(mask, alphas, alphas.new_zeros(()))  # (B, T)

    # -- step 2: integrate ----------------------------------------------------------------
    def integrate(
        self,
        hidden: torch.Tensor,
        alphas: torch.Tensor,
        mask: torch.Tensor,
        target_lengths: torch.Tensor | None = None,
    ) -> CifOutput:
        """Scale (training) or add the tail (inference) and run :func:`cif`.

        hidden (B, T, D), alphas (B, T), mask (B, T) bool, target_lengths (B,) or None.
        """
        x = torch.where(mask.unsqueeze(-1), hidden, hidden.new_zeros(()))  # (B, T, D)
        alphas = torch.where(mask, alphas, alphas.new_zeros(()))  # (B, T)
        return self._integrate(x, alphas, target_lengths)

    def _integrate(self, x: torch.Tensor, alphas: torch.Tensor, target_lengths: torch.Tensor | None) -> CifOutput:
        """x (B, T, D) and alphas (B, T) already zero on padding."""
        batch = x.shape[0]
        a64 = alphas.to(torch.float64)  # (B, T)   scaling in float64: sums stay exact
        alpha_sum64 = a64.sum(dim=1)  # (B,)
        alpha_sum = alpha_sum64.to(alphas.dtype)  # (B,)  before scaling

        if target_lengths is None:
            # Inference.  Tail handling = a virtual zero frame of weight tail_threshold after
            # the last valid frame.  A zero frame adds nothing to the token vector, so this
            # is exactly: a leftover >= threshold - tail_threshold fires one more token (on
            # the last weighted frame), i.e. cif's final_tolerance.  No copy of ``x`` needed.
            res = cif(x, alphas, self.threshold, final_tolerance=self.tail_threshold)
            return CifOutput(res.outputs, res.lengths, res.fire_frames, alphas, alpha_sum, self.threshold)

        # Training (teacher forcing): scale each utterance's alphas to sum to threshold*target.
        target = target_lengths.to(device=x.device, dtype=torch.long)  # (B,)
        scale = target.to(torch.float64) * self.threshold / alpha_sum64.clamp_min(1e-12)
        scaled = a64 * scale.unsqueeze(1)  # (B, T)
        # The float64 sum can land a hair below the last boundary: a tolerance makes the
        # last token fire (it cannot add a token: the sum is far below the next boundary).
        tolerance = self.TRAIN_FIRE_TOLERANCE * self.threshold
        res = cif(x, scaled, self.threshold, final_tolerance=tolerance)
        n_out = int(target.max().item()) if batch > 0 else 0
        outputs, fire_frames = res.outputs, res.fire_frames
        have = outputs.shape[1]
        if have < n_out:  # pad (only if some utterance fired fewer than its target)
            outputs = F.pad(outputs, (0, 0, 0, n_out - have))
            fire_frames = F.pad(fire_frames, (0, n_out - have), value=-1)
        outputs, fire_frames = outputs[:, :n_out], fire_frames[:, :n_out]
        lengths = res.lengths.clamp(max=n_out)
        return CifOutput(outputs, lengths, fire_frames, scaled.to(alphas.dtype), alpha_sum, self.threshold)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        target_lengths: torch.Tensor | None = None,
    ) -> CifOutput:
        """hidden (B, T, D), mask (B, T) bool True = valid (None: all valid),
        target_lengths (B,) -> training mode; None -> inference mode."""
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        mask = mask.to(torch.bool)
        x = torch.where(mask.unsqueeze(-1), hidden, hidden.new_zeros(()))  # (B, T, D)
        alphas = self._alphas(x, mask)  # (B, T)
        return self._integrate(x, alphas, target_lengths)
