//! The fast path of the `json_kaiwudb` decoder: a hand-written scanner for objects
//! in the shape real payloads have (plain keys, numbers, booleans, strings without
//! escapes). It builds rows straight from the bytes and pushes them only when the
//! whole object went well. Anything else — an escape, a value of the wrong type, a
//! row in error, bad JSON — makes it give up without a trace, and the serde path
//! decodes the object again and reports exactly what is wrong. So errors read the
//! same whichever path met them, and the fast path only has to be right about
//! what it accepts.

use std::sync::Arc;

use super::cell::Cell;
use super::ctx::{batch_for, Ctx};
use super::schema::{build_schema, ColumnSpecs, FieldIndex, SchemaCache, TagSpecs};
use crate::event::{Field, Precision, Row, TableSchema, Value};

#[cfg(test)]
thread_local! {
    static DISABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fast path off (the serde path decodes everything), for
/// tests that hold both paths to the same outcome.
#[cfg(test)]
pub(crate) fn serde_path_only<T>(f: impl FnOnce() -> T) -> T {
    DISABLED.with(|d| d.set(true));
    let out = f();
    DISABLED.with(|d| d.set(false));
    out
}

/// Tests compare both paths on the same input.
#[inline]
pub(super) fn enabled() -> bool {
    #[cfg(test)]
    {
        !DISABLED.with(|d| d.get())
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// Decodes one object; false (with nothing changed) when the serde path must.
pub(super) fn decode_object(ctx: &mut Ctx, text: &[u8]) -> bool {
    let mut s = Scanner { b: text, i: 0 };
    let Some(parsed) = object(&mut s, ctx) else {
        return false;
    };
    s.ws();
    if s.i != s.b.len() {
        return false;
    }
    let schema = match parsed.schema {
        Some(schema) => schema,
        None => match schema_of(ctx, parsed.columns, parsed.tags) {
            Some(schema) => schema,
            None => return false,
        },
    };
    let rows = match parsed.data {
        Data::None => Vec::new(),
        Data::Rows(rows) => rows,
        Data::Raw(range) => {
            let mut s = Scanner {
                b: &text[..range.end],
                i: range.start,
            };
            match rows(&mut s, &schema, ctx.options.precision) {
                Some(r) => r,
                None => return false,
            }
        }
    };
    let b = batch_for(ctx, parsed.table, parsed.database, schema);
    ctx.batches[b].rows.extend(rows);
    true
}

struct Parsed<'a> {
    table: &'a str,
    database: Option<&'a str>,
    /// The `columns` and `tags` values as they are in the payload (`tags` may be
    /// absent: then it is empty).
    columns: &'a [u8],
    tags: &'a [u8],
    /// Built already when the schema came before the data.
    schema: Option<Arc<TableSchema>>,
    data: Data,
}

enum Data {
    None,
    /// Read in the same pass, the schema having come first (the usual order).
    Rows(Vec<Row>),
    /// Where the `data` array is; read once the schema is known.
    Raw(std::ops::Range<usize>),
}

fn object<'a>(s: &mut Scanner<'a>, ctx: &mut Ctx) -> Option<Parsed<'a>> {
    s.ws();
    s.eat(b'{')?;
    let mut table = None;
    let mut database = None;
    let mut columns: Option<&[u8]> = None;
    let mut tags: Option<&[u8]> = None;
    let mut data = Data::None;
    let mut schema = None;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        s.ws();
        let key = s.plain_str()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            "table" => table = Some(s.plain_str()?),
            "database" => {
                database = if s.literal(b"null") {
                    None
                } else {
                    Some(s.plain_str()?)
                }
            }
            "columns" => columns = Some(s.schema_value(ctx.schemas, false)?),
            "tags" => tags = Some(s.schema_value(ctx.schemas, true)?),
            "data" => match (columns, tags) {
                (Some(c), Some(t)) if schema.is_none() => {
                    let built = schema_of(ctx, c, t)?;
                    data = Data::Rows(rows(s, &built, ctx.options.precision)?);
                    schema = Some(built);
                }
                _ => {
                    let start = s.i;
                    s.skip_value()?;
                    data = Data::Raw(start..s.i);
                }
            },
            _ => {
                s.skip_value()?;
            }
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    Some(Parsed {
        table: table?,
        database,
        columns: columns?,
        tags: tags.unwrap_or_default(),
        schema,
        data,
    })
}

