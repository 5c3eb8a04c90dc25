"""Where data enters: fetch raw files, parse them, load the DuckDB warehouse, render text."""
