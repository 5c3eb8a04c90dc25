# A "films" export in a layout no loader knows, made from the real MovieLens-100K files:
# events as parquet with epoch milliseconds, members as ';'-separated CSV without zip codes,
# films as TSV with comma-separated genres.
import sys

import duckdb

raw, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"""COPY (SELECT "user_id:token"::BIGINT AS member, "item_id:token"::BIGINT AS film,
                             "rating:float"::INT AS stars, "timestamp:float"::BIGINT * 1000 AS watched_ms
                      FROM read_csv('{raw}/ml-100k.inter', delim = '\t', header = true, all_varchar = true))
                TO '{out}/events.parquet'""")
con.execute(f"""COPY (SELECT "user_id:token"::BIGINT AS member, "age:token"::INT AS age_years,
                             "gender:token" AS sex, "occupation:token" AS job
                      FROM read_csv('{raw}/ml-100k.user', delim = '\t', header = true, all_varchar = true))
                TO '{out}/members.csv' (DELIMITER ';', HEADER)""")
con.execute(f"""COPY (SELECT "item_id:token"::BIGINT AS film, "movie_title:token_seq" AS name,
                             replace("class:token_seq", ' ', ',') AS genres
                      FROM read_csv('{raw}/ml-100k.item', delim = '\t', header = true, all_varchar = true, quote = ''))
                TO '{out}/films.tsv' (DELIMITER '\t', HEADER)""")
