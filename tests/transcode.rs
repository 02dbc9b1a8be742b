//! `kwpipe transcode` end to end, on files.

use std::path::Path;
use std::process::Output;

use crate::support::kwpipe;

const SEED_INFLUX: &str = include_str!("../components/src/formats/testdata/seed_influx.txt");
const SEED_JSON: &str = include_str!("../components/src/formats/testdata/seed_json_kaiwudb.txt");
const SEED_TELNET: &str = include_str!("../components/src/formats/testdata/seed_telnet.txt");

fn transcode(args: &[&str], file: &Path) -> Output {
    kwpipe()
        .arg("transcode")
        .args(args)
        .arg(file)
        .output()
        .expect("running kwpipe")
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8 output")
}

#[test]
fn transcode_round_trips_the_seed_json_through_line_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("in.json");
    std::fs::write(&json, SEED_JSON).unwrap();
    let out = transcode(&["--from", "json_kaiwudb", "--to", "line_influxdb"], &json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty());
    let lines = text(&out.stdout);
    assert_eq!(lines.lines().count(), 10);
    assert_eq!(
        lines.lines().next().unwrap(),
        "ts_json_kaiwudb_tb,location=tianjin,temperature=35.5 c1=11i16,c2=21i32,c3=2535208944865431245i64,c4=6.14545f32,c5=5.15656f64,c6=true 1690855924005"
    );
    let lp = dir.path().join("in.lp");
    std::fs::write(&lp, &out.stdout).unwrap();
    let back = transcode(&["--from", "line_influxdb", "--to", "rows"], &lp);
    assert_eq!(back.status.code(), Some(0), "{}", text(&back.stderr));
    let rows = text(&back.stdout);
    assert!(
        rows.starts_with("table ts_json_kaiwudb_tb (time-series, 10 rows)\n"),
        "{rows}"
    );
    assert!(rows.contains(
        "  time=2023-08-01 02:12:04.005 (1690855924005 ms), c1=11, c2=21, c3=2535208944865431245, c4=6.14545, c5=5.15656, c6=true, location=\"tianjin\", temperature=\"35.5\"\n"
    ), "{rows}");
}

#[test]
fn transcode_reports_bad_lines_and_still_writes_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mixed.lp");
    std::fs::write(
        &f,
        "m,g=a v=1i16 1\nm,g=a v=70000i16 2\n# comment\nm,g=b v=3i16 3\nnot a line\n",
    )
    .unwrap();
    let out = transcode(&["--from", "line_influxdb", "--to", "line_influxdb"], &f);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "m,g=a v=1i16 1\nm,g=b v=3i16 3\n");
    assert_eq!(
        text(&out.stderr),
        "line 2, field \"v\": 70000 is out of range for INT2\nline 5, field \"a\": expected \"=\" after field \"a\"\n"
    );
}

#[test]
fn transcode_precision_applies_to_input_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seed.lp");
    std::fs::write(&f, SEED_INFLUX).unwrap();
    let out = transcode(
        &[
            "--from",
            "line_influxdb",
            "--to",
            "json_kaiwudb",
            "--precision",
            "ns",
        ],
        &f,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    assert_eq!(json.lines().count(), 2, "{json}");
    assert!(json.contains("\"time\":1648432611249000000,"), "{json}");
    // The same lines read as milliseconds are far beyond year 9999.
    let out = transcode(
        &[
            "--from",
            "line_influxdb",
            "--to",
            "rows",
            "--precision",
            "ms",
        ],
        &f,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr).lines().count(), 4);
    assert!(text(&out.stderr).starts_with(
        "line 1: timestamp 1648432611249000000 (ms) is out of range (years 0001 to 9999); the line timestamp's unit is the timestamp_precision option"
    ));
}

#[test]
fn transcode_reads_standard_input_and_rejects_unencodable_rows() {
    let mut child = kwpipe()
        .args([
            "transcode",
            "--from",
            "json_opentsdb",
            "--to",
            "line_opentsdb",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"[{"metric":"t.a","timestamp":1648432611249,"value":1.5,"tags":{"k":"v"}},{"metric":"t.b","timestamp":1648432611250,"value":"text","tags":{"k":"v"}}]"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "t.a 1648432611249 1.5 k=v\n");
    assert_eq!(
        text(&out.stderr),
        "table t, row 1: field \"b\": line_opentsdb cannot carry text values (telnet values are numbers)\n"
    );
}

#[test]
fn transcode_telnet_to_opentsdb_json_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seed.txt");
    std::fs::write(&f, SEED_TELNET).unwrap();
    let out = transcode(&["--from", "line_opentsdb", "--to", "json_opentsdb"], &f);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with(
        "[{\"metric\":\"line_opentsdb_tb.c1\",\"timestamp\":1648432611249,\"value\":10.8,\"tags\":{\"tag1\":\"1\"}},"
    ));
    let out = transcode(&["--from", "json", "--to", "rows"], &f);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown format \"json\""));
    let out = transcode(
        &["--from", "json_kaiwudb", "--to", "rows"],
        &dir.path().join("missing"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing: No such file"),
        "{}",
        text(&out.stderr)
    );
}
