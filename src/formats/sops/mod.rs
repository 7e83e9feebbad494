//! SOPS-encrypted YAML documents with age recipients, read and written the way the `sops` CLI
//! (v3) does, so either side opens the other's files: every selected leaf is an `ENC[...]`
//! value under one random data key, that key is age-encrypted to each recipient under
//! `sops.age`, and a SHA-512 over every plaintext value (the MAC), itself encrypted, proves
//! that nothing was changed by hand.

pub mod cipher;
mod error;
pub mod keys;
pub mod rules;

use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use crate::formats::manifest;

use cipher::{DataKey, ValueError};
pub use error::SopsError;
pub use keys::Keys;

/// The key under which a document keeps its SOPS metadata.
pub const METADATA_KEY: &str = "sops";
/// The SOPS file format version umbrella writes (what `sops --version` 3.13 writes).
const FORMAT_VERSION: &str = "3.13.2";
/// What SOPS mixes into the MAC first when only encrypted values count.
const MAC_ONLY_ENCRYPTED_SEED: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];
/// Key types SOPS knows besides age; umbrella reads none of them.
const OTHER_KEY_TYPES: &[&str] = &[
    "pgp",
    "kms",
    "gcp_kms",
    "azure_kv",
    "hc_vault",
    "hckms",
    "key_groups",
];

/// Which values of a document SOPS encrypts (the rest stay readable, and still count in the MAC
/// unless `mac_only_encrypted`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub unencrypted_suffix: Option<String>,
    pub encrypted_suffix: Option<String>,
    pub unencrypted_regex: Option<Regex>,
    pub encrypted_regex: Option<Regex>,
    pub mac_only_encrypted: bool,
}

impl Selection {
    /// What `sops` records when a rule names none: values under a `*_unencrypted` key stay clear.
    pub fn sops_default() -> Self {
        Selection {
            unencrypted_suffix: Some("_unencrypted".into()),
            ..Selection::default()
        }
    }

    /// Only the values below `data` and `stringData`: a Secret's metadata, keys and type stay
    /// readable (the convention Flux decrypts).
    pub fn secret_data() -> Self {
        Selection {
            encrypted_regex: Regex::new("^(data|stringData)$").ok(),
            ..Selection::default()
        }
    }

    /// SOPS' `shouldBeEncrypted`: the later selectors override the earlier ones.
    fn encrypts(&self, path: &[String]) -> bool {
        let any_ends = |suffix: &str| path.iter().any(|p| p.ends_with(suffix));
        let any_matches = |regex: &Regex| path.iter().any(|p| regex.is_match(p));
        let mut encrypted = true;
        if self.unencrypted_suffix.as_deref().is_some_and(any_ends) {
            encrypted = false;
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = any_ends(suffix);
        }
        if self.unencrypted_regex.as_ref().is_some_and(any_matches) {
            encrypted = false;
        }
        if let Some(regex) = &self.encrypted_regex {
            encrypted = any_matches(regex);
        }
        encrypted
    }

    fn write_into(&self, metadata: &mut Map<String, Value>) {
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                metadata.insert(key.into(), Value::String(value));
            }
        };
        put("unencrypted_suffix", self.unencrypted_suffix.clone());
        put("encrypted_suffix", self.encrypted_suffix.clone());
        put(
            "unencrypted_regex",
            self.unencrypted_regex.as_ref().map(|r| r.as_str().into()),
        );
        put(
            "encrypted_regex",
            self.encrypted_regex.as_ref().map(|r| r.as_str().into()),
        );
        if self.mac_only_encrypted {
            metadata.insert("mac_only_encrypted".into(), Value::Bool(true));
        }
    }
}

/// Whether a document carries SOPS metadata (and so must be decrypted before use).
pub fn is_encrypted(document: &Value) -> bool {
    document
        .get(METADATA_KEY)
        .is_some_and(|m| m.get("mac").is_some())
}

/// The age recipients a document is encrypted to, as its metadata lists them.
pub fn recipients(document: &Value) -> Vec<String> {
    Metadata::of(document)
        .map(|m| m.age.into_iter().map(|s| s.recipient).collect())
        .unwrap_or_default()
}

