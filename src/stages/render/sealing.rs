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
    /// Secrets `--check` could not compare, without a key (their state files).
    pub unverified: Vec<String>,
    /// Secrets encrypted anew without comparing, for want of a key.
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
            unverified: Vec::new(),
            unkeyed: Vec::new(),
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
            .and_then(|text| self.reuse(text, object, &recipients))
        {
            Some((outcome, body)) => (outcome, body),
            None => (
                Outcome::Encrypted,
                self.encrypt(object, &recipients, &path)?,
            ),
        };
        if outcome == Outcome::Unverified {
            self.unverified.push(path);
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
            return Err(refused(format!(
                "there is no {}; add one with a creation rule for the state, e.g.\n  creation_rules:\n    - path_regex: ^umbrella-state/\n      age: <age public key, from `age-keygen -y`>\n(or pass --allow-plaintext-secrets)",
                sops::rules::CONFIG_FILE
            )));
        };
        let Some(rule) = config.rule_for(path) else {
            return Err(refused(format!(
                "no creation rule of {} matches it; add one whose path_regex matches, e.g. `- path_regex: ^umbrella-state/` with `age: <age public key>`",
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
                self.unkeyed.push(object.describe());
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
