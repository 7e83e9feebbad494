//! Pinning: each distinct image reference becomes `REPOSITORY@sha256:...`, by kbld's order —
//! an override, then a built image from the images lock, then a reference already pinned by
//! digest (left alone), then the registry's answer to a manifest HEAD for its tag.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::StreamExt;

use crate::adapters::registry::{self, Clients};
use crate::adapters::retry::Retrier;
use crate::formats::image_ref::ImageRef;
use crate::formats::images_lock::{ImagesLock, LockedImage, Origin};
use crate::formats::sources::KbldConfig;

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
    /// Not an image reference.
    Invalid { reason: String },
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
        let pinned = ImageRef::parse(&over.new_image).is_ok_and(|r| r.digest.is_some());
        return if over.preresolved || pinned {
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
    let parsed = match ImageRef::parse(reference) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Decision::Invalid {
                reason: e.to_string(),
            };
        }
    };
    let built = lock
        .images()
        .iter()
        .find(|e| e.image == reference)
        .or_else(|| lock.images().iter().find(|e| e.image == parsed.name()));
    if let Some(entry) = built {
        return Decision::Known {
            pinned: entry.new_image.clone(),
            origins: entry.origins.clone(),
        };
    }
    if parsed.digest.is_some() {
        return Decision::Known {
            pinned: reference.to_string(),
            origins: Vec::new(),
        };
    }
    Decision::Lookup {
        lookup: reference.to_string(),
    }
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

/// A registry's answer for one lookup: the pinned reference and the tag it was resolved from.
type Answers = HashMap<String, Result<(String, String), String>>;

/// Resolves every decision, asking registries concurrently (each distinct lookup once).
pub async fn resolve(
    decisions: BTreeMap<String, Decision>,
    concurrency: usize,
    retrier: &Retrier,
) -> Result<Pinning, Vec<Unresolved>> {
    let lookups: BTreeSet<String> = decisions
        .values()
        .filter_map(|d| match d {
            Decision::Lookup { lookup } => Some(lookup.clone()),
            Decision::Known { .. } | Decision::Invalid { .. } => None,
        })
        .collect();
    let answers = ask_all(&lookups, concurrency, retrier).await;
    let mut images = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (reference, decision) in decisions {
        match settle(decision, &answers) {
            Ok((new_image, origins)) => {
                let entry = LockedImage {
                    image: reference.clone(),
                    new_image,
                    preresolved: true,
                    origins,
                };
                images.insert(reference, entry);
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

/// Every lookup's answer, `concurrency` requests at a time.
async fn ask_all(lookups: &BTreeSet<String>, concurrency: usize, retrier: &Retrier) -> Answers {
    let registries = connect_registries(lookups, retrier).await;
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
        .await
}

/// The pinned reference and its origins, or why there is none.
fn settle(decision: Decision, answers: &Answers) -> Result<(String, Vec<Origin>), String> {
    match decision {
        Decision::Known { pinned, origins } => Ok((pinned, origins)),
        Decision::Invalid { reason } => Err(reason),
        Decision::Lookup { lookup } => {
            let answer = answers.get(&lookup).cloned();
            let (pinned, tag) =
                answer.unwrap_or_else(|| Err(format!("{lookup}: not looked up")))?;
            Ok((pinned, vec![Origin::Resolved { url: lookup, tag }]))
        }
    }
}

async fn connect_registries(lookups: &BTreeSet<String>, retrier: &Retrier) -> Clients {
    let hosts = lookups
        .iter()
        .filter_map(|l| ImageRef::parse(l).ok().map(|r| r.registry))
        .collect();
    registry::connect_all(hosts, retrier).await
}

/// The pinned reference and the tag it was resolved from.
async fn ask(registries: &Clients, lookup: &str) -> Result<(String, String), String> {
    let image = ImageRef::parse(lookup).map_err(|e| e.to_string())?;
    let registry = registries
        .get(&image.registry)
        .ok_or_else(|| format!("no client for {}", image.registry))?
        .as_ref()
        .map_err(Clone::clone)?;
    let tag = image.tag_or_latest();
    let digest = registry
        .manifest_digest(&image.repository, tag)
        .await
        .map_err(|e| e.to_string())?;
    Ok((image.pinned(&digest), tag.to_string()))
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
}
