"""Training: the one owner of everything a training run does.

    stages.py    the stage names (``Stage``, one enum), each method's default stages
    config.py    typed configs, the profiles, and ``build_config``: the one profile -> config builder
                 the flows, the CLI, the benchmarks and bundles use
    prepare.py   one preparation per run (encoder, tensors, tokens, decoder vocabulary), cached in
                 the run folder
    setups.py    what each stage trains (model, loss, validation)
    run.py       fit and finish a stage, ``run_training``, the run's metrics, the resume rule
    trainer.py   the optimisation loop (checkpoints, early stopping, AMP, DDP)
    distributed.py  torchrun ranks
    bundle.py / __main__.py  training bundles: ``python -m models.train --bundle DIR``

Training takes a training set as a value (``core.training_data``), never the warehouse: it imports
no Feast, DuckDB, Prefect or Great Expectations. The flows only orchestrate it.
"""
