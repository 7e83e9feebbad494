//! The environment's secret values: `secrets.yaml` and `secrets-<env>.yaml` beside the chart
//! (the helm-secrets and helmfile convention), SOPS-encrypted. They are decrypted in memory and
//! handed to helm on its standard input, so no file ever holds them in clear, not even for the
//! length of a render.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::formats::manifest;
use crate::formats::sops::{self, Keys, SopsError};

/// The decrypted secret values of one render, layered in order.
#[derive(Default)]
pub struct SecretValues {
    /// The values as one YAML document for helm's `--values -`; `None` without secret files.
    pub yaml: Option<String>,
    /// Files that could not be decrypted (no key) and stand-ins were used for (`--check`).
    pub stood_in: Vec<PathBuf>,
    /// Every decrypted string, to scrub from helm's messages.
    strings: Vec<String>,
}

/// The shortest value scrubbed from messages: shorter ones would mask ordinary words.
const SCRUBBED_LENGTH: usize = 4;

impl SecretValues {
    /// Reads and decrypts the environment's secret values files. Without a key, `check` takes
    /// stand-ins of each value's type (the render is then compared but for the values);
    /// otherwise a file that does not decrypt is refused, named, with why.
    pub fn load(chart_dir: &Path, env: &str, keys: &Keys, check: bool) -> Result<Self, String> {
        let mut merged: Option<Value> = None;
        let mut values = SecretValues::default();
        for file in files(chart_dir, env) {
            let document = sops::read_file(&file)?;
            let clear = match sops::decrypt(&document, keys) {
                Ok(clear) => {
                    values.strings.extend(sops::strings(&clear));
                    clear
                }
                Err(SopsError::NoKey { .. } | SopsError::WrongKey { .. }) if check => {
                    values.stood_in.push(file.clone());
                    sops::stand_ins(&document)
                }
                Err(e) => return Err(format!("{}: cannot decrypt: {e}", file.display())),
            };
            match &mut merged {
                Some(base) => merge(base, clear),
                None => merged = Some(clear),
            }
        }
        values.yaml = merged.map(|m| manifest::to_yaml(&m));
        values.strings.retain(|s| s.len() >= SCRUBBED_LENGTH);
        Ok(values)
    }

    /// `text` with every secret value replaced.
    pub fn scrub(&self, text: &str) -> String {
        self.strings.iter().fold(text.to_string(), |text, value| {
            text.replace(value.as_str(), "(secret value)")
        })
    }
}

/// `secrets.yaml`, then `secrets-<env>.yaml`, those that exist.
fn files(chart_dir: &Path, env: &str) -> Vec<PathBuf> {
    ["secrets.yaml".to_string(), format!("secrets-{env}.yaml")]
        .into_iter()
        .map(|name| chart_dir.join(name))
        .filter(|file| file.is_file())
        .collect()
}

/// helm's layering of values files: maps merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_files_win_key_by_key() {
        let mut base = json!({"db": {"user": "app", "password": "a"}, "list": [1, 2]});
        merge(&mut base, json!({"db": {"password": "b"}, "list": [3]}));
        assert_eq!(
            base,
            json!({"db": {"user": "app", "password": "b"}, "list": [3]})
        );
    }

    #[test]
    fn a_plain_values_file_named_as_secrets_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets-prod.yaml"), "password: hunter22\n").unwrap();
        let error = SecretValues::load(dir.path(), "prod", &Keys::of(Vec::new()), false)
            .err()
            .unwrap();
        assert!(
            error.contains("secrets-prod.yaml: not a SOPS-encrypted"),
            "{error}"
        );
        assert!(!error.contains("hunter22"));
    }

    #[test]
    fn without_a_key_only_a_check_goes_on_with_stand_ins() {
        let dir = tempfile::tempdir().unwrap();
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let sealed = sops::encrypt(
            &json!({"db": {"password": "hunter22", "port": 5432}}),
            &[recipient],
            &sops::Selection::sops_default(),
            &sops::now(),
        )
        .unwrap();
        std::fs::write(dir.path().join("secrets.yaml"), manifest::to_yaml(&sealed)).unwrap();
        let none = Keys::of(Vec::new());
        let error = SecretValues::load(dir.path(), "prod", &none, false)
            .err()
            .unwrap();
        assert!(
            error.contains("secrets.yaml: cannot decrypt: no age key"),
            "{error}"
        );
        let checked = SecretValues::load(dir.path(), "prod", &none, true).unwrap();
        assert_eq!(checked.stood_in, [dir.path().join("secrets.yaml")]);
        let yaml = checked.yaml.unwrap();
        assert!(
            yaml.contains("password: unverified") && yaml.contains("port: 0"),
            "{yaml}"
        );
    }

    #[test]
    fn helm_messages_are_scrubbed_of_the_values() {
        let values = SecretValues {
            strings: vec!["hunter22".into()],
            ..SecretValues::default()
        };
        assert_eq!(
            values.scrub("bad value hunter22 at line 3"),
            "bad value (secret value) at line 3"
        );
    }
}
