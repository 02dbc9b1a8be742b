//! The `kwdb` sink against a real PostgreSQL (postgres dialect), and the kwdb
//! dialect's statements pinned by golden files.

use std::sync::Arc;
use std::time::Duration;

use kwpipe_components::api::GlobalOptions;
use kwpipe_components::kwdb::dialect::{DatabaseKind, Sql};
use kwpipe_components::kwdb::values::{render_insert_with, Encoding};
use kwpipe_components::kwdb::Dialect;
use kwpipe_components::sinks::kwdb::{KwdbSinkConfig, SchemaEvolution, WriteMethod};
use kwpipe_components::{
    BatchNotifier, BatchStatusReceiver, BuildContext, ComponentConfig, ComponentContext,
    ComponentError, DataType, Event, EventStatus, Field, Precision, Row, RowBatch, TableKind,
    TableSchema, Target, Timestamp, Value,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::support::pg::PrivatePg;
use crate::support::pg::{connect, TestDb};

struct Running {
    tx: Option<mpsc::Sender<Event>>,
    task: JoinHandle<Result<(), ComponentError>>,
}

impl Running {
    async fn start(cfg: KwdbSinkConfig) -> Running {
        let globals = Arc::new(GlobalOptions::default());
        let bcx = BuildContext {
            id: "out".into(),
            globals: globals.clone(),
        };
        cfg.healthcheck(&bcx).await.expect("healthcheck");
        let sink = cfg.build(&bcx).await.expect("build");
        let (tx, rx) = mpsc::channel(8);
        let cx = ComponentContext::standalone("out", "kwdb", Some(rx), None).with_globals(globals);
        Running {
            tx: Some(tx),
            task: tokio::spawn(sink.run(cx)),
        }
    }

    async fn send(&self, mut batch: RowBatch) -> BatchStatusReceiver {
        let (fin, rx) = BatchNotifier::pair();
        batch.finalizers = fin;
        self.tx
            .as_ref()
            .unwrap()
            .send(Event::Rows(batch))
            .await
            .expect("sink running");
        rx
    }

    async fn write(&self, batch: RowBatch) -> EventStatus {
        tokio::time::timeout(Duration::from_secs(60), self.send(batch).await)
            .await
            .expect("acknowledged in time")
    }

    async fn stop(mut self) {
        self.tx.take();
        self.task.await.unwrap().expect("sink ends cleanly");
    }
}

fn config(db: &TestDb, method: WriteMethod) -> KwdbSinkConfig {
    config_url(&db.url, method)
}

fn config_url(url: &str, method: WriteMethod) -> KwdbSinkConfig {
    let mut c = KwdbSinkConfig::new(url);
    c.write_method = Some(method);
    c.retry_backoff = Duration::from_millis(100);
    c.retry_backoff_max = Duration::from_secs(1);
    c.connection.connection_backoff = Duration::from_millis(200);
    c
}

/// The seed's `ts_json_kaiwudb_tb` schema.
fn seed_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("c1", DataType::Int2),
            Field::column("c2", DataType::Int4),
            Field::column("c3", DataType::Int8),
            Field::column("c4", DataType::Float4),
            Field::column("c5", DataType::Float8),
            Field::column("c6", DataType::Bool),
        ],
        vec![
            Field::tag("location", DataType::Varchar, true).with_length(64),
            Field::tag("temperature", DataType::Float4, false).with_length(64),
        ],
    ))
}

fn seed_row(ts: i64, c1: i16, c2: i32, c3: i64, c4: f32, c5: f64, c6: bool) -> Row {
    vec![
        Value::Timestamp(Timestamp::new(ts, Precision::Ms)),
        Value::Int2(c1),
        Value::Int4(c2),
        Value::Int8(c3),
        Value::Float4(c4),
        Value::Float8(c5),
        Value::Bool(c6),
        Value::String("tianjin".into()),
        Value::Float4(35.5),
    ]
}

fn seed_rows() -> Vec<Row> {
    vec![
        seed_row(
            1690855924005,
            11,
            21,
            2535208944865431245,
            6.14545,
            5.15656,
            true,
        ),
        seed_row(
            1691853703011,
            12,
            22,
            6422208944865124578,
            1.01635,
            0.53533,
            false,
        ),
        seed_row(
            1692065524004,
            13,
            23,
            1542408944865124535,
            3.25456,
            2.56356,
            true,
        ),
        seed_row(
            1692199303011,
            14,
            24,
            1245658944865439256,
            2.72652,
            5.83533,
            false,
        ),
        seed_row(
            1692285703011,
            15,
            25,
            5625658944865439256,
            5.71635,
            1.26562,
            false,
        ),
    ]
}

fn batch(table: &str, schema: &Arc<TableSchema>, rows: Vec<Row>) -> RowBatch {
    RowBatch::new(Target::table(table), schema.clone(), rows)
}

#[tokio::test]
async fn seed_json_kaiwudb_rows_land_exactly() {
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let db = TestDb::new("seed").await;
        let sink = Running::start(config(&db, method)).await;
        let s = seed_schema();
        let mut rows = seed_rows();
        rows.push(seed_row(
            1692285703012,
            i16::MIN,
            i32::MIN,
            i64::MIN,
            f32::MIN_POSITIVE,
            -0.0,
            true,
        ));
        rows.push(seed_row(
            1692285703013,
            i16::MAX,
            i32::MAX,
            i64::MAX,
            f32::MAX,
            f64::MAX,
            false,
        ));
        // The seed sends the same message twice: the replay must not duplicate.
        assert_eq!(
            sink.write(batch("ts_json_kaiwudb_tb", &s, rows.clone()))
                .await,
            EventStatus::Delivered
        );
        assert_eq!(
            sink.write(batch("ts_json_kaiwudb_tb", &s, rows.clone()))
                .await,
            EventStatus::Delivered
        );
        sink.stop().await;

        let c = db.client().await;
        let got = c
            .query(
                "SELECT (extract(epoch FROM ts) * 1000)::int8, c1, c2, c3, c4, c5, c6, location, temperature, c4::text \
                 FROM ts_json_kaiwudb_tb ORDER BY ts",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(got.len(), rows.len(), "{method:?}");
        for (r, want) in got.iter().zip(&rows) {
            let Value::Timestamp(ts) = want[0] else {
                unreachable!()
            };
            assert_eq!(r.get::<_, i64>(0), ts.value);
            assert_eq!(Value::Int2(r.get(1)), want[1]);
            assert_eq!(Value::Int4(r.get(2)), want[2]);
            assert_eq!(Value::Int8(r.get(3)), want[3]);
            assert_eq!(
                Value::Float4(r.get(4)),
                want[4],
                "FLOAT4 as PostgreSQL stores it"
            );
            assert_eq!(Value::Float8(r.get(5)), want[5]);
            assert_eq!(Value::Bool(r.get(6)), want[6]);
            assert_eq!(r.get::<_, &str>(7), "tianjin");
            assert_eq!(r.get::<_, f32>(8), 35.5);
        }
        assert_eq!(got[0].get::<_, &str>(9), "6.14545");
        // The table is keyed on (primary tags, timestamp) and remembers its tags.
        let meta = c
            .query_one(
                "SELECT obj_description('ts_json_kaiwudb_tb'::regclass, 'pg_class'), \
                 (SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) FROM pg_index i \
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                  WHERE i.indrelid = 'ts_json_kaiwudb_tb'::regclass AND i.indisprimary)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            meta.get::<_, &str>(0),
            r#"kwpipe {"tags":["location","temperature"],"primary_tags":["location"]}"#
        );
        assert_eq!(meta.get::<_, &str>(1), "location,ts");
    }
}

