-- first statement, from the start
SELECT "k_timestamp", "usage_user", "id", "hostname" FROM "cpu_kaiwudb_tb" ORDER BY "k_timestamp", "id", "hostname" LIMIT 100000;
-- next statement, strictly after the last (timestamp, primary tags) handed on
SELECT "k_timestamp", "usage_user", "id", "hostname" FROM "cpu_kaiwudb_tb" WHERE ("k_timestamp" > '2024-01-22 22:22:22.224+00:00' OR ("k_timestamp" = '2024-01-22 22:22:22.224+00:00' AND ("id" > 647470401348904608 OR ("id" = 647470401348904608 AND ("hostname" > 'locahost'))))) ORDER BY "k_timestamp", "id", "hostname" LIMIT 100000;
-- with start_at and delay
SELECT "k_timestamp", "usage_user", "id", "hostname" FROM "cpu_kaiwudb_tb" WHERE "k_timestamp" >= '2024-01-22 05:06:40.000+00:00' AND "k_timestamp" <= '2024-01-22 22:20:00.000+00:00' ORDER BY "k_timestamp", "id", "hostname" LIMIT 100000;
-- a timestamp with more rows than a statement, in a table without keys
SELECT "k_timestamp", "usage_user", "id", "hostname" FROM "cpu_kaiwudb_tb" WHERE "k_timestamp" = '2024-01-22 22:22:22.224+00:00';