/// The schema `columns` and `tags` declare: from the cache when the same bytes
/// declared it before, else read by serde (schemas are small; it borrows the
/// names) and checked.
fn schema_of(ctx: &mut Ctx, columns: &[u8], tags: &[u8]) -> Option<Arc<TableSchema>> {
    if let Some(schema) = ctx.schemas.get(columns, tags) {
        return Some(schema);
    }
    // Past the limits, the serde path reports it.
    let cols = serde_json::from_slice::<ColumnSpecs>(columns)
        .ok()?
        .0
        .ok()?;
    let tgs = if tags.is_empty() {
        Vec::new()
    } else {
        match serde_json::from_slice::<Option<TagSpecs>>(tags).ok()? {
            Some(specs) => specs.0.ok()?,
            None => Vec::new(),
        }
    };
    let schema = build_schema(&mut ctx.last_schema, &cols, &tgs).ok()?;
    ctx.schemas.insert(columns, tags, schema.clone());
    Some(schema)
}

fn rows(s: &mut Scanner, schema: &Arc<TableSchema>, precision: Precision) -> Option<Vec<Row>> {
    s.ws();
    if s.literal(b"null") {
        return Some(Vec::new());
    }
    s.eat(b'[')?;
    let width = schema.width();
    let fields: Vec<&Field> = schema.fields().collect();
    let index = FieldIndex::new(schema);
    let mut out = Vec::with_capacity(64);
    s.ws();
    if s.peek()? == b']' {
        s.i += 1;
        return Some(out);
    }
    loop {
        s.ws();
        s.eat(b'{')?;
        out.push(row(s, &fields, &index, width, precision)?);
        s.ws();
        match s.next()? {
            b',' => continue,
            b']' => break,
            _ => return None,
        }
    }
    Some(out)
}

/// One data row. Keys usually come in schema order, and then each value is
/// pushed as it comes; keys in another order (or missing) are handled by
/// position, the row first widened to its full width.
fn row(
    s: &mut Scanner,
    fields: &[&Field],
    index: &FieldIndex,
    width: usize,
    precision: Precision,
) -> Option<Row> {
    let mut row: Row = Vec::with_capacity(width);
    // None while in order; the fields set so far once out of order.
    let mut seen: Option<Vec<bool>> = None;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key = s.plain_str()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let next = row.len();
            if seen.is_none() && next < width && fields[next].name == key {
                row.push(value(s, fields[next], precision)?);
            } else {
                let set = seen.get_or_insert_with(|| {
                    let mut set = vec![true; row.len()];
                    set.resize(width, false);
                    row.resize(width, Value::Null);
                    set
                });
                let i = index.position(key)?;
                if set[i] {
                    return None;
                }
                set[i] = true;
                row[i] = value(s, fields[i], precision)?;
            }
            s.ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    match seen {
        None => {
            // Fields after the last one given must be nullable.
            if fields[row.len()..].iter().any(|f| !f.nullable) {
                return None;
            }
            row.resize(width, Value::Null);
        }
        Some(set) => {
            if fields
                .iter()
                .zip(&set)
                .any(|(f, seen)| !seen && !f.nullable)
            {
                return None;
            }
        }
    }
    Some(row)
}

/// One value for `field`, as the serde path would make it (through the same
/// [`Cell`] dispatch); None to give up.
fn value(s: &mut Scanner, field: &Field, precision: Precision) -> Option<Value> {
    let cell = Cell { field, precision };
    let outcome = match s.peek()? {
        b'n' => {
            if !s.literal(b"null") {
                return None;
            }
            cell.null()
        }
        b't' | b'f' => {
            let v = if s.literal(b"true") {
                true
            } else if s.literal(b"false") {
                false
            } else {
                return None;
            };
            cell.bool(v)
        }
        // Only strings without escapes get here, as serde would borrow them.
        b'"' => cell.text(std::borrow::Cow::Borrowed(s.plain_str()?)),
        b'-' | b'0'..=b'9' => match s.number()? {
            // `number` says Int exactly when serde_json visits an i64 or a u64 that fits one.
            Number::Int(v) => cell.int(v),
            // A literal beyond f64 (`1e309`) parses to infinity here, while
            // serde_json refuses it: give up, so both paths say the same.
            Number::Other(token) => {
                cell.float(token.parse::<f64>().ok().filter(|f| f.is_finite())?)
            }
        },
        _ => return None,
    };
    outcome.ok()
}

/// serde_json's recursion limit.
const SERDE_DEPTH: usize = 128;

