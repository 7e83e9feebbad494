//! Kubernetes manifests as Kubernetes reads them, and written back so it reads the same.
//!
//! kubectl and the API server turn YAML into JSON with go-yaml v2's YAML 1.1 rules: plain
//! `0644` is the integer 420, plain `yes`/`on` are booleans, `_` separates digits, and quoted
//! scalars are strings. [`parse_documents`] applies those rules and keeps key order, so a
//! rendered object is exactly the JSON the cluster would see. [`to_yaml`] writes a value so that
//! the same rules give the same JSON back: strings that a YAML 1.1 or 1.2 reader could take for
//! anything else are quoted, multi-line strings become literal blocks.

use serde_json::{Map, Number, Value};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A manifest that Kubernetes could not read either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ManifestError {
    pub line: usize,
    pub message: String,
}

/// Parses every non-empty document of a YAML stream into JSON values.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut reader = Reader {
        events: Parser::new_from_str(text),
        anchors: Default::default(),
        expanded: 0,
    };
    let mut documents = Vec::new();
    loop {
        match reader.next()? {
            (Event::StreamEnd, _) => break,
            (Event::StreamStart | Event::DocumentEnd, _) => {}
            (Event::DocumentStart(_), _) => {
                let (event, span) = reader.next()?;
                let value = reader.node(event, span)?;
                if !value.is_null() {
                    documents.push(value);
                }
            }
            (other, span) => return Err(error(span, format!("unexpected {other:?}"))),
        }
    }
    Ok(documents)
}

fn error(span: Span, message: impl Into<String>) -> ManifestError {
    ManifestError {
        line: span.start.line(),
        message: message.into(),
    }
}

/// How many nodes aliases may copy in one stream: far beyond any real manifest, far below
/// what a "billion laughs" (aliases of aliases) would need to exhaust memory.
const MAX_ALIAS_NODES: usize = 100_000;

struct Reader<'a> {
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Each anchor's value and its number of nodes.
    anchors: std::collections::HashMap<usize, (Value, usize)>,
    /// Nodes copied through aliases so far.
    expanded: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ManifestError> {
        match self.events.next() {
            Some(Ok(item)) => Ok(item),
            Some(Err(e)) => Err(ManifestError {
                line: e.marker().line(),
                message: e.info().to_string(),
            }),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Value, ManifestError> {
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => (
                scalar(&text, style, tag.as_deref()).map_err(|m| error(span, m))?,
                anchor,
            ),
            Event::SequenceStart(anchor, _) => (self.sequence()?, anchor),
            Event::MappingStart(anchor, _) => (self.mapping()?, anchor),
            Event::Alias(id) => return self.alias(id, span),
            other => return Err(error(span, format!("unexpected {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), nodes(&value)));
        }
        Ok(value)
    }

    /// A copy of the anchored value, within the stream's budget of copied nodes.
    fn alias(&mut self, id: usize, span: Span) -> Result<Value, ManifestError> {
        let (value, size) = self
            .anchors
            .get(&id)
            .ok_or_else(|| error(span, "alias to an unknown anchor"))?;
        self.expanded += size;
        if self.expanded > MAX_ALIAS_NODES {
            return Err(error(
                span,
                format!(
                    "aliases copy more than {MAX_ALIAS_NODES} nodes (nested aliases, a \"billion laughs\"?): refused"
                ),
            ));
        }
        Ok(value.clone())
    }

    fn sequence(&mut self) -> Result<Value, ManifestError> {
        let mut items = Vec::new();
        loop {
            match self.next()? {
                (Event::SequenceEnd, _) => return Ok(Value::Array(items)),
                (event, span) => items.push(self.node(event, span)?),
            }
        }
    }

    fn mapping(&mut self) -> Result<Value, ManifestError> {
        let mut map = Map::new();
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                return Ok(Value::Object(map));
            }
            let is_merge =
                matches!(&event, Event::Scalar(text, ScalarStyle::Plain, _, None) if text == "<<");
            let key = self.node(event, span)?;
            let (event, span) = self.next()?;
            let value = self.node(event, span)?;
            if is_merge {
                merge_into(&mut map, value).map_err(|m| error(span, m))?;
            } else {
                // go-yaml keeps the last of duplicate keys.
                map.insert(key_string(&key), value);
            }
        }
    }
}

/// The number of nodes of a value (scalars, sequences, maps, and their items).
fn nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Object(map) => map.values().map(nodes).sum(),
        _ => 0,
    }
}

