"""Scores of the image stage on a validation captions dir: greedy captions (WER, exact matches), the
caption loss with the true and another picture, contrastive retrieval (in the batch, among one-word
neighbours, against word-swapped captions) and the ITG decoder's loss."""

from __future__ import annotations

import torch

from asr.data.captions import CaptionSet, HardNegativeBatchSampler
from asr.models.caption import ImageCaptionModel


# ---- evaluation ------------------------------------------------------------------
def evaluate_captions(model: ImageCaptionModel, data: CaptionSet, num: int, max_new_tokens: int, batch_size: int = 16) -> dict:
    """Scores on the first caption of each of the first ``num`` distinct pictures.

    Caption training (``caption_weight`` > 0): greedy captions (WER against the closest of the picture's
    captions, exact
    matches) and the teacher-forced caption loss with the true picture and with another picture of the
    batch (the gap says how much the LLM reads the image positions). Contrastive training: the share
    of pictures whose own caption scores highest among the batch's (``itc_top1``, chance 1/batch), and the
    same over all validation captions batched in groups of one-word neighbours (``itc_top1_hard``: the
    colour, shape, count or position word decides; ``itc_hard_captions``: how many captions had such
    a neighbour in their batch) and, with swap negatives, how often a picture prefers its caption to the
    caption with two words exchanged (``itc_swap_wins``, :func:`swap_retrieval`). With the ITG loss: its
    loss with the true picture and with another (``itg_loss``, ``itg_loss_other_picture``). The caption run adds, when
    the validation captions dir has ``word_classes``, the same check with the LLM's caption likelihood
    (``lm_swap_wins``).
    """
    import jiwer

    model.eval()
    first: dict[int, int] = {}
    for i, img in enumerate(data.image_of):
        first.setdefault(img, i)
    idx = sorted(first.values())[:num]
    hyps, loss_sum, other_sum, other_n, top1_sum, top1_n = [], 0.0, 0.0, 0, 0.0, 0
    itg_sum, itg_other_sum, itg_other_n = 0.0, 0.0, 0
    for i in range(0, len(idx), batch_size):
        chunk = idx[i : i + batch_size]
        batch = data.collate(chunk)
        images = batch["images"].to(model.device)
        targets = [batch["target_ids"][b, : int(batch["target_lengths"][b])].tolist() for b in range(len(chunk))]
        with torch.no_grad():
            emb = model.image_embeddings(images)
            if model.config.caption_weight > 0:
                loss_sum += float(model.caption_loss(emb, targets)[0]) * len(chunk)
                if len(chunk) > 1:  # control: every caption after the next caption's (different) picture
                    other_sum += float(model.caption_loss(emb.roll(1, dims=0), targets)[0]) * len(chunk)
                    other_n += len(chunk)
            if model.config.itg_weight > 0:
                itg_sum += float(model.itg_decoder(emb, targets)[0]) * len(chunk)
                if len(chunk) > 1:
                    itg_other_sum += float(model.itg_decoder(emb.roll(1, dims=0), targets)[0]) * len(chunk)
                    itg_other_n += len(chunk)
            if model.config.contrastive_weight > 0 and len(chunk) > 1:
                top1_sum += float(model.contrastive_loss(emb, targets, batch["picture_ids"])[1]) * len(chunk)
                top1_n += len(chunk)
        if model.config.caption_weight > 0:
            hyps += model.generate(images, max_new_tokens=max_new_tokens)
    scores: dict = {"pictures": len(idx)}
    if top1_n:
        scores.update(itc_top1=round(top1_sum / top1_n, 4), itc_chance=round(1 / min(batch_size, len(idx)), 4))
        scores.update(hard_retrieval(model, data, batch_size))
        scores.update(swap_retrieval(model, data))
    if model.config.itg_weight > 0:
        scores.update(
            itg_loss=round(itg_sum / max(1, len(idx)), 4),
            itg_loss_other_picture=round(itg_other_sum / itg_other_n, 4) if itg_other_n else None,
        )
    if model.config.caption_weight > 0:
        # a picture's captions are all right answers (the styles order the words differently): each
        # greedy caption is scored against the closest of them
        captions_of: dict[int, list[str]] = {}
        for i, img in enumerate(data.image_of):
            captions_of.setdefault(img, []).append(data.texts[i])
        refs, errors, words = [], 0, 0
        for i, hyp in zip(idx, hyps):
            best = min(
                ((jiwer.process_words(r, hyp or "<empty>"), r) for r in captions_of[data.image_of[i]]),
                key=lambda o: (o[0].substitutions + o[0].deletions + o[0].insertions) / len(o[1].split()),
            )
            out, ref = best
            errors += out.substitutions + out.deletions + out.insertions
            words += len(ref.split())
            refs.append(ref)
        wer = errors / words if words else float("nan")
        scores.update(
            lm_loss=round(loss_sum / max(1, len(idx)), 4),
            lm_loss_other_picture=round(other_sum / other_n, 4) if other_n else None,
            wer=round(float(wer), 4),
            exact_match=round(sum(h == r for h, r in zip(hyps, refs)) / max(1, len(refs)), 4),
            examples=[{"id": data.ids[i], "ref": r, "hyp": h} for i, r, h in list(zip(idx, refs, hyps))[:10]],
        )
    return scores


