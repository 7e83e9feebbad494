//! Secret values never leave umbrella: Secret-like objects are masked wherever they are shown
//! (diffs, `--check`), and whatever a server says about them is scrubbed of their values.

use base64::Engine;
use serde_json::Value;

/// Where Secret-like kinds keep their values.
const SECRET_FIELDS: &[&str] = &["data", "stringData", "encryptedData"];

/// Whether the kind keeps secret values: `Secret`, and kinds named like it (SealedSecret,
/// ExternalSecret, ...).
pub fn is_secret_like(value: &Value) -> bool {
    value["kind"]
        .as_str()
        .is_some_and(|k| k.ends_with("Secret"))
}

/// Replaces every value of a Secret-like object's data with a placeholder numbered per key: a
/// key's value keeps its number on both sides, so a change still shows, but neither the value
/// nor which keys share one.
pub fn mask_secret_data(before: Option<&mut Value>, after: &mut Value) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for object in before.into_iter().chain(std::iter::once(after)) {
        if !is_secret_like(object) {
            continue;
        }
        for pointer in SECRET_FIELDS
            .iter()
            .flat_map(|f| [format!("/{f}"), format!("/spec/{f}")])
        {
            match object.pointer_mut(&pointer) {
                Some(Value::Object(map)) => {
                    for (key, value) in map.iter_mut() {
                        *value = Value::String(placeholder(key, value, &mut seen));
                    }
                }
                // Not a map (a mistake in the state): still nothing of it is shown.
                Some(other) => *other = Value::String("(masked)".into()),
                None => {}
            }
        }
    }
}

fn placeholder(key: &str, value: &Value, seen: &mut Vec<(String, String)>) -> String {
    let text = value.to_string();
    if !seen.iter().any(|(k, v)| k == key && *v == text) {
        seen.push((key.to_string(), text.clone()));
    }
    let number = seen
        .iter()
        .filter(|(k, _)| k == key)
        .position(|(_, v)| *v == text)
        .map_or(1, |index| index + 1);
    format!("(value #{number} masked)")
}

/// Every value a Secret-like object keeps, as written and (for `data`) decoded, so that none
/// of them can be repeated by a message.
fn secret_values(object: &Value) -> Vec<String> {
    if !is_secret_like(object) {
        return Vec::new();
    }
    let mut values = Vec::new();
    for pointer in SECRET_FIELDS
        .iter()
        .flat_map(|f| [format!("/{f}"), format!("/spec/{f}")])
    {
        let Some(Value::Object(map)) = object.pointer(&pointer) else {
            continue;
        };
        for value in map.values().filter_map(Value::as_str) {
            values.push(value.to_string());
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value)
                && let Ok(text) = String::from_utf8(decoded)
            {
                values.push(text);
            }
        }
    }
    // The longest first, so a value that contains another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.retain(|v| v.len() >= 3);
    values
}

/// `message` (what a server said about `object`) without any of the object's secret values;
/// for Secret-like objects, `Invalid value: "..."` never shows what was between the quotes.
pub fn scrub(message: &str, object: &Value) -> String {
    if !is_secret_like(object) {
        return message.to_string();
    }
    let mut text = message.to_string();
    for value in secret_values(object) {
        text = text.replace(&value, "(masked)");
    }
    mask_quoted_values(&text)
}

/// `Invalid value: "anything"` becomes `Invalid value: "(masked)"`.
fn mask_quoted_values(text: &str) -> String {
    const MARK: &str = "Invalid value: \"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MARK) {
        out.push_str(&rest[..start + MARK.len()]);
        rest = &rest[start + MARK.len()..];
        let end = closing_quote(rest).unwrap_or(rest.len());
        out.push_str("(masked)");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the Go-quoted string starting at `text` ends (its closing quote), escapes skipped.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(index),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_message_never_repeats_a_secret_value() {
        let secret = serde_json::json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="},
            "stringData": {"token": "s3cr3t-token"}});
        let message = r#"Secret "db" is invalid: data[password]: Invalid value: "hunter2 \"x\"": bad; stringData echoed s3cr3t-token and aHVudGVyMg== and hunter2"#;
        let scrubbed = scrub(message, &secret);
        for value in ["hunter2", "s3cr3t-token", "aHVudGVyMg=="] {
            assert!(!scrubbed.contains(value), "{scrubbed}");
        }
        assert!(
            scrubbed.contains(r#"Invalid value: "(masked)": bad"#),
            "{scrubbed}"
        );
        let config = serde_json::json!({"kind": "ConfigMap", "data": {"k": "visible"}});
        assert_eq!(
            scrub("Invalid value: \"visible\"", &config),
            "Invalid value: \"visible\""
        );
    }
}
