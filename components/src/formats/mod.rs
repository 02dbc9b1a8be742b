//! Wire formats: pure codecs between bytes and `RowBatch`es. No I/O here.
