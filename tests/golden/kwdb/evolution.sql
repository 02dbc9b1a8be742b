ALTER TABLE "ts_json_kaiwudb_tb" ADD COLUMN "c7" VARCHAR(20);
ALTER TABLE "ts_json_kaiwudb_tb" ADD TAG "site" NVARCHAR(32);
ALTER TABLE "ts_json_kaiwudb_tb" ALTER TAG "site" TYPE NVARCHAR(64);