#[tokio::test]
async fn us_and_ns_timestamps_survive() {
    let db = TestDb::new("prec").await;
    let sink = Running::start(config(&db, WriteMethod::Copy)).await;
    let s = Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("at", DataType::Timestamp),
        ],
        vec![Field::tag("dev", DataType::Varchar, true).with_length(16)],
    ));
    let us = 1_690_855_924_005_123i64;
    let ns = 1_690_855_924_006_123_456i64;
    let rows = vec![
        vec![
            Value::Timestamp(Timestamp::new(us, Precision::Us)),
            Value::Timestamp(Timestamp::new(us, Precision::Us)),
            Value::String("a".into()),
        ],
        // PostgreSQL keeps microseconds: ns values are rounded by the server there
        // (KWDB's TIMESTAMPTZ(9) keeps them; see the golden files).
        vec![
            Value::Timestamp(Timestamp::new(ns, Precision::Ns)),
            Value::Null,
            Value::String("a".into()),
        ],
    ];
    assert_eq!(
        sink.write(batch("prec", &s, rows)).await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let c = db.client().await;
    let got = c
        .query("SELECT (extract(epoch FROM ts) * 1000000)::int8, (extract(epoch FROM at) * 1000000)::int8 FROM prec ORDER BY ts", &[])
        .await
        .unwrap();
    assert_eq!(got[0].get::<_, i64>(0), us);
    assert_eq!(got[0].get::<_, Option<i64>>(1), Some(us));
    assert_eq!(got[1].get::<_, i64>(0), (ns + 500) / 1000);
}

#[tokio::test]
async fn evolution_adds_columns_and_tags_or_rejects_them() {
    let db = TestDb::new("evo").await;
    let s = seed_schema();
    let sink = Running::start(config(&db, WriteMethod::Copy)).await;
    assert_eq!(
        sink.write(batch("t", &s, seed_rows())).await,
        EventStatus::Delivered
    );
    let mut wider = (*s).clone();
    wider
        .columns
        .push(Field::column("c7", DataType::Varchar).with_length(20));
    wider
        .tags
        .push(Field::tag("site", DataType::Varchar, false).with_length(32));
    let wider = Arc::new(wider);
    let mut row = seed_row(1692285703099, 1, 2, 3, 4.0, 5.0, true);
    row.insert(7, Value::String("new".into()));
    row.push(Value::String("north".into()));
    assert_eq!(
        sink.write(batch("t", &wider, vec![row.clone()])).await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let c = db.client().await;
    let r = c
        .query_one("SELECT c7, site FROM t WHERE c7 IS NOT NULL", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, &str>(0), r.get::<_, &str>(1)), ("new", "north"));
    let comment: String = c
        .query_one("SELECT obj_description('t'::regclass, 'pg_class')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        comment.contains(r#""tags":["location","temperature","site"]"#),
        "{comment}"
    );

    // reject: the same kind of payload against a fresh table is refused, and the
    // table stays as it was.
    let mut cfg = config(&db, WriteMethod::Copy);
    cfg.schema_evolution = SchemaEvolution::Reject;
    let sink = Running::start(cfg).await;
    assert_eq!(
        sink.write(batch("r", &s, seed_rows())).await,
        EventStatus::Delivered
    );
    assert_eq!(
        sink.write(batch("r", &wider, vec![row])).await,
        EventStatus::Rejected
    );
    sink.stop().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 9);
}

#[tokio::test]
async fn one_bad_row_in_a_thousand_is_the_only_one_rejected() {
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let db = TestDb::new("bad").await;
        let c = db.client().await;
        c.batch_execute("CREATE TABLE bad (ts TIMESTAMPTZ NOT NULL, v VARCHAR(8), dev VARCHAR(8) NOT NULL, PRIMARY KEY (dev, ts))")
            .await
            .unwrap();
        let s = Arc::new(TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column("v", DataType::Varchar).with_length(8),
            ],
            vec![Field::tag("dev", DataType::Varchar, true).with_length(8)],
        ));
        let rows: Vec<Row> = (0..1000)
            .map(|i| {
                let v = if i == 617 {
                    "much too long".to_string()
                } else {
                    format!("v{i}")
                };
                vec![
                    Value::Timestamp(Timestamp::new(1_700_000_000_000 + i, Precision::Ms)),
                    Value::String(v),
                    Value::String("d".into()),
                ]
            })
            .collect();
        let sink = Running::start(config(&db, method)).await;
        assert_eq!(
            sink.write(batch("bad", &s, rows)).await,
            EventStatus::Rejected,
            "{method:?}"
        );
        sink.stop().await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM bad", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 999, "{method:?}");
        let missing: i64 = c
            .query_one(
                "SELECT count(*) FROM bad WHERE ts = to_timestamp(1700000000.617)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(missing, 0);
    }
}

/// Batches waiting for one table go into one COPY (fewer statements, each with
/// PostgreSQL's fixed cost); replayed rows among them still land once.
#[tokio::test]
async fn queued_batches_share_a_copy_and_replays_still_land_once() {
    let db = TestDb::new("merge").await;
    let mut cfg = config(&db, WriteMethod::Copy);
    cfg.batch_size = 100;
    let sink = Running::start(cfg).await;
    let s = seed_schema();
    let rows = |from: i64, n: i64| -> Vec<Row> {
        (from..from + n)
            .map(|i| {
                let mut r = seed_row(1_700_000_000_000 + i, 1, i as i32, i, 0.5, 0.25, true);
                r[7] = Value::String(format!("loc{}", i % 3));
                r
            })
            .collect()
    };
    let mut statuses = Vec::new();
    for k in 0..20 {
        statuses.push(sink.send(batch("merged", &s, rows(k * 100, 100))).await);
        if k == 10 {
            // Another table in between: written after what came before it.
            statuses.push(sink.send(batch("other", &s, rows(0, 10))).await);
        }
    }
    for st in statuses.drain(..) {
        let st = tokio::time::timeout(Duration::from_secs(60), st)
            .await
            .unwrap();
        assert_eq!(st, EventStatus::Delivered);
    }
    let c = db.client().await;
    let one = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(one("SELECT count(*) FROM merged").await, 2000);
    assert_eq!(one("SELECT count(*) FROM other").await, 10);
    // Rows of one COPY share its transaction id.
    let copies = one("SELECT count(DISTINCT xmin::text) FROM merged").await;
    assert!(copies < 10, "20 queued batches took {copies} statements");

    // Replays of written rows queued with new ones: the merged COPY fails on the
    // duplicates and the INSERT ... ON CONFLICT path writes the new rows once.
    for (from, n) in [(300, 100), (2000, 100), (500, 200), (2100, 50)] {
        statuses.push(sink.send(batch("merged", &s, rows(from, n))).await);
    }
    for st in statuses {
        let st = tokio::time::timeout(Duration::from_secs(60), st)
            .await
            .unwrap();
        assert_eq!(st, EventStatus::Delivered);
    }
    sink.stop().await;
    assert_eq!(one("SELECT count(*) FROM merged").await, 2150);
    assert_eq!(
        one("SELECT count(DISTINCT (location, ts)) FROM merged").await,
        2150
    );
}

