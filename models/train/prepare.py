"""One preparation per run: the encoder fitted on the train split, the splits as tensors (tokenized
when a stage needs text), the MLM decoder's vocabulary, and the config, kept in the run folder.

``prepare`` looks in ``<run_dir>/prepared/`` for an entry keyed by what it depends on (the training
set's manifest hash, the spec, the PLM name, ``max_len``, the decoder-vocabulary rule); only when
there is none does it read, fit and tokenize, then store it (atomically). Every stage of a run, in
one process or one Prefect task per stage, shares the same entry. A text entry serves the ID-only
stages too, with its text tensors left out (an ID-only stage batches rows in order, never by token
length), so a stage trains on the same batches whichever way the run is driven.

Under torchrun every rank prepares (or loads) the same entry; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from core.io import digest, write_json_atomic
from core.spec import DatasetSpec
from core.training_data import TrainingData
from models import builder
from models.alt import AltModel
from models.clickprompt import ClickPrompt
from models.ctr import CTRModel
from models.data import EncodedSplit, encode_split
from models.encoding import FeatureEncoder
from models.mlm import DecoderVocab, TokenMasker
from models.plm import load_tokenizer
from models.runtime import bound_cpu_heap, pick_device, seed_everything
from models.train import distributed
from models.train.config import TrainConfig
from models.train.stages import TEXT_STAGES, Stage

log = logging.getLogger("clickprompt.train")

DECODER_VOCAB_FILE = "decoder_vocab.json"
PREPARED_DIR = "prepared"
TRAINING_SET_FILE = "training_set.json"  # the training set a run trained on (reference + manifest)


@dataclass
class RunContext:
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    spec: DatasetSpec
    encoder: FeatureEncoder
    splits: dict[str, EncodedSplit]
    data_id: str  # the training set's manifest hash (or snapshot hash): what a checkpoint must match
    snapshot_hash: str
    tokenizer: object | None = None
    plm_source: Path | str | None = None
    decoder_vocab: DecoderVocab | None = None  # the MLM decoder's rows (None: the whole vocabulary)
    results: dict[str, dict] = field(default_factory=dict)

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        if distributed.current().is_main:  # rank 0 alone writes the run folder
            path.mkdir(parents=True, exist_ok=True)
        return path

    def split(self, name: str, stage: Stage) -> EncodedSplit:
        """``name``'s rows as ``stage`` sees them: without text tensors for an ID-only stage."""
        s = self.splits[name]
        if stage in TEXT_STAGES or s.input_ids is None:
            return s
        return replace(s, input_ids=None, attention_mask=None, field_ids=None)

    def new_backbone(self) -> CTRModel:
        return builder.new_backbone(self.cfg, self.encoder.fields)

    def new_clickprompt(self) -> ClickPrompt:
        return builder.new_clickprompt(self.cfg, self.encoder.fields, self.plm_source, self.decoder_vocab)

    def new_alt(self) -> AltModel:
        return builder.new_alt(self.cfg, self.encoder.fields, self.plm_source, self.decoder_vocab)

    def token_masker(self, seed: int) -> TokenMasker:
        return TokenMasker(self.tokenizer, self.cfg.pretrain.mask_prob, seed, self.decoder_vocab)


def decoder_vocab(cfg: TrainConfig, tokenizer, train: EncodedSplit) -> DecoderVocab | None:
    """The run's MLM decoder rows: the token ids of its training texts plus the special tokens; None
    with ``pretrain.decoder_vocab=full``."""
    if cfg.pretrain.decoder_vocab == "full":
        return None
    special = sorted(set(tokenizer.all_special_ids))
    vocab = DecoderVocab.from_texts(train.input_ids, train.attention_mask, special, len(tokenizer))
    log.info("MLM decoder: %d of %d token ids (the training texts' and the special tokens)", len(vocab), len(tokenizer))
    return vocab


def prepared_key(cfg: TrainConfig, data: TrainingData) -> str:
    """What the prepared tensors depend on (not the optimisation settings: every stage shares them)."""
    return digest(data.data_id, data.spec.model_dump(mode="json"), cfg.plm, cfg.max_len, cfg.pretrain.decoder_vocab)[:16]


def _entry_path(run_dir: Path, key: str, text: bool) -> Path:
    return run_dir / PREPARED_DIR / f"{key}-{'text' if text else 'ids'}.pt"


def _compact(split: EncodedSplit) -> dict:
    """The split's fields with the token tensors in the narrowest dtypes (ids int32, mask bool)."""
    out = dict(split.__dict__)
    if split.input_ids is not None:
        out.update(input_ids=split.input_ids.to(torch.int32), attention_mask=split.attention_mask.bool())
    return out


