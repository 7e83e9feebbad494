//! The desired state of an app group: every object of `umbrella-state/<env>/<app>/`, read the way
//! Kubernetes reads it, with the checks that need no cluster (parse errors, duplicates).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::formats::layout::AppId;
use crate::formats::manifest;
use crate::formats::object_ref::ObjectRef;
use crate::formats::sops::{self, Keys};

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

/// The apps of an environment's state: `<env>-<subdir>` for every direct subdirectory. A
/// directory whose name breaks Kubernetes' rules, or anything but a plain directory or file
/// (a symbolic link), is a problem: never skipped, which would read as the app's removal.
fn app_dirs(state_dir: &Path, env: &str) -> Result<BTreeMap<String, PathBuf>, Vec<String>> {
    let entries = std::fs::read_dir(state_dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| vec![format!("{}: {e}", state_dir.display())])?;
    let mut apps = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match plain_kind(&path) {
            Ok(Plain::Directory) => match AppId::checked(env, &name) {
                Ok(app) => {
                    apps.insert(app.to_string(), path);
                }
                Err(problem) => problems.push(format!("{}: {problem}", path.display())),
            },
            Ok(Plain::File) => {}
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(apps)
    } else {
        Err(problems)
    }
}

enum Plain {
    Directory,
    File,
}

/// What `path` is, when it is a plain directory or file (links are not followed).
fn plain_kind(path: &Path) -> Result<Plain, String> {
    let kind = std::fs::symlink_metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .file_type();
    if kind.is_dir() {
        Ok(Plain::Directory)
    } else if kind.is_file() {
        Ok(Plain::File)
    } else {
        Err(format!(
            "{}: not a plain file or directory (a symbolic link?): the state may hold only those",
            path.display()
        ))
    }
}

/// What becomes of SOPS-encrypted state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    /// Decrypted with the age keys sops would find (a file that does not is a problem).
    Decrypt,
    /// Read only for what they name (their values stay encrypted): for a delete.
    NamesOnly,
}

/// Reads every app of the state directory. All problems are returned together.
pub fn load(
    state_dir: &Path,
    env: &str,
    encrypted: Encrypted,
) -> Result<Vec<Desired>, Vec<String>> {
    let apps = app_dirs(state_dir, env)?;
    let keys = std::cell::OnceCell::new();
    let open = |file: &Path, document: Value| match encrypted {
        _ if !sops::is_encrypted(&document) => Ok(document),
        Encrypted::Decrypt => sops::decrypt(&document, keys.get_or_init(Keys::from_environment))
            .map_err(|e| format!("{}: cannot decrypt: {e}", file.display())),
        Encrypted::NamesOnly => Ok(names_only(&document)),
    };
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (app, dir) in apps {
        let mut files = Vec::new();
        if let Err(problem) = collect_yaml(&dir, &mut files) {
            problems.push(problem);
            continue;
        }
        for file in files {
            let read = read_objects(&file).and_then(|values| {
                values
                    .into_iter()
                    .map(|value| open(&file, value))
                    .collect::<Result<Vec<_>, _>>()
            });
            match read {
                Ok(values) => objects.extend(values.into_iter().map(|value| Desired {
                    app: app.clone(),
                    file: file.clone(),
                    value,
                })),
                Err(problem) => problems.push(problem),
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

/// An encrypted object without its values (nor its SOPS metadata).
fn names_only(document: &Value) -> Value {
    let mut object = sops::stand_ins(document);
    if let Value::Object(map) = &mut object {
        map.shift_remove("data");
        map.shift_remove("stringData");
    }
    object
}

fn read_objects(file: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    manifest::parse_documents(&text).map_err(|e| format!("{}: {e}", file.display()))
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        match plain_kind(&path)? {
            Plain::Directory => collect_yaml(&path, files)?,
            Plain::File if path.extension().is_some_and(|e| e == "yaml" || e == "yml") => {
                files.push(path);
            }
            Plain::File => {}
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
        let mut broken = reference.problems();
        broken.extend(undecodable_secret_data(&object.value));
        if !broken.is_empty() {
            for problem in broken {
                problems.push(format!("{}: {reference}: {problem}", object.file.display()));
            }
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

/// A Secret's `data` values are base64 (the API server refuses anything else, after the
/// deploy started): the keys whose value is not, never the value.
fn undecodable_secret_data(object: &Value) -> Vec<String> {
    use base64::Engine;
    if object["kind"] != "Secret" || object["apiVersion"] != "v1" {
        return Vec::new();
    }
    let Some(data) = object["data"].as_object() else {
        return Vec::new();
    };
    data.iter()
        .filter(|(_, value)| {
            value.as_str().is_none_or(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_err()
            })
        })
        .map(|(key, _)| format!("field data.{key}: not base64 (put plain text under stringData)"))
        .collect()
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
        let problems = load(dir.path(), "production", Encrypted::Decrypt).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("ConfigMap/x in p is defined twice")
                && problems[0].contains("app production-a"),
            "{problems:?}"
        );
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        let objects = load(dir.path(), "production", Encrypted::Decrypt).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].app, "production-a");
    }

    #[test]
    fn parse_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/bad.yaml", "apiVersion: v1\nkind: [\n");
        let problems = load(dir.path(), "e", Encrypted::Decrypt).unwrap_err();
        assert!(problems[0].contains("a/bad.yaml: line"), "{problems:?}");
    }
}
