//! The environment's secret values: `secrets.yaml` and `secrets-<env>.yaml` beside the chart
//! (the helm-secrets and helmfile convention), SOPS-encrypted. They are decrypted in memory and
//! handed to helm on its standard input, so no file ever holds them in clear, not even for the
//! length of a render.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::formats::manifest;
use crate::formats::sops::{self, Keys, SopsError};

use super::images::{Step, field_path};
use super::split::RenderedObject;

/// The decrypted secret values of one render, layered in order.
#[derive(Default)]
pub struct SecretValues {
    /// The values as one YAML document for helm's `--values -`; `None` without secret files.
    pub yaml: Option<String>,
    /// Files that could not be decrypted (no key) and stand-ins were used for (`--check`).
    pub stood_in: Vec<PathBuf>,
    /// Every decrypted string, to scrub from helm's messages and to find in the render.
    strings: Vec<SecretString>,
}

/// One decrypted string and where it was read.
struct SecretString {
    /// The values file's name, e.g. `secrets-production.yaml`.
    file: String,
    /// Its dotted key path in that file, e.g. `orderService.db.password`.
    key: String,
    value: String,
}

/// The shortest value scrubbed from messages and looked for in the render: shorter ones
/// would match ordinary words.
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
            let clear =
                match sops::decrypt(&document, keys) {
                    Ok(clear) => {
                        let name = file.file_name().unwrap_or_default().to_string_lossy();
                        values.strings.extend(sops::strings(&clear).into_iter().map(
                            |(key, value)| SecretString {
                                file: name.to_string(),
                                key,
                                value,
                            },
                        ));
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
        values.strings.retain(|s| s.value.len() >= SCRUBBED_LENGTH);
        Ok(values)
    }

    /// `text` with every secret value replaced.
    pub fn scrub(&self, text: &str) -> String {
        self.strings.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret.value.as_str(), "(secret value)")
        })
    }

    /// Every place a secret value would be written in clear: a field of an object that is not
    /// `encrypted` (only Secrets are) holding one. Named by object, field and secret key, never
    /// by value.
    pub fn leaks(
        &self,
        objects: &[RenderedObject],
        encrypted: impl Fn(&RenderedObject) -> bool,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for object in objects.iter().filter(|o| !encrypted(o)) {
            visit_strings(&object.value, &mut Vec::new(), &mut |path, text| {
                let held = self.strings.iter().filter(|s| text.contains(&s.value));
                found.extend(held.map(|secret| {
                    format!(
                        "{} (app {}, from {}) would hold the value of `{}` from {} in clear, in its field `{}`",
                        object.describe(),
                        object.app,
                        object.source,
                        secret.key,
                        secret.file,
                        field_path(path)
                    )
                }));
            });
        }
        found
    }
}

/// Said after the objects that would hold a secret value in clear.
pub const HOW_TO_KEEP_A_VALUE_SECRET: &str = "Only v1 Secrets are encrypted in the state: put the value in a Secret and refer to it (e.g. `valueFrom.secretKeyRef`), or pass --allow-plaintext-secrets.";

/// Calls `found` with the path and text of every string in `value` (keys excluded).
fn visit_strings(value: &Value, path: &mut Vec<Step>, found: &mut dyn FnMut(&[Step], &str)) {
    match value {
        Value::String(text) => found(path, text),
        Value::Object(map) => {
            for (key, child) in map {
                path.push(Step::Key(key.clone()));
                visit_strings(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(Step::Index(index));
                visit_strings(item, path, found);
                path.pop();
            }
        }
        _ => {}
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

    fn holding(value: &str) -> SecretValues {
        SecretValues {
            strings: vec![SecretString {
                file: "secrets-prod.yaml".into(),
                key: "db.password".into(),
                value: value.into(),
            }],
            ..SecretValues::default()
        }
    }

    #[test]
    fn helm_messages_are_scrubbed_of_the_values() {
        assert_eq!(
            holding("hunter22").scrub("bad value hunter22 at line 3"),
            "bad value (secret value) at line 3"
        );
    }

    fn rendered(value: Value) -> RenderedObject {
        RenderedObject {
            app: "orders".into(),
            source: "shop/charts/orders/templates/x.yaml".into(),
            value,
        }
    }

    #[test]
    fn a_value_outside_a_secret_is_named_by_field_and_key_never_shown() {
        let objects = [
            rendered(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db"}, "stringData": {"password": "hunter22"}})),
            rendered(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "orders"},
                "spec": {"template": {"spec": {"containers": [{"env": [
                    {"name": "PORT", "value": "80"},
                    {"name": "DB", "value": "postgres://app:hunter22@db"}]}]}}}})),
            rendered(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "plain"}, "data": {"hunter": "22"}})),
        ];
        let leaks = holding("hunter22").leaks(&objects, |o| o.kind() == "Secret");
        assert_eq!(leaks.len(), 1, "{leaks:#?}");
        assert!(
            leaks[0].contains("Deployment/orders")
                && leaks[0].contains("`spec.template.spec.containers[0].env[1].value`")
                && leaks[0].contains("`db.password` from secrets-prod.yaml")
                && !leaks[0].contains("hunter22"),
            "{}",
            leaks[0]
        );
    }
}
