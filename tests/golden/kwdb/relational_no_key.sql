CREATE TABLE "log" ("at" TIMESTAMP(6), "line" VARCHAR(200));
INSERT INTO "log" ("at", "line") VALUES ('2023-08-01 02:12:04.005123','started');
