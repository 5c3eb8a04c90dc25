"""The benchmark suite: model variants over seeds, long-tail analysis, efficiency, report with plots."""
