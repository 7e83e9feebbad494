//! The images lock: every image a release uses, pinned to a digest, with where it came from.
//! It is kbld's `--lock-output` shape (a `kind: Config` of preresolved `overrides`), so kbld can
//! read it too; `origins` follows kbld's `kbld.k14s.io/images` annotation (kbld ignores it).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::formats::sources::API_VERSION;
use crate::formats::yaml::{self, YamlError};

/// Where a pinned image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// Built from this context directory of the repository.
    Local { path: String },
    /// The repository commit the context was built from.
    Git {
        #[serde(rename = "remoteURL", skip_serializing_if = "Option::is_none", default)]
        remote_url: Option<String>,
        sha: String,
        dirty: bool,
    },
    /// umbrella's content key of the build, and the tag that carries it.
    Umbrella {
        #[serde(rename = "contentKey")]
        content_key: String,
        tag: String,
    },
    /// Resolved from a tag by asking its registry.
    Resolved { url: String, tag: String },
    /// Given by an override of `sources.yaml`, used as is.
    Preresolved { url: String },
}

/// One pinned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedImage {
    /// The reference as the chart writes it.
    pub image: String,
    /// `REPOSITORY@sha256:...`.
    pub new_image: String,
    #[serde(default)]
    pub preresolved: bool,
    // kbld writes each origin as a one-key map (`- local: {path: ..}`), not a YAML tag.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "yaml_serde::with::singleton_map_recursive"
    )]
    pub origins: Vec<Origin>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockDocument {
    api_version: String,
    kind: String,
    #[serde(default)]
    overrides: Vec<LockedImage>,
}

/// A set of pinned images, always sorted by `image`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesLock {
    images: Vec<LockedImage>,
}

impl ImagesLock {
    pub fn new(mut images: Vec<LockedImage>) -> Self {
        images.sort_by(|a, b| a.image.cmp(&b.image));
        images.dedup_by(|a, b| a.image == b.image);
        ImagesLock { images }
    }

    pub fn images(&self) -> &[LockedImage] {
        &self.images
    }

    /// Replaces (or adds) the entries for the same images.
    pub fn merge(self, newer: ImagesLock) -> ImagesLock {
        let mut images = newer.images;
        images.extend(self.images);
        // `new` keeps the first of equal images after a stable sort: the newer one.
        ImagesLock::new(images)
    }

    /// Reads a lock file; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Self, YamlError> {
        if !path.exists() {
            return Ok(ImagesLock::default());
        }
        let document: LockDocument = yaml::read_single(path)?;
        if document.api_version != API_VERSION || document.kind != "Config" {
            return Err(YamlError::invalid(
                path,
                format!("expected apiVersion {API_VERSION}, kind Config"),
            ));
        }
        Ok(ImagesLock::new(document.overrides))
    }

    /// The YAML text: the same images always give the same bytes.
    pub fn to_yaml(&self) -> String {
        let document = LockDocument {
            api_version: API_VERSION.to_string(),
            kind: "Config".to_string(),
            overrides: self.images.clone(),
        };
        yaml_serde::to_string(&document).unwrap_or_default()
    }

    /// Writes the lock atomically: a complete new file replaces the old one, or nothing changes.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, self.to_yaml().as_bytes())
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &str, digest: char) -> LockedImage {
        LockedImage {
            image: image.into(),
            new_image: format!("r/{image}@sha256:{}", digest.to_string().repeat(64)),
            preresolved: true,
            origins: vec![Origin::Local {
                path: format!("services/{image}"),
            }],
        }
    }

    #[test]
    fn sorted_deterministic_and_kbld_shaped() {
        let lock = ImagesLock::new(vec![entry("b", '2'), entry("a", '1')]);
        let text = lock.to_yaml();
        assert_eq!(
            text,
            ImagesLock::new(vec![entry("a", '1'), entry("b", '2')]).to_yaml()
        );
        assert!(
            text.starts_with(
                "apiVersion: kbld.k14s.io/v1alpha1\nkind: Config\noverrides:\n- image: a\n"
            ),
            "{text}"
        );
        assert!(text.contains("preresolved: true"));
        assert!(text.contains("- local:\n      path: services/a"), "{text}");
    }

    #[test]
    fn round_trips_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/images.lock.yaml");
        let lock = ImagesLock::new(vec![
            entry("a", '1'),
            LockedImage {
                origins: vec![Origin::Git {
                    remote_url: Some("https://example/repo.git".into()),
                    sha: "abc".into(),
                    dirty: false,
                }],
                ..entry("b", '2')
            },
        ]);
        lock.write(&path).unwrap();
        let read = ImagesLock::read(&path).unwrap();
        assert_eq!(read, lock);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("remoteURL: https://example/repo.git")
        );
        let merged = read.merge(ImagesLock::new(vec![entry("b", '3'), entry("c", '4')]));
        let images: Vec<&str> = merged
            .images()
            .iter()
            .map(|i| i.new_image.as_str())
            .collect();
        assert_eq!(images.len(), 3);
        assert!(images[1].ends_with(&"3".repeat(64)));
    }

    #[test]
    fn missing_file_is_empty() {
        assert_eq!(
            ImagesLock::read(Path::new("/nonexistent/lock.yaml")).unwrap(),
            ImagesLock::default()
        );
    }
}
