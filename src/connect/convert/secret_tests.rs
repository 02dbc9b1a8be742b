//! Issue 19 (12): a secret's value is never echoed, whatever its type.

use super::*;

fn errors_of(config: &str) -> String {
    let text = format!(
        r#"{{"name":"s","config":{{"connector.class":"{SINK_CLASS}","topics":"t","in.format":"json_kaiwudb",{config}}}}}"#
    );
    match convert_text("c.json", &text, &ConvertOptions::default()) {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    }
}

#[test]
fn a_malformed_secret_is_reported_without_its_value() {
    for value in [r#"["SECRET"]"#, r#"{"v":"SECRET"}"#, r#"[["SECRET"]]"#] {
        let e = errors_of(&format!(
            r#""connection.url":"jdbc:kaiwudb://h:26257","connection.password":{value}"#
        ));
        assert!(e.contains("connection.password"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("not shown"), "{e}");
    }
    // Other parameters still show what was wrong.
    let e = errors_of(r#""connection.url":"jdbc:kaiwudb://h:26257","connection.user":["bob"]"#);
    assert!(e.contains("[\"bob\"]"), "{e}");
}

#[test]
fn a_password_in_a_bad_url_is_not_echoed() {
    let e = errors_of(r#""connection.url":"mysql://u:SECRET@h:3306/db?password=SECRET2&ssl=true""#);
    assert!(e.contains("connection.url"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
    assert!(
        e.contains("u:***@h:3306") && e.contains("password=***&ssl=true"),
        "{e}"
    );
}

#[test]
fn secret_keys_are_recognised() {
    for k in [
        "connection.password",
        "ssl.key.password",
        "sasl.jaas.config",
        "ssl.keystore.key",
        "oauth.token",
        "client.secret",
    ] {
        assert!(is_secret(k), "{k}");
    }
    for k in ["connection.user", "topics", "key.converter", "in.format"] {
        assert!(!is_secret(k), "{k}");
    }
}
