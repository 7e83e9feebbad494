//! Image policy markers in values files, Flux's setter syntax: a comment on the line of the value
//! it sets, `# {"$imagepolicy": "NAME"}` for a whole `repo:tag`, `NAME:tag` for a lone tag,
//! `NAME:name` for the repository. Found line by line, and rewritten in place: only the marked
//! scalar changes, every other byte of the file stays (comments, quoting, order, indentation).

use std::ops::Range;

use crate::formats::manifest;

/// What part of an image reference a marked value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `repo:tag`
    Whole,
    Tag,
    /// The repository.
    Name,
}

/// How the marked scalar is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

/// One marker: the policy it names, the field, and the scalar it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// 1-based.
    pub line: usize,
    pub policy: String,
    pub field: Field,
    /// The scalar's value as YAML reads it.
    pub value: String,
    /// Where the scalar (quotes included) is in the file's text.
    span: Range<usize>,
    style: Style,
}

/// A marker that cannot be honoured: the line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError {
    pub line: usize,
    pub message: String,
}

const MARKER_KEY: &str = "$imagepolicy";

/// Every marker of a values file's text.
pub fn find(text: &str) -> Result<Vec<Marker>, MarkerError> {
    let mut markers = Vec::new();
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let content = line.trim_end_matches(['\n', '\r']);
        if content.contains(MARKER_KEY) {
            let error = |message: String| MarkerError {
                line: number,
                message,
            };
            let marker = marker_on(content).map_err(error)?;
            if let Some(mut marker) = marker {
                marker.line = number;
                marker.span = marker.span.start + offset..marker.span.end + offset;
                markers.push(marker);
            }
        }
        offset += line.len();
    }
    Ok(markers)
}

/// The marker of one line that mentions the marker key: `None` when the key is only in the
/// value or the line is commented out; an error when its comment names it without being one.
fn marker_on(line: &str) -> Result<Option<Marker>, String> {
    // A line commented out sets nothing, as Flux's setters see it.
    if line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let start = value_start(line);
    let (value, span, style, rest) = scalar_at(line, start)?;
    let Some(comment) = rest.trim_start().strip_prefix('#') else {
        return Ok(None);
    };
    if !comment.contains(MARKER_KEY) {
        return Ok(None);
    }
    let reference = policy_reference(comment.trim())?;
    if span.is_empty() {
        return Err(format!(
            "the marker for '{reference}' is on a line without a scalar value: it must sit on the line of the value it sets"
        ));
    }
    let (policy, field) = match reference.rsplit_once(':') {
        Some((policy, "tag")) => (policy, Field::Tag),
        Some((policy, "name")) => (policy, Field::Name),
        Some((_, other)) => {
            return Err(format!(
                "'{reference}': the part after ':' must be 'tag' or 'name', not '{other}'"
            ));
        }
        None => (reference.as_str(), Field::Whole),
    };
    Ok(Some(Marker {
        line: 0,
        policy: policy.to_string(),
        field,
        value,
        span,
        style,
    }))
}

/// What the comment's `{"$imagepolicy": "..."}` names; an error saying why when the comment
/// is not exactly such a JSON object.
fn policy_reference(comment: &str) -> Result<String, String> {
    let form =
        format!("a marker is `# {{\"{MARKER_KEY}\": \"POLICY\"}}`, `POLICY:tag` or `POLICY:name`");
    let setter: serde_json::Value = serde_json::from_str(comment).map_err(|e| {
        // serde_json's position is in the comment, not the file: left out.
        let reason = e.to_string();
        let reason = reason.split(" at line ").next().unwrap_or_default();
        format!("the comment `# {comment}` mentions `{MARKER_KEY}` but is not valid marker JSON ({reason}): {form}")
    })?;
    match setter.get(MARKER_KEY) {
        Some(serde_json::Value::String(reference)) => Ok(reference.clone()),
        Some(other) => Err(format!(
            "`{MARKER_KEY}` must name a policy as a string, not {other}: {form}"
        )),
        None => Err(format!(
            "the comment `# {comment}` mentions `{MARKER_KEY}` but is not a marker: {form}"
        )),
    }
}

