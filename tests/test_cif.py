"""Tests for asr.models.cif: batched CIF == loop reference, teacher forcing, tail, gradients."""

import pytest
import torch

from asr.models.cif import CifPredictor, cif, cif_reference, quantity_loss


def _random_batch(gen, batch, max_frames, dim, alpha_fn):
    """Padded batch with variable lengths; padding alphas 0, padding features garbage."""
    lengths = torch.randint(1, max_frames + 1, (batch,), generator=gen)
    lengths[0] = max_frames
    hidden = torch.randn(batch, max_frames, dim, generator=gen)
    alphas = alpha_fn((batch, max_frames))
    mask = torch.arange(max_frames)[None, :] < lengths[:, None]
    alphas = alphas * mask
    hidden = torch.where(mask[..., None], hidden, torch.full_like(hidden, 1e6))
    return hidden, alphas, mask, lengths


def _check_against_reference(hidden, alphas, lengths, res, threshold=1.0, tol=0.0):
    for b in range(hidden.shape[0]):
        n = int(lengths[b])
        ref_out, ref_fire = cif_reference(hidden[b, :n], alphas[b, :n], threshold, tol)
        k = int(res.lengths[b])
        assert k == len(ref_fire), (b, k, len(ref_fire))
        assert res.fire_frames[b, :k].tolist() == ref_fire
        assert (res.fire_frames[b, k:] == -1).all()
        torch.testing.assert_close(res.outputs[b, :k], ref_out, atol=1e-5, rtol=1e-5)
        assert (res.outputs[b, k:] == 0).all()


# ----------------------------------------------------------------------------------------
# the reference itself, on hand-computed examples
# ----------------------------------------------------------------------------------------
def test_reference_hand_example():
    h = torch.eye(4)
    out, fires = cif_reference(h, torch.tensor([0.25, 0.5, 0.5, 0.75]))
    # C = .25 .75 1.25 2.0 -> fires at frames 2 and 3; frame 2 split .25 / .25
    assert fires == [2, 3]
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.5, 0.25, 0.0], [0.0, 0.0, 0.25, 0.75]]))


def test_reference_leftover_not_emitted():
    out, fires = cif_reference(torch.randn(2, 3), torch.tensor([0.5, 0.25]))
    assert fires == [] and out.shape == (0, 3)


def test_no_fire_at_all():
    res = cif(torch.randn(3, 4, 2), torch.full((3, 4), 0.2))
    assert res.outputs.shape == (3, 0, 2) and res.fire_frames.shape == (3, 0)
    assert res.lengths.tolist() == [0, 0, 0]
    res = cif(torch.randn(2, 0, 2), torch.zeros(2, 0))
    assert res.outputs.shape == (2, 0, 2) and res.lengths.tolist() == [0, 0]


def test_multiple_fires_on_one_frame():
    h = torch.eye(3)
    alphas = torch.tensor([0.5, 2.25, 0.25])  # C = .5 2.75 3.0
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.75, 0.25]])
    out, fires = cif_reference(h, alphas)
    assert fires == [1, 1, 2]
    torch.testing.assert_close(out, expected)
    res = cif(h[None], alphas[None])
    assert res.fire_frames[0].tolist() == [1, 1, 2]
    torch.testing.assert_close(res.outputs[0], expected)


# ----------------------------------------------------------------------------------------
# vectorized == reference
# ----------------------------------------------------------------------------------------
ALPHA_KINDS = {
    "uniform": lambda g: lambda s: torch.rand(s, generator=g),
    "sigmoid_like": lambda g: lambda s: torch.sigmoid(2 * torch.randn(s, generator=g)),
    # near the threshold: 0.95-1.05, many crossings within a few % of a frame
    "near_threshold": lambda g: lambda s: 0.95 + 0.1 * torch.rand(s, generator=g),
    # exact binary fractions: cumulative sums land exactly on the threshold (>= fires)
    "exact_boundaries": lambda g: lambda s: torch.tensor([0.25, 0.5, 0.75, 1.0])[torch.randint(0, 4, s, generator=g)],
    # scaled alphas > 1: several fires on one frame
    "large": lambda g: lambda s: 3.5 * torch.rand(s, generator=g),
    # sparse: mostly zeros
    "sparse": lambda g: lambda s: torch.rand(s, generator=g) * (torch.rand(s, generator=g) < 0.3),
}


