//! The desired state of an app group: every object of `umbrella-state/<env>/<app>/`, read the way
//! Kubernetes reads it, with the checks that need no cluster (parse errors, duplicates).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::formats::layout::AppId;
use crate::formats::manifest;
use crate::formats::object_ref::ObjectRef;

/// One object to deploy, with its app and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub app: String,
    pub file: PathBuf,
    pub value: Value,
}

impl Desired {
    pub fn reference(&self) -> ObjectRef {
        ObjectRef::of(&self.value)
    }
}

/// The apps of an environment's state: `<env>-<subdir>` for every direct subdirectory.
pub fn app_dirs(state_dir: &Path, env: &str) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut apps = BTreeMap::new();
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            apps.insert(AppId::new(env, &name).to_string(), entry.path());
        }
    }
    Ok(apps)
}

/// Reads every app of the state directory. All problems are returned together.
pub fn load(state_dir: &Path, env: &str) -> Result<Vec<Desired>, Vec<String>> {
    let apps =
        app_dirs(state_dir, env).map_err(|e| vec![format!("{}: {e}", state_dir.display())])?;
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (app, dir) in apps {
        let mut files = Vec::new();
        collect_yaml(&dir, &mut files).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            match manifest::parse_documents(&text) {
                Ok(values) => objects.extend(values.into_iter().map(|value| Desired {
                    app: app.clone(),
                    file: file.clone(),
                    value,
                })),
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
    }
    problems.extend(check_objects(&objects));
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

/// Objects without kind or name, and the same object twice (within or across apps).
pub fn check_objects(objects: &[Desired]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(String, String, Option<String>, String), &Desired> = BTreeMap::new();
    for object in objects {
        let reference = object.reference();
        if reference.kind.is_empty()
            || reference.api_version.is_empty()
            || reference.name.is_empty()
        {
            problems.push(format!(
                "{}: an object without apiVersion, kind or metadata.name",
                object.file.display()
            ));
            continue;
        }
        if let Some(first) = seen.insert(reference.key(), object) {
            problems.push(format!(
                "{reference} is defined twice: in {} (app {}) and in {} (app {})",
                first.file.display(),
                first.app,
                object.file.display(),
                object.app
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::write;

    #[test]
    fn apps_are_env_dash_subdirectory_and_duplicates_are_found() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: p\n",
        );
        write(
            dir.path(),
            "b/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: p\n",
        );
        write(dir.path(), "images.lock.yaml", "ignored: true\n");
        let problems = load(dir.path(), "production").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("ConfigMap/x in p is defined twice")
                && problems[0].contains("app production-a"),
            "{problems:?}"
        );
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        let objects = load(dir.path(), "production").unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].app, "production-a");
    }

    #[test]
    fn parse_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/bad.yaml", "apiVersion: v1\nkind: [\n");
        let problems = load(dir.path(), "e").unwrap_err();
        assert!(problems[0].contains("a/bad.yaml: line"), "{problems:?}");
    }
}
