//! Where image references are, by kbld's rules: every string under a key named `image` at any
//! depth, plus the `keys` and `searchRules` of `sources.yaml` (by key name, by exact path, by
//! value, left alone with `none`, or inside embedded JSON/YAML text).

use serde_json::Value;

use crate::formats::manifest;
use crate::formats::sources::{ImageMatch, KbldConfig, PathPart, SearchRule, UpdateStrategy};

/// One step from an object's root to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `spec.template.spec.containers[1].image`.
pub fn field_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum KeyMatch {
    Any,
    Name(String),
    Path(Vec<PathPart>),
}

#[derive(Debug, Clone)]
enum Strategy {
    Leave,
    Entire,
    Json(Rules),
    Yaml(Rules),
}

#[derive(Debug, Clone)]
struct Rule {
    key: KeyMatch,
    value: Option<ImageMatch>,
    strategy: Strategy,
}

/// Search rules in the order they are tried: the user's, then `keys`, then `image`.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// kbld's default and nothing else: keys named `image`.
    pub fn default_only() -> Self {
        Rules::from_parts(&[], &[])
    }

    /// The rules a kbld configuration describes.
    pub fn from_config(config: &KbldConfig) -> Self {
        Rules::from_parts(&config.search_rules, &config.keys)
    }

    fn from_parts(search_rules: &[SearchRule], keys: &[String]) -> Self {
        let mut rules: Vec<Rule> = search_rules.iter().map(rule_from).collect();
        rules.extend(
            keys.iter()
                .chain(std::iter::once(&"image".to_string()))
                .map(|name| Rule {
                    key: KeyMatch::Name(name.clone()),
                    value: None,
                    strategy: Strategy::Entire,
                }),
        );
        Rules { rules }
    }

    fn nested(search_rules: &[SearchRule]) -> Self {
        if search_rules.is_empty() {
            Rules::default_only()
        } else {
            Rules::from_parts(search_rules, &[])
        }
    }
}

fn rule_from(rule: &SearchRule) -> Rule {
    let key = match &rule.key_matcher {
        Some(m) => match (&m.name, &m.path) {
            (Some(name), _) => KeyMatch::Name(name.clone()),
            (None, Some(path)) => KeyMatch::Path(path.clone()),
            (None, None) => KeyMatch::Any,
        },
        None => KeyMatch::Any,
    };
    let value = rule
        .value_matcher
        .as_ref()
        .and_then(|m| match (&m.image, &m.image_repo) {
            (Some(image), _) => Some(ImageMatch::Image(image.clone())),
            (None, Some(repo)) => Some(ImageMatch::Repo(repo.clone())),
            (None, None) => None,
        });
    let strategy = match &rule.update_strategy {
        Some(UpdateStrategy { none: Some(_), .. }) => Strategy::Leave,
        Some(UpdateStrategy {
            json: Some(nested), ..
        }) => Strategy::Json(Rules::nested(&nested.search_rules)),
        Some(UpdateStrategy {
            yaml: Some(nested), ..
        }) => Strategy::Yaml(Rules::nested(&nested.search_rules)),
        _ => Strategy::Entire,
    };
    Rule {
        key,
        value,
        strategy,
    }
}

impl Rule {
    fn matches(&self, path: &[Step], value: &str) -> bool {
        let key_ok = match &self.key {
            KeyMatch::Any => true,
            KeyMatch::Name(name) => matches!(path.last(), Some(Step::Key(k)) if k == name),
            KeyMatch::Path(parts) => path_matches(parts, path),
        };
        key_ok && self.value.as_ref().is_none_or(|m| m.matches(value))
    }
}

fn path_matches(parts: &[PathPart], path: &[Step]) -> bool {
    parts.len() == path.len()
        && parts
            .iter()
            .zip(path)
            .all(|(part, step)| match (part, step) {
                (PathPart::Key(k), Step::Key(s)) => k == s,
                (PathPart::AllIndexes { all_indexes: true }, Step::Index(_)) => true,
                (PathPart::Index { index }, Step::Index(i)) => index == i,
                _ => false,
            })
}

/// Calls `visit(field, image)` for every image reference in `value` and replaces it with what
/// `visit` returns, if anything. References inside embedded JSON/YAML text are reported with
/// the field holding the text.
pub fn rewrite(
    value: &mut Value,
    rules: &Rules,
    visit: &mut dyn FnMut(&str, &str) -> Option<String>,
) {
    walk(value, &mut Vec::new(), rules, visit);
}

/// Every image reference of `value`, with its field.
pub fn find(value: &Value, rules: &Rules) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut copy = value.clone();
    rewrite(&mut copy, rules, &mut |field, image| {
        found.push((field.to_string(), image.to_string()));
        None
    });
    found
}