/// A COPY failing on the primary key (rows replayed after a restart or a
/// rebalance) goes through a staging table: the new rows of a 1000-row batch land
/// in one statement, not in batch_size INSERTs.
#[tokio::test]
async fn replayed_rows_go_through_a_staged_copy() {
    let db = TestDb::new("stage").await;
    let mut cfg = config(&db, WriteMethod::Copy);
    cfg.batch_size = 100;
    let sink = Running::start(cfg).await;
    let s = seed_schema();
    let rows = |from: i64, n: i64| -> Vec<Row> {
        (from..from + n)
            .map(|i| seed_row(1_700_000_000_000 + i, 1, i as i32, i, 0.5, 0.25, i % 2 == 0))
            .collect()
    };
    assert_eq!(
        sink.write(batch("staged", &s, rows(0, 500))).await,
        EventStatus::Delivered
    );
    // 500 replayed rows and 500 new ones in one batch.
    assert_eq!(
        sink.write(batch("staged", &s, rows(0, 1000))).await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let c = db.client().await;
    let one = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(one("SELECT count(*) FROM staged").await, 1000);
    assert_eq!(
        one("SELECT count(*) FROM staged WHERE c2 = c3 AND c6 = (c2 % 2 = 0)").await,
        1000
    );
    let statements =
        one("SELECT count(DISTINCT xmin::text) FROM staged WHERE ts >= to_timestamp(1700000000.5)")
            .await;
    assert_eq!(
        statements, 1,
        "the 500 new rows took {statements} statements"
    );
    // Nothing of the staging table is left in the session or the database.
    assert_eq!(
        one("SELECT count(*) FROM pg_class WHERE relname = 'kwpipe_stage'").await,
        0
    );
}

/// Two agents of one group meeting a missing table at once: both create it, one
/// CREATE loses (42P07, 23505 or 42710 depending on where they crossed), and its
/// rows are written all the same, never rejected.
#[tokio::test]
async fn two_writers_creating_the_same_table_both_land() {
    let db = TestDb::new("race").await;
    let a = Running::start(config(&db, WriteMethod::Copy)).await;
    let b = Running::start(config(&db, WriteMethod::Copy)).await;
    let s = seed_schema();
    let rows = |from: i64| -> Vec<Row> {
        (from..from + 50)
            .map(|i| seed_row(1_700_000_000_000 + i, 1, i as i32, i, 0.5, 0.25, true))
            .collect()
    };
    for t in 0..20 {
        let table = format!("race{t}");
        let (x, y) = tokio::join!(
            a.write(batch(&table, &s, rows(0))),
            b.write(batch(&table, &s, rows(50)))
        );
        assert_eq!(
            (x, y),
            (EventStatus::Delivered, EventStatus::Delivered),
            "{table}"
        );
    }
    a.stop().await;
    b.stop().await;
    let c = db.client().await;
    for t in 0..20 {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM race{t}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 100, "race{t}");
    }
}

/// A COPY is written only once its transaction commits. tokio-postgres answers a COPY
/// at the server's CommandComplete, before the commit; a commit that fails there (a
/// deferred constraint here, a backend stopped by a fast shutdown in the fault suite)
/// must be retried, never acknowledged.
#[tokio::test]
async fn a_copy_that_fails_at_commit_is_retried_not_acknowledged() {
    let db = TestDb::new("commit").await;
    let sink = Running::start(config(&db, WriteMethod::Copy)).await;
    let s = seed_schema();
    let rows = |from: i64, n: i64| -> Vec<Row> {
        (from..from + n)
            .map(|i| seed_row(1_700_000_000_000 + i, 1, i as i32, i, 0.5, 0.25, true))
            .collect()
    };
    assert_eq!(
        sink.write(batch("deferred", &s, rows(0, 10))).await,
        EventStatus::Delivered
    );
    // The next commit fails once: a sequence, because it is not rolled back with it.
    db.client()
        .await
        .batch_execute(
            "CREATE SEQUENCE commits; \
             CREATE FUNCTION fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF nextval('commits') = 1 THEN \
                 RAISE EXCEPTION 'refused at commit' USING ERRCODE = '40001'; \
               END IF; \
               RETURN NULL; \
             END $$; \
             CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON deferred \
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_first_commit()",
        )
        .await
        .unwrap();
    assert_eq!(
        sink.write(batch("deferred", &s, rows(10, 90))).await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let c = db.client().await;
    let count: i64 = c
        .query_one("SELECT count(*) FROM deferred", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 100, "rows acknowledged but not committed");
    let tries: i64 = c
        .query_one("SELECT last_value FROM commits", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        tries > 90,
        "the refused commit was tried again ({tries} trigger calls)"
    );
}

#[tokio::test]
async fn hostile_names_and_values_cannot_run_sql() {
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let db = TestDb::new("hostile").await;
        let c = db.client().await;
        c.batch_execute("CREATE TABLE victim (x int); INSERT INTO victim VALUES (1)")
            .await
            .unwrap();
        let table = r#"t"; DROP TABLE victim; --"#;
        let col = r#"c'); DROP TABLE victim; --\"#;
        let s = Arc::new(TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column(col, DataType::Varchar).with_length(0),
            ],
            vec![Field::tag("k;--", DataType::Varchar, true).with_length(64)],
        ));
        let values = [
            "'; DROP TABLE victim; --".to_string(),
            r"\'); DROP TABLE victim; --".to_string(),
            "back\\slash\\\ttab\nnewline\r\\N".to_string(),
            "$$; DROP TABLE victim; $$".to_string(),
            "ünïcødé 漢字 🚀".to_string(),
            "x".repeat(10_240),
            "E'\\x00'".to_string(),
        ];
        let mut rows: Vec<Row> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                vec![
                    Value::Timestamp(Timestamp::new(i as i64, Precision::Ms)),
                    Value::String(v.clone()),
                    Value::String(format!("k'{i}\"")),
                ]
            })
            .collect();
        rows.push(vec![
            Value::Timestamp(Timestamp::new(99, Precision::Ms)),
            Value::String("nul\0byte".into()),
            Value::String("k".into()),
        ]);
        let sink = Running::start(config(&db, method)).await;
        // The NUL row is refused; every other value lands verbatim.
        assert_eq!(
            sink.write(batch(table, &s, rows)).await,
            EventStatus::Rejected
        );
        sink.stop().await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM victim", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        let got = c
            .query(
                &format!(
                    "SELECT \"{}\", \"k;--\" FROM \"{}\" ORDER BY ts",
                    col.replace('"', "\"\""),
                    table.replace('"', "\"\"")
                ),
                &[],
            )
            .await
            .unwrap();
        let got: Vec<String> = got.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, values, "{method:?}");
    }
}

