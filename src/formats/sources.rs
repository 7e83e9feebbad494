//! `sources.yaml` in kbld's configuration format: what to build, where to push it, which images
//! to override, and where image references hide in rendered YAML.
//!
//! Every document carries `apiVersion: kbld.k14s.io/v1alpha1` and one of the kinds `Config`,
//! `Sources`, `ImageDestinations`, `ImageOverrides` or `ImageKeys`. Errors name the file, the line
//! and what is wrong, because a typo here otherwise shows up as an image that never gets built.

use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::image_ref::ImageRef;
use super::yaml::{self, YamlError};

/// The apiVersion every kbld configuration document carries.
pub const API_VERSION: &str = "kbld.k14s.io/v1alpha1";

/// Which images an entry applies to: one exact reference, or every tag and digest of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageMatch {
    Image(String),
    Repo(String),
}

impl ImageMatch {
    /// Whether `reference` (as written in YAML) is selected.
    pub fn matches(&self, reference: &str) -> bool {
        match self {
            ImageMatch::Image(image) => image == reference,
            ImageMatch::Repo(repo) => ImageRef::parse(reference).is_ok_and(|r| r.name() == repo),
        }
    }

    /// The image or repository as written.
    pub fn as_str(&self) -> &str {
        match self {
            ImageMatch::Image(s) | ImageMatch::Repo(s) => s,
        }
    }
}

impl ImageMatch {
    /// kbld's selector pair: exactly one of `image` and `imageRepo`.
    fn from_fields(image: Option<String>, image_repo: Option<String>) -> Result<Self, String> {
        match (image, image_repo) {
            (Some(image), None) if !image.is_empty() => Ok(ImageMatch::Image(image)),
            (None, Some(repo)) if !repo.is_empty() => Ok(ImageMatch::Repo(repo)),
            (Some(_), Some(_)) => Err("set only one of `image` and `imageRepo`".into()),
            _ => Err("`image` or `imageRepo` is required and must not be empty".into()),
        }
    }
}

/// Options of the Docker builder (`docker.build`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerBuild {
    /// Dockerfile path relative to the context (default `Dockerfile`).
    pub file: Option<String>,
    pub target: Option<String>,
    pub pull: Option<bool>,
    pub no_cache: Option<bool>,
    pub buildkit: Option<bool>,
    #[serde(default)]
    pub raw_options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDockerBuilder {
    #[serde(default)]
    build: DockerBuild,
    buildx: Option<yaml_serde::Value>,
}

/// A source image: built from `path` and pushed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub image: ImageMatch,
    pub path: String,
    pub docker: DockerBuild,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSource {
    image: Option<String>,
    image_repo: Option<String>,
    path: Option<String>,
    docker: Option<RawDockerBuilder>,
    pack: Option<yaml_serde::Value>,
    kubectl_buildkit: Option<yaml_serde::Value>,
    ko: Option<yaml_serde::Value>,
    bazel: Option<yaml_serde::Value>,
}

impl TryFrom<RawSource> for Source {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        let image = ImageMatch::from_fields(raw.image, raw.image_repo)?;
        let name = image.as_str().to_string();
        let path = raw
            .path
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("source {name}: `path` (the build context) is required"))?;
        for (field, present) in [
            ("pack", raw.pack.is_some()),
            ("kubectlBuildkit", raw.kubectl_buildkit.is_some()),
            ("ko", raw.ko.is_some()),
            ("bazel", raw.bazel.is_some()),
        ] {
            if present {
                return Err(format!(
                    "source {name}: builder `{field}` is not supported by umbrella; use `docker.build`"
                ));
            }
        }
        let docker = match raw.docker {
            Some(RawDockerBuilder {
                buildx: Some(_), ..
            }) => {
                return Err(format!(
                    "source {name}: builder `docker.buildx` is not supported by umbrella; use `docker.build` (with `buildkit: true` for BuildKit)"
                ));
            }
            Some(builder) => builder.build,
            None => DockerBuild::default(),
        };
        Ok(Source {
            image,
            path,
            docker,
        })
    }
}