fn walk(
    value: &mut Value,
    path: &mut Vec<Step>,
    rules: &Rules,
    visit: &mut dyn FnMut(&str, &str) -> Option<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(Step::Key(key.clone()));
                walk(child, path, rules, visit);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                path.push(Step::Index(index));
                walk(child, path, rules, visit);
                path.pop();
            }
        }
        Value::String(text) => {
            let Some(rule) = rules.rules.iter().find(|r| r.matches(path, text)) else {
                return;
            };
            let field = field_path(path);
            match &rule.strategy {
                Strategy::Leave => {}
                Strategy::Entire => {
                    if let Some(new) = visit(&field, text) {
                        *text = new;
                    }
                }
                Strategy::Json(nested) => {
                    rewrite_embedded(text, &field, nested, visit, Embedded::Json)
                }
                Strategy::Yaml(nested) => {
                    rewrite_embedded(text, &field, nested, visit, Embedded::Yaml)
                }
            }
        }
        _ => {}
    }
}

enum Embedded {
    Json,
    Yaml,
}

fn rewrite_embedded(
    text: &mut String,
    field: &str,
    rules: &Rules,
    visit: &mut dyn FnMut(&str, &str) -> Option<String>,
    kind: Embedded,
) {
    let parsed = match kind {
        Embedded::Json => serde_json::from_str::<Value>(text).ok(),
        Embedded::Yaml => manifest::parse_documents(text)
            .ok()
            .and_then(|mut d| (d.len() == 1).then(|| d.remove(0))),
    };
    let Some(mut inner) = parsed else {
        return;
    };
    let mut changed = false;
    rewrite(&mut inner, rules, &mut |_, image| {
        let new = visit(field, image);
        changed |= new.is_some();
        new
    });
    if changed {
        *text = match kind {
            Embedded::Json => serde_json::to_string(&inner).unwrap_or_else(|_| text.clone()),
            Embedded::Yaml => manifest::to_yaml(&inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::kbld_config as config;
    use serde_json::json;

    #[test]
    fn default_rule_finds_image_keys_at_any_depth_and_strings_only() {
        let object = json!({"spec": {"template": {"spec": {
            "initContainers": [{"image": "busybox:1"}],
            "containers": [{"image": "app"}, {"name": "x", "image": "nginx:1.2"}],
            "ephemeralContainers": [{"image": "debug"}]
        }}}, "custom": {"deep": {"image": "cr-image"}, "image": {"repository": "not-a-string"}}});
        let found = find(&object, &Rules::default_only());
        let expected = [
            ("spec.template.spec.initContainers[0].image", "busybox:1"),
            ("spec.template.spec.containers[0].image", "app"),
            ("spec.template.spec.containers[1].image", "nginx:1.2"),
            ("spec.template.spec.ephemeralContainers[0].image", "debug"),
            ("custom.deep.image", "cr-image"),
        ];
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|(f, i)| (f.as_str(), i.as_str()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn keys_paths_values_none_and_embedded_json() {
        let rules = Rules::from_config(&config(
            r#"apiVersion: kbld.k14s.io/v1alpha1
kind: Config
keys: [sidecarImage]
searchRules:
- keyMatcher: {path: [spec, tools, {allIndexes: true}, ref]}
- valueMatcher: {imageRepo: registry.example/pinned-by-hand}
  updateStrategy: {none: {}}
- keyMatcher: {name: config.json}
  updateStrategy: {json: {searchRules: [{keyMatcher: {name: img}}]}}
- valueMatcher: {image: "exact:1"}
"#,
        ));
        let mut object = json!({
            "sidecarImage": "side:1",
            "spec": {"tools": [{"ref": "tool:1"}], "image": "registry.example/pinned-by-hand:3"},
            "data": {"config.json": "{\"img\":\"emb:1\",\"other\":1}", "anything": "exact:1"}
        });
        let mut seen = Vec::new();
        rewrite(&mut object, &rules, &mut |field, image| {
            seen.push((field.to_string(), image.to_string()));
            Some(format!("{image}-pinned"))
        });
        assert_eq!(
            seen,
            vec![
                ("sidecarImage".to_string(), "side:1".to_string()),
                ("spec.tools[0].ref".into(), "tool:1".into()),
                ("data.config.json".into(), "emb:1".into()),
                ("data.anything".into(), "exact:1".into()),
            ]
        );
        assert_eq!(
            object["spec"]["image"], "registry.example/pinned-by-hand:3",
            "`none` leaves it alone"
        );
        assert_eq!(
            object["data"]["config.json"],
            "{\"img\":\"emb:1-pinned\",\"other\":1}"
        );
        assert_eq!(object["spec"]["tools"][0]["ref"], "tool:1-pinned");
    }
}
