//! age keys, found where `sops` finds them, and a file's data key wrapped for and unwrapped by
//! them (an ASCII-armored age file holding the 32 key bytes, one per recipient).

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::x25519::{Identity, Recipient};

use super::cipher::DataKey;
use super::error::SopsError;

/// Environment variable holding age identities, several per line allowed.
pub const KEY_VARIABLE: &str = "SOPS_AGE_KEY";
/// Environment variable naming a file of age identities, one per line.
pub const KEY_FILE_VARIABLE: &str = "SOPS_AGE_KEY_FILE";

/// The age identities at hand, and where they were looked for (for messages).
pub struct Keys {
    identities: Vec<Identity>,
    looked: Vec<String>,
}

impl Keys {
    /// Keys given directly (tests, and callers that found them elsewhere).
    pub fn of(identities: Vec<Identity>) -> Self {
        Keys {
            identities,
            looked: vec!["the keys given".into()],
        }
    }

    /// Every identity of `SOPS_AGE_KEY`, the file `SOPS_AGE_KEY_FILE` names, and sops' default
    /// key file (`$XDG_CONFIG_HOME/sops/age/keys.txt`, else `~/.config/sops/age/keys.txt`),
    /// all of them, as sops gathers them. A source that cannot be read is noted, not fatal: a
    /// file whose recipients another source covers still decrypts.
    pub fn from_environment() -> Self {
        let mut keys = Keys {
            identities: Vec::new(),
            looked: Vec::new(),
        };
        match std::env::var(KEY_VARIABLE) {
            Ok(text) => keys.add(KEY_VARIABLE.to_string(), &text, true),
            Err(_) => keys.looked.push(format!("{KEY_VARIABLE} (unset)")),
        }
        match std::env::var_os(KEY_FILE_VARIABLE) {
            Some(path) => keys.add_file(
                format!("{KEY_FILE_VARIABLE} ({})", PathBuf::from(&path).display()),
                &PathBuf::from(path),
            ),
            None => keys.looked.push(format!("{KEY_FILE_VARIABLE} (unset)")),
        }
        if let Some(default) = default_key_file() {
            keys.add_file(default.display().to_string(), &default);
        }
        keys
    }

    fn add_file(&mut self, source: String, path: &PathBuf) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.add(source, &text, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.looked.push(format!("{source} (no such file)"));
            }
            Err(e) => self.looked.push(format!("{source} (cannot read: {e})")),
        }
    }

    /// Identities of one source: a line each (or, for the variable, words), `#` comments and
    /// blank lines skipped. What is not an X25519 identity is noted by line, never shown.
    fn add(&mut self, source: String, text: &str, words: bool) {
        let mut found = 0;
        let mut unreadable = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let items: Vec<&str> = if words {
                line.split_whitespace().collect()
            } else {
                vec![line]
            };
            for item in items {
                match Identity::from_str(item) {
                    Ok(identity) => {
                        self.identities.push(identity);
                        found += 1;
                    }
                    Err(_) => unreadable.push((number + 1).to_string()),
                }
            }
        }
        let mut note = format!("{source} ({found} age keys");
        if !unreadable.is_empty() {
            note.push_str(&format!(
                "; line {} not an age X25519 identity",
                unreadable.join(", ")
            ));
        }
        note.push(')');
        self.looked.push(note);
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Where keys were looked for, for messages.
    pub fn looked(&self) -> String {
        self.looked.join(", ")
    }

    /// The data key inside one `sops.age[].enc`, if one of the identities opens it.
    pub fn unwrap(&self, enc: &str) -> Option<DataKey> {
        let reader = ArmoredReader::new(BufReader::new(enc.as_bytes()));
        let decryptor = age::Decryptor::new(reader).ok()?;
        let identities = self.identities.iter().map(|i| i as &dyn age::Identity);
        let mut plain = Vec::new();
        decryptor
            .decrypt(identities)
            .ok()?
            .read_to_end(&mut plain)
            .ok()?;
        plain.try_into().ok()
    }
}

/// The data key encrypted to one age recipient, ASCII-armored as `sops.age[].enc` holds it.
pub fn wrap(key: &DataKey, recipient: &str) -> Result<String, SopsError> {
    let parsed =
        Recipient::from_str(recipient).map_err(|_| SopsError::Recipient(recipient.into()))?;
    let failed = |e: &dyn std::fmt::Display| SopsError::Encrypt(e.to_string());
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&parsed as &dyn age::Recipient))
            .map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    let armored =
        ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| failed(&e))?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| failed(&e))?;
    writer.write_all(key).map_err(|e| failed(&e))?;
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|e| failed(&e))?;
    String::from_utf8(out).map_err(|e| failed(&e))
}

/// Whether every recipient is an age X25519 public key.
pub fn check_recipient(recipient: &str) -> Result<(), SopsError> {
    Recipient::from_str(recipient)
        .map(|_| ())
        .map_err(|_| SopsError::Recipient(recipient.into()))
}

/// sops' default key file: Go's `os.UserConfigDir()` on Linux, then `sops/age/keys.txt`.
fn default_key_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("sops").join("age").join("keys.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn a_wrapped_key_opens_only_with_its_identity() {
        let identity = Identity::generate();
        let key = super::super::cipher::new_data_key();
        let enc = wrap(&key, &identity.to_public().to_string()).unwrap();
        assert!(
            enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
            "{enc}"
        );
        assert_eq!(Keys::of(vec![identity]).unwrap(&enc), Some(key));
        assert_eq!(Keys::of(vec![Identity::generate()]).unwrap(&enc), None);
    }

    #[test]
    fn identities_are_read_by_line_or_word_and_bad_lines_named_not_shown() {
        let one = Identity::generate();
        let two = Identity::generate();
        let text = format!(
            "# created: today\n# public key: x\n{}\n\nAGE-SECRET-KEY-1NOTAKEY\n",
            one.to_string().expose_secret()
        );
        let mut keys = Keys::of(Vec::new());
        keys.add("file".into(), &text, false);
        keys.add(
            "variable".into(),
            &format!(
                "{} {}",
                one.to_string().expose_secret(),
                two.to_string().expose_secret()
            ),
            true,
        );
        assert_eq!(keys.identities.len(), 3);
        let looked = keys.looked();
        assert!(
            looked.contains("file (1 age keys; line 5 not an age X25519 identity)"),
            "{looked}"
        );
        assert!(!looked.contains("NOTAKEY"), "{looked}");
    }

    #[test]
    fn a_recipient_that_is_not_age_is_refused_by_name() {
        assert_eq!(
            wrap(&[0; 32], "pgp:ABCDEF"),
            Err(SopsError::Recipient("pgp:ABCDEF".into()))
        );
    }
}