def _expand(fields: dict) -> EncodedSplit:
    if fields["input_ids"] is not None:
        fields.update(input_ids=fields["input_ids"].long(), attention_mask=fields["attention_mask"].long())
    return EncodedSplit(**fields)


def _save_entry(path: Path, encoder: FeatureEncoder, splits: dict[str, EncodedSplit], vocab) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"encoder": json.loads(json.dumps(asdict(encoder))), "splits": {k: _compact(v) for k, v in splits.items()},
                "vocab": None if vocab is None else {"ids": vocab.ids, "vocab_size": vocab.vocab_size,
                                                     "full": vocab.full}}, tmp)
    os.replace(tmp, path)


def _load_entry(path: Path) -> tuple[FeatureEncoder, dict[str, EncodedSplit], DecoderVocab | None]:
    doc = torch.load(path, weights_only=False)  # our own file, written by _save_entry
    vocab = doc["vocab"]
    return (FeatureEncoder(**doc["encoder"]), {k: _expand(v) for k, v in doc["splits"].items()},
            None if vocab is None else DecoderVocab(vocab["ids"], vocab["vocab_size"], vocab["full"]))


def _encode(cfg: TrainConfig, data: TrainingData, tokenizer) -> tuple[FeatureEncoder, dict[str, EncodedSplit], object]:
    t = time.perf_counter()
    encoder = FeatureEncoder.fit(data.spec, data.frames["train"])
    splits = {name: encode_split(f, data.spec, encoder, tokenizer, cfg.max_len) for name, f in data.frames.items()}
    vocab = decoder_vocab(cfg, tokenizer, splits["train"]) if tokenizer is not None else None
    log.info("encoded %s in %.1fs", {k: len(v) for k, v in splits.items()}, time.perf_counter() - t)
    return encoder, splits, vocab


def prepare(cfg: TrainConfig, data: TrainingData, run_dir: Path, stages: list[str],
            plm_source: Path | str | None = None) -> RunContext:
    """The run's context for ``stages``: prepared once per run (``<run_dir>/prepared/``), then shared;
    config and encoder kept with the run. ``plm_source``: the PLM folder (default ``cfg.plm``)."""
    seed_everything(cfg.seed)
    bound_cpu_heap()  # $CLICKPROMPT_HEAP_MMAP_MB: process-wide, idempotent; memory and speed, never the numbers
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    text = bool(TEXT_STAGES & set(stages))
    key = prepared_key(cfg, data)
    tokenizer = None
    if text:  # the tokenizer only: the stages that need the LM's weights load them (no 'Loading weights' here)
        plm_source = plm_source or cfg.plm
        tokenizer = load_tokenizer(plm_source)
    found = next((p for p in (_entry_path(run_dir, key, True), _entry_path(run_dir, key, False))
                  if p.is_file() and (p.name.endswith("-text.pt") or not text)), None)
    dist = distributed.current()
    if found is not None:
        encoder, splits, vocab = _load_entry(found)
        log.info("prepared splits %s taken from %s", {k: len(v) for k, v in splits.items()}, found)
    else:
        encoder, splits, vocab = _encode(cfg, data, tokenizer)
        if dist.is_main:
            _save_entry(_entry_path(run_dir, key, text), encoder, splits, vocab)
    if dist.is_main:
        _keep_with_run(cfg, data, run_dir, encoder, vocab)
    vocab = distributed.broadcast_object(vocab)  # the decoder's rows shape the model: rank 0's on every rank
    device = dist.device or pick_device(cfg.device)  # a rank's own device under torchrun
    return RunContext(cfg, run_dir, device, data.spec, encoder, splits, data.data_id, data.snapshot_hash, tokenizer,
                      plm_source, vocab)


def _keep_with_run(cfg: TrainConfig, data: TrainingData, run_dir: Path, encoder: FeatureEncoder, vocab) -> None:
    """config.json, encoder.json, the decoder vocabulary and the training set's reference in the run
    folder, each written only when it is missing or differs (what the registry and a resume read)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"config.json": cfg.model_dump(mode="json"), "encoder.json": json.loads(json.dumps(asdict(encoder)))}
    if data.ref is not None:
        wanted[TRAINING_SET_FILE] = {"ref": data.ref.to_dict(), "manifest": data.ref.manifest().to_dict()}
    for name, doc in wanted.items():
        path = run_dir / name
        if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != doc:
            write_json_atomic(path, doc)
    if vocab is not None and not (run_dir / DECODER_VOCAB_FILE).is_file():
        vocab.save(run_dir / DECODER_VOCAB_FILE)