/// The document in clear, its metadata removed, once its data key was found and its MAC holds.
pub fn decrypt(document: &Value, keys: &Keys) -> Result<Value, SopsError> {
    let metadata = Metadata::of(document)?;
    let key = metadata.data_key(keys)?;
    let mut tree = without_metadata(document);
    let mut mac = Mac::new(metadata.selection.mac_only_encrypted);
    let mut failure = None;
    walk(&mut tree, &mut Vec::new(), &mut |leaf, path| {
        let encrypted = metadata.selection.encrypts(path);
        if encrypted && failure.is_none() {
            match open_leaf(leaf, &key, path) {
                Ok(plain) => *leaf = plain,
                Err(problem) => failure = Some(problem),
            }
        }
        mac.add(leaf, encrypted);
    });
    if let Some(problem) = failure {
        return Err(problem);
    }
    let recorded = cipher::decrypt(&metadata.mac, &key, &metadata.mac_additional_data())
        .map_err(|_| SopsError::Mac)?;
    if recorded.as_str() != Some(mac.hex().as_str()) {
        return Err(SopsError::Mac);
    }
    Ok(tree)
}

/// The document encrypted to `recipients` (age public keys), the selected values under a new
/// random data key; `now` is the RFC 3339 time recorded as `lastmodified`.
pub fn encrypt(
    document: &Value,
    recipients: &[String],
    selection: &Selection,
    now: &str,
) -> Result<Value, SopsError> {
    let key = cipher::new_data_key();
    let mut tree = without_metadata(document);
    let mut mac = Mac::new(selection.mac_only_encrypted);
    walk(&mut tree, &mut Vec::new(), &mut |leaf, path| {
        let encrypted = selection.encrypts(path);
        mac.add(leaf, encrypted);
        if encrypted {
            *leaf = cipher::encrypt(leaf, &key, &additional_data(path));
        }
    });
    let mut stanzas = Vec::new();
    for recipient in recipients {
        stanzas.push(serde_json::json!({
            "recipient": recipient,
            "enc": keys::wrap(&key, recipient)?,
        }));
    }
    let mut metadata = Map::new();
    metadata.insert("age".into(), Value::Array(stanzas));
    metadata.insert("lastmodified".into(), Value::String(now.into()));
    let sealed_mac = cipher::encrypt(&Value::String(mac.hex()), &key, now);
    metadata.insert("mac".into(), sealed_mac);
    selection.write_into(&mut metadata);
    metadata.insert("version".into(), Value::String(FORMAT_VERSION.into()));
    if let Value::Object(map) = &mut tree {
        map.insert(METADATA_KEY.into(), Value::Object(metadata));
    }
    Ok(tree)
}

/// The document without a key: every encrypted value replaced by a stand-in of its type, for
/// a check that compares everything but the values.
pub fn stand_ins(document: &Value) -> Value {
    let mut tree = without_metadata(document);
    walk(&mut tree, &mut Vec::new(), &mut |leaf, _| {
        if let Some(stand_in) = leaf.as_str().and_then(cipher::stand_in) {
            *leaf = stand_in;
        }
    });
    tree
}

/// Every string value of a decrypted document with its dotted key path (to scrub from the
/// messages of the programs that were given them, and to find them where they must not be).
pub fn strings(document: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk(&mut document.clone(), &mut Vec::new(), &mut |leaf, path| {
        if let Some(text) = leaf.as_str() {
            found.push((path.join("."), text.to_string()));
        }
    });
    found
}

/// A file holding one SOPS-encrypted YAML document; anything else is refused, named.
pub fn read_file(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut documents =
        manifest::parse_documents(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    match documents.pop() {
        Some(document) if documents.is_empty() && is_encrypted(&document) => Ok(document),
        _ => Err(format!(
            "{}: not a SOPS-encrypted YAML document; encrypt it with `sops encrypt -i {}` (secret values are never read in clear)",
            file.display(),
            file.display()
        )),
    }
}

/// The current time as SOPS records `lastmodified`: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn open_leaf(leaf: &Value, key: &DataKey, path: &[String]) -> Result<Value, SopsError> {
    let failed = |problem| SopsError::Value {
        path: path.join("."),
        problem,
    };
    match leaf {
        Value::String(text) => cipher::decrypt(text, key, &additional_data(path)).map_err(failed),
        _ => Err(failed(ValueError::Format)),
    }
}

/// What each value is bound to: its keys joined with `:`, list positions left out.
fn additional_data(path: &[String]) -> String {
    let mut text = path.join(":");
    text.push(':');
    text
}

