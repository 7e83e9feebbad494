//! One SOPS value: `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]`, AES-256-GCM with a
//! 32-byte nonce, bound to the value's path (`key:key:` as additional data) so that a value
//! moved to another key no longer decrypts.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::consts::U32;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Number, Value};

/// SOPS' choice: a 32-byte nonce, so GCM derives its counter block with GHASH.
type SopsGcm = AesGcm<Aes256, U32>;
const TAG_BYTES: usize = 16;

/// The data key of a file: 32 random bytes.
pub type DataKey = [u8; 32];

/// A new random data key.
pub fn new_data_key() -> DataKey {
    let key = aes_gcm::Key::<SopsGcm>::generate();
    key.into()
}

/// A value that would not decrypt; never says the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("not in SOPS' ENC[AES256_GCM,...] format")]
    Format,
    #[error("does not decrypt with the file's data key (changed by hand, or moved to another key)")]
    Authentication,
    #[error("its type '{0}' is not one umbrella reads")]
    Type(String),
}

/// The plaintext of a leaf as SOPS hashes and encrypts it, with its type tag.
pub fn plain_bytes(value: &Value) -> Option<(Vec<u8>, &'static str)> {
    match value {
        Value::String(text) => Some((text.as_bytes().to_vec(), "str")),
        Value::Bool(true) => Some((b"True".to_vec(), "bool")),
        Value::Bool(false) => Some((b"False".to_vec(), "bool")),
        Value::Number(number) if number.is_f64() => {
            number.as_f64().map(|f| (go_float(f).into_bytes(), "float"))
        }
        Value::Number(number) => Some((number.to_string().into_bytes(), "int")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back, never an
/// exponent, which is what Rust's `Display` writes too, but for integral values (`1` not `1.0`).
fn go_float(f: f64) -> String {
    format!("{f}")
}

/// Encrypts one leaf; the empty string stays empty, as SOPS writes it.
pub fn encrypt(value: &Value, key: &DataKey, path: &str) -> Value {
    let Some((plain, kind)) = plain_bytes(value) else {
        return value.clone();
    };
    if plain.is_empty() && kind == "str" {
        return value.clone();
    }
    let nonce = Nonce::<U32>::generate();
    let sealed = gcm(key)
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: path.as_bytes(),
            },
        )
        .unwrap_or_default();
    let (data, tag) = sealed.split_at(sealed.len().saturating_sub(TAG_BYTES));
    Value::String(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(data),
        STANDARD.encode(nonce),
        STANDARD.encode(tag)
    ))
}

/// Decrypts one `ENC[...]` string into the value its type tag says.
pub fn decrypt(text: &str, key: &DataKey, path: &str) -> Result<Value, ValueError> {
    if text.is_empty() {
        return Ok(Value::String(String::new()));
    }
    let parts = Parts::parse(text).ok_or(ValueError::Format)?;
    let nonce: [u8; 32] = parts.iv.try_into().map_err(|_| ValueError::Format)?;
    let mut sealed = parts.data;
    sealed.extend_from_slice(&parts.tag);
    let plain = gcm(key)
        .decrypt(
            &Nonce::<U32>::from(nonce),
            Payload {
                msg: &sealed,
                aad: path.as_bytes(),
            },
        )
        .map_err(|_| ValueError::Authentication)?;
    typed(plain, &parts.kind)
}

fn gcm(key: &DataKey) -> SopsGcm {
    SopsGcm::new(&(*key).into())
}

/// The value of a decrypted leaf, as SOPS' Go code reads each type back.
fn typed(plain: Vec<u8>, kind: &str) -> Result<Value, ValueError> {
    let text = String::from_utf8(plain).map_err(|_| ValueError::Type(kind.into()));
    match kind {
        "str" | "bytes" | "time" => text.map(Value::String),
        "int" => text?
            .parse::<i64>()
            .map(|i| Value::Number(i.into()))
            .map_err(|_| ValueError::Type(kind.into())),
        "float" => text?
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| ValueError::Type(kind.into())),
        "bool" => match text?.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(ValueError::Type(kind.into())),
        },
        other => Err(ValueError::Type(other.into())),
    }
}

/// A stand-in of the encrypted value's type (`unverified`, 0, 0.0, false), for renders that
/// have no key; `None` for what is not an encrypted value.
pub fn stand_in(text: &str) -> Option<Value> {
    let parts = Parts::parse(text)?;
    Some(match parts.kind.as_str() {
        "int" => Value::Number(0.into()),
        "float" => Number::from_f64(0.0).map_or(Value::Null, Value::Number),
        "bool" => Value::Bool(false),
        _ => Value::String("unverified".into()),
    })
}

struct Parts {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

impl Parts {
    fn parse(text: &str) -> Option<Parts> {
        let inner = text.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
        let mut fields = inner.split(',');
        let mut field = |name: &str| fields.next()?.strip_prefix(name).map(str::to_string);
        let data = field("data:")?;
        let iv = field("iv:")?;
        let tag = field("tag:")?;
        let kind = field("type:")?;
        Some(Parts {
            data: STANDARD.decode(data).ok()?,
            iv: STANDARD.decode(iv).ok()?,
            tag: STANDARD.decode(tag).ok()?,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_leaf_type_comes_back_as_it_went_in() {
        let key = new_data_key();
        for value in [
            json!("s3cr3t"),
            json!(42),
            json!(-7),
            json!(1.5),
            json!(true),
            json!(false),
        ] {
            let Value::String(sealed) = encrypt(&value, &key, "data:password:") else {
                panic!("not encrypted: {value}");
            };
            assert!(sealed.starts_with("ENC[AES256_GCM,"), "{sealed}");
            assert_eq!(decrypt(&sealed, &key, "data:password:").unwrap(), value);
        }
    }

    #[test]
    fn a_value_moved_to_another_key_or_decrypted_with_another_data_key_is_refused() {
        let key = new_data_key();
        let Value::String(sealed) = encrypt(&json!("x"), &key, "data:a:") else {
            panic!()
        };
        assert_eq!(
            decrypt(&sealed, &key, "data:b:"),
            Err(ValueError::Authentication)
        );
        assert_eq!(
            decrypt(&sealed, &new_data_key(), "data:a:"),
            Err(ValueError::Authentication)
        );
        assert_eq!(
            decrypt("ENC[AES256_GCM,data:zz]", &key, "data:a:"),
            Err(ValueError::Format)
        );
    }

    #[test]
    fn the_empty_string_stays_empty_and_floats_hash_as_go_writes_them() {
        assert_eq!(encrypt(&json!(""), &new_data_key(), "a:"), json!(""));
        assert_eq!(plain_bytes(&json!(1.0)).unwrap().0, b"1");
        assert_eq!(plain_bytes(&json!(0.1)).unwrap().0, b"0.1");
        assert_eq!(plain_bytes(&json!(true)).unwrap().0, b"True");
    }
}
