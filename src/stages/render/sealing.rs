//! Secrets go into the state SOPS-encrypted: each rendered `v1` Secret is encrypted to the
//! recipients of the `.sops.yaml` creation rule matching its state file, its `data` and
//! `stringData` values only. Encryption is random, so a file whose decrypted content and
//! recipients did not change is kept byte for byte: a render of the same inputs writes the
//! same bytes.

use std::path::Path;

use serde_json::Value;

use crate::formats::layout;
use crate::formats::manifest;
use crate::formats::sops::{self, Keys, Selection, rules::SopsConfig};

use super::split::RenderedObject;
use super::state_dir::{plain_file, source_header};

/// Whether an object is a Secret the state must not hold in clear.
pub fn is_secret(object: &RenderedObject) -> bool {
    object.kind() == "Secret" && object.api_version() == "v1"
}

/// What became of one Secret's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Its content and recipients are unchanged: the committed bytes stay.
    Kept,
    /// Encrypted anew (new, changed, new recipients, or not comparable without a key).
    Encrypted,
    /// No key to compare with, but all but the values is unchanged: kept for `--check`, listed.
    Unverified,
}

/// Said once after the Secrets that have no creation rule.
pub const HOW_TO_ADD_A_RULE: &str = "Add a creation rule whose path_regex matches the state to .sops.yaml, e.g.\n  creation_rules:\n    - path_regex: ^umbrella-state/\n      age: <age public key, from `age-keygen -y`>\nor pass --allow-plaintext-secrets.";

/// Encrypts the Secrets of one render.
pub struct Sealer<'a> {
    config: Option<SopsConfig>,
    keys: &'a Keys,
    /// The state directory's path below the repository (`umbrella-state/<env>`).
    state_path: String,
    /// The state directory on disk, whose files are kept when unchanged.
    state_dir: &'a Path,
    check: bool,
    now: String,
    pub sealed: Sealed,
}

/// What a render could not compare for want of a key.
#[derive(Debug, Default)]
pub struct Sealed {
    /// Secrets `--check` compared but for their values (their state files).
    pub unverified: Vec<String>,
    /// Secrets encrypted anew without comparing with the committed file (their state files).
    pub unkeyed: Vec<String>,
}

impl<'a> Sealer<'a> {
    pub fn new(
        config: Option<SopsConfig>,
        keys: &'a Keys,
        env: &str,
        state_dir: &'a Path,
        check: bool,
    ) -> Self {
        Sealer {
            config,
            keys,
            state_path: layout::env_path(env),
            state_dir,
            check,
            now: sops::now(),
            sealed: Sealed::default(),
        }
    }

    /// The state file of `object` at `relative` (below the state directory): as rendered, or
    /// for a Secret, encrypted.
    pub fn file(&mut self, object: &RenderedObject, relative: &Path) -> Result<String, String> {
        if !is_secret(object) {
            return Ok(plain_file(object));
        }
        let path = format!("{}/{}", self.state_path, slashed(relative));
        let recipients = self.recipients(object, &path)?;
        let previous = std::fs::read_to_string(self.state_dir.join(relative)).ok();
        let (outcome, body) = match previous
            .as_deref()
            .and_then(|text| self.reuse(text, object, &recipients, &path))
        {
            Some((outcome, body)) => (outcome, body),
            None => (
                Outcome::Encrypted,
                self.encrypt(object, &recipients, &path)?,
            ),
        };
        if outcome == Outcome::Unverified {
            self.sealed.unverified.push(path);
        }
        Ok(source_header(object) + &body)
    }