#[tokio::test]
async fn missing_tables_follow_auto_create() {
    let db = TestDb::new("auto").await;
    let c = db.client().await;
    // The seed's line_influxdb table, made beforehand.
    c.batch_execute(
        "CREATE TABLE ts_line_influxdb_tb (k_timestamp TIMESTAMPTZ NOT NULL, c1 INT2, c2 INT4, c3 INT8, c4 REAL, \
         c5 DOUBLE PRECISION, c6 BOOL, c7 BYTEA, c8 BYTEA, c9 CHAR(1), c10 CHAR(1), c11 VARCHAR(10), c12 VARCHAR(10), \
         c13 TIMESTAMPTZ, tag_name VARCHAR(64) NOT NULL, PRIMARY KEY (tag_name, k_timestamp))",
    )
    .await
    .unwrap();
    // As a line-protocol decoder would give it: types guessed from the values.
    let guessed = Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("k_timestamp", DataType::TimestampTz),
            Field::column("c1", DataType::Int2),
            Field::column("c4", DataType::Float4),
            Field::column("c7", DataType::Varchar),
            Field::column("c13", DataType::Varchar),
        ],
        vec![Field::tag("tag_name", DataType::Varchar, true)],
    ));
    let row = |ts: i64, c13: &str| {
        vec![
            Value::Timestamp(Timestamp::new(ts * 1_000_000, Precision::Ns)),
            Value::Int2(11),
            Value::Float4(11.8),
            Value::String(r"\x313233".into()),
            Value::String(c13.into()),
            Value::String("tag_value".into()),
        ]
    };
    let sink = Running::start(config(&db, WriteMethod::Copy)).await;
    let mut b = batch(
        "ts_line_influxdb_tb",
        &guessed,
        vec![row(1648432611249, "2023-08-11 12:12:10.249")],
    );
    b.meta = Arc::new(kwpipe_components::Metadata {
        schema_certainty: kwpipe_components::event::SchemaCertainty::Partial,
        ..Default::default()
    });
    assert_eq!(sink.write(b).await, EventStatus::Delivered);
    sink.stop().await;
    let r = c
        .query_one("SELECT c7, c13::text FROM ts_line_influxdb_tb", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, Vec<u8>>(0), b"123");
    assert!(r.get::<_, String>(1).starts_with("2023-08-11 12:12:10.249"));
}

/// A table the format may not create (line_influxdb under the default
/// auto_create, or auto_create = "never") is missing from the environment, not
/// wrong in the record: the rows wait, as for an outage, and land once someone
/// creates it. Nothing is rejected, nothing is created by the sink.
#[tokio::test]
async fn rows_for_a_missing_table_wait_until_it_is_created() {
    let db = TestDb::new("late").await;
    let c = db.client().await;
    let guessed = Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("time", DataType::TimestampTz),
            Field::column("v", DataType::Float8),
        ],
        vec![Field::tag("host", DataType::Varchar, false)],
    ));
    let partial = Arc::new(kwpipe_components::Metadata {
        schema_certainty: kwpipe_components::event::SchemaCertainty::Partial,
        ..Default::default()
    });
    let row = |ts: i64, v: f64| {
        vec![
            Value::Timestamp(Timestamp::new(ts, Precision::Ms)),
            Value::Float8(v),
            Value::String("h1".into()),
        ]
    };
    for (method, auto_create) in [
        (
            WriteMethod::Copy,
            kwpipe_components::sinks::kwdb::AutoCreate::Declared,
        ),
        (
            WriteMethod::Insert,
            kwpipe_components::sinks::kwdb::AutoCreate::Never,
        ),
    ] {
        let table = format!("late_{method:?}").to_lowercase();
        let mut cfg = config(&db, method);
        cfg.auto_create = auto_create;
        let sink = Running::start(cfg).await;
        let mut acks = Vec::new();
        for k in 0..3i64 {
            let mut b = batch(
                &table,
                &guessed,
                vec![
                    row(1_700_000_000_000 + 2 * k, k as f64),
                    row(1_700_000_000_001 + 2 * k, 0.5),
                ],
            );
            b.meta = partial.clone();
            acks.push(sink.send(b).await);
        }
        // Other tables go on meanwhile (on the same connection: concurrency 1).
        if auto_create == kwpipe_components::sinks::kwdb::AutoCreate::Declared {
            assert_eq!(
                sink.write(batch("flowing", &seed_schema(), seed_rows()))
                    .await,
                EventStatus::Delivered
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for rx in &mut acks {
            assert_eq!(
                rx.try_recv(),
                None,
                "{method:?}: acknowledged before the table exists"
            );
        }
        let exists: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(exists, 0, "the sink must not create it");
        c.batch_execute(&format!(
            "CREATE TABLE {table} (time TIMESTAMPTZ NOT NULL, v DOUBLE PRECISION, \
             host VARCHAR(64) NOT NULL, PRIMARY KEY (host, time))"
        ))
        .await
        .unwrap();
        for rx in acks {
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .unwrap(),
                EventStatus::Delivered,
                "{method:?}"
            );
        }
        sink.stop().await;
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 6, "{method:?}");
    }
}

