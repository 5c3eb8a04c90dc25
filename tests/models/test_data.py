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


def _frame():
    import pandas as pd

    from clickprompt.data.spec import load_spec
    from clickprompt.data.text import render_python

    spec = load_spec("movielens-100k")
    users = [{"user_id": 196, "gender": "M", "age": 49, "occupation": "writer", "zip_code": "55105"},
             {"user_id": 7, "gender": "F", "age": 30, "occupation": "artist", "zip_code": "T8H1N"}]
    items = [{"item_id": 242, "title": "Kolya", "release_year": 1996, "genres": ["Comedy"]},
             {"item_id": 1, "title": "Toy Story", "release_year": 1995, "genres": ["Animation", "Children's", "Comedy"]}]
    rows = [{**u, **i, "user_text": render_python(spec, "user", u), "item_text": render_python(spec, "item", i)}
            for u in users for i in items]
    return spec, pd.DataFrame(rows)


def test_assembled_tokens_equal_tokenizing_each_sample_text():
    from clickprompt.data.text import sample_texts
    from models.data import tokenize_samples
    from models.plm import tiny_bert, tiny_roberta

    spec, frame = _frame()
    for _, tok in (tiny_bert(), tiny_roberta()):
        ids, mask, _ = tokenize_samples(spec, frame, tok, max_len=64)
        direct = tok(sample_texts(spec, frame), max_length=64, truncation=True, padding="max_length")
        assert ids.tolist() == direct["input_ids"] and mask.tolist() == direct["attention_mask"]


def test_token_fields_mark_each_value_and_not_the_template():
    from models.data import tokenize_samples, token_fields
    from models.plm import tiny_bert

    spec, frame = _frame()
    _, tok = tiny_bert()
    ids, _, offsets = tokenize_samples(spec, frame, tok, max_len=512)
    fields = token_fields(spec, frame, offsets)
    names = [f.name for f in spec.fields]
    words = {}
    for t, f in zip(tok.convert_ids_to_tokens(ids[0].tolist()), fields[0].tolist()):
        if f >= 0:
            words.setdefault(names[f], []).append(t)
    assert "".join(words["user_id"]).replace("#", "") == "196"
    assert "".join(words["item_id"]).replace("#", "") == "242"
    assert set(words) == set(names)
    assert "is" not in sum(words.values(), [])