/// Where the value of a `key: value`, `- value` or `- key: value` line starts.
fn value_start(line: &str) -> usize {
    let mut at = line.len() - line.trim_start().len();
    while line[at..].starts_with("- ") {
        at += 2;
        at += line[at..].len() - line[at..].trim_start().len();
    }
    match key_end(&line[at..]) {
        Some(end) => {
            let after = at + end + 1;
            after + (line[after..].len() - line[after..].trim_start().len())
        }
        None => at,
    }
}

/// The end of a mapping key (the index of its `:`), if the text starts with one.
fn key_end(text: &str) -> Option<usize> {
    // A comment, not a key.
    if text.starts_with('#') {
        return None;
    }
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'');
    let search_from = match quote {
        Some(q) => text[1..].find(q)? + 2,
        None => 0,
    };
    let rest = &text[search_from..];
    let colon = rest
        .char_indices()
        .find(|(i, c)| *c == ':' && rest[i + 1..].chars().next().is_none_or(char::is_whitespace))
        .map(|(i, _)| i + search_from)?;
    let key = &text[..colon];
    (quote.is_some() || !key.contains(" #")).then_some(colon)
}

type Scalar<'a> = (String, Range<usize>, Style, &'a str);

/// What starts a collection, a block scalar, an anchor, alias or tag: not an editable scalar.
const NOT_SCALARS: &[char] = &['{', '[', '|', '>', '&', '*', '!'];

/// The scalar at `start`: its value, span, style and what follows it.
fn scalar_at(line: &str, start: usize) -> Result<Scalar<'_>, String> {
    let text = &line[start..];
    let (value, length, style) = match text.chars().next() {
        Some('"') => double_quoted(text)?,
        Some('\'') => single_quoted(text)?,
        Some(c) if NOT_SCALARS.contains(&c) => {
            return Err("the marked value must be a plain or quoted scalar on its line".into());
        }
        Some('#') | None => (String::new(), 0, Style::Plain),
        Some(_) => {
            let value = text[..text.find(" #").unwrap_or(text.len())].trim_end();
            (value.to_string(), value.len(), Style::Plain)
        }
    };
    Ok((value, start..start + length, style, &text[length..]))
}

/// A double-quoted scalar at the start of `text`: its value and length.
fn double_quoted(text: &str) -> Result<(String, usize, Style), String> {
    let end = closing_double(text).ok_or("an unterminated double-quoted value")?;
    let value = serde_json::from_str(&text[..=end])
        .map_err(|_| "a double-quoted value umbrella cannot read back")?;
    Ok((value, end + 1, Style::Double))
}

/// A single-quoted scalar at the start of `text`: its value and length.
fn single_quoted(text: &str) -> Result<(String, usize, Style), String> {
    let end = closing_single(text).ok_or("an unterminated single-quoted value")?;
    Ok((text[1..end].replace("\'\'", "'"), end + 1, Style::Single))
}