    fn recipients(&self, object: &RenderedObject, path: &str) -> Result<Vec<String>, String> {
        let refused = |why: String| {
            format!(
                "{} (app {}, from {}) would be written to {path} in clear: {why}",
                object.describe(),
                object.app,
                object.source
            )
        };
        let Some(config) = &self.config else {
            return Err(refused(format!("there is no {}", sops::rules::CONFIG_FILE)));
        };
        let Some(rule) = config.rule_for(path) else {
            return Err(refused(format!(
                "no creation rule of {} matches it",
                config.file.display()
            )));
        };
        rule.recipients()
            .map(<[String]>::to_vec)
            .map_err(|e| refused(format!("{e} ({})", config.file.display())))
    }

    /// The committed encrypted body, when it may stay: same recipients and the same content
    /// (decrypted with a key, or for `--check` without one, the same but for the values).
    fn reuse(
        &mut self,
        previous: &str,
        object: &RenderedObject,
        recipients: &[String],
        path: &str,
    ) -> Option<(Outcome, String)> {
        let body = without_header(previous);
        let mut documents = manifest::parse_documents(body).ok()?;
        let committed = documents.pop().filter(|_| documents.is_empty())?;
        if !sops::is_encrypted(&committed) || !same_set(&sops::recipients(&committed), recipients) {
            return None;
        }
        match sops::decrypt(&committed, self.keys) {
            Ok(clear) => (clear == object.value).then(|| (Outcome::Kept, body.to_string())),
            Err(sops::SopsError::NoKey { .. } | sops::SopsError::WrongKey { .. }) => {
                self.sealed.unkeyed.push(path.to_string());
                let shape_kept = values_blanked(&committed) == values_blanked(&object.value);
                (self.check && shape_kept).then(|| (Outcome::Unverified, body.to_string()))
            }
            Err(_) => None,
        }
    }

    fn encrypt(
        &self,
        object: &RenderedObject,
        recipients: &[String],
        path: &str,
    ) -> Result<String, String> {
        sops::encrypt(
            &object.value,
            recipients,
            &Selection::secret_data(),
            &self.now,
        )
        .map(|sealed| manifest::to_yaml(&sealed))
        .map_err(|e| format!("encrypting {} for {path}: {e}", object.describe()))
    }
}