fn without_metadata(document: &Value) -> Value {
    let mut tree = document.clone();
    if let Value::Object(map) = &mut tree {
        map.shift_remove(METADATA_KEY);
    }
    tree
}

/// Calls `leaf` on every scalar in document order with its path of keys (SOPS' tree walk:
/// list items share their list's path; nulls are skipped).
fn walk(value: &mut Value, path: &mut Vec<String>, leaf: &mut dyn FnMut(&mut Value, &[String])) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key.clone());
                walk(child, path, leaf);
                path.pop();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| walk(item, path, leaf)),
        Value::Null => {}
        scalar => leaf(scalar, path),
    }
}

/// SOPS' MAC: SHA-512 over the plaintext of the values that count, in document order.
struct Mac {
    hash: Sha512,
    only_encrypted: bool,
}

impl Mac {
    fn new(only_encrypted: bool) -> Self {
        let mut hash = Sha512::new();
        if only_encrypted {
            hash.update(MAC_ONLY_ENCRYPTED_SEED);
        }
        Mac {
            hash,
            only_encrypted,
        }
    }

    fn add(&mut self, plain: &Value, encrypted: bool) {
        if (!self.only_encrypted || encrypted)
            && let Some((bytes, _)) = cipher::plain_bytes(plain)
        {
            self.hash.update(bytes);
        }
    }

    fn hex(&self) -> String {
        hex::encode_upper(self.hash.clone().finalize())
    }
}

/// One `sops.age` entry: a recipient and the data key encrypted to it.
#[derive(Debug, Clone)]
struct AgeStanza {
    recipient: String,
    enc: String,
}

/// The `sops` metadata of a document, as far as umbrella reads it.
struct Metadata {
    age: Vec<AgeStanza>,
    other_keys: Vec<&'static str>,
    lastmodified: String,
    mac: String,
    selection: Selection,
}