/// A table someone made without a key (the e2e test's seed influx table) has no
/// conflict to name: ON CONFLICT must not name one it lacks, or every INSERT fails.
#[tokio::test]
async fn a_users_table_without_a_key_takes_inserts() {
    let db = TestDb::new("nokey").await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE nokey (ts TIMESTAMPTZ NOT NULL, c1 INT2, location VARCHAR(64) NOT NULL, temperature REAL)")
        .await
        .unwrap();
    let s = Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("c1", DataType::Int2),
        ],
        vec![
            Field::tag("location", DataType::Varchar, true).with_length(64),
            Field::tag("temperature", DataType::Float4, false),
        ],
    ));
    let row = |ts: i64| {
        vec![
            Value::Timestamp(Timestamp::new(ts, Precision::Ms)),
            Value::Int2(1),
            Value::String("tianjin".into()),
            Value::Float4(35.5),
        ]
    };
    let sink = Running::start(config(&db, WriteMethod::Insert)).await;
    assert_eq!(
        sink.write(batch("nokey", &s, vec![row(1), row(2)])).await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM nokey", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// Start without the health check, which would refuse the configurations the
/// running sink must refuse itself.
async fn start_unchecked(cfg: KwdbSinkConfig) -> Running {
    let globals = Arc::new(GlobalOptions::default());
    let bcx = BuildContext {
        id: "out".into(),
        globals: globals.clone(),
    };
    let sink = cfg.build(&bcx).await.expect("build");
    let (tx, rx) = mpsc::channel(8);
    let cx = ComponentContext::standalone("out", "kwdb", Some(rx), None).with_globals(globals);
    Running {
        tx: Some(tx),
        task: tokio::spawn(sink.run(cx)),
    }
}

/// An unknown database or a refused login is no row's fault and no wait heals
/// it: the sink stops at once with the server's reason, the rows unacknowledged
/// (Failed), instead of `retrying ... retry_in=30s` forever.
#[tokio::test]
async fn unknown_database_and_refused_login_stop_the_sink_at_once() {
    let base = crate::support::pg::server_url();
    let missing_db = format!("{base}/kwpipe_no_such_database_17");
    let bad_user = {
        let (scheme, rest) = base.split_once("://").unwrap();
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://kwpipe_no_such_role_17@{host}/postgres")
    };
    for (url, says) in [
        (missing_db, "does not exist"),
        (bad_user, "kwpipe_no_such_role_17"),
    ] {
        let mut cfg = config_url(&url, WriteMethod::Insert);
        // What made the loop endless: retries without limit, 30 s apart.
        cfg.retry_backoff = Duration::from_secs(30);
        cfg.retry_backoff_max = Duration::from_secs(30);
        let mut sink = start_unchecked(cfg).await;
        let ack = sink.send(batch("t", &seed_schema(), seed_rows())).await;
        // The input stays open and quiet: the sink must stop by itself.
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut sink.task)
            .await
            .expect("stopped at once, not retried")
            .unwrap();
        let e = ended.expect_err("the sink fails").to_string();
        assert!(e.contains(says), "{e}");
        assert_eq!(ack.await, EventStatus::Failed);
    }
}

/// OpenTSDB as the decoder gives it: `timestamp`, metric columns typed from the
/// values, tags, and the synthetic primary tag.
fn tsdb_schema(cols: &[(&str, DataType)]) -> Arc<TableSchema> {
    let mut columns = vec![Field::column("timestamp", DataType::TimestampTz).not_null()];
    columns.extend(cols.iter().map(|(n, t)| Field::column(*n, *t)));
    Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        columns,
        vec![
            Field::tag("tag1", DataType::Varchar, false),
            Field::tag("primary_tag", DataType::Varchar, true).with_length(64),
        ],
    ))
}

fn tsdb_row(ts: i64, values: Vec<Value>) -> Row {
    let mut r = vec![Value::Timestamp(Timestamp::new(ts, Precision::Ms))];
    r.extend(values);
    r.push(Value::String("1".into()));
    r.push(Value::String("c4ca4238a0b923820dcc509a6f75849b".into()));
    r
}

/// Issue 11's repro: the seed's OpenTSDB lines for one point arrive in separate
/// messages (c1, then c2 and a later c1). The table must end with the later c1
/// and the c2 (KWDB's `merge`), not keep the first row and drop the rest.
#[tokio::test]
async fn partial_rows_of_one_point_merge_per_column() {
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let db = TestDb::new("merge").await;
        let sink = Running::start(config(&db, method)).await;
        let c1 = tsdb_schema(&[("c1", DataType::Float8)]);
        let c2 = tsdb_schema(&[("c2", DataType::Float8)]);
        let t = "line_opentsdb_tb";
        let first = vec![tsdb_row(1648432611249, vec![Value::Float8(10.3)])];
        assert_eq!(
            sink.write(batch(t, &c1, first.clone())).await,
            EventStatus::Delivered
        );
        assert_eq!(
            sink.write(batch(
                t,
                &c2,
                vec![tsdb_row(1648432611249, vec![Value::Float8(219.0)])]
            ))
            .await,
            EventStatus::Delivered
        );
        let later = vec![tsdb_row(1648432611249, vec![Value::Float8(10.8)])];
        assert_eq!(
            sink.write(batch(t, &c1, later.clone())).await,
            EventStatus::Delivered
        );
        // A replay of all three in the same order changes nothing.
        assert_eq!(
            sink.write(batch(t, &c1, first)).await,
            EventStatus::Delivered
        );
        assert_eq!(
            sink.write(batch(
                t,
                &c2,
                vec![tsdb_row(1648432611249, vec![Value::Float8(219.0)])]
            ))
            .await,
            EventStatus::Delivered
        );
        assert_eq!(
            sink.write(batch(t, &c1, later)).await,
            EventStatus::Delivered
        );
        sink.stop().await;
        let c = db.client().await;
        let rows = c
            .query("SELECT c1, c2 FROM line_opentsdb_tb", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{method:?}");
        assert_eq!(
            (
                rows[0].get::<_, Option<f64>>(0),
                rows[0].get::<_, Option<f64>>(1)
            ),
            (Some(10.8), Some(219.0)),
            "{method:?}"
        );
    }
}

/// A VARCHAR column created by kwpipe widens for any later longer value, of any
/// type: OpenTSDB's `"str"` made `c1 VARCHAR(3)`, then 10.3 was "value too long".
#[tokio::test]
async fn a_created_varchar_widens_for_later_longer_values() {
    let db = TestDb::new("widen").await;
    let sink = Running::start(config(&db, WriteMethod::Insert)).await;
    let mut s = (*tsdb_schema(&[("c1", DataType::Varchar)])).clone();
    s.columns[1].length = 3;
    let s = Arc::new(s);
    let t = "widen_tb";
    assert_eq!(
        sink.write(batch(
            t,
            &s,
            vec![tsdb_row(1, vec![Value::String("str".into())])]
        ))
        .await,
        EventStatus::Delivered
    );
    let floats = tsdb_schema(&[("c1", DataType::Float8)]);
    assert_eq!(
        sink.write(batch(
            t,
            &floats,
            vec![tsdb_row(2, vec![Value::Float8(10.3)])]
        ))
        .await,
        EventStatus::Delivered
    );
    assert_eq!(
        sink.write(batch(
            t,
            &s,
            vec![tsdb_row(3, vec![Value::String("a longer text".into())])]
        ))
        .await,
        EventStatus::Delivered
    );
    sink.stop().await;
    let c = db.client().await;
    let got: Vec<String> = c
        .query("SELECT c1 FROM widen_tb ORDER BY timestamp", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, vec!["str", "10.3", "a longer text"]);
}

/// The sink's sessions run in UTC: timestamp text without a zone into a
/// TIMESTAMPTZ column does not depend on the server's or the role's setting.
#[tokio::test]
async fn zoneless_timestamp_text_is_utc_whatever_the_server_says() {
    let db = TestDb::new("tz").await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" SET timezone = 'Asia/Shanghai'",
        db.name
    ))
    .await
    .unwrap();
    let s = Arc::new(TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("at", DataType::TimestampTz),
        ],
        vec![Field::tag("dev", DataType::Varchar, true).with_length(16)],
    ));
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let sink = Running::start(config(&db, method)).await;
        let row = vec![
            Value::Timestamp(Timestamp::new(1_000 + method as i64, Precision::Ms)),
            Value::String("2023-08-11 12:12:10.249".into()),
            Value::String("d".into()),
        ];
        assert_eq!(
            sink.write(batch("tz", &s, vec![row])).await,
            EventStatus::Delivered
        );
        sink.stop().await;
    }
    let got: Vec<f64> = c
        .query("SELECT extract(epoch FROM at)::float8 FROM tz", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, vec![1691755930.249, 1691755930.249]);
}