@pytest.mark.parametrize("kind", sorted(ALPHA_KINDS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_matches_reference(kind, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden, alphas, mask, lengths = _random_batch(gen, 6, 40, 8, ALPHA_KINDS[kind](gen))
    res = cif(hidden, alphas, mask=mask)
    _check_against_reference(hidden, alphas, lengths, res)
    # padding garbage (1e6) never reached the outputs
    assert res.outputs.abs().max() < 1e3


@pytest.mark.parametrize("threshold", [0.5, 2.0])
def test_vectorized_matches_reference_other_threshold(threshold):
    gen = torch.Generator().manual_seed(7)
    uniform = ALPHA_KINDS["uniform"](gen)
    hidden, alphas, mask, lengths = _random_batch(gen, 5, 30, 4, uniform)
    res = cif(hidden, alphas, threshold, mask=mask)
    _check_against_reference(hidden, alphas, lengths, res, threshold)


def test_vectorized_matches_reference_with_final_tolerance():
    h = torch.randn(1, 3, 4)
    alphas = torch.tensor([[0.6, 0.7, 0.69995]])  # leftover 0.99995 after one fire
    res = cif(h, alphas, final_tolerance=1e-4)
    assert res.lengths.tolist() == [2] and res.fire_frames[0].tolist() == [1, 2]
    _check_against_reference(h, alphas, torch.tensor([3]), res, 1.0, 1e-4)
    assert cif(h, alphas).lengths.tolist() == [1]  # pure spec: leftover dropped


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vectorized_matches_reference_tail_tolerance(seed):
    gen = torch.Generator().manual_seed(seed)
    uniform = ALPHA_KINDS["uniform"](gen)
    hidden, alphas, mask, lengths = _random_batch(gen, 8, 25, 4, uniform)
    res = cif(hidden, alphas, mask=mask, final_tolerance=0.45)
    _check_against_reference(hidden, alphas, lengths, res, 1.0, 0.45)


def test_batch_equals_per_utterance_cif():
    gen = torch.Generator().manual_seed(3)
    uniform = ALPHA_KINDS["uniform"](gen)
    hidden, alphas, mask, lengths = _random_batch(gen, 5, 50, 6, uniform)
    res = cif(hidden, alphas, mask=mask)
    for b in range(5):
        n = int(lengths[b])
        one = cif(hidden[b : b + 1, :n], alphas[b : b + 1, :n])
        k = int(one.lengths[0])
        assert k == int(res.lengths[b])
        assert torch.equal(one.fire_frames[0], res.fire_frames[b, :k])
        torch.testing.assert_close(one.outputs[0], res.outputs[b, :k], atol=1e-6, rtol=1e-6)


def test_cif_gradcheck():
    """The vectorized gradients are the exact derivatives (fire positions fixed)."""
    torch.manual_seed(0)
    h = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    # cumulative sums stay well away from integers, so tiny perturbations keep fires
    a = torch.tensor(
        [[0.3, 0.4, 0.5, 0.2, 1.7, 0.3, 0.1], [0.65, 0.65, 0.65, 0.65, 0.65, 0.05, 0.05]],
        dtype=torch.float64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(lambda h, a: cif(h, a).outputs, (h, a))


def test_negative_alphas_rejected():
    with pytest.raises(ValueError):
        cif(torch.randn(1, 3, 2), torch.tensor([[0.5, -0.1, 0.5]]))


# ----------------------------------------------------------------------------------------
# predictor: training (teacher forcing)
# ----------------------------------------------------------------------------------------
def test_training_fires_equal_targets_many_cases():
    torch.manual_seed(0)
    pred = CifPredictor(16, conv_channels=8, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(25):
        batch, frames = 16, int(torch.randint(1, 80, (1,), generator=gen))
        lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
        # targets from 1 to 2x the length: includes 1, > T/2 and > T (alphas > 1 after scaling)
        targets = (torch.rand(batch, generator=gen) * 2 * lengths).long().clamp(min=1)
        targets[0] = 1
        targets[1] = lengths[1]
        mask = torch.arange(frames)[None] < lengths[:, None]
        hidden = torch.randn(batch, frames, 16, generator=gen) * (1 + 3 * trial / 25)
        out = pred(hidden, mask, targets)
        assert out.lengths.tolist() == targets.tolist()
        assert out.outputs.shape == (batch, int(targets.max()), 16)
        assert ((out.fire_frames >= 0).sum(1) == targets).all()
        assert (out.fire_frames < lengths[:, None]).all()
        torch.testing.assert_close(out.alphas.double().sum(1), targets.double(), atol=1e-4, rtol=0)
        cases += batch
    assert cases == 400


def test_training_fires_equal_targets_adversarial_alphas():
    """Alphas scaled to integer sums where float rounding could lose the last fire."""
    pred = CifPredictor(4, dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        frames = int(torch.randint(1, 300, (1,), generator=gen))
        alphas = torch.full((8, frames), 0.1)
        alphas[4:] = torch.rand(4, frames, generator=gen) ** 4  # skewed, some tiny
        targets = torch.randint(1, 2 * frames + 2, (8,), generator=gen)
        mask = torch.ones(8, frames, dtype=torch.bool)
        out = pred.integrate(torch.randn(8, frames, 4, generator=gen), alphas, mask, targets)
        assert out.lengths.tolist() == targets.tolist()


def test_alpha_sum_and_quantity_loss():
    torch.manual_seed(0)
    pred = CifPredictor(8, dropout=0.0)
    hidden = torch.randn(3, 20, 8)
    mask = torch.arange(20)[None] < torch.tensor([20, 12, 5])[:, None]
    targets = torch.tensor([4, 9, 2])
    out = pred(hidden, mask, targets)
    raw = pred.compute_alphas(hidden, mask)
    torch.testing.assert_close(out.alpha_sum, raw.sum(1))
    expected = (raw.sum(1) - targets).abs().mean()
    torch.testing.assert_close(out.quantity_loss(targets), expected)
    torch.testing.assert_close(quantity_loss(out.alpha_sum, targets), expected)


def test_gradients_reach_predictor_and_hidden():
    torch.manual_seed(0)
    pred = CifPredictor(8, conv_channels=6, dropout=0.0)
    hidden = torch.randn(3, 25, 8, requires_grad=True)
    mask = torch.arange(25)[None] < torch.tensor([25, 18, 9])[:, None]
    targets = torch.tensor([6, 10, 3])

    # through the weighted sums only
    out = pred(hidden, mask, targets)
    (out.outputs**2).sum().backward()
    for p in (pred.conv.weight, pred.linear.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert hidden.grad.abs().sum() > 0
    # padding frames get no gradient
    assert (hidden.grad[~mask] == 0).all()

    # through the quantity loss only
    pred.zero_grad()
    out = pred(hidden.detach(), mask, targets)
    out.quantity_loss(targets).backward()
    for p in (pred.conv.weight, pred.linear.weight):
        assert p.grad.abs().sum() > 0

    # both, inference mode too
    pred.zero_grad()
    out = pred(hidden.detach(), mask)
    ((out.outputs**2).sum() + out.quantity_loss(targets)).backward()
    for p in (pred.conv.weight, pred.conv.bias, pred.linear.weight, pred.linear.bias):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_nan_padding_never_contributes():
    torch.manual_seed(0)
    pred = CifPredictor(8, dropout=0.0)
    hidden = torch.randn(2, 12, 8)
    mask = torch.arange(12)[None] < torch.tensor([12, 7])[:, None]
    hidden[~mask] = float("nan")
    hidden.requires_grad_(True)
    for targets in (torch.tensor([5, 4]), None):
        out = pred(hidden, mask, targets)
        assert torch.isfinite(out.outputs).all() and torch.isfinite(out.alphas).all()
        assert (out.alphas[~mask] == 0).all()
        loss = out.outputs.sum() + out.alpha_sum.sum()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in pred.parameters())
        pred.zero_grad()


# ----------------------------------------------------------------------------------------
# predictor: inference (tail handling)
# ----------------------------------------------------------------------------------------
def test_inference_tail_fires_nearly_finished_token():
    pred = CifPredictor(3, tail_threshold=0.45)
    h = torch.randn(2, 4, 3)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    # row 0: C = .5 1.0 1.25 1.75 -> 1 fire, leftover .75 + tail .45 >= 1 -> 2nd token
    # row 1: C = .5 1.0 1.5       -> 1 fire, leftover .5  + tail .45 < 1  -> no extra
    alphas = torch.tensor([[0.5, 0.5, 0.25, 0.5], [0.5, 0.5, 0.5, 0.0]])
    out = pred.integrate(h, alphas, mask)
    assert out.lengths.tolist() == [2, 1]
    assert out.fire_frames.tolist() == [[1, 3], [1, -1]]
    torch.testing.assert_close(out.outputs[0, 0], 0.5 * h[0, 0] + 0.5 * h[0, 1])
    # the tail token is exactly the weighted sum of the leftover frames (tail frame is zero)
    torch.testing.assert_close(out.outputs[0, 1], 0.25 * h[0, 2] + 0.5 * h[0, 3])
    # without the tail weight that token is lost
    assert CifPredictor(3, tail_threshold=0.0).integrate(h, alphas, mask).lengths.tolist() == [1, 1]
    torch.testing.assert_close(out.alpha_sum, torch.tensor([1.75, 1.5]))


def test_inference_tail_equals_virtual_zero_frame():
    """Tail handling == cif over the frames plus one zero frame of weight tail_threshold."""
    torch.manual_seed(1)
    pred = CifPredictor(6, dropout=0.0, tail_threshold=0.45).eval()
    lengths = torch.tensor([40, 40, 33, 12, 5, 1])
    hidden = torch.randn(6, 40, 6)
    mask = torch.arange(40)[None] < lengths[:, None]
    with torch.no_grad():
        out = pred(hidden, mask)
        alphas = pred.compute_alphas(hidden, mask)
    h_ext = torch.nn.functional.pad(hidden * mask[..., None], (0, 0, 0, 1))  # (B, T+1, D)
    tail = torch.nn.functional.one_hot(lengths, 41).float() * 0.45
    res = cif(h_ext, torch.nn.functional.pad(alphas, (0, 1)) + tail)
    assert out.lengths.tolist() == res.lengths.tolist()
    assert (res.fire_frames == lengths[:, None]).any()  # some tail tokens were fired
    # the virtual frame's fire is reported on the last weighted (here: last valid) frame
    expected_frames = torch.minimum(res.fire_frames, (lengths - 1)[:, None])
    assert torch.equal(out.fire_frames, expected_frames)
    torch.testing.assert_close(out.outputs, res.outputs, atol=1e-5, rtol=1e-5)


def test_invalid_tail_rejected():
    with pytest.raises(ValueError):
        CifPredictor(4, tail_threshold=1.0)
    with pytest.raises(ValueError):
        cif(torch.randn(1, 2, 2), torch.rand(1, 2), final_tolerance=1.5)


def test_inference_tail_at_full_length_and_count():
    torch.manual_seed(0)
    pred = CifPredictor(8, dropout=0.0).eval()
    hidden = torch.randn(4, 30, 8)
    mask = torch.arange(30)[None] < torch.tensor([30, 30, 17, 2])[:, None]
    out = pred(hidden, mask)
    # tokens == floor(sum alpha + tail)
    expected = torch.floor(out.alpha_sum.double() + pred.tail_threshold).long()
    assert out.lengths.tolist() == expected.tolist()
    assert (out.fire_frames < mask.sum(1)[:, None]).all()


# ----------------------------------------------------------------------------------------
# predictor: batch == per utterance
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_predictor_batch_equals_per_utterance(training):
    torch.manual_seed(0)
    pred = CifPredictor(8, conv_channels=12, kernel_size=5).eval()
    lengths = torch.tensor([30, 21, 8, 1])
    hidden = torch.randn(4, 30, 8)
    mask = torch.arange(30)[None] < lengths[:, None]
    hidden[~mask] = 123.0
    targets = torch.tensor([9, 12, 3, 1]) if training else None
    out = pred(hidden, mask, targets)
    for b in range(4):
        n = int(lengths[b])
        one = pred(hidden[b : b + 1, :n], None, None if targets is None else targets[b : b + 1])
        k = int(one.lengths[0])
        assert k == int(out.lengths[b])
        assert torch.equal(one.fire_frames[0, :k], out.fire_frames[b, :k])
        torch.testing.assert_close(one.outputs[0, :k], out.outputs[b, :k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.alphas[0], out.alphas[b, :n], atol=1e-6, rtol=1e-6)