fn closing_double(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn closing_single(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `text` with each marker's scalar set to its new value, written in the marker's style (a
/// plain value that would read back as something else, a number say, is double-quoted).
pub fn rewrite(text: &str, edits: &[(&Marker, &str)]) -> String {
    let mut edits: Vec<&(&Marker, &str)> = edits.iter().collect();
    edits.sort_by_key(|(marker, _)| std::cmp::Reverse(marker.span.start));
    let mut out = text.to_string();
    for (marker, value) in edits {
        out.replace_range(marker.span.clone(), &written(value, marker.style));
    }
    out
}

fn written(value: &str, style: Style) -> String {
    match style {
        Style::Plain if manifest::plain_reads_back(value) => value.to_string(),
        Style::Single => format!("'{}'", value.replace('\'', "''")),
        Style::Plain | Style::Double => serde_json::to_string(value).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "# The shop's images.\norder-service:\n  image: \"registry.example/shop/order-service:0.4.9\" # {\"$imagepolicy\": \"order-release\"}\n  sidecar:\n    tag: '0.1' # {\"$imagepolicy\": \"sidecar:tag\"}   \n    repository: registry.example/sidecar # {\"$imagepolicy\": \"sidecar:name\"}\nlist:\n  - stg-100 # {\"$imagepolicy\": \"staging:tag\"}\n  - name: x\n    \"quoted key\": 1.0.0 #{\"$imagepolicy\":\"release:tag\"}\nplain: value # an ordinary comment\n";

    #[test]
    fn markers_are_found_with_their_field_and_value() {
        let markers = find(VALUES).unwrap();
        let seen: Vec<(usize, &str, Field, &str)> = markers
            .iter()
            .map(|m| (m.line, m.policy.as_str(), m.field, m.value.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    3,
                    "order-release",
                    Field::Whole,
                    "registry.example/shop/order-service:0.4.9"
                ),
                (5, "sidecar", Field::Tag, "0.1"),
                (6, "sidecar", Field::Name, "registry.example/sidecar"),
                (8, "staging", Field::Tag, "stg-100"),
                (10, "release", Field::Tag, "1.0.0"),
            ]
        );
    }

    #[test]
    fn a_rewrite_changes_only_the_marked_scalars_in_their_style() {
        let markers = find(VALUES).unwrap();
        let edits = [
            (&markers[0], "registry.example/shop/order-service:0.4.10"),
            (&markers[1], "0.2"),
            (&markers[3], "stg-101"),
            (&markers[4], "1.10"),
        ];
        let out = rewrite(VALUES, &edits);
        let expected = VALUES
            .replace("order-service:0.4.9\"", "order-service:0.4.10\"")
            .replace("'0.1'", "'0.2'")
            .replace("- stg-100 #", "- stg-101 #")
            // Plain 1.10 would read back as a number: quoted.
            .replace("\"quoted key\": 1.0.0", "\"quoted key\": \"1.10\"");
        assert_eq!(out, expected);
        let again = find(&out).unwrap();
        assert_eq!(again[3].value, "stg-101");
        assert_eq!(again[4].value, "1.10");
    }

    #[test]
    fn a_marker_off_a_scalar_or_malformed_names_its_line() {
        let error = find("a: 1\nimage: # {\"$imagepolicy\": \"p\"}\n  repo: x\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error.message.contains("without a scalar value"),
            "{}",
            error.message
        );
        let error = find("tags: [a, b] # {\"$imagepolicy\": \"p:tag\"}\n").unwrap_err();
        assert!(
            error.message.contains("plain or quoted scalar"),
            "{}",
            error.message
        );
        let error = find("tag: a # {\"$imagepolicy\": \"p:digest\"}\n").unwrap_err();
        assert!(
            error.message.contains("'tag' or 'name'"),
            "{}",
            error.message
        );
        let error = find("tag: a # {\"$imagepolicy\": 3}\n").unwrap_err();
        assert!(
            error.message.contains("as a string, not 3"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_comment_naming_the_marker_key_that_is_no_marker_is_an_error_with_its_line() {
        let cases = [
            // The closing brace missing.
            (
                "tag: a # {\"$imagepolicy\": \"p:tag\"\n",
                "not valid marker JSON",
            ),
            (
                "tag: 'a' # {\"$imagepolicy\": \"p:tag\"} and more\n",
                "trailing characters",
            ),
            ("tag: a # {$imagepolicy: p}\n", "not valid marker JSON"),
            (
                "tag: a # \"$imagepolicy\": \"p:tag\"\n",
                "not valid marker JSON",
            ),
            ("tag: a # \"$imagepolicy\"\n", "not a marker"),
            ("tag: a # [\"$imagepolicy\", \"p\"]\n", "not a marker"),
            (
                "tag: a # {\"imagepolicy\": \"p\", \"note\": \"$imagepolicy\"}\n",
                "not a marker",
            ),
            ("tag: a # moved by $imagepolicy\n", "not valid marker JSON"),
            // A list item of nothing but a comment.
            (
                "- # {\"$imagepolicy\": \"p:tag\"}\n",
                "without a scalar value",
            ),
            (
                "- # {\"$imagepolicy\": \"p:tag\"\n",
                "not valid marker JSON",
            ),
        ];
        for (line, expected) in cases {
            let text = format!("a: 1\nb: 2 # fine\n{line}c: 3\n");
            let error = find(&text).expect_err(line);
            assert_eq!(error.line, 3, "{line}");
            assert!(
                error.message.contains(expected),
                "{line}: {}",
                error.message
            );
        }
    }

    #[test]
    fn the_marker_key_in_a_value_or_a_line_commented_out_is_no_marker() {
        let text = "note: \"$imagepolicy\" # an ordinary comment\nplain: costs $imagepolicy\n  # {\"$imagepolicy\": \"p:tag\"\n# tag: 1.0 # {\"$imagepolicy\": \"p:tag\"}\n";
        assert_eq!(find(text).unwrap(), []);
    }
}