/// `<<: *base` (or a list of them): keys not already set are taken from the merged maps.
fn merge_into(map: &mut Map<String, Value>, merged: Value) -> Result<(), String> {
    let sources = match merged {
        Value::Object(source) => vec![source],
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(source) => Ok(source),
                _ => Err("a merge key takes maps only".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("a merge key takes a map or a list of maps".into()),
    };
    for source in sources {
        for (key, value) in source {
            map.entry(key).or_insert(value);
        }
    }
    Ok(())
}

/// JSON object keys are strings: other scalars are written out as go-yaml formats them.
fn key_string(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        return tagged(text, tag);
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    resolve_plain(text)
}

fn tagged(text: &str, tag: &Tag) -> Result<Value, String> {
    let name = if tag.handle == "!!" {
        tag.suffix.as_str()
    } else {
        ""
    };
    match name {
        "str" | "binary" | "timestamp" => Ok(Value::String(text.to_string())),
        "int" | "float" | "bool" | "null" => {
            let value = resolve_plain(text)?;
            let matches = match name {
                "int" => value.is_i64() || value.is_u64(),
                "float" => value.is_number(),
                "bool" => value.is_boolean(),
                _ => value.is_null(),
            };
            if matches {
                Ok(value)
            } else {
                Err(format!("`{text}` is not a valid !!{name}"))
            }
        }
        _ => Err(format!(
            "tag {}{} is not supported in a Kubernetes manifest",
            tag.handle, tag.suffix
        )),
    }
}

/// go-yaml v2's resolution of a plain scalar.
fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err(format!(
                "`{text}` has no JSON form, so Kubernetes cannot take it"
            ));
        }
        _ => {}
    }
    if !text.starts_with([
        '+', '-', '.', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
    ]) {
        return Ok(Value::String(text.to_string()));
    }
    Ok(parse_number(&text.replace('_', "")).unwrap_or_else(|| Value::String(text.to_string())))
}

/// Go's `ParseInt(s, 0, 64)`, then `ParseUint`, then the YAML float form.
fn parse_number(plain: &str) -> Option<Value> {
    let (negative, digits) = match plain.as_bytes().first()? {
        b'-' => (true, &plain[1..]),
        b'+' => (false, &plain[1..]),
        _ => (false, plain),
    };
    let (radix, body) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest)
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if !body.is_empty()
        && body.chars().all(|c| c.is_digit(radix))
        && let Ok(magnitude) = u128::from_str_radix(body, radix)
    {
        let signed = if negative {
            -(magnitude as i128)
        } else {
            magnitude as i128
        };
        if let Ok(v) = i64::try_from(signed) {
            return Some(Value::Number(v.into()));
        }
        if let Ok(v) = u64::try_from(signed) {
            return Some(Value::Number(v.into()));
        }
    }
    if is_yaml_float(plain) {
        let float = plain.parse::<f64>().ok()?;
        // Go's JSON writes an integral float64 as an integer (1.5e3 -> 1500), so a float
        // without fraction must reach the cluster as an integer too.
        if float.fract() == 0.0 && float.abs() < 9.0e15 {
            return Some(Value::Number((float as i64).into()));
        }
        return Number::from_f64(float).map(Value::Number);
    }
    None
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// Writes one document: block style, two-space indent, sequences at their key's indent (as
/// kubectl prints), keys in their order, strings quoted whenever plain would read otherwise.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_scalar(key));
        out.push(':');
        write_value(out, value, indent, false);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        write_value(out, item, indent, true);
    }
}