/// Where a built image is pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub image: ImageMatch,
    /// The repository to push to; kbld defaults it to `image`.
    pub new_image: Option<String>,
    /// Extra tags pushed beside the content tag.
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDestination {
    image: Option<String>,
    image_repo: Option<String>,
    new_image: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

impl TryFrom<RawDestination> for Destination {
    type Error = String;

    fn try_from(raw: RawDestination) -> Result<Self, String> {
        Ok(Destination {
            image: ImageMatch::from_fields(raw.image, raw.image_repo)?,
            new_image: raw.new_image,
            tags: raw.tags,
        })
    }
}

/// An image replaced by another one before any resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub image: ImageMatch,
    pub new_image: String,
    /// Use `new_image` as is, without asking its registry.
    pub preresolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOverride {
    image: Option<String>,
    image_repo: Option<String>,
    new_image: Option<String>,
    #[serde(default)]
    preresolved: bool,
    tag_selection: Option<yaml_serde::Value>,
    // Written by kbld's and umbrella's lock outputs; informational only.
    #[serde(rename = "origins", default)]
    _origins: Option<IgnoredAny>,
    #[serde(rename = "metadata", default)]
    _metadata: Option<IgnoredAny>,
}

impl TryFrom<RawOverride> for Override {
    type Error = String;

    fn try_from(raw: RawOverride) -> Result<Self, String> {
        let image = ImageMatch::from_fields(raw.image, raw.image_repo)?;
        if raw.tag_selection.is_some() {
            return Err(format!(
                "override {}: `tagSelection` is not supported by umbrella; pin `newImage` instead",
                image.as_str()
            ));
        }
        let new_image = raw
            .new_image
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("override {}: `newImage` is required", image.as_str()))?;
        Ok(Override {
            image,
            new_image,
            preresolved: raw.preresolved,
        })
    }
}

/// One step of a key path: a map key, every list item, or one list item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PathPart {
    Key(String),
    AllIndexes {
        #[serde(rename = "allIndexes")]
        all_indexes: bool,
    },
    Index {
        index: usize,
    },
}

/// Which keys a search rule looks at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyMatcher {
    pub name: Option<String>,
    pub path: Option<Vec<PathPart>>,
}

/// Which values a search rule looks at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatcher {
    pub image: Option<String>,
    pub image_repo: Option<String>,
}

/// How a matched value is rewritten: whole, not at all, or as embedded JSON/YAML text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    pub none: Option<Empty>,
    pub entire_value: Option<Empty>,
    pub json: Option<NestedRules>,
    pub yaml: Option<NestedRules>,
}

/// An empty map (`{}`), as kbld writes the strategies that take no options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Search rules applied inside an embedded JSON or YAML document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NestedRules {
    #[serde(default)]
    pub search_rules: Vec<SearchRule>,
}

/// A kbld search rule: where image references are found besides keys named `image`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchRule {
    pub key_matcher: Option<KeyMatcher>,
    pub value_matcher: Option<ValueMatcher>,
    pub update_strategy: Option<UpdateStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDocument {
    api_version: String,
    kind: String,
    // Accepted as kbld accepts them; umbrella has no use for either.
    #[serde(rename = "metadata", default)]
    _metadata: Option<IgnoredAny>,
    #[serde(rename = "minimumRequiredVersion", default)]
    _minimum_required_version: Option<IgnoredAny>,
    #[serde(default)]
    sources: Vec<Source>,
    #[serde(default)]
    destinations: Vec<Destination>,
    #[serde(default)]
    overrides: Vec<Override>,
    #[serde(default)]
    search_rules: Vec<SearchRule>,
    #[serde(default)]
    keys: Vec<String>,
}

