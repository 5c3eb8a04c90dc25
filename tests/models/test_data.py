import torch

from models.data import IGNORE_INDEX, batch_order, mask_tokens


def test_mask_tokens_rates_and_never_specials_or_padding():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 50))
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] / [SEP]-like specials
    attn = torch.ones_like(ids)
    attn[:, 40:] = 0  # padding
    ids[:, 40:] = 0
    masked, labels = mask_tokens(ids, attn, torch.tensor([0, 1, 2, 3]), mask_id=3, vocab_size=1000, prob=0.15, generator=g)
    selected = labels != IGNORE_INDEX
    eligible = 400 * 38
    assert abs(selected.sum().item() / eligible - 0.15) < 0.01
    assert not selected[:, 0].any() and not selected[:, 40:].any()
    assert torch.equal(labels[selected], ids[selected])
    share_mask = (masked[selected] == 3).float().mean().item()
    share_kept = (masked[selected] == ids[selected]).float().mean().item()
    assert abs(share_mask - 0.8) < 0.03 and abs(share_kept - 0.1) < 0.03
    assert torch.equal(masked[~selected], ids[~selected])


def test_batch_order_is_a_seeded_permutation():
    a = torch.cat(batch_order(103, 10, True, seed=5))
    assert torch.equal(a, torch.cat(batch_order(103, 10, True, seed=5)))
    assert sorted(a.tolist()) == list(range(103)) and len(batch_order(103, 10, True, 5)) == 11
