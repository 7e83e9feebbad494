//! `umbrella-chart/image-policies.yaml`: which tag each image follows, in Flux's vocabulary.
//!
//! ```yaml
//! apiVersion: umbrella.dev/v1alpha1
//! kind: ImagePolicies
//! policies:
//! - name: order-service-staging
//!   image: registry.example/shop/order-service
//!   filterTags: {pattern: '^stg-(?P<ts>[0-9]+)$', extract: '$ts'}
//!   policy: {numerical: {order: asc}}
//! ```

use std::path::{Path, PathBuf};

use regex::Regex;
use semver::{Version, VersionReq};
use serde::Deserialize;

use crate::formats::image_ref::ImageRef;
use crate::formats::yaml::{self, YamlError};

/// The file, beside the chart's values.
pub const POLICIES_FILE: &str = "image-policies.yaml";
const API_VERSION: &str = "umbrella.dev/v1alpha1";
const KIND: &str = "ImagePolicies";

/// Which way a list is ordered; the last is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A semver range in Masterminds' syntax (Flux's): comparators separated by spaces or commas,
/// alternatives by `||`, hyphen ranges `1.2 - 1.4`, a bare version meaning exactly it.
#[derive(Debug, Clone)]
pub struct Range {
    alternatives: Vec<VersionReq>,
}

impl Range {
    pub fn parse(text: &str) -> Result<Range, String> {
        let alternatives = text
            .split("||")
            .map(|alternative| {
                let req = cargo_syntax(alternative.trim());
                VersionReq::parse(&req).map_err(|e| format!("'{}': {e}", alternative.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Range { alternatives })
    }

    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|req| req.matches(version))
    }
}

/// Masterminds' comparators as the `semver` crate reads them.
fn cargo_syntax(alternative: &str) -> String {
    let tokens: Vec<&str> = alternative
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    if let [low, "-", high] = tokens.as_slice() {
        return format!(">={}, <={}", unprefixed(low), unprefixed(high));
    }
    let mut comparators = Vec::new();
    let mut pending_operator = String::new();
    for token in tokens {
        if token.chars().all(|c| "<>=~^!".contains(c)) {
            pending_operator = token.to_string();
            continue;
        }
        let operator_end = token
            .find(|c: char| !"<>=~^".contains(c))
            .unwrap_or(token.len());
        let (operator, version) = token.split_at(operator_end);
        let operator = if operator.is_empty() {
            std::mem::take(&mut pending_operator)
        } else {
            operator.to_string()
        };
        let version = unprefixed(version);
        let wildcard = version.contains(['x', 'X', '*']);
        let operator = if operator.is_empty() && !wildcard {
            "=".to_string()
        } else {
            operator
        };
        comparators.push(format!("{operator}{version}"));
    }
    comparators.join(", ")
}

fn unprefixed(version: &str) -> &str {
    version.strip_prefix(['v', 'V']).unwrap_or(version)
}

/// A tag as a version: `X.Y.Z` with an optional `v`, pre-release and build metadata.
pub fn version_of(tag: &str) -> Option<Version> {
    Version::parse(unprefixed(tag)).ok()
}

/// How a policy orders its candidates.
#[derive(Debug, Clone)]
pub enum Rule {
    Semver(Range),
    Alphabetical(Order),
    Numerical(Order),
}

/// A policy's filter: the tags matching `pattern`, ordered by what `extract` makes of them.
#[derive(Debug, Clone)]
pub struct Filter {
    pub pattern: Regex,
    /// `$name` / `${name}` / `$1` template over the match; the whole tag when absent.
    pub extract: Option<String>,
}

impl Filter {
    /// What is ordered for `tag`, if the tag is a candidate.
    pub fn key(&self, tag: &str) -> Option<String> {
        let captures = self.pattern.captures(tag)?;
        Some(match &self.extract {
            Some(template) => {
                let mut key = String::new();
                captures.expand(template, &mut key);
                key
            }
            None => tag.to_string(),
        })
    }
}

/// One policy: the repository it follows and how it picks a tag.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    pub name: String,
    /// The repository, as written (`registry.example/shop/order-service`).
    pub image: String,
    pub filter: Option<Filter>,
    pub rule: Rule,
}

