//! Log fields written with what could forge or corrupt a log line escaped: a
//! table name, a topic, a message or an error text holding a newline would start
//! a line of its own that looks like kwpipe's; ESC would reach a terminal (or a
//! journal viewer) raw and drive it. Every field's value is escaped, whoever
//! logged it, so no component has to remember to.

use std::fmt;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `text` with control characters (newline, carriage return, tab, ESC, DEL and
/// the C1 range) and bidirectional overrides (which reorder what a reader sees)
/// written as escapes; everything else as it is.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The field formatter of kwpipe's log lines: `message` alone, the others as
/// `name=value`, every value escaped.
pub fn fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() == "message" {
                write!(w, "{}", Escaped(&text))
            } else {
                write!(w, "{}={}", field.name(), Escaped(&text))
            }
        },
    )
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        let s = Escaped("a\nb\r\tc\u{1b}[31md\u{7f}\u{9b}e\u{202e}f é").to_string();
        assert_eq!(s, "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{9b}e\\u{202e}f é");
        assert!(!s.chars().any(needs_escape));
        assert_eq!(Escaped("plain").to_string(), "plain");
    }

    #[test]
    fn a_logged_name_cannot_start_a_line_of_its_own() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(fields())
                .with_ansi(false)
                .with_writer(move || out.clone()),
        );
        let name = "t\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(table = %name, other = name, "exporting {name}");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("table=t\\n2026"), "{text}");
        assert!(text.contains("exporting t\\n2026"), "{text}");
    }
}
