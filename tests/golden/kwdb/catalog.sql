SHOW DATABASES;
SHOW TABLES FROM "benchmark";
SHOW COLUMNS FROM "ts_json_kaiwudb_tb";
SHOW TAGS FROM "ts_json_kaiwudb_tb";
SHOW CLUSTER SETTING ts.dedup.rule;
