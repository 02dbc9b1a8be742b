//! Any input decodes to rows and errors, never a panic; whatever decodes encodes
//! again without panicking, and error spans stay inside the input.
#![no_main]

use kwpipe_components::event::Precision;
use kwpipe_components::formats::{decode, encode_lenient, DecodeOptions, EncodeOptions, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let format = Format::JsonOpentsdb;
    for precision in [Precision::Ms, Precision::Ns] {
        let options = DecodeOptions {
            precision,
            now: None,
            database: None,
            ..Default::default()
        };
        let decoded = decode(format, data, &options);
        for e in &decoded.errors {
            assert!(e.span.start <= e.span.end && e.span.end <= data.len());
            let _ = e.to_string();
        }
        let mut out = Vec::new();
        for b in decoded.batches {
            let batch = b.into_row_batch();
            for f in Format::ALL {
                out.clear();
                let _ = encode_lenient(
                    f,
                    &batch,
                    &EncodeOptions {
                        precision: Precision::Ms,
                    },
                    &mut out,
                );
            }
        }
    }
});
