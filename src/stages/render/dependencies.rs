//! The umbrella chart's dependencies: in place when `charts/` has them, else built by helm in
//! a copy of the chart, so a render writes nothing outside the state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::RenderError;
use crate::adapters::helm;
use crate::formats::chart::UmbrellaChart;

/// A copy of the chart with its dependencies built; removed when dropped.
pub(super) struct ChartCopy {
    pub dir: PathBuf,
    _scratch: TempDir,
}

/// `helm dependency build` when a dependency is missing from `charts/` or differs from
/// `Chart.lock`, in a copy of the chart (returned: render that one); nothing when everything
/// is in place (a render must not need the network).
pub(super) async fn ensure(chart: &UmbrellaChart) -> Result<Option<ChartCopy>, RenderError> {
    let locked = chart_lock_versions(&chart.dir);
    let missing = chart.metadata.dependencies.iter().any(|dep| {
        // Without a repository, `charts/<name>/` is the dependency, whatever its version:
        // helm template uses it as it is, and a build has nothing to fetch.
        if dep.repository.as_deref().is_none_or(str::is_empty) {
            return false;
        }
        let version = locked
            .get(&dep.name)
            .cloned()
            .or_else(|| dep.version.clone())
            .unwrap_or_default();
        let archive = chart
            .dir
            .join("charts")
            .join(format!("{}-{version}.tgz", dep.name));
        let unpacked = chart.dir.join("charts").join(&dep.name).join("Chart.yaml");
        !archive.is_file() && !unpacked_version_is(&unpacked, &version)
    });
    if !missing {
        return Ok(None);
    }
    // A render writes nothing outside the state: helm builds the dependencies (and its
    // Chart.lock) in a copy of the chart.
    let scratch = tempfile::tempdir().map_err(|source| RenderError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let copy = scratch.path().join(&chart.metadata.name);
    copy_dir(&chart.dir, &copy).map_err(|source| RenderError::Read {
        path: chart.dir.clone(),
        source,
    })?;
    anchor_local_repositories(chart, &copy).map_err(|source| RenderError::Write {
        path: copy.clone(),
        source,
    })?;
    helm::run(&["dependency", "build", &copy.display().to_string()]).await?;
    Ok(Some(ChartCopy {
        dir: copy,
        _scratch: scratch,
    }))
}

/// A `file://` dependency's relative path is relative to the chart's own directory: in the
/// copy it is made absolute. The copy's Chart.lock then no longer matches (its digest covers
/// the paths) and goes: helm resolves local paths without a network.
fn anchor_local_repositories(chart: &UmbrellaChart, copy: &Path) -> std::io::Result<()> {
    let mut text = std::fs::read_to_string(copy.join("Chart.yaml"))?;
    let mut anchored = false;
    for dep in &chart.metadata.dependencies {
        let Some(relative) = dep
            .repository
            .as_deref()
            .and_then(|r| r.strip_prefix("file://"))
        else {
            continue;
        };
        if !Path::new(relative).is_absolute() {
            let absolute = chart.dir.join(relative);
            text = text.replace(
                &format!("file://{relative}"),
                &format!("file://{}", absolute.display()),
            );
            anchored = true;
        }
    }
    if anchored {
        std::fs::write(copy.join("Chart.yaml"), text)?;
        let lock = copy.join("Chart.lock");
        if lock.exists() {
            std::fs::remove_file(lock)?;
        }
    }
    Ok(())
}

/// Copies a chart's directory (files and directories; links are followed, as helm does).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn chart_lock_versions(dir: &Path) -> BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        dependencies: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        version: String,
    }
    crate::formats::yaml::read_single::<Lock>(&dir.join("Chart.lock"))
        .map(|lock| {
            lock.dependencies
                .into_iter()
                .map(|e| (e.name, e.version))
                .collect()
        })
        .unwrap_or_default()
}

/// An unpacked subchart satisfies an exact version only by having it; a range (`^1.2`, `~1`,
/// `>=1`) without a Chart.lock to pin it is satisfied by whatever is unpacked.
fn unpacked_version_is(chart_yaml: &Path, version: &str) -> bool {
    let exact = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c));
    crate::formats::yaml::read_single::<crate::formats::chart::ChartMetadata>(chart_yaml)
        .is_ok_and(|c| !exact || c.version == version)
}