/// Every policy of a repository's `image-policies.yaml`.
#[derive(Debug, Clone)]
pub struct ImagePolicies {
    pub file: PathBuf,
    pub policies: Vec<ImagePolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    name: String,
    image: String,
    filter_tags: Option<RawFilter>,
    policy: RawRule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    pattern: String,
    extract: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    semver: Option<RawSemver>,
    alphabetical: Option<RawOrder>,
    numerical: Option<RawOrder>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSemver {
    range: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOrder {
    order: Option<String>,
}

impl ImagePolicies {
    /// Reads and checks `chart_dir/image-policies.yaml`; `None` when there is none. Every
    /// problem names the file, the line of its policy and the field.
    pub fn load(chart_dir: &Path) -> Result<Option<ImagePolicies>, YamlError> {
        let file = chart_dir.join(POLICIES_FILE);
        if !file.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).map_err(|source| YamlError::Read {
            path: file.clone(),
            source,
        })?;
        let raw: RawFile = yaml::parse_documents(&file, &text)?
            .pop()
            .ok_or_else(|| YamlError::invalid(&file, "empty: expected kind ImagePolicies"))?;
        if raw.api_version != API_VERSION || raw.kind != KIND {
            return Err(YamlError::invalid(
                &file,
                format!("apiVersion must be {API_VERSION} and kind {KIND}"),
            ));
        }
        let mut policies: Vec<ImagePolicy> = Vec::new();
        for (index, raw) in raw.policies.into_iter().enumerate() {
            let line = line_of(&text, &raw.name);
            let name = raw.name.clone();
            let located = |message: String| YamlError::Invalid {
                path: file.clone(),
                line,
                column: None,
                message: format!("policies[{index}] ({name}): {message}"),
            };
            if policies.iter().any(|p| p.name == raw.name) {
                return Err(located("name: a second policy of this name".into()));
            }
            policies.push(ImagePolicy::of(raw).map_err(located)?);
        }
        Ok(Some(ImagePolicies { file, policies }))
    }

    pub fn get(&self, name: &str) -> Option<&ImagePolicy> {
        self.policies.iter().find(|p| p.name == name)
    }
}

impl ImagePolicy {
    fn of(raw: RawPolicy) -> Result<ImagePolicy, String> {
        if raw.name.is_empty() {
            return Err("name: empty".into());
        }
        let image = ImageRef::parse(&raw.image).map_err(|e| format!("image: {e}"))?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(format!(
                "image: '{}' names a tag or digest; give the repository alone",
                raw.image
            ));
        }
        let filter = raw.filter_tags.map(Filter::of).transpose()?;
        Ok(ImagePolicy {
            name: raw.name,
            image: raw.image,
            filter,
            rule: Rule::of(raw.policy)?,
        })
    }
}

impl Filter {
    fn of(raw: RawFilter) -> Result<Filter, String> {
        let pattern = Regex::new(&raw.pattern).map_err(|e| format!("filterTags.pattern: {e}"))?;
        if let Some(extract) = &raw.extract {
            let groups: Vec<&str> = pattern.capture_names().flatten().collect();
            let named =
                Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?").map_err(|e| e.to_string())?;
            if let Some(unknown) = named
                .captures_iter(extract)
                .filter_map(|c| c.get(1))
                .map(|m| m.as_str())
                .find(|name| !groups.contains(name))
            {
                return Err(format!(
                    "filterTags.extract: '${unknown}' is not a named group of the pattern"
                ));
            }
        }
        Ok(Filter {
            pattern,
            extract: raw.extract,
        })
    }
}

