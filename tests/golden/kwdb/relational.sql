CREATE TABLE "orders" ("id" INT8 NOT NULL, "name" VARCHAR(32), "price" DECIMAL, "at" TIMESTAMP, PRIMARY KEY ("id"));
INSERT INTO "orders" ("id", "name", "price", "at") VALUES (1,'it''s','12.50','2023-08-01 02:12:04.005') ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "price" = EXCLUDED."price", "at" = EXCLUDED."at";