/// NaN and ±Infinity are decided on the client (KWDB refuses them with 42804,
/// which was read as "schema changed"): rejected with the rule, or NULL by option.
#[tokio::test]
async fn non_finite_floats_are_rejected_with_a_reason_or_written_as_null() {
    let db = TestDb::new("nan").await;
    let s = seed_schema();
    let mut rows = seed_rows();
    rows[1][5] = Value::Float8(f64::NAN);
    rows[3][4] = Value::Float4(f32::INFINITY);
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let t = format!("nan_{method:?}").to_lowercase();
        let sink = Running::start(config(&db, method)).await;
        assert_eq!(
            sink.write(batch(&t, &s, rows.clone())).await,
            EventStatus::Rejected
        );
        sink.stop().await;
        let c = db.client().await;
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n, 3,
            "{method:?}: only the two rows with non-finite floats are refused"
        );

        let t = format!("null_{method:?}").to_lowercase();
        let mut cfg = config(&db, method);
        cfg.non_finite_floats = kwpipe_components::sinks::kwdb::NonFinite::Null;
        let sink = Running::start(cfg).await;
        assert_eq!(
            sink.write(batch(&t, &s, rows.clone())).await,
            EventStatus::Delivered
        );
        sink.stop().await;
        let r = c
            .query_one(
                &format!("SELECT count(*), count(c5), count(c4) FROM {t}"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)),
            (5, 4, 4),
            "{method:?}"
        );
    }
}

/// A relational table gets a key (its NOT NULL columns) and is written with ON
/// CONFLICT: a replay rewrites rows instead of adding them, a later row wins.
#[tokio::test]
async fn relational_replays_do_not_duplicate_rows() {
    let db = TestDb::new("rel").await;
    let s = Arc::new(TableSchema::new(
        TableKind::Relational,
        vec![
            Field::column("id", DataType::Int8).not_null(),
            Field::column("name", DataType::Varchar).with_length(32),
        ],
        vec![],
    ));
    let rows = |name: &str| {
        (1..=3i64)
            .map(|i| vec![Value::Int8(i), Value::String(format!("{name}{i}"))])
            .collect::<Vec<_>>()
    };
    for method in [WriteMethod::Copy, WriteMethod::Insert] {
        let t = format!("orders_{method:?}").to_lowercase();
        let sink = Running::start(config(&db, method)).await;
        for b in [rows("a"), rows("a"), rows("b")] {
            assert_eq!(sink.write(batch(&t, &s, b)).await, EventStatus::Delivered);
        }
        sink.stop().await;
        let c = db.client().await;
        let got: Vec<String> = c
            .query(&format!("SELECT name FROM {t} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, vec!["b1", "b2", "b3"], "{method:?}");
    }
}

/// On a server of its own: a restart of the shared one would break the
/// connections of every test running beside it.
#[tokio::test]
async fn postgres_restart_mid_stream_loses_and_duplicates_nothing() {
    let pg = tokio::task::spawn_blocking(PrivatePg::start).await.unwrap();
    let url = pg.create_database("restart");
    let s = seed_schema();
    let sink = Running::start(config_url(&url, WriteMethod::Copy)).await;
    let mut acks = Vec::new();
    for b in 0..100i64 {
        let rows: Vec<Row> = (0..1000i64)
            .map(|i| {
                let n = b * 1000 + i;
                seed_row(
                    1_700_000_000_000 + n,
                    (n % 1000) as i16,
                    n as i32,
                    n,
                    n as f32,
                    n as f64,
                    n % 2 == 0,
                )
            })
            .collect();
        acks.push(sink.send(batch("stream", &s, rows)).await);
        if b == 30 {
            pg.stop_server();
            pg.start_server();
        }
    }
    for rx in acks {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(120), rx)
                .await
                .unwrap(),
            EventStatus::Delivered
        );
    }
    sink.stop().await;
    let c = connect(&url).await;
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT c3), min(c3), max(c3) FROM stream",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3)
        ),
        (100_000, 100_000, 0, 99_999)
    );
}

// ---- golden files for the kwdb dialect ---------------------------------------

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/kwdb/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("KWPIPE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{path} missing; run with KWPIPE_BLESS=1 to write it"));
    assert_eq!(
        actual, want,
        "{path} differs (KWPIPE_BLESS=1 rewrites it after review)"
    );
}

fn kwdb_statements(
    table: &str,
    schema: &TableSchema,
    rows: &[Row],
    precision: Precision,
) -> String {
    let sql = Sql(Dialect::Kwdb);
    let t = sql.ident(table).unwrap();
    let mut out = String::new();
    for s in sql.create_table(&t, schema, precision).unwrap() {
        out.push_str(&s);
        out.push_str(";\n");
    }
    let idents: Vec<_> = schema
        .fields()
        .map(|f| sql.ident(&f.name).unwrap())
        .collect();
    let fields: Vec<Field> = schema.fields().cloned().collect();
    // The suffix as the sink computes it from the table the catalog reads back,
    // whose key is the relational key kwpipe created it with.
    let key: Vec<String> = kwpipe_components::kwdb::dialect::relational_key(schema)
        .into_iter()
        .map(str::to_string)
        .collect();
    out.push_str(
        &render_insert_with(
            Encoding::new(Dialect::Kwdb),
            &sql.insert_prefix(&t, &idents),
            &fields,
            rows,
            &sql.upsert_suffix(&t, schema.kind, &key, &idents).unwrap(),
        )
        .unwrap(),
    );
    out.push_str(";\n");
    out
}

