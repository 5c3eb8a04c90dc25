import pytest
import torch

from benchmarks.ceiling import Ceiling, parse_shape, peak_memory_mb, random_plm
from benchmarks.cost import cost_table, measure_costs
from models.plm import load_plm, plm_info
from tests.small_training import save_tiny_bert, small_training_data


def test_random_plm_has_the_asked_shape_and_the_tokenizers_vocabulary(tmp_path):
    source = save_tiny_bert(tmp_path / "tiny")
    out = random_plm("3x128", source, tmp_path / "shaped", max_len=80)
    model, tokenizer = load_plm(out)
    info = plm_info(model)
    assert (info.family, info.n_layers, info.hidden_size, info.n_heads) == ("bert", 3, 128, 2)
    assert model.config.intermediate_size == 512 and info.vocab_size == len(tokenizer) == len(load_plm(source)[1])
    assert parse_shape("bert-base") == (12, 768, 12, 3072)
    with pytest.raises(ValueError, match=r"unknown PLM shape 'huge'.*bert-base.*<layers>x<hidden>"):
        parse_shape("huge")


def test_ceiling_is_the_models_devices_gemm_named_with_its_dtype(monkeypatch):
    cpu = Ceiling.of("cpu")
    assert cpu.dtype == torch.float32
    assert cpu.name == f"2048^3 float32 GEMM on cpu, {torch.get_num_threads()} threads"
    assert Ceiling.of("cpu", "bf16").name.startswith("2048^3 bfloat16 GEMM on cpu")  # the trainer's autocast dtype
    assert Ceiling.of("cpu", False).dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = Ceiling.of(torch.device("cuda", 1))  # naming needs no GPU
    assert (cuda.dtype, cuda.name) == (torch.bfloat16, "8192^3 bfloat16 GEMM on cuda:1")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # fp16 autocast with a scaler
    assert Ceiling.of(torch.device("cuda", 1)).name == "8192^3 float16 GEMM on cuda:1"
    assert Ceiling.of(torch.device("cuda", 1), False).dtype == torch.float32
    assert Ceiling("cpu", torch.float32, 256).rate(reps=1) > 1e6
    mb, what = peak_memory_mb(torch.device("cpu"))
    assert mb > 50 and what == "peak RSS of the process"


def test_cost_table_of_a_shaped_lm_names_its_ceiling_and_peak_memory(tmp_path):
    from models.train.config import load_config
    from models.train.prepare import prepare

    data, _ = small_training_data(tmp_path)
    source = random_plm("2x64", save_tiny_bert(tmp_path / "tiny"), tmp_path / "shaped")
    cfg = load_config("smoke", {"max_len": 48, "pretrain.batch_size": 16})
    ctx = prepare(cfg, data, tmp_path / "run", ["pretrain"], source)
    result = measure_costs(ctx, ["pretrain"], n_batches=2, rounds=1, choices=False)
    assert result["ceiling"].startswith("2048^3 float32 GEMM on cpu") and result["device"] == "cpu"
    row = result["rows"][0]
    assert row["stage"] == "pretrain" and row["batch_size"] == 16 and row["rows"] == 32
    assert row["mflop_per_sample"] > 0 and row["samples_per_s"] > 0 and 0 < row["utilisation"] < 1
    assert row["peak_memory_mb"] > 50 and row["note"].startswith("peak RSS of the process")
    assert cost_table(result).startswith(f"Ceiling: {result['ceiling']}, measured in every timing round")