fn slashed(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A state file without its `# Source:` line.
fn without_header(text: &str) -> &str {
    match text.strip_prefix("# Source:") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
        None => text,
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// A Secret with its metadata removed and every value of `data` and `stringData` blanked: what
/// can be compared without a key.
fn values_blanked(secret: &Value) -> Value {
    let mut shape = secret.clone();
    if let Value::Object(map) = &mut shape {
        map.shift_remove(sops::METADATA_KEY);
        for field in ["data", "stringData"] {
            if let Some(Value::Object(values)) = map.get_mut(field) {
                values.values_mut().for_each(|v| *v = Value::Null);
            }
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::x25519::Identity;
    use serde_json::json;

    const FILE: &str = "app/secret-db.yaml";

    fn secret(password: &str) -> RenderedObject {
        RenderedObject {
            app: "app".into(),
            source: "shop/charts/app/templates/secret.yaml".into(),
            value: json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "namespace": "prod"},
                "stringData": {"password": password},
            }),
        }
    }

    /// A repository whose `.sops.yaml` encrypts the state to `recipient`.
    fn repository(recipient: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join(".sops.yaml"),
            format!("creation_rules:\n- path_regex: ^umbrella-state/\n  age: {recipient}\n"),
        )
        .unwrap();
        root
    }

    fn seal(root: &Path, keys: &Keys, object: &RenderedObject, check: bool) -> (String, Sealed) {
        let state = root.join("umbrella-state/prod");
        let config = SopsConfig::load(root).unwrap();
        let mut sealer = Sealer::new(config, keys, "prod", &state, check);
        let text = sealer.file(object, Path::new(FILE)).unwrap();
        (text, sealer.sealed)
    }

    fn commit(root: &Path, text: &str) {
        let file = root.join("umbrella-state/prod").join(FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    #[test]
    fn an_unchanged_secret_keeps_its_bytes_and_a_changed_one_is_encrypted_again() {
        let identity = Identity::generate();
        let root = repository(&identity.to_public().to_string());
        let keys = Keys::of(vec![identity]);
        let (first, _) = seal(root.path(), &keys, &secret("one"), false);
        assert!(first.starts_with("# Source: shop/charts/app/templates/secret.yaml\n"));
        assert!(
            !first.contains("one\n") && first.contains("ENC[AES256_GCM"),
            "{first}"
        );
        commit(root.path(), &first);
        assert_eq!(seal(root.path(), &keys, &secret("one"), false).0, first);
        let (changed, _) = seal(root.path(), &keys, &secret("two"), false);
        assert_ne!(changed, first);
    }

    #[test]
    fn a_secret_no_rule_matches_is_refused_naming_it_and_the_config() {
        let root = tempfile::tempdir().unwrap();
        let recipient = Identity::generate().to_public().to_string();
        std::fs::write(
            root.path().join(".sops.yaml"),
            format!("creation_rules:\n- path_regex: ^umbrella-chart/\n  age: {recipient}\n"),
        )
        .unwrap();
        let config = SopsConfig::load(root.path()).unwrap();
        let keys = Keys::of(Vec::new());
        let state = root.path().join("umbrella-state/prod");
        let mut sealer = Sealer::new(config, &keys, "prod", &state, false);
        let refused = sealer
            .file(&secret("one"), Path::new(FILE))
            .expect_err("no rule for the state");
        assert!(
            refused.contains("Secret/db")
                && refused.contains("umbrella-state/prod/app/secret-db.yaml in clear")
                && refused.contains("no creation rule of")
                && refused.contains(".sops.yaml matches it")
                && !refused.contains("one"),
            "{refused}"
        );
    }

    #[test]
    fn new_recipients_encrypt_again() {
        let identity = Identity::generate();
        let root = repository(&identity.to_public().to_string());
        let keys = Keys::of(vec![identity]);
        let (first, _) = seal(root.path(), &keys, &secret("one"), false);
        commit(root.path(), &first);
        let next = Identity::generate().to_public().to_string();
        let root_moved = repository(&next);
        std::fs::rename(
            root.path().join("umbrella-state"),
            root_moved.path().join("umbrella-state"),
        )
        .unwrap();
        let (rotated, _) = seal(root_moved.path(), &keys, &secret("one"), false);
        assert_ne!(rotated, first);
        assert!(rotated.contains(&next), "{rotated}");
    }

    #[test]
    fn without_a_key_a_check_keeps_what_it_cannot_compare_and_a_write_encrypts_again() {
        let identity = Identity::generate();
        let root = repository(&identity.to_public().to_string());
        let (first, _) = seal(
            root.path(),
            &Keys::of(vec![identity]),
            &secret("one"),
            false,
        );
        commit(root.path(), &first);
        let none = Keys::of(Vec::new());
        let (checked, sealed) = seal(root.path(), &none, &secret("one"), true);
        assert_eq!(checked, first);
        assert_eq!(sealed.unverified, [format!("umbrella-state/prod/{FILE}")]);
        let (written, sealed) = seal(root.path(), &none, &secret("one"), false);
        assert_ne!(written, first);
        assert_eq!(sealed.unkeyed, [format!("umbrella-state/prod/{FILE}")]);
    }

    #[test]
    fn without_a_rule_it_is_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let keys = Keys::of(Vec::new());
        let mut sealer = Sealer::new(None, &keys, "prod", root.path(), false);
        let error = sealer
            .file(&secret("hunter22"), Path::new(FILE))
            .unwrap_err();
        assert!(
            error.contains("Secret/db (app app, from shop/charts/app/templates/secret.yaml) would be written to umbrella-state/prod/app/secret-db.yaml in clear: there is no .sops.yaml")
                && error.ends_with("there is no .sops.yaml"),
            "{error}"
        );
        assert!(!error.contains("hunter22"));
    }
}