#[test]
fn kwdb_dialect_golden_files() {
    let sql = Sql(Dialect::Kwdb);
    let db = sql.ident("benchmark").unwrap();
    golden(
        "database.sql",
        &format!(
            "{};\n{};\n",
            sql.create_database(&db, DatabaseKind::Ts).unwrap(),
            sql.create_database(&sql.ident("rdb").unwrap(), DatabaseKind::Relational)
                .unwrap()
        ),
    );
    golden(
        "json_kaiwudb.sql",
        &kwdb_statements(
            "ts_json_kaiwudb_tb",
            &seed_schema(),
            &seed_rows(),
            Precision::Ms,
        ),
    );

    // us and ns: the column gets the precision, the literals every digit.
    let fine = TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("v", DataType::Float8),
        ],
        vec![Field::tag("dev", DataType::Varchar, true).with_length(32)],
    );
    let ns_rows = vec![vec![
        Value::Timestamp(Timestamp::new(1_690_855_924_005_123_456, Precision::Ns)),
        Value::Float8(1.5),
        Value::String("d1".into()),
    ]];
    golden(
        "timestamp_ns.sql",
        &kwdb_statements("fine_tb", &fine, &ns_rows, Precision::Ns),
    );

    // OpenTSDB (JSON and telnet) as DESIGN.md has the tables made.
    let tsdb = |cols: &[&str], tags: &[&str]| {
        let mut columns = vec![Field::column("timestamp", DataType::TimestampTz).not_null()];
        columns.extend(cols.iter().map(|c| Field::column(*c, DataType::Float8)));
        let mut t: Vec<Field> = tags
            .iter()
            .map(|n| Field::tag(*n, DataType::Varchar, false))
            .collect();
        t.push(Field::tag("primary_tag", DataType::Varchar, true).with_length(64));
        TableSchema::new(TableKind::TimeSeries, columns, t)
    };
    let pt = "5b4f7bc0e7e7c3c0f3e0d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6";
    let json_tsdb = tsdb(&["c1", "c2"], &["tag_name"]);
    let ms = |v| Value::Timestamp(Timestamp::new(v, Precision::Ms));
    golden(
        "json_opentsdb.sql",
        &kwdb_statements(
            "ts_json_opentsdb_tb",
            &json_tsdb,
            &[
                vec![
                    ms(1648432611249),
                    Value::Float8(10.3),
                    Value::Null,
                    Value::String("tag_value".into()),
                    Value::String(pt.into()),
                ],
                vec![
                    ms(1648432611339),
                    Value::Null,
                    Value::Float8(219.0),
                    Value::String("tag_value".into()),
                    Value::String(pt.into()),
                ],
                vec![
                    ms(1648432611340),
                    Value::Float8(12.6),
                    Value::Null,
                    Value::String("tag_value".into()),
                    Value::String(pt.into()),
                ],
                vec![
                    ms(1648432611250),
                    Value::Null,
                    Value::Float8(218.0),
                    Value::String("tag_value".into()),
                    Value::String(pt.into()),
                ],
            ],
            Precision::Ms,
        ),
    );
    let line_tsdb = tsdb(&["c1", "c2"], &["tag1"]);
    golden(
        "line_opentsdb.sql",
        &kwdb_statements(
            "line_opentsdb_tb",
            &line_tsdb,
            &[
                vec![
                    ms(1648432611249),
                    Value::Float8(10.8),
                    Value::Float8(221.0),
                    Value::String("1".into()),
                    Value::String(pt.into()),
                ],
                vec![
                    ms(1648432611250),
                    Value::Float8(11.3),
                    Value::Float8(217.0),
                    Value::String("1".into()),
                    Value::String(pt.into()),
                ],
            ],
            Precision::Ms,
        ),
    );

    // line_influxdb: no DDL (the table exists); values coerced to the seed's types.
    let influx_table = TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("k_timestamp", DataType::TimestampTz).not_null(),
            Field::column("c1", DataType::Int2),
            Field::column("c2", DataType::Int4),
            Field::column("c3", DataType::Int8),
            Field::column("c4", DataType::Float4),
            Field::column("c5", DataType::Float8),
            Field::column("c6", DataType::Bool),
            Field::column("c7", DataType::Varbytes).with_length(10),
            Field::column("c8", DataType::Varbytes).with_length(10),
            Field::column("c9", DataType::Char).with_length(1),
            Field::column("c10", DataType::NChar).with_length(1),
            Field::column("c11", DataType::Varchar).with_length(10),
            Field::column("c12", DataType::NVarchar).with_length(10),
            Field::column("c13", DataType::TimestampTz),
        ],
        vec![Field::tag("tag_name", DataType::Varchar, true).with_length(64)],
    );
    let t = sql.ident("ts_line_influxdb_tb").unwrap();
    let idents: Vec<_> = influx_table
        .fields()
        .map(|f| sql.ident(&f.name).unwrap())
        .collect();
    let fields: Vec<Field> = influx_table.fields().cloned().collect();
    let s = |x: &str| Value::String(x.into());
    let influx_rows = vec![
        vec![
            Value::Timestamp(Timestamp::new(1648432611249000000, Precision::Ns)),
            Value::Int2(11),
            Value::Int4(21),
            Value::Int8(31),
            Value::Float4(11.8),
            Value::Float8(0.16),
            Value::Bool(true),
            s("112132"),
            s("213645"),
            s("a"),
            s("1"),
            s("qaz"),
            s("tgb"),
            Value::Int8(1648432611249),
            s("tag_value"),
        ],
        vec![
            Value::Timestamp(Timestamp::new(1648432611249000000, Precision::Ns)),
            Value::Int2(12),
            Value::Int4(22),
            Value::Int8(32),
            Value::Float4(12.8),
            Value::Float8(0.29),
            Value::Bool(false),
            s("123563"),
            s("213621"),
            s("b"),
            s("2"),
            s("wsx"),
            s("yhn"),
            s("2023-08-11 12:12:10.249"),
            s("tag_value"),
        ],
        vec![
            Value::Timestamp(Timestamp::new(1648432611250000000, Precision::Ns)),
            Value::Int2(13),
            Value::Int4(23),
            Value::Int8(33),
            Value::Float4(13.8),
            Value::Float8(0.32),
            Value::Bool(true),
            s(r"\x313233"),
            s(r"\x6664736665"),
            s("c"),
            s("3"),
            s("edc"),
            s("ujm"),
            Value::Int8(1648432611250),
            s("tag_value"),
        ],
    ];
    // VARBYTES as b'\x..' literals: KWDB's insert path (insert_direct.go, the
    // `len(rawValue) > width` check) measures an E'\\x..' string's text before
    // decoding it, so 6 bytes in E'\\x313132313332' (16 characters) did not fit
    // VARBYTES(10); a b'' literal is decoded by the scanner first.
    golden(
        "line_influxdb.sql",
        &format!(
            "{};\n",
            render_insert_with(
                Encoding::new(Dialect::Kwdb),
                &sql.insert_prefix(&t, &idents),
                &fields,
                &influx_rows,
                ""
            )
            .unwrap()
        ),
    );

    // Evolution. One ALTER per field (alter_table.go: "alter timeseries table with
    // multiple commands is not supported"); added fields nullable (no NOT NULL
    // ADD COLUMN on a ts table); tags never NVARCHAR (create_table.go
    // checkTagType, alter_table.go validateTextType: "tag %s does not support
    // type NVARCHAR"); VARCHAR widens, never shortens (validateTextType);
    // VARBYTES is not in validateAlterTSType at all.
    let seed_t = sql.ident("ts_json_kaiwudb_tb").unwrap();
    let ts = TableKind::TimeSeries;
    let c7 = Field::column("c7", DataType::Varchar).with_length(20);
    let site = Field::tag("site", DataType::Varchar, false).with_length(32);
    golden(
        "evolution.sql",
        &format!(
            "{};\n{};\n{};\n{};\n",
            sql.add_field(&seed_t, ts, &c7, false, Precision::Ms)
                .unwrap(),
            sql.add_field(&seed_t, ts, &site, true, Precision::Ms)
                .unwrap(),
            sql.widen_field(&seed_t, &site, &site.clone().with_length(64), true)
                .unwrap(),
            sql.widen_field(&seed_t, &c7, &c7.clone().with_length(40), false)
                .unwrap(),
        ),
    );
    let refused = [
        sql.add_field(
            &seed_t,
            ts,
            &Field::tag("n", DataType::NVarchar, false).with_length(32),
            true,
            Precision::Ms,
        ),
        sql.add_field(
            &seed_t,
            ts,
            &Field::tag("at", DataType::TimestampTz, false),
            true,
            Precision::Ms,
        ),
        sql.add_field(
            &seed_t,
            ts,
            &Field::column("d", DataType::Date),
            false,
            Precision::Ms,
        ),
        sql.widen_field(
            &seed_t,
            &Field::column("c7", DataType::Varbytes).with_length(10),
            &Field::column("c7", DataType::Varbytes).with_length(20),
            false,
        ),
    ];
    for r in refused {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("(KWDB: ") && e.contains(".go"), "{e}");
    }
    golden(
        "catalog.sql",
        &format!(
            "{};\n{};\n{};\n{};\n{};\n",
            sql.show_databases(),
            sql.show_tables(&db),
            sql.show_columns(&seed_t),
            sql.show_tags(&seed_t),
            kwpipe_components::kwdb::dedup::SHOW_DEDUP_RULE,
        ),
    );
    // What kwpipe refuses before sending anything, and the message that says why
    // (each names the KWDB rule and where KWDB states it).
    let mk = |columns: Vec<Field>, tags: Vec<Field>| {
        TableSchema::new(TableKind::TimeSeries, columns, tags)
    };
    let k = || Field::column("ts", DataType::TimestampTz).not_null();
    let v = || Field::column("v", DataType::Float8);
    let p = || Field::tag("dev", DataType::Varchar, true).with_length(64);
    let t = sql.ident("t").unwrap();
    let mut refused = String::new();
    let mut case = |what: &str, e: kwpipe_components::kwdb::KwdbError| {
        refused.push_str(&format!("{what}\n  {e}\n"));
    };
    let create = |s: TableSchema, p: Precision| sql.create_table(&t, &s, p).unwrap_err();
    for ty in [
        DataType::NVarchar,
        DataType::Timestamp,
        DataType::TimestampTz,
        DataType::Geometry,
    ] {
        case(
            &format!("{ty} tag"),
            create(
                mk(vec![k(), v()], vec![p(), Field::tag("g", ty, false)]),
                Precision::Ms,
            ),
        );
    }
    for ty in [
        DataType::Date,
        DataType::Bytes,
        DataType::Text,
        DataType::Decimal,
    ] {
        case(
            &format!("{ty} column"),
            create(
                mk(vec![k(), Field::column("c", ty)], vec![p()]),
                Precision::Ms,
            ),
        );
    }
    case(
        "one column",
        create(mk(vec![k()], vec![p()]), Precision::Ms),
    );
    case(
        "no primary tag",
        create(mk(vec![k(), v()], vec![]), Precision::Ms),
    );
    case(
        "five primary tags",
        create(
            mk(
                vec![k(), v()],
                (0..5)
                    .map(|i| Field::tag(format!("p{i}"), DataType::Int4, true))
                    .collect(),
            ),
            Precision::Ms,
        ),
    );
    case(
        "VARCHAR(129) primary tag",
        create(
            mk(vec![k(), v()], vec![p().with_length(129)]),
            Precision::Ms,
        ),
    );
    case(
        "FLOAT8 primary tag",
        create(
            mk(
                vec![k(), v()],
                vec![Field::tag("f", DataType::Float8, true)],
            ),
            Precision::Ms,
        ),
    );
    case(
        "NCHAR(255)",
        create(
            mk(
                vec![k(), Field::column("n", DataType::NChar).with_length(255)],
                vec![p()],
            ),
            Precision::Ms,
        ),
    );
    case(
        "VARCHAR(65535)",
        create(
            mk(
                vec![
                    k(),
                    Field::column("s", DataType::Varchar).with_length(65_535),
                ],
                vec![p()],
            ),
            Precision::Ms,
        ),
    );
    case(
        "relational nanoseconds",
        create(
            TableSchema::new(
                TableKind::Relational,
                vec![Field::column("at", DataType::Timestamp)],
                vec![],
            ),
            Precision::Ns,
        ),
    );
    case(
        "ts database name of 64 bytes",
        sql.create_database(&sql.ident(&"d".repeat(64)).unwrap(), DatabaseKind::Ts)
            .unwrap_err(),
    );
    case("a name with '", sql.ident("it's").unwrap_err());
    let enc = Encoding::new(Dialect::Kwdb);
    let mut out = String::new();
    for (what, value, field) in [
        (
            "NaN",
            Value::Float8(f64::NAN),
            Field::column("v", DataType::Float8),
        ),
        (
            "-Infinity",
            Value::Float4(f32::NEG_INFINITY),
            Field::column("v", DataType::Float4),
        ),
        (
            "7 bytes into VARBYTES(6)",
            Value::Bytes(b"1234567".to_vec()),
            Field::column("b", DataType::Varbytes).with_length(6),
        ),
    ] {
        let e = enc.literal(&value, &field, &mut out).unwrap_err();
        refused.push_str(&format!("{what}\n  {e}\n"));
    }
    golden("refused.txt", &refused);

    // Every session of the sink, before anything else.
    golden(
        "session.sql",
        &format!("{};\n", sql.session_setup().join(";\n")),
    );
    let rel = TableSchema::new(
        TableKind::Relational,
        vec![
            Field::column("id", DataType::Int8).not_null(),
            Field::column("name", DataType::Varchar).with_length(32),
            Field::column("price", DataType::Decimal),
            Field::column("at", DataType::Timestamp),
        ],
        vec![],
    );
    // KWDB's relational tables are CockroachDB's: PRIMARY KEY and INSERT ... ON
    // CONFLICT (cols) DO UPDATE SET c = excluded.c are accepted (docs
    // en/sql-reference/ddl/relational-db/relational-table.md,
    // en/sql-reference/dml/relational-db/relational-insert.md); with them a replay
    // rewrites the same row instead of adding one.
    golden(
        "relational.sql",
        &kwdb_statements(
            "orders",
            &rel,
            &[vec![
                Value::Int8(1),
                s("it's"),
                s("12.50"),
                Value::Timestamp(Timestamp::new(1690855924005, Precision::Ms)),
            ]],
            Precision::Ms,
        ),
    );
    // Without a declared key (no column NOT NULL): no PRIMARY KEY, no ON CONFLICT
    // (there is no conflict to name); the sink warns that replays repeat rows.
    let log = TableSchema::new(
        TableKind::Relational,
        vec![
            Field::column("at", DataType::Timestamp),
            Field::column("line", DataType::Varchar).with_length(200),
        ],
        vec![],
    );
    golden(
        "relational_no_key.sql",
        &kwdb_statements(
            "log",
            &log,
            &[vec![
                Value::Timestamp(Timestamp::new(1690855924005123, Precision::Us)),
                s("started"),
            ]],
            Precision::Us,
        ),
    );
}
