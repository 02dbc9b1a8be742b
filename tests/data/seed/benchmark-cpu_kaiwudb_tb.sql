-- The seed's source test table, `benchmark.cpu_kaiwudb_tb`, for kwpipe's postgres
-- dialect (the demo and tests run against PostgreSQL because no KWDB runs here).
--
-- On KWDB the same table is:
--   CREATE TS DATABASE benchmark;
--   CREATE TABLE benchmark.cpu_kaiwudb_tb (
--     k_timestamp TIMESTAMP NOT NULL, usage_user INT8, usage_system INT8, usage_idle INT8,
--     usage_nice INT8, usage_iowait INT8, usage_irq INT8, usage_softirq INT8,
--     usage_steal INT8, usage_guest INT8, usage_guest_nice INT8)
--   TAGS (id INT8 NOT NULL, hostname VARCHAR(254) NOT NULL, region VARCHAR(254) NOT NULL,
--     datacenter VARCHAR(254) NOT NULL, rack VARCHAR(254), os VARCHAR(254), arch VARCHAR(254),
--     team VARCHAR(254), service VARCHAR(254), service_version VARCHAR(254),
--     service_environment VARCHAR(254))
--   PRIMARY TAGS (id);
--
-- In the postgres dialect tags are ordinary columns, the primary tags plus the timestamp
-- are the primary key, and the table comment says which columns are tags (what kwpipe
-- writes when it creates a table itself), so `kwdb-poll` exports the full schema.
CREATE TABLE cpu_kaiwudb_tb (
  k_timestamp TIMESTAMP(3) NOT NULL,
  usage_user BIGINT, usage_system BIGINT, usage_idle BIGINT, usage_nice BIGINT,
  usage_iowait BIGINT, usage_irq BIGINT, usage_softirq BIGINT, usage_steal BIGINT,
  usage_guest BIGINT, usage_guest_nice BIGINT,
  id BIGINT NOT NULL, hostname VARCHAR(254) NOT NULL, region VARCHAR(254) NOT NULL,
  datacenter VARCHAR(254) NOT NULL, rack VARCHAR(254), os VARCHAR(254), arch VARCHAR(254),
  team VARCHAR(254), service VARCHAR(254), service_version VARCHAR(254),
  service_environment VARCHAR(254),
  PRIMARY KEY (id, k_timestamp)
);
COMMENT ON TABLE cpu_kaiwudb_tb IS 'kwpipe {"tags":["id","hostname","region","datacenter","rack","os","arch","team","service","service_version","service_environment"],"primary_tags":["id"]}';

-- The seed's INSERT. It names the table `benchmark.cpu_kaiwudb_tb`; PostgreSQL would read
-- `benchmark.` as a schema, so here the database is the one psql is connected to.
INSERT INTO cpu_kaiwudb_tb (k_timestamp, usage_user, usage_system, usage_idle, usage_nice, usage_iowait, usage_irq, usage_softirq, usage_steal, usage_guest, usage_guest_nice, id, hostname, region, datacenter) VALUES ('2024-01-22 22:22:22.224',1,2,3,4,5,6,7,8,9,10,647470401348904608,'locahost','beijing','center');
