//! YAML reading with errors that name the file, line and column.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A YAML document that could not be read, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {message}", path.display(), position(*line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

impl YamlError {
    fn from_serde(path: &Path, error: &yaml_serde::Error) -> Self {
        let location = error.location();
        // The location is already part of the position prefix; keep the message short.
        let message = error.to_string();
        let message = match message.rsplit_once(" at line ") {
            Some((head, _)) if location.is_some() => head.to_string(),
            _ => message,
        };
        YamlError::Invalid {
            path: path.to_path_buf(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    }

    /// An error about a document's content that YAML syntax alone did not catch.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        YamlError::Invalid {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// Reads every non-empty document of a multi-document YAML file as `T`.
pub fn read_documents<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, YamlError> {
    let text = std::fs::read_to_string(path).map_err(|source| YamlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_documents(path, &text)
}

/// Parses every non-empty document of `text` (read from `path`) as `T`.
pub fn parse_documents<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Vec<T>, YamlError> {
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let parsed: Option<T> = serde::Deserialize::deserialize(document)
            .map_err(|error| YamlError::from_serde(path, &error))?;
        documents.extend(parsed);
    }
    Ok(documents)
}

/// Reads a file that must hold exactly one YAML document.
pub fn read_single<T: DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let mut documents = read_documents(path)?;
    match documents.len() {
        1 => Ok(documents.remove(0)),
        0 => Err(YamlError::invalid(path, "the file is empty")),
        n => Err(YamlError::invalid(
            path,
            format!("expected one YAML document, found {n}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
    }

    #[test]
    fn skips_empty_documents() {
        let docs: Vec<Doc> =
            parse_documents(Path::new("x.yaml"), "---\nname: a\n---\n---\nname: b\n").unwrap();
        assert_eq!(
            docs,
            vec![Doc { name: "a".into() }, Doc { name: "b".into() }]
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse_documents::<Doc>(Path::new("dir/x.yaml"), "name: a\n---\nname: [b\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dir/x.yaml:"), "{err}");
        let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert!(line >= 3, "{err}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = parse_documents::<Doc>(Path::new("x.yaml"), "name: a\n---\nname: b\nnmae: c\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.yaml:4:"), "{err}");
        assert!(err.contains("nmae"), "{err}");
    }

    #[test]
    fn single_document_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.yaml");
        std::fs::write(&path, "name: a\n---\nname: b\n").unwrap();
        let err = read_single::<Doc>(&path).unwrap_err().to_string();
        assert!(err.contains("expected one YAML document, found 2"), "{err}");
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly() {
        let mut bomb = String::from("name: x\na: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12u8 {
            let previous = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            let refs = vec![format!("*{previous}"); 10].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Loose {
            name: String,
            #[serde(flatten)]
            rest: std::collections::BTreeMap<String, yaml_serde::Value>,
        }
        let started = std::time::Instant::now();
        let error = parse_documents::<Loose>(Path::new("bomb.yaml"), &bomb).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(error.to_string().starts_with("bomb.yaml"), "{error}");
        assert!(error.to_string().contains("repetition limit"), "{error}");
    }
}