// serde's `try_from` lets validation errors keep the YAML line of the entry they are about.
macro_rules! deserialize_via {
    ($($target:ty => $raw:ty),*) => {$(
        impl<'de> Deserialize<'de> for $target {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$target>::try_from(<$raw>::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_via!(Source => RawSource, Destination => RawDestination, Override => RawOverride);

/// The whole configuration, merged from every document of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KbldConfig {
    pub sources: Vec<Source>,
    pub destinations: Vec<Destination>,
    pub overrides: Vec<Override>,
    pub search_rules: Vec<SearchRule>,
    /// Extra key names that hold image references, besides `image`.
    pub keys: Vec<String>,
}

impl KbldConfig {
    /// Reads and validates a kbld configuration file.
    pub fn load(path: &Path) -> Result<Self, YamlError> {
        let documents: Vec<RawDocument> = yaml::read_documents(path)?;
        let mut config = KbldConfig::default();
        for (index, document) in documents.into_iter().enumerate() {
            config.merge(document).map_err(|message| {
                YamlError::invalid(path, format!("document {}: {message}", index + 1))
            })?;
        }
        config
            .check_sources_have_destinations()
            .map_err(|m| YamlError::invalid(path, m))?;
        Ok(config)
    }

    fn merge(&mut self, document: RawDocument) -> Result<(), String> {
        if document.api_version != API_VERSION {
            return Err(format!(
                "apiVersion `{}` is not a kbld configuration (expected `{API_VERSION}`)",
                document.api_version
            ));
        }
        let allowed: &[&str] = match document.kind.as_str() {
            "Config" => &[
                "sources",
                "destinations",
                "overrides",
                "searchRules",
                "keys",
            ],
            "Sources" => &["sources"],
            "ImageDestinations" => &["destinations"],
            "ImageOverrides" => &["overrides"],
            "ImageKeys" => &["keys"],
            other => {
                return Err(format!(
                    "kind `{other}` is not one of Config, Sources, ImageDestinations, ImageOverrides, ImageKeys"
                ));
            }
        };
        let present = [
            ("sources", !document.sources.is_empty()),
            ("destinations", !document.destinations.is_empty()),
            ("overrides", !document.overrides.is_empty()),
            ("searchRules", !document.search_rules.is_empty()),
            ("keys", !document.keys.is_empty()),
        ];
        if let Some((field, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
            return Err(format!("kind {} cannot hold `{field}`", document.kind));
        }
        self.sources.extend(document.sources);
        self.destinations.extend(document.destinations);
        self.overrides.extend(document.overrides);
        self.search_rules.extend(document.search_rules);
        self.keys.extend(document.keys);
        Ok(())
    }

    fn check_sources_have_destinations(&self) -> Result<(), String> {
        for source in &self.sources {
            let name = source.image.as_str();
            if self.destination_for(name).is_none() {
                return Err(format!(
                    "source {name} has no ImageDestination: umbrella pushes every built image, add one with `newImage: REGISTRY/REPO`"
                ));
            }
        }
        Ok(())
    }

    /// The destination whose selector matches a source's image.
    pub fn destination_for(&self, image: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.image.matches(image))
    }

    /// Every registry host that built images are pushed to, sorted and without repeats.
    pub fn destination_registries(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .destinations
            .iter()
            .filter_map(|d| {
                ImageRef::parse(d.new_image.as_deref().unwrap_or(d.image.as_str()))
                    .ok()
                    .map(|r| r.registry)
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KbldConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sources.yaml");
        std::fs::write(&path, text).unwrap();
        KbldConfig::load(&path).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    const FULL: &str = r#"
#! kbld accepts ytt-style comments too
apiVersion: kbld.k14s.io/v1alpha1
kind: Sources
sources:
- image: order-service
  path: services/order-service
  docker:
    build:
      file: build/Dockerfile
      target: runtime
      pull: false
      noCache: true
      rawOptions: ["--build-arg", "VERSION=1", "--platform", "linux/amd64"]
- imageRepo: user-service
  path: services/user-service
---
apiVersion: kbld.k14s.io/v1alpha1
kind: ImageDestinations
destinations:
- image: order-service
  newImage: 127.0.0.1:5000/umbrella/order-service
  tags: [latest, v1]
- imageRepo: user-service
  newImage: 127.0.0.1:5443/umbrella/user-service
---
apiVersion: kbld.k14s.io/v1alpha1
kind: ImageOverrides
overrides:
- image: nginx
  newImage: nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000
  preresolved: true
---
apiVersion: kbld.k14s.io/v1alpha1
kind: ImageKeys
keys: [sidecarImage]
---
apiVersion: kbld.k14s.io/v1alpha1
kind: Config
minimumRequiredVersion: 0.30.0
searchRules:
- keyMatcher:
    path: [spec, containers, {allIndexes: true}, image]
- keyMatcher:
    name: config.json
  updateStrategy:
    json:
      searchRules:
      - keyMatcher: {name: img}
- valueMatcher: {imageRepo: gcr.io/x}
  updateStrategy: {none: {}}
"#;

    #[test]
    fn reads_every_supported_field() {
        let config = parse(FULL).unwrap();
        assert_eq!(config.sources.len(), 2);
        let order = &config.sources[0];
        assert_eq!(order.image, ImageMatch::Image("order-service".into()));
        assert_eq!(order.docker.file.as_deref(), Some("build/Dockerfile"));
        assert_eq!(order.docker.target.as_deref(), Some("runtime"));
        assert_eq!(order.docker.pull, Some(false));
        assert_eq!(order.docker.no_cache, Some(true));
        assert_eq!(order.docker.raw_options.len(), 4);
        assert_eq!(
            config.sources[1].image,
            ImageMatch::Repo("user-service".into())
        );
        assert_eq!(config.destinations[0].tags, vec!["latest", "v1"]);
        assert!(config.overrides[0].preresolved);
        assert_eq!(config.keys, vec!["sidecarImage"]);
        assert_eq!(config.search_rules.len(), 3);
        assert_eq!(
            config.search_rules[0]
                .key_matcher
                .as_ref()
                .unwrap()
                .path
                .as_ref()
                .unwrap()[2],
            PathPart::AllIndexes { all_indexes: true }
        );
        assert!(
            config.search_rules[1]
                .update_strategy
                .as_ref()
                .unwrap()
                .json
                .is_some()
        );
        assert_eq!(
            config.destination_registries(),
            vec!["127.0.0.1:5000", "127.0.0.1:5443"]
        );
    }

    #[test]
    fn missing_path_names_source_and_line() {
        let err = parse(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: x\n- image: b\n",
        )
        .unwrap_err();
        // The line is where the list starts: the entry is named in the message.
        assert!(err.starts_with("DIR/sources.yaml:4:"), "{err}");
        assert!(err.contains("source b: `path`"), "{err}");
    }

    #[test]
    fn typo_in_field_is_reported_with_line() {
        let err = parse(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: x\n  docker:\n    build:\n      dockerfile: x\n",
        )
        .unwrap_err();
        assert!(err.contains("sources.yaml:8:"), "{err}");
        assert!(err.contains("dockerfile"), "{err}");
    }

    #[test]
    fn unsupported_builder_is_named() {
        let err = parse(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: x\n  pack: {build: {builder: y}}\n",
        )
        .unwrap_err();
        assert!(
            err.contains("source a: builder `pack` is not supported"),
            "{err}"
        );
    }

    #[test]
    fn wrong_kind_and_api_version() {
        let err = parse("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(err.contains("document 1: apiVersion `v1`"), "{err}");
        let err = parse("apiVersion: kbld.k14s.io/v1alpha1\nkind: Sourcez\n").unwrap_err();
        assert!(err.contains("kind `Sourcez`"), "{err}");
        let err =
            parse("apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nkeys: [a]\n").unwrap_err();
        assert!(err.contains("kind Sources cannot hold `keys`"), "{err}");
    }

    #[test]
    fn a_source_needs_a_destination() {
        let err = parse(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: x\n",
        )
        .unwrap_err();
        assert!(err.contains("source a has no ImageDestination"), "{err}");
    }

    #[test]
    fn selectors_match_images_and_repositories() {
        let repo = ImageMatch::Repo("127.0.0.1:5000/app".into());
        assert!(repo.matches("127.0.0.1:5000/app:1.0"));
        assert!(repo.matches(&format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64))));
        assert!(repo.matches("127.0.0.1:5000/app"));
        assert!(!repo.matches("127.0.0.1:5000/app2:1.0"));
        assert!(ImageMatch::Image("app".into()).matches("app"));
        assert!(!ImageMatch::Image("app".into()).matches("app:1"));
    }
}
