//! `kwpipe transcode`: decode a file in one format and write it in another, to
//! check data before pointing a pipeline at a database.
//!
//! Good records go to stdout, rejected ones to stderr as `line N: reason`; the
//! exit code is 0 when everything decoded (and encoded), 1 otherwise.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use kwpipe_components::event::{Precision, RowBatch, TableKind, Value};
use kwpipe_components::formats::{self, DecodeOptions, EncodeOptions, Format};

#[derive(clap::Args, Debug)]
pub struct TranscodeArgs {
    /// Format of the input: json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb.
    #[arg(long)]
    pub from: Format,
    /// Format of the output, or `rows` to print the decoded rows readably.
    #[arg(long)]
    pub to: Output,
    /// Timestamp precision of numeric timestamps, read and written: s, ms, us, ns.
    #[arg(long, default_value = "ms", value_parser = parse_precision)]
    pub precision: Precision,
    /// The input file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

/// Where decoded rows go: a format, or a readable listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Format(Format),
    Rows,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "rows" {
            return Ok(Output::Rows);
        }
        s.parse::<Format>()
            .map(Output::Format)
            .map_err(|e| format!("{e}, or rows"))
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

/// Runs the command; returns the exit code.
pub fn run(args: &TranscodeArgs) -> i32 {
    let mut input = Vec::new();
    let read = match &args.file {
        Some(p) if p.as_os_str() != "-" => std::fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut input))
            .map_err(|e| format!("{}: {e}", p.display())),
        _ => std::io::stdin()
            .read_to_end(&mut input)
            .map_err(|e| format!("standard input: {e}")),
    };
    if let Err(e) = read {
        eprintln!("kwpipe transcode: {e}");
        return 2;
    }
    let decoded = formats::decode(args.from, &input, &DecodeOptions::new(args.precision));
    let mut ok = decoded.errors.is_empty();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for e in &decoded.errors {
        let _ = writeln!(err, "{e}");
    }
    let mut out = Vec::with_capacity(input.len());
    for b in decoded.batches {
        let batch = b.into_row_batch();
        match args.to {
            Output::Rows => render_rows(&batch, &mut out),
            Output::Format(f) => {
                let options = EncodeOptions {
                    precision: args.precision,
                };
                match formats::encode_lenient(f, &batch, &options, &mut out) {
                    Ok(errors) => {
                        for e in errors {
                            ok = false;
                            let _ = writeln!(err, "table {}, {e}", batch.target);
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(err, "kwpipe transcode: {e}");
                        return 2;
                    }
                }
            }
        }
    }
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    if let Err(e) = so.write_all(&out).and_then(|()| so.flush()) {
        let _ = writeln!(err, "kwpipe transcode: writing output: {e}");
        return 2;
    }
    if ok {
        0
    } else {
        1
    }
}

/// A batch as text: a header naming the table and its schema, then one line per row.
pub fn render_rows(batch: &RowBatch, out: &mut Vec<u8>) {
    let s = &batch.schema;
    let kind = match s.kind {
        TableKind::TimeSeries => "time-series",
        TableKind::Relational => "relational",
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "table {} ({kind}, {} row{})",
        batch.target,
        batch.rows.len(),
        if batch.rows.len() == 1 { "" } else { "s" }
    );
    let describe = |f: &kwpipe_components::event::Field| {
        let mut d = format!("{} {}", f.name, f.ty);
        if f.ty.has_length_limit() {
            let _ = write!(d, "({})", f.length);
        }
        if f.primary {
            d.push_str(" PRIMARY");
        }
        if !f.nullable {
            d.push_str(" NOT NULL");
        }
        d
    };
    let cols: Vec<String> = s.columns.iter().map(describe).collect();
    let _ = writeln!(text, "  columns: {}", cols.join(", "));
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(describe).collect();
        let _ = writeln!(text, "  tags: {}", tags.join(", "));
    }
    for row in &batch.rows {
        text.push_str("  ");
        for (i, (f, v)) in s.fields().zip(row).enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{}=", f.name);
            render_value(v, &mut text);
        }
        text.push('\n');
    }
    out.extend_from_slice(text.as_bytes());
}

fn render_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        Value::Timestamp(t) => {
            let _ = write!(
                out,
                "{} ({} {})",
                formats::time::timestamp_string(*t),
                t.value,
                t.precision
            );
        }
        other => {
            let _ = write!(
                out,
                "{}",
                formats::value::value_text(other).unwrap_or_default()
            );
        }
    }
}
