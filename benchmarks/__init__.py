"""The one home of benchmarks. The model suite (a Prefect flow, ``flows/run_benchmark.py``): what
trains (``suite``), training and aggregation (``results``), long tail (``longtail``), efficiency
(``efficiency``), the report with plots (``report``). The scripts ``bench_data.py`` (data path),
``bench_training_cost.py`` (FLOPs, samples/s, utilisation per training stage, ``cost``) and
``bench_serving.py`` (HTTP latency) print their figures."""