@torch.no_grad()
def hard_retrieval(model: ImageCaptionModel, data: CaptionSet, batch_size: int = 16) -> dict:
    """Contrastive retrieval over every caption of ``data`` in batches of one-word-neighbour groups."""
    sampler = HardNegativeBatchSampler(data.texts, data.image_of, batch_size, share=1.0, group_size=4, shuffle=True)
    hits = n = grouped = 0
    for chunk in sampler.epoch_order():
        if len(chunk) < 2:
            continue
        batch = data.collate(chunk)
        targets = [batch["target_ids"][b, : int(batch["target_lengths"][b])].tolist() for b in range(len(chunk))]
        emb = model.image_embeddings(batch["images"].to(model.device))
        hits += float(model.contrastive_loss(emb, targets, batch["picture_ids"])[1]) * len(chunk)
        n += len(chunk)
        words = [data.texts[i].split() for i in chunk]
        grouped += sum(
            any(
                j != k and len(words[j]) == len(words[k]) and sum(a != b for a, b in zip(words[j], words[k])) == 1
                for k in range(len(chunk))
            )
            for j in range(len(chunk))
        )
    return {"itc_top1_hard": round(hits / n, 4), "itc_hard_captions": grouped} if n else {}


@torch.no_grad()
def swap_retrieval(
    model: ImageCaptionModel, data: CaptionSet, num: int = 1000, batch_size: int = 32, scorer: str = "itc"
) -> dict:
    """Over the first ``num`` captions that have swap negatives: the share of (picture, swapped caption)
    pairs where the picture's true caption scores higher, ties half (chance 0.5). ``scorer`` "itc": the
    contrastive similarity (``itc_swap_wins``; a bag-of-words caption vector scores exactly 0.5, it cannot
    tell the two apart); "lm": the frozen LLM's log-likelihood of the caption after the picture
    (``lm_swap_wins``: does the caption model read which colour, shape and count go where?); "itg": the
    ITG decoder's log-likelihood (``itg_swap_wins``)."""
    with_swaps = [i for i in range(len(data)) if data.negatives and data.negatives[i]][:num]
    rows = [(i, n) for i in with_swaps for n in data.negatives[i]]
    wins = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        emb = model.image_embeddings(data.pictures([i for i, _ in chunk]).to(model.device))
        true_ids, fake_ids = [data.targets[i] for i, _ in chunk], [n for _, n in chunk]
        true, fake = model.pair_scores(emb, true_ids, scorer), model.pair_scores(emb, fake_ids, scorer)
        wins += float((true > fake).float().sum() + 0.5 * (true == fake).float().sum())
    return {f"{scorer}_swap_wins": round(wins / len(rows), 4), f"{scorer}_swap_pairs": len(rows)} if rows else {}
