ALTER TABLE "ts_json_kaiwudb_tb" ADD COLUMN "c7" VARCHAR(20);
ALTER TABLE "ts_json_kaiwudb_tb" ADD TAG "site" VARCHAR(32);
ALTER TABLE "ts_json_kaiwudb_tb" ALTER TAG "site" TYPE VARCHAR(64);
ALTER TABLE "ts_json_kaiwudb_tb" ALTER COLUMN "c7" TYPE VARCHAR(40);
