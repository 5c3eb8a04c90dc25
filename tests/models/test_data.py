import torch

from models.data import batch_order


def test_batch_order_is_a_seeded_permutation():
    a = torch.cat(batch_order(103, 10, True, seed=5))
    assert torch.equal(a, torch.cat(batch_order(103, 10, True, seed=5)))
    assert sorted(a.tolist()) == list(range(103)) and len(batch_order(103, 10, True, 5)) == 11


def test_length_grouped_batches_cover_every_row_once_with_less_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 80, (5000,), generator=g)
    grouped = batch_order(5000, 32, True, seed=3, lengths=lengths)
    plain = batch_order(5000, 32, True, seed=3)
    assert sorted(torch.cat(grouped).tolist()) == list(range(5000))
    assert len(grouped) == len(plain) == 157
    assert [b.tolist() for b in grouped] == [b.tolist() for b in batch_order(5000, 32, True, seed=3, lengths=lengths)]
    padded = lambda batches: sum(int(lengths[b].max()) * len(b) for b in batches)  # noqa: E731
    real = int(lengths.sum())
    # tokens a batch trimmed to its longest row computes: close to the real tokens when grouped
    assert padded(grouped) / real < 1.05 < 1.3 < padded(plain) / real
    # and the batch order is still shuffled: neighbouring batches are not sorted by length
    means = torch.tensor([float(lengths[b].float().mean()) for b in grouped])
    assert (means[1:] >= means[:-1]).float().mean() < 0.7


def _frame():
    import pandas as pd

    from core.spec import load_spec
    from core.template import render_python

    spec = load_spec("movielens-100k")
    users = [{"user_id": 196, "gender": "M", "age": 49, "occupation": "writer", "zip_code": "55105"},
             {"user_id": 7, "gender": "F", "age": 30, "occupation": "artist", "zip_code": "T8H1N"}]
    items = [{"item_id": 242, "title": "Kolya", "release_year": 1996, "genres": ["Comedy"]},
             {"item_id": 1, "title": "Toy Story", "release_year": 1995, "genres": ["Animation", "Children's", "Comedy"]}]
    rows = [{**u, **i, "user_text": render_python(spec, "user", u), "item_text": render_python(spec, "item", i)}
            for u in users for i in items]
    return spec, pd.DataFrame(rows)


def test_assembled_tokens_equal_tokenizing_each_sample_text():
    from core.template import sample_texts
    from models.data import tokenize_samples
    from tests.tiny_plm import tiny_bert, tiny_roberta

    spec, frame = _frame()
    for _, tok in (tiny_bert(), tiny_roberta()):
        ids, mask, _ = tokenize_samples(spec, frame, tok, max_len=64)
        direct = tok(sample_texts(spec, frame), max_length=64, truncation=True, padding="max_length")
        assert ids.tolist() == direct["input_ids"] and mask.tolist() == direct["attention_mask"]


def test_a_row_without_any_text_gets_the_special_tokens_alone():
    """Serving a with-LM model: an id the online store lacks comes with an empty entity text; a
    pair of two such ids has no text token at all (this raised a broadcast error, a 500)."""
    from core.template import sample_texts
    from models.data import token_fields, tokenize_samples
    from tests.tiny_plm import tiny_bert, tiny_roberta

    spec, frame = _frame()
    frame.loc[1, "item_text"] = ""
    frame.loc[3, ["user_text", "item_text"]] = ""
    for _, tok in (tiny_bert(), tiny_roberta()):
        ids, mask, offsets = tokenize_samples(spec, frame, tok, max_len=64)
        direct = tok(sample_texts(spec, frame), max_length=64, truncation=True, padding="max_length")
        assert ids.tolist() == direct["input_ids"] and mask.tolist() == direct["attention_mask"]
        assert mask[3].sum() == len(tok("")["input_ids"]) and not offsets[3].any()
        assert (token_fields(spec, frame, offsets)[3] == -1).all()  # no token is any field's value


def test_token_fields_mark_each_value_and_not_the_template():
    from models.data import token_fields, tokenize_samples
    from tests.tiny_plm import tiny_bert

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


def test_an_integer_field_read_as_float_in_one_split_keeps_its_vocabulary():
    """A nullable integer column reads as float64 in a split that holds a null (1997.0) and as
    int64 in one that does not (1997); the online store answers with Python ints. All three must
    meet the same vocabulary entry, or valid, test and serving see only out-of-vocabulary values."""
    import numpy as np
    import pandas as pd

    from core.spec import load_spec
    from models.encoding import OOV, FeatureEncoder

    spec = load_spec("movielens-100k")
    train = pd.DataFrame({f.name: [None, None, None] for f in spec.fields})
    train["release_year"] = [1997.0, np.nan, 1995.0]  # float64: a null in this split
    train["genres"] = [["Drama"], ["Comedy"], None]
    encoder = FeatureEncoder.fit(spec, train)
    assert set(encoder.vocabs["release_year"]) == {"1995", "1997"}
    test = pd.DataFrame({"release_year": pd.Series([1997, 1995, 1980], dtype="int64")})
    ids = encoder.transform(test, ["release_year"])["release_year"]
    online = encoder.transform({"release_year": [1997, None]}, ["release_year"])["release_year"]
    assert ids[0] == encoder.vocabs["release_year"]["1997"] and ids[1] == encoder.vocabs["release_year"]["1995"]
    assert ids[2] == OOV and online.tolist() == [ids[0], OOV]
