//! The topology parser with interpolation: any file text with any environment
//! loads to a topology or to errors, never a panic. The input is the environment
//! (`NAME=value` lines) up to the first NUL, then the file. Also: a value from
//! the environment cannot add keys to the file (its top-level keys are as many
//! whatever the values: a line break, which could start a table of its own, is
//! refused outside quotes and escaped inside).
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (env_text, file) = text.split_once('\0').unwrap_or(("", &text));
    let env: HashMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\n", "\n")))
        .collect();
    if let Ok(out) = kwpipe::config::interpolate::interpolate(file, &env) {
        // The same file with every variable set to a plain word has as many
        // top-level keys: what the environment holds cannot add any.
        let plain: HashMap<String, String> =
            env.keys().map(|k| (k.clone(), "w".to_string())).collect();
        if let (Ok(a), Ok(Ok(b))) = (
            out.parse::<toml::Table>(),
            kwpipe::config::interpolate::interpolate(file, &plain)
                .map(|p| p.parse::<toml::Table>()),
        ) {
            assert_eq!(a.len(), b.len(), "the environment changed the file's keys");
        }
    }
    let _ = kwpipe::load::load_texts(&[(PathBuf::from("fuzz.toml"), file.to_string())], &env);
});
