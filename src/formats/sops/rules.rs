//! `.sops.yaml` at the repository's top: the first creation rule whose `path_regex` matches a
//! file's path (relative to the `.sops.yaml`'s directory; no `path_regex` matches everything)
//! says which recipients a newly encrypted file gets, exactly as `sops` picks one.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::formats::yaml::{self, YamlError};

use super::keys;

/// The file name sops looks for.
pub const CONFIG_FILE: &str = ".sops.yaml";

/// The creation rules of a repository's `.sops.yaml`.
#[derive(Debug)]
pub struct SopsConfig {
    pub file: PathBuf,
    rules: Vec<Rule>,
}

/// One creation rule, numbered from 1 in the file.
#[derive(Debug)]
pub struct Rule {
    pub number: usize,
    path_regex: Option<Regex>,
    age: Vec<String>,
    other_keys: Vec<&'static str>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    creation_rules: Vec<RawRule>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRule {
    path_regex: Option<String>,
    age: Option<OneOrMany>,
    key_groups: Vec<RawGroup>,
    pgp: Option<yaml_serde::Value>,
    kms: Option<yaml_serde::Value>,
    gcp_kms: Option<yaml_serde::Value>,
    azure_keyvault: Option<yaml_serde::Value>,
    hc_vault_transit_uri: Option<yaml_serde::Value>,
    hckms: Option<yaml_serde::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawGroup {
    age: Vec<String>,
    pgp: Option<yaml_serde::Value>,
    kms: Option<yaml_serde::Value>,
}

/// sops takes a comma-separated string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn recipients(self) -> Vec<String> {
        let items = match self {
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(items) => items,
        };
        items
            .iter()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl SopsConfig {
    /// `root/.sops.yaml`, or `None` when there is none.
    pub fn load(root: &Path) -> Result<Option<SopsConfig>, YamlError> {
        let file = root.join(CONFIG_FILE);
        if !file.is_file() {
            return Ok(None);
        }
        let raw: RawConfig = yaml::read_single(&file)?;
        let rules = raw
            .creation_rules
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Rule::of(index + 1, raw).map_err(|e| YamlError::invalid(&file, e)))
            .collect::<Result<_, _>>()?;
        Ok(Some(SopsConfig { file, rules }))
    }

    /// The rule for a file at `relative` (to the `.sops.yaml`'s directory, `/`-separated).
    pub fn rule_for(&self, relative: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| {
            rule.path_regex
                .as_ref()
                .is_none_or(|regex| regex.is_match(relative))
        })
    }
}

impl Rule {
    fn of(number: usize, raw: RawRule) -> Result<Rule, String> {
        let field = |name: &str, problem: String| {
            format!("creation_rules[{}].{name}: {problem}", number - 1)
        };
        let path_regex = raw
            .path_regex
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| field("path_regex", e.to_string()))?;
        if raw.key_groups.len() > 1 {
            return Err(field(
                "key_groups",
                "several key groups (Shamir secret sharing) are not supported by umbrella".into(),
            ));
        }
        let mut age = raw.age.map(OneOrMany::recipients).unwrap_or_default();
        let mut other_keys: Vec<&'static str> = [
            ("pgp", raw.pgp.is_some()),
            ("kms", raw.kms.is_some()),
            ("gcp_kms", raw.gcp_kms.is_some()),
            ("azure_keyvault", raw.azure_keyvault.is_some()),
            ("hc_vault_transit_uri", raw.hc_vault_transit_uri.is_some()),
            ("hckms", raw.hckms.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        for group in raw.key_groups {
            age.extend(group.age);
            if group.pgp.is_some() || group.kms.is_some() {
                other_keys.push("key_groups");
            }
        }
        for recipient in &age {
            keys::check_recipient(recipient).map_err(|e| field("age", e.to_string()))?;
        }
        Ok(Rule {
            number,
            path_regex,
            age,
            other_keys,
        })
    }

    /// The age recipients a file under this rule is encrypted to. A rule that names other key
    /// types is refused rather than half honoured: a file its PGP or KMS keys could not open
    /// would surprise whoever relies on them.
    pub fn recipients(&self) -> Result<&[String], String> {
        if !self.other_keys.is_empty() {
            return Err(format!(
                "{} names {} keys; umbrella encrypts to age recipients only",
                self.describe(),
                self.other_keys.join(", ")
            ));
        }
        if self.age.is_empty() {
            return Err(format!("{} names no age recipient", self.describe()));
        }
        Ok(&self.age)
    }

    /// "creation rule 2 (path_regex ...)" for messages.
    pub fn describe(&self) -> String {
        match &self.path_regex {
            Some(regex) => format!(
                "creation rule {} (path_regex '{}')",
                self.number,
                regex.as_str()
            ),
            None => format!("creation rule {} (no path_regex)", self.number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const BOB: &str = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg";

    fn config(text: &str) -> Result<Option<SopsConfig>, YamlError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        SopsConfig::load(dir.path())
    }

    #[test]
    fn the_first_matching_rule_wins_and_recipients_may_be_a_list_or_comma_separated() {
        let config = config(&format!(
            "creation_rules:\n- path_regex: ^umbrella-state/production/\n  age: {ALICE}, {BOB}\n- age: [{BOB}]\n"
        ))
        .unwrap()
        .unwrap();
        let production = config
            .rule_for("umbrella-state/production/prod-db/secret-db.yaml")
            .unwrap();
        assert_eq!(production.recipients().unwrap(), [ALICE, BOB]);
        let other = config.rule_for("umbrella-state/staging/x.yaml").unwrap();
        assert_eq!(other.number, 2);
        assert_eq!(other.recipients().unwrap(), [BOB]);
    }

    #[test]
    fn no_file_no_rule_and_other_key_types_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SopsConfig::load(dir.path()).unwrap().is_none());
        let config = config("creation_rules:\n- path_regex: secrets\n  pgp: ABCDEF\n")
            .unwrap()
            .unwrap();
        assert!(config.rule_for("umbrella-state/a/b.yaml").is_none());
        let error = config
            .rule_for("secrets.yaml")
            .unwrap()
            .recipients()
            .unwrap_err();
        assert!(
            error.contains("creation rule 1 (path_regex 'secrets') names pgp keys"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_regex_or_recipient_names_the_file_rule_and_field() {
        let error = config("creation_rules:\n- path_regex: '('\n  age: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(".sops.yaml") && error.contains("creation_rules[0].path_regex"),
            "{error}"
        );
        let error = config("creation_rules:\n- age: notakey\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("creation_rules[0].age") && error.contains("notakey"),
            "{error}"
        );
    }
}