impl Metadata {
    fn of(document: &Value) -> Result<Metadata, SopsError> {
        let bad = |what: &str| SopsError::Metadata(what.into());
        let metadata = document
            .get(METADATA_KEY)
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `sops` mapping"))?;
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let regex = |key: &str| -> Result<Option<Regex>, SopsError> {
            text(key)
                .map(|r| Regex::new(&r).map_err(|e| bad(&format!("{key}: {e}"))))
                .transpose()
        };
        if text("encrypted_comment_regex").is_some() || text("unencrypted_comment_regex").is_some()
        {
            return Err(bad(
                "encrypted_comment_regex and unencrypted_comment_regex are not read by umbrella",
            ));
        }
        let age = metadata
            .get("age")
            .and_then(Value::as_array)
            .map(|stanzas| {
                stanzas
                    .iter()
                    .filter_map(|s| {
                        Some(AgeStanza {
                            recipient: s.get("recipient")?.as_str()?.to_string(),
                            enc: s.get("enc")?.as_str()?.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Metadata {
            age,
            other_keys: OTHER_KEY_TYPES
                .iter()
                .copied()
                .filter(|k| metadata.get(*k).is_some_and(|v| !is_empty(v)))
                .collect(),
            lastmodified: text("lastmodified").ok_or_else(|| bad("no `lastmodified`"))?,
            mac: text("mac").ok_or_else(|| bad("no `mac`"))?,
            selection: Selection {
                unencrypted_suffix: text("unencrypted_suffix"),
                encrypted_suffix: text("encrypted_suffix"),
                unencrypted_regex: regex("unencrypted_regex")?,
                encrypted_regex: regex("encrypted_regex")?,
                mac_only_encrypted: metadata
                    .get("mac_only_encrypted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        })
    }

    fn data_key(&self, keys: &Keys) -> Result<DataKey, SopsError> {
        if self.age.is_empty() {
            return Err(SopsError::NotAge(self.other_keys.join(", ")));
        }
        let recipients = self
            .age
            .iter()
            .map(|s| s.recipient.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if keys.is_empty() {
            return Err(SopsError::NoKey {
                recipients,
                looked: keys.looked(),
            });
        }
        self.age
            .iter()
            .find_map(|stanza| keys.unwrap(&stanza.enc))
            .ok_or_else(|| SopsError::WrongKey {
                recipients,
                looked: keys.looked(),
            })
    }

    /// The MAC is bound to `lastmodified` as Go formats it again (RFC 3339, whole seconds).
    fn mac_additional_data(&self) -> String {
        match self.lastmodified.split_once('.') {
            Some((head, fraction)) => {
                let zone = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
                format!("{head}{zone}")
            }
            None => self.lastmodified.clone(),
        }
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_pair() -> (Keys, String) {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        (Keys::of(vec![identity]), recipient)
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "labels": {"app": "shop"}},
            "type": "Opaque",
            "data": {"password": "czNjcjN0", "empty": ""},
            "stringData": {"list": ["a", "b"], "port": 5432},
        })
    }

    #[test]
    fn a_secret_encrypted_to_a_recipient_decrypts_to_itself_with_its_key() {
        let (keys, recipient) = key_pair();
        let sealed = encrypt(&secret(), &[recipient], &Selection::secret_data(), &now()).unwrap();
        assert!(is_encrypted(&sealed));
        assert_eq!(sealed["metadata"], secret()["metadata"]);
        assert_eq!(sealed["type"], "Opaque");
        let password = sealed["data"]["password"].as_str().unwrap();
        assert!(password.starts_with("ENC[AES256_GCM,"), "{password}");
        assert!(!sealed.to_string().contains("czNjcjN0"));
        assert_eq!(decrypt(&sealed, &keys).unwrap(), secret());
    }

    #[test]
    fn without_a_key_or_with_another_one_it_says_so_and_names_the_recipients() {
        let (_, recipient) = key_pair();
        let sealed = encrypt(
            &secret(),
            std::slice::from_ref(&recipient),
            &Selection::secret_data(),
            &now(),
        )
        .unwrap();
        let none = decrypt(&sealed, &Keys::of(Vec::new())).unwrap_err();
        assert!(matches!(none, SopsError::NoKey { .. }), "{none}");
        assert!(none.to_string().contains(&recipient), "{none}");
        let (other, _) = key_pair();
        let wrong = decrypt(&sealed, &other).unwrap_err();
        assert!(matches!(wrong, SopsError::WrongKey { .. }), "{wrong}");
    }

    #[test]
    fn a_value_changed_by_hand_fails_the_mac_even_where_it_is_not_encrypted() {
        let (keys, recipient) = key_pair();
        let sealed = encrypt(&secret(), &[recipient], &Selection::secret_data(), &now()).unwrap();
        let mut edited = sealed.clone();
        edited["metadata"]["labels"]["app"] = json!("other");
        assert_eq!(decrypt(&edited, &keys), Err(SopsError::Mac));
        let mut swapped = sealed.clone();
        swapped["data"]["empty"] = sealed["data"]["password"].clone();
        let error = decrypt(&swapped, &keys).unwrap_err();
        assert!(matches!(error, SopsError::Value { .. }), "{error}");
        assert!(!error.to_string().contains("czNjcjN0"));
    }

    #[test]
    fn selectors_follow_sops_order_of_precedence() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let default = Selection::sops_default();
        assert!(default.encrypts(&path(&["db", "password"])));
        assert!(!default.encrypts(&path(&["db_unencrypted", "host"])));
        let data = Selection::secret_data();
        assert!(data.encrypts(&path(&["data", "password"])));
        assert!(!data.encrypts(&path(&["metadata", "name"])));
        assert!(!data.encrypts(&path(&["metadata", "database"])));
    }

    #[test]
    fn only_age_is_read_and_other_key_types_are_named() {
        let document = json!({"a": "x", "sops": {"pgp": [{"fp": "ABC"}], "lastmodified": "2024-01-01T00:00:00Z", "mac": "ENC[...]"}});
        let error = decrypt(&document, &Keys::of(Vec::new())).unwrap_err();
        assert_eq!(error, SopsError::NotAge("pgp".into()));
    }

    #[test]
    fn the_mac_is_bound_to_lastmodified_in_whole_seconds() {
        let mut metadata = Metadata::of(
            &json!({"sops": {"lastmodified": "2024-05-01T10:00:00.123456Z", "mac": ""}}),
        )
        .unwrap();
        assert_eq!(metadata.mac_additional_data(), "2024-05-01T10:00:00Z");
        metadata.lastmodified = "2024-05-01T10:00:00+02:00".into();
        assert_eq!(metadata.mac_additional_data(), "2024-05-01T10:00:00+02:00");
    }
}
