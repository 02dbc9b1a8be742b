//! The message headers kwpipe itself writes and reads: the names a dead-letter
//! record carries, and how an incoming header that would collide with them is
//! renamed. A module of its own, below sources, transforms and sinks, because
//! all three use it (the Kafka source renames incoming headers, `decode` and
//! `encode` add the dead-letter ones, the Kafka sink writes them).

use std::borrow::Cow;

/// The header naming why a record was rejected.
pub const ERROR_HEADER: &str = "kwpipe.error";
/// Headers naming the rejected record's origin (a dead-letter topic keeps them, so
/// the record can be found and replayed): the source topic, partition and offset.
pub const TOPIC_HEADER: &str = "kwpipe.topic";
pub const PARTITION_HEADER: &str = "kwpipe.partition";
pub const OFFSET_HEADER: &str = "kwpipe.offset";

/// kwpipe's own headers: those it adds to a rejected record.
pub const OWN_PREFIX: &str = "kwpipe.";
/// What an incoming header under [`OWN_PREFIX`] is renamed with.
pub const INCOMING_PREFIX: &str = "incoming.";

/// The name an incoming header is kept under: one under kwpipe's own prefix is
/// renamed (`kwpipe.error` to `incoming.kwpipe.error`), so the headers a
/// dead-letter record carries under `kwpipe.` are kwpipe's alone. A message could
/// otherwise bring its own `kwpipe.error` or `kwpipe.offset`, found first by
/// whoever reads the dead-letter topic. Kept, not dropped: what an earlier hop
/// said may still matter to whoever replays it.
pub fn incoming_header_name(key: &str) -> Cow<'_, str> {
    if key.starts_with(OWN_PREFIX) {
        Cow::Owned(format!("{INCOMING_PREFIX}{key}"))
    } else {
        Cow::Borrowed(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kwpipes_own_headers_are_renamed() {
        assert_eq!(
            incoming_header_name("kwpipe.error"),
            "incoming.kwpipe.error"
        );
        assert_eq!(incoming_header_name("trace-id"), "trace-id");
    }
}