/// Writes what follows `key:` or `-`.
fn write_value(out: &mut String, value: &Value, indent: usize, in_sequence: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            if in_sequence {
                // The first key goes on the dash's line: `- name: x`.
                out.push(' ');
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                out.push_str(nested.trim_start());
            } else {
                out.push('\n');
                write_map(out, map, indent + 2);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if in_sequence {
                out.push(' ');
                let mut nested = String::new();
                write_seq(&mut nested, items, indent + 2);
                out.push_str(nested.trim_start());
            } else {
                out.push('\n');
                write_seq(out, items, indent);
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_scalar(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as plain text when every reader takes it back as this string, a literal block when
/// it spans lines, double-quoted otherwise.
fn string_scalar(s: &str, indent: usize) -> String {
    if plain_is_safe(s) {
        return s.to_string();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    serde_json::to_string(s).unwrap_or_default()
}

/// A mapping key: plain or double-quoted, never a block.
fn key_scalar(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Whether `s`, written plain where a value goes, reads back as the string `s` (by the YAML 1.1
/// rules helm reads values with): what an in-place edit of a plain scalar may write.
pub fn plain_reads_back(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let indicator = ",[]{}#&*!|>'\"%@`".contains(first) || "-?:".contains(first);
    let special =
        s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains(char::is_whitespace);
    !indicator && !special && matches!(resolve_plain(s), Ok(Value::String(ref back)) if back == s)
}

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let last = s.chars().last().unwrap_or(first);
    let second = s.chars().nth(1);
    let indicator = ",[]{}#&*!|>'\"%@`".contains(first)
        || ("-?:".contains(first) && second.is_none_or(|c| c == ' '));
    let special = s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.chars().any(|c| c.is_control());
    // Anything a YAML 1.1 or 1.2 reader could take for a number, boolean, null or date.
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    // Numbers, versions, dates, times and hex in any YAML dialect: digits first, and only
    // digits, hex letters, radix markers and separators after.
    let numeric_looking = unsigned
        .strip_prefix('.')
        .unwrap_or(unsigned)
        .starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "_.:+-xXoOtTzZ ".contains(c));
    let typed = !matches!(resolve_plain(s), Ok(Value::String(ref back)) if back == s)
        || numeric_looking
        || matches!(
            s.to_ascii_lowercase().as_str(),
            ".inf" | "-.inf" | "+.inf" | ".nan" | "<<" | "="
        );
    !(indicator || special || typed || first == ' ' || last == ' ')
}

/// `|`, `|-` or `|+` for multi-line text that a block keeps exactly.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    let clean = s.contains('\n')
        && !body.is_empty()
        // The first non-empty line sets the block's indentation: it must not start with a blank.
        && !body.lines().find(|l| !l.is_empty()).is_some_and(|l| l.starts_with([' ', '\t']))
        && !s.contains('\r')
        && body.lines().all(|l| !l.ends_with([' ', '\t']) && !l.chars().any(|c| c.is_control() && c != '\t'));
    if !clean {
        return None;
    }
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut block = format!("|{chomp}");
    for line in s[..body.len() + trailing.saturating_sub(1)].split('\n') {
        block.push('\n');
        if !line.is_empty() {
            block.push_str(&pad);
            block.push_str(line);
        }
    }
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    #[test]
    fn yaml_1_1_scalars_as_kubernetes_reads_them() {
        let v = one(
            "a: 0644\nb: yes\nc: \"yes\"\nd: on\ne: 'on'\nf: 0x1F\ng: 1_000\nh: ~\ni: 1.5e3\nj: 0o17\nk: 9007199254740993\nl: 18446744073709551615\nm: 2001-12-14\nnn: -0b101\nn: key\no: 12:30\np: +12\nq: .5\nr: 08\n",
        );
        assert_eq!(
            v,
            json!({"a": 420, "b": true, "c": "yes", "d": true, "e": "on", "f": 31, "g": 1000, "h": null, "i": 1500,
                   "j": 15, "k": 9007199254740993i64, "l": 18446744073709551615u64, "m": "2001-12-14", "nn": -5, "false": "key", "o": "12:30",
                   "p": 12, "q": 0.5, "r": 8})
        );
    }

    #[test]
    fn keeps_key_order_skips_empty_documents_and_resolves_anchors() {
        let docs = parse_documents(
            "---\n---\nz: 1\na: &x {k: v}\nm:\n  <<: *x\n  own: 2\n---\n# only a comment\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        let keys: Vec<&String> = docs[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(docs[0]["m"], json!({"k": "v", "own": 2}));
    }

    #[test]
    fn errors_carry_the_line() {
        let err = parse_documents("a: 1\nb: [\n").unwrap_err();
        assert!(err.line >= 2, "{err}");
        let err = parse_documents("a: 1\nb: .nan\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn writes_what_it_read() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {}\n  annotations:\n    a: \"yes\"\ndata:\n  mode: \"0644\"\n  flag: \"on\"\n  big: \"123456789012345678901234567890\"\n  script: |\n    #!/bin/sh\n    echo hi\n\n    exit 0\n  noeol: |-\n    a\n    b\n  spaced: \"trailing \\nspace\"\n  empty: \"\"\n  list: []\n  date: \"2001-12-14\"\n  colon: \"a: b\"\n  lead: \" x\"\n  dash: \"-\"\n  dashx: -x\n  star: \"*x\"\nspec:\n  defaultMode: 420\n  items:\n  - key: a\n    path: b\n  - - nested\n  - 3\n  float: 1.5\n  neg: -3\n";
        let value = one(text);
        let written = to_yaml(&value);
        assert_eq!(written, text);
        assert_eq!(one(&written), value);
    }

    #[test]
    fn round_trip_is_exact_for_awkward_strings() {
        for s in [
            "yes",
            "No",
            "~",
            "null",
            "",
            " ",
            "0644",
            "1e3",
            "-1",
            ".5",
            "+1",
            "0x10",
            "a\tb",
            "a\r\nb",
            "#x",
            "x #y",
            "é ü",
            "a: b",
            "key:",
            "- x",
            "trailing\n\n\n",
            "\n leading newline",
            "line1\nline2 ",
            "tab\tline\nsecond",
            "<<",
            "=",
            ".inf",
            "2001-12-14",
        ] {
            let value = json!({ "k": s, s: 1 });
            let back = one(&to_yaml(&value));
            assert_eq!(back, value, "{s:?} written as:\n{}", to_yaml(&value));
        }
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let previous = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            let refs = vec![format!("*{previous}"); 10].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let error = parse_documents(&bomb).unwrap_err();
        assert!(error.message.contains("billion laughs"), "{error}");
        // Ordinary anchors and merges still work.
        let fine = parse_documents("base: &b {x: 1}\nuse: {<<: *b, z: 2}\nagain: *b\n").unwrap();
        assert_eq!(fine[0]["use"], serde_json::json!({"z": 2, "x": 1}));
    }
}