impl Rule {
    fn of(raw: RawRule) -> Result<Rule, String> {
        let order = |raw: RawOrder, kind: &str| match raw.order.as_deref() {
            None | Some("asc") => Ok(Order::Asc),
            Some("desc") => Ok(Order::Desc),
            Some(other) => Err(format!(
                "policy.{kind}.order: '{other}' is neither asc nor desc"
            )),
        };
        match (raw.semver, raw.alphabetical, raw.numerical) {
            (Some(semver), None, None) => Range::parse(&semver.range)
                .map(Rule::Semver)
                .map_err(|e| format!("policy.semver.range: {e}")),
            (None, Some(alphabetical), None) => {
                order(alphabetical, "alphabetical").map(Rule::Alphabetical)
            }
            (None, None, Some(numerical)) => order(numerical, "numerical").map(Rule::Numerical),
            _ => Err("policy: exactly one of semver, alphabetical, numerical".into()),
        }
    }
}

/// The 1-based line that declares policy `name`.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix("name:")
                .is_some_and(|rest| rest.trim().trim_matches(['"', '\'']) == name)
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Option<ImagePolicies>, YamlError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(POLICIES_FILE), text).unwrap();
        ImagePolicies::load(dir.path())
    }

    const HEAD: &str = "apiVersion: umbrella.dev/v1alpha1\nkind: ImagePolicies\npolicies:\n";

    #[test]
    fn policies_of_each_kind_are_read() {
        let policies = load(&format!(
            "{HEAD}- name: staging\n  image: r.example/shop/app\n  filterTags:\n    pattern: '^stg-(?P<ts>[0-9]+)$'\n    extract: '$ts'\n  policy:\n    numerical: {{order: asc}}\n- name: release\n  image: r.example/shop/app\n  policy:\n    semver: {{range: '~0.4'}}\n- name: names\n  image: r.example/x\n  policy:\n    alphabetical: {{order: desc}}\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(policies.policies.len(), 3);
        assert!(matches!(
            policies.get("staging").unwrap().rule,
            Rule::Numerical(Order::Asc)
        ));
        assert!(matches!(
            policies.get("release").unwrap().rule,
            Rule::Semver(_)
        ));
        assert!(matches!(
            policies.get("names").unwrap().rule,
            Rule::Alphabetical(Order::Desc)
        ));
    }

    #[test]
    fn a_bad_policy_is_named_with_its_line_and_field() {
        let cases = [
            (
                "- name: a\n  image: r.example/app\n  filterTags: {pattern: '(['}\n  policy: {numerical: {}}\n",
                "filterTags.pattern",
            ),
            (
                "- name: a\n  image: r.example/app\n  filterTags: {pattern: '^(?P<ts>.*)$', extract: '$tss'}\n  policy: {numerical: {}}\n",
                "'$tss' is not a named group",
            ),
            (
                "- name: a\n  image: r.example/app\n  policy: {semver: {range: 'banana'}}\n",
                "policy.semver.range",
            ),
            (
                "- name: a\n  image: r.example/app:1.0\n  policy: {semver: {range: '*'}}\n",
                "names a tag or digest",
            ),
            (
                "- name: a\n  image: r.example/app\n  policy: {}\n",
                "exactly one of",
            ),
            (
                "- name: a\n  image: r.example/app\n  policy: {alphabetical: {order: up}}\n",
                "neither asc nor desc",
            ),
        ];
        for (policy, expected) in cases {
            let text = format!(
                "{HEAD}- name: first\n  image: r.example/first\n  policy: {{semver: {{range: '*'}}}}\n{policy}"
            );
            let error = load(&text).unwrap_err().to_string();
            assert!(error.contains(&format!("{POLICIES_FILE}:7")), "{error}");
            assert!(
                error.contains("policies[1] (a)") && error.contains(expected),
                "{error}"
            );
        }
        let error = load(&format!("{HEAD}- name: a\n  image: r.example/app\n  policy: {{semver: {{range: '*'}}}}\n  extra: 1\n")).unwrap_err().to_string();
        assert!(error.contains("extra"), "{error}");
    }
}