enum Number<'a> {
    Int(i64),
    Other(&'a str),
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// A string without escapes or control characters, borrowed; None otherwise.
    #[inline]
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let mut ascii = true;
        let len = rest.iter().position(|&c| {
            ascii &= c < 0x80;
            c == b'"' || c == b'\\' || c < 0x20
        })?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        if ascii {
            // SAFETY: every byte is below 0x80: ASCII, hence UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(&rest[..len]) })
        } else {
            std::str::from_utf8(&rest[..len]).ok()
        }
    }

    /// A JSON number: an integer that fits i64 (accumulated while scanning), or
    /// the text of any other number. None for what is not a JSON number, for
    /// integers beyond i64 and for `-0` (serde_json has rules of its own for those).
    fn number(&mut self) -> Option<Number<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let first = self.i;
        let mut magnitude: u64 = 0;
        let mut overflow = false;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            match magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(c - b'0')))
            {
                Some(m) => magnitude = m,
                None => overflow = true,
            }
            self.i += 1;
        }
        let digits = self.i - first;
        if digits == 0 || (digits > 1 && self.b[first] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.i += 1;
            let d = self.digits();
            if d == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        if integer {
            if overflow || (negative && magnitude == 0) {
                return None;
            }
            let v = if negative {
                0i64.checked_sub_unsigned(magnitude)?
            } else {
                i64::try_from(magnitude).ok()?
            };
            return Some(Number::Int(v));
        }
        // SAFETY: the token holds only the ASCII bytes `-+.eE0-9` checked above.
        Some(Number::Other(unsafe {
            std::str::from_utf8_unchecked(&self.b[start..self.i])
        }))
    }

    fn digits(&mut self) -> usize {
        let n = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.i += n;
        n
    }

    /// Skips one JSON value and returns its bytes (strings with escapes included).
    /// A `columns` or `tags` value: bytes seen before are stepped over without
    /// scanning them again.
    fn schema_value(&mut self, cache: &SchemaCache, tags: bool) -> Option<&'a [u8]> {
        let start = self.i;
        match cache.known_prefix(&self.b[start..], tags) {
            Some(n) => {
                self.i += n;
                Some(&self.b[start..self.i])
            }
            None => self.skip_value(),
        }
    }

    fn skip_value(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let mut depth = 0usize;
        loop {
            self.ws();
            match self.peek()? {
                b'{' | b'[' => {
                    depth += 1;
                    // serde_json refuses nesting deeper than 128: so does this
                    // path (giving up), or the same object would be written or
                    // rejected depending on the path that read it.
                    if depth > SERDE_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    continue;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.i += 1;
                }
                b'"' => {
                    self.i += 1;
                    loop {
                        match self.next()? {
                            b'\\' => {
                                self.next()?;
                            }
                            b'"' => break,
                            _ => {}
                        }
                    }
                }
                b',' | b':' if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                _ => {
                    let n = self.b[self.i..]
                        .iter()
                        .take_while(|c| {
                            !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' | b':')
                        })
                        .count();
                    if n == 0 {
                        return None;
                    }
                    self.i += n;
                }
            }
            if depth == 0 {
                return Some(&self.b[start..self.i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DataType;
    use crate::formats::{decode as decode_any, DecodeOptions, Format};

    const SEED: &str = r#"{"table":"ts_json_kaiwudb_tb","columns":[{"name":"ts","type":"TIMESTAMPTZ","length":64},{"name":"c1","type":"INT2","length":16},{"name":"c2","type":"INT4","length":32},{"name":"c3","type":"INT8","length":64},{"name":"c4","type":"FLOAT4","length":32},{"name":"c5","type":"FLOAT8","length":64},{"name":"c6","type":"BOOL","length":1}],"tags":[{"name":"location","type":"VARCHAR","length":64,"primary":true,"nullable":false},{"name":"temperature","type":"FLOAT4","length":64,"primary":false,"nullable":true}],"data":[{"ts":1690855924005,"c1":11,"c2":21,"c3":2535208944865431245,"c4":6.14545,"c5":5.15656,"c6":true,"location":"tianjin","temperature":35.5},{"ts":1691853703011,"c1":12,"c2":22,"c3":6422208944865124578,"c4":1.01635,"c5":0.53533,"c6":false,"location":"tianjin","temperature":35.5}]}"#;

    fn both(payload: &str) -> (String, String) {
        let opts = DecodeOptions::default();
        let fast = format!(
            "{:?}",
            decode_any(Format::JsonKaiwudb, payload.as_bytes(), &opts)
        );
        DISABLED.with(|d| d.set(true));
        let slow = format!(
            "{:?}",
            decode_any(Format::JsonKaiwudb, payload.as_bytes(), &opts)
        );
        DISABLED.with(|d| d.set(false));
        (fast, slow)
    }

    #[test]
    fn the_seed_example_takes_the_fast_path() {
        let opts = DecodeOptions::default();
        let mut schemas = SchemaCache::default();
        let mut ctx = Ctx {
            options: &opts,
            schemas: &mut schemas,
            batches: Vec::new(),
            errors: Vec::new(),
            last_schema: None,
            object_error: None,
            line: 1,
            span: 0..SEED.len(),
            seen: Vec::new(),
        };
        assert!(decode_object(&mut ctx, SEED.as_bytes()));
        assert_eq!(ctx.batches[0].rows.len(), 2);
        assert_eq!(ctx.batches[0].rows[0][3], Value::Int8(2535208944865431245));
    }

    #[test]
    fn both_paths_agree_on_good_and_bad_input() {
        let cases = [
            SEED.to_string(),
            // tags last, data first, as the source connector writes it
            r#"{"table":"t","data":[{"ts":1,"v":1.5,"id":7,"h":null}],"columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"v","type":"FLOAT8"}],"tags":[{"name":"id","type":"INT8","isPrimary":true},{"name":"h","type":"VARCHAR","length":4,"nullable":true}]}"#.to_string(),
            // relational, no tags, string timestamp
            r#"{"table":"r","columns":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int4"}],"data":[{"ts":"2024-01-22 22:22:22.224","n":1}]}"#.to_string(),
            // out of range, too long, wrong type, unknown field, missing NOT NULL, escapes, -0
            SEED.replace("\"c1\":11", "\"c1\":70000"),
            SEED.replace("tianjin", "a-very-long-location-name-longer-than-sixty-four-bytes-for-sure-yes"),
            SEED.replace("\"c6\":true", "\"c6\":1"),
            SEED.replace("\"c6\":true", "\"c6\":true,\"zz\":1"),
            SEED.replace("\"location\":\"tianjin\",", ""),
            SEED.replace("tianjin", "tian\\njin"),
            SEED.replace("\"c4\":6.14545", "\"c4\":-0"),
            SEED.replace("\"c3\":2535208944865431245", "\"c3\":92233720368547758070"),
            SEED.replace("\"c4\":6.14545", "\"c4\":1e39"),
            // keys out of order, a nullable tag left out, a key given twice
            SEED.replace("{\"ts\":1690855924005,\"c1\":11,", "{\"c1\":11,\"ts\":1690855924005,"),
            SEED.replace(",\"temperature\":35.5}", "}"),
            SEED.replace("\"c2\":21,", "\"c2\":21,\"c1\":11,"),
            SEED.replace("\"c2\":21,", "\"c2\":21,\"c2\":21,"),
            "{\"table\":\"t\"".to_string(),
            "[1,2]".to_string(),
        ];
        for case in cases {
            let (fast, slow) = both(&case);
            assert_eq!(fast, slow, "paths disagree on {case}");
        }
    }

    #[test]
    fn a_cached_schema_decodes_exactly_like_a_fresh_one() {
        let opts = DecodeOptions::default();
        let fresh = |p: &str| format!("{:?}", decode_any(Format::JsonKaiwudb, p.as_bytes(), &opts));
        let mut cache = SchemaCache::default();
        let mut cached =
            |p: &str| crate::formats::json_kaiwudb::decode_cached(p.as_bytes(), &opts, &mut cache);
        let a = cached(SEED);
        let b = cached(SEED);
        // One Arc for one schema: batching compares by pointer first.
        assert!(Arc::ptr_eq(&a.batches[0].schema, &b.batches[0].schema));
        assert_eq!(format!("{b:?}"), fresh(SEED));
        let cases = [
            // Same columns, other tags; same tags, other columns.
            SEED.replace("\"temperature\",\"type\":\"FLOAT4\"", "\"temperature\",\"type\":\"FLOAT8\""),
            SEED.replace("\"c1\",\"type\":\"INT2\"", "\"c1\",\"type\":\"INT4\""),
            // The cached bytes followed by more columns: a longer array, not a match.
            SEED.replace(
                "{\"name\":\"c6\",\"type\":\"BOOL\",\"length\":1}]",
                "{\"name\":\"c6\",\"type\":\"BOOL\",\"length\":1},{\"name\":\"c7\",\"type\":\"INT8\"}]",
            ),
            // The cached bytes then garbage.
            SEED.replace("\"nullable\":true}],\"data\"", "\"nullable\":true}]x,\"data\""),
            // A bad schema is never cached, and still rejected the second time.
            SEED.replace("\"INT8\"", "\"INT9\""),
            SEED.replace("\"INT8\"", "\"INT9\""),
            // Data before the schema, no tags (relational).
            r#"{"table":"r","data":[{"ts":1,"n":2}],"columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"n","type":"INT4"}]}"#.to_string(),
            r#"{"table":"r","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"n","type":"INT4"}],"tags":null,"data":[{"ts":1,"n":2}]}"#.to_string(),
            SEED.to_string(),
        ];
        for case in cases {
            let got = cached(&case);
            assert_eq!(
                format!("{got:?}"),
                fresh(&case),
                "cached decode differs on {case}"
            );
        }
        let c = cached(&SEED.replace("\"c1\",\"type\":\"INT2\"", "\"c1\",\"type\":\"INT4\""));
        assert_eq!(c.batches[0].schema.columns[1].ty, DataType::Int4);
        assert!(!Arc::ptr_eq(&a.batches[0].schema, &c.batches[0].schema));
    }
}
