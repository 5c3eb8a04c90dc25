"""Where data enters: fetch raw files (``fetch``), parse and check them row by row (``loaders``),
load the DuckDB warehouse in one gated transaction and write the snapshots (``warehouse``),
render the text view in SQL (``text_sql``). The quality gate is passed in, never imported."""
