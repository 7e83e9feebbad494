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

/// Every value a Secret-like object keeps (strings and numbers, also inside lists and maps),
/// as written, as Go quotes it and (for base64) decoded, so that none of them can be repeated
/// by a message.
fn secret_values(object: &Value) -> Vec<String> {
    if !is_secret_like(object) {
        return Vec::new();
    }
    let mut scalars = Vec::new();
    for pointer in SECRET_FIELDS
        .iter()
        .flat_map(|f| [format!("/{f}"), format!("/spec/{f}")])
    {
        if let Some(value) = object.pointer(&pointer) {
            collect_scalars(value, &mut scalars);
        }
    }
    let mut values = Vec::new();
    for value in scalars {
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&value)
            && let Ok(text) = String::from_utf8(decoded)
        {
            values.push(go_escaped(&text));
            values.push(text);
        }
        values.push(go_escaped(&value));
        values.push(value);
    }
    // The longest first, so a value that contains another is masked whole.
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    values.retain(|v| v.len() >= 3);
    values
}

/// The strings and numbers of `value`, however deep.
fn collect_scalars(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Number(number) => out.push(number.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_scalars(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_scalars(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// `text` as it stands between the quotes of Go's `%q` (the API server's way to quote a value).
fn go_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `message` (what a server said about `object`) without any of the object's secret values;
/// for Secret-like objects, a value the server quotes after `Invalid value:` (or `Unsupported
/// value:`, ...) or dumps after `valueUnstructured{Value:` is never shown.
pub fn scrub(message: &str, object: &Value) -> String {
    if !is_secret_like(object) {
        return message.to_string();
    }
    let mut text = message.to_string();
    for value in secret_values(object) {
        text = text.replace(&value, "(masked)");
    }
    mask_echoed_values(&text)
}

/// Where the API server repeats a value: field errors quote it (Go's `%q`), and the typed
/// patch of a server-side apply dumps it (Go's `%#v`) up to the line's last `}`.
const QUOTED_MARKS: &[&str] = &[
    "Invalid value: \"",
    "Unsupported value: \"",
    "Duplicate value: \"",
    "Not found: \"",
];
const DUMPED_MARK: &str = "valueUnstructured{Value:";

/// `Invalid value: "anything"` becomes `Invalid value: "(masked)"`, and
/// `valueUnstructured{Value:anything}` becomes `valueUnstructured{Value:(masked)}`.
fn mask_echoed_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = QUOTED_MARKS
            .iter()
            .chain(std::iter::once(&DUMPED_MARK))
            .filter_map(|mark| rest.find(mark).map(|at| (at, *mark)))
            .min();
        let Some((start, mark)) = next else { break };
        out.push_str(&rest[..start + mark.len()]);
        rest = &rest[start + mark.len()..];
        let end = if mark == DUMPED_MARK {
            let line = rest.find('\n').unwrap_or(rest.len());
            rest[..line].rfind('}').unwrap_or(line)
        } else {
            closing_quote(rest).unwrap_or(rest.len())
        };
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

    #[test]
    fn values_that_are_not_plain_strings_are_never_repeated_either() {
        let sealed = serde_json::json!({"kind": "VaultSecret", "spec": {"encryptedData": {
            "pin": 73317331, "keys": ["listed-s3cr3t", "listed-s3cr3t"], "quoted": "q\"s3cr3t\n"}}});
        let message = "failed to create typed patch object (ns/x; g/v1, Kind=VaultSecret): errors:\n  .spec.encryptedData.pin: expected string, got &value.valueUnstructured{Value:73317331}\n  .spec.encryptedData.keys: duplicate entries for key [=\"listed-s3cr3t\"]\n  .spec.encryptedData.other: expected string, got &value.valueUnstructured{Value:[]interface {}{\"other\"}}\nspec.encryptedData.quoted: Unsupported value: \"q\\\"s3cr3t\\n\": supported values: \"a\"";
        let scrubbed = scrub(message, &sealed);
        for value in ["73317331", "s3cr3t", "other\""] {
            assert!(!scrubbed.contains(value), "{scrubbed}");
        }
        assert!(
            scrubbed.contains(".spec.encryptedData.pin: expected string, got &value.valueUnstructured{Value:(masked)}\n")
                && scrubbed.contains("Unsupported value: \"(masked)\": supported values"),
            "{scrubbed}"
        );
    }
}
