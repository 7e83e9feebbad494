//! Pinning: each distinct image reference becomes `REPOSITORY@sha256:...`, by kbld's order —
//! an override, then a built image from the images lock, then a reference already pinned by
//! digest (left alone), then the registry's answer to a manifest HEAD for its tag.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;

use crate::credentials::credential_for;
use crate::lock::{ImagesLock, LockedImage, Origin};
use crate::registry::{Registry, split_repository};
use crate::sources::{KbldConfig, repository_of};

/// How one reference is pinned, before any network call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Known without asking: an override, a built image, or already a digest.
    Known {
        pinned: String,
        origins: Vec<Origin>,
    },
    /// Ask the registry for the digest of `repository:tag` (`lookup` may differ from the
    /// reference when an override points elsewhere).
    Lookup { lookup: String },
}

/// Decides for every distinct reference how it is pinned.
pub fn decide(
    references: &BTreeSet<String>,
    config: &KbldConfig,
    lock: &ImagesLock,
) -> BTreeMap<String, Decision> {
    references
        .iter()
        .map(|r| (r.clone(), decide_one(r, config, lock)))
        .collect()
}

fn decide_one(reference: &str, config: &KbldConfig, lock: &ImagesLock) -> Decision {
    if let Some(over) = config.overrides.iter().find(|o| o.image.matches(reference)) {
        return if over.preresolved || over.new_image.contains("@sha256:") {
            Decision::Known {
                pinned: over.new_image.clone(),
                origins: vec![Origin::Preresolved {
                    url: over.new_image.clone(),
                }],
            }
        } else {
            Decision::Lookup {
                lookup: over.new_image.clone(),
            }
        };
    }
    let built = lock
        .images()
        .iter()
        .find(|e| e.image == reference)
        .or_else(|| {
            lock.images()
                .iter()
                .find(|e| e.image == repository_of(reference))
        });
    if let Some(entry) = built {
        return Decision::Known {
            pinned: entry.new_image.clone(),
            origins: entry.origins.clone(),
        };
    }
    if reference.contains("@sha256:") {
        return Decision::Known {
            pinned: reference.to_string(),
            origins: Vec::new(),
        };
    }
    Decision::Lookup {
        lookup: reference.to_string(),
    }
}

/// The tag of a reference (`latest` when it names none).
pub fn tag_of(reference: &str) -> &str {
    let repository = repository_of(reference);
    reference[repository.len()..]
        .strip_prefix(':')
        .map_or("latest", |rest| rest.split('@').next().unwrap_or(rest))
}

/// A reference that could not be pinned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub reference: String,
    pub reason: String,
}

/// What pinning produced: an entry per reference, and how many registry lookups it took.
#[derive(Debug, Clone)]
pub struct Pinning {
    pub images: BTreeMap<String, LockedImage>,
    pub lookups: usize,
}

/// Resolves every decision, asking registries concurrently (each distinct lookup once).
pub async fn resolve(
    decisions: BTreeMap<String, Decision>,
    concurrency: usize,
) -> Result<Pinning, Vec<Unresolved>> {
    let lookups: BTreeSet<String> = decisions
        .values()
        .filter_map(|d| match d {
            Decision::Lookup { lookup } => Some(lookup.clone()),
            Decision::Known { .. } => None,
        })
        .collect();
    let registries = connect_registries(&lookups).await;
    let answers: HashMap<String, Result<String, String>> =
        futures_util::stream::iter(lookups.iter().cloned())
            .map(|lookup| {
                let registries = &registries;
                async move {
                    let answer = ask(registries, &lookup).await;
                    (lookup, answer)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut images = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (reference, decision) in decisions {
        let entry = match decision {
            Decision::Known { pinned, origins } => Ok((pinned, origins)),
            Decision::Lookup { lookup } => match &answers[&lookup] {
                Ok(digest) => Ok((
                    format!("{}@{digest}", repository_of(&lookup)),
                    vec![Origin::Resolved {
                        url: lookup.clone(),
                        tag: tag_of(&lookup).to_string(),
                    }],
                )),
                Err(reason) => Err(reason.clone()),
            },
        };
        match entry {
            Ok((new_image, origins)) => {
                images.insert(
                    reference.clone(),
                    LockedImage {
                        image: reference,
                        new_image,
                        preresolved: true,
                        origins,
                    },
                );
            }
            Err(reason) => unresolved.push(Unresolved { reference, reason }),
        }
    }
    if unresolved.is_empty() {
        Ok(Pinning {
            images,
            lookups: lookups.len(),
        })
    } else {
        Err(unresolved)
    }
}

type Registries = HashMap<String, Result<Arc<Registry>, String>>;

async fn connect_registries(lookups: &BTreeSet<String>) -> Registries {
    let hosts: BTreeSet<String> = lookups
        .iter()
        .map(|l| split_repository(repository_of(l)).0)
        .collect();
    futures_util::future::join_all(hosts.into_iter().map(|host| async move {
        let registry = match credential_for(&host) {
            Ok(credential) => Registry::connect(&host, credential)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        (host, registry)
    }))
    .await
    .into_iter()
    .collect()
}

async fn ask(registries: &Registries, lookup: &str) -> Result<String, String> {
    let (host, path) = split_repository(repository_of(lookup));
    let registry = registries
        .get(&host)
        .ok_or_else(|| format!("no client for {host}"))?
        .as_ref()
        .map_err(Clone::clone)?;
    registry
        .manifest_digest(&path, tag_of(lookup))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::kbld_config as config;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn kbld_resolution_order() {
        let config = config(&format!(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: ImageOverrides\noverrides:\n- image: nginx\n  newImage: mirror.example/nginx@{DIGEST}\n  preresolved: true\n- imageRepo: redis\n  newImage: mirror.example/redis:7\n"
        ));
        let lock = ImagesLock::new(vec![LockedImage {
            image: "app".into(),
            new_image: format!("r/app@{DIGEST}"),
            preresolved: true,
            origins: vec![Origin::Local {
                path: "services/app".into(),
            }],
        }]);
        let refs: BTreeSet<String> = [
            "nginx",
            "redis:6",
            "app",
            "app:dev",
            &format!("x/y:1@{DIGEST}"),
            "127.0.0.1:5000/z:2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let decisions = decide(&refs, &config, &lock);
        assert!(
            matches!(&decisions["nginx"], Decision::Known { pinned, .. } if pinned == &format!("mirror.example/nginx@{DIGEST}"))
        );
        assert_eq!(
            decisions["redis:6"],
            Decision::Lookup {
                lookup: "mirror.example/redis:7".into()
            }
        );
        assert!(
            matches!(&decisions["app"], Decision::Known { pinned, .. } if pinned.starts_with("r/app@"))
        );
        assert!(
            matches!(&decisions["app:dev"], Decision::Known { pinned, .. } if pinned.starts_with("r/app@"))
        );
        assert!(
            matches!(&decisions[&format!("x/y:1@{DIGEST}")], Decision::Known { pinned, .. } if pinned == &format!("x/y:1@{DIGEST}"))
        );
        assert_eq!(
            decisions["127.0.0.1:5000/z:2"],
            Decision::Lookup {
                lookup: "127.0.0.1:5000/z:2".into()
            }
        );
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("nginx"), "latest");
        assert_eq!(tag_of("nginx:1.25"), "1.25");
        assert_eq!(tag_of("127.0.0.1:5000/a/b"), "latest");
        assert_eq!(tag_of("127.0.0.1:5000/a/b:v2"), "v2");
        assert_eq!(tag_of(&format!("a:v3@{DIGEST}")), "v3");
    }
}
