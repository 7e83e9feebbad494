//! The build context: the files the Docker CLI would send, as a deterministic tar, and the
//! content key that says whether an image must be built again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dockerignore::{DockerIgnore, PatternError};

/// The context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Ignore { path: PathBuf, source: PatternError },
}

/// A context ready to send: the tar and the sha256 of its bytes.
#[derive(Debug, Clone)]
pub struct Context {
    pub tar: Vec<u8>,
    /// sha256 of `tar`, hex: paths, modes, link targets and contents, in a fixed order.
    pub digest: String,
    pub files: usize,
}

/// Packs `dir` as the Docker CLI would send it: root `.dockerignore` applied, the Dockerfile and
/// `.dockerignore` always included, symlinks stored as links. Headers carry no owner and a zero
/// mtime, and entries are sorted, so the same files give the same bytes on every machine.
/// `external_dockerfile`, when given, is added under the name `dockerfile`: a Dockerfile outside
/// the context is sent with the context, as the Docker CLI does.
pub fn pack(
    dir: &Path,
    dockerfile: &str,
    external_dockerfile: Option<&Path>,
) -> Result<Context, ContextError> {
    let ignore_path = dir.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => {
            DockerIgnore::parse(&text, &[dockerfile, ".dockerignore"]).map_err(|source| {
                ContextError::Ignore {
                    path: ignore_path.clone(),
                    source,
                }
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(source) => {
            return Err(ContextError::Io {
                path: ignore_path,
                source,
            });
        }
    };
    let mut packer = Packer {
        ignore: &ignore,
        builder: tar::Builder::new(Vec::new()),
        files: 0,
    };
    packer.walk(dir, "")?;
    if let Some(path) = external_dockerfile {
        let meta = std::fs::metadata(path).map_err(|source| ContextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let body = std::fs::read(path).map_err(|source| ContextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        packer.append(dockerfile, &meta, path, Some(body))?;
    }
    let tar = packer
        .builder
        .into_inner()
        .map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let digest = hex::encode(Sha256::digest(&tar));
    Ok(Context {
        tar,
        digest,
        files: packer.files,
    })
}

struct Packer<'a> {
    ignore: &'a DockerIgnore,
    builder: tar::Builder<Vec<u8>>,
    files: usize,
}

impl Packer<'_> {
    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<(), ContextError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Io { path, source }
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let excluded = self.ignore.is_excluded(&relative);
            if meta.is_dir() {
                if !excluded {
                    self.append(&relative, &meta, &path, None)?;
                }
                if !excluded || self.ignore.may_reinclude_below(&relative) {
                    self.walk(&path, &relative)?;
                }
            } else if !excluded && (meta.is_file() || meta.is_symlink()) {
                let body = if meta.is_file() {
                    Some(std::fs::read(&path).map_err(io(&path))?)
                } else {
                    None
                };
                self.append(&relative, &meta, &path, body)?;
                self.files += 1;
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        relative: &str,
        meta: &std::fs::Metadata,
        path: &Path,
        body: Option<Vec<u8>>,
    ) -> Result<(), ContextError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| ContextError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.permissions().mode() & 0o7777);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_symlink() {
            let target = std::fs::read_link(path).map_err(io)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            self.builder
                .append_link(&mut header, relative, &target)
                .map_err(io)
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            self.builder
                .append_data(&mut header, format!("{relative}/"), std::io::empty())
                .map_err(io)
        } else {
            let body = body.unwrap_or_default();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(body.len() as u64);
            self.builder
                .append_data(&mut header, relative, body.as_slice())
                .map_err(io)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::write;
    use std::os::unix::fs::symlink;

    fn entries(context: &Context) -> Vec<String> {
        let mut archive = tar::Archive::new(context.tar.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "Dockerfile", "FROM scratch\n");
        write(dir.path(), "app/main.txt", "main");
        write(dir.path(), "app/notes.md", "notes");
        write(dir.path(), "docs/keep.md", "keep");
        write(dir.path(), "docs/drop.md", "drop");
        write(
            dir.path(),
            ".dockerignore",
            "**/*.md\n!docs/keep.md\nDockerfile\n",
        );
        dir
    }

    #[test]
    fn applies_dockerignore_and_always_sends_build_files() {
        let dir = sample();
        let context = pack(dir.path(), "Dockerfile", None).unwrap();
        assert_eq!(
            entries(&context),
            vec![
                ".dockerignore",
                "Dockerfile",
                "app/",
                "app/main.txt",
                "docs/",
                "docs/keep.md"
            ]
        );
    }

    #[test]
    fn same_files_same_digest_and_excluded_changes_do_not_count() {
        let dir = sample();
        let first = pack(dir.path(), "Dockerfile", None).unwrap();
        write(dir.path(), "docs/drop.md", "changed, but ignored");
        let second = pack(dir.path(), "Dockerfile", None).unwrap();
        assert_eq!(first.digest, second.digest);
        write(dir.path(), "docs/keep.md", "changed and re-included");
        let third = pack(dir.path(), "Dockerfile", None).unwrap();
        assert_ne!(first.digest, third.digest);
    }

    #[test]
    fn mode_changes_count() {
        use std::os::unix::fs::PermissionsExt;
        let dir = sample();
        let first = pack(dir.path(), "Dockerfile", None).unwrap();
        let file = dir.path().join("app/main.txt");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(
            first.digest,
            pack(dir.path(), "Dockerfile", None).unwrap().digest
        );
    }

    #[test]
    fn symlinks_are_stored_not_followed() {
        let dir = sample();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.txt", "secret");
        symlink(
            outside.path().join("secret.txt"),
            dir.path().join("app/link"),
        )
        .unwrap();
        let context = pack(dir.path(), "Dockerfile", None).unwrap();
        let mut archive = tar::Archive::new(context.tar.as_slice());
        let link = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("link"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(link.header().size().unwrap(), 0);
    }

    #[test]
    fn an_outside_dockerfile_is_sent_with_the_context() {
        let dir = sample();
        let outside = tempfile::tempdir().unwrap();
        write(
            outside.path(),
            "Dockerfile.shared",
            "FROM scratch\nCOPY app /app\n",
        );
        let context = pack(
            dir.path(),
            ".dockerfile.umbrella",
            Some(&outside.path().join("Dockerfile.shared")),
        )
        .unwrap();
        assert!(entries(&context).contains(&".dockerfile.umbrella".to_string()));
        write(outside.path(), "Dockerfile.shared", "FROM scratch\n");
        let changed = pack(
            dir.path(),
            ".dockerfile.umbrella",
            Some(&outside.path().join("Dockerfile.shared")),
        )
        .unwrap();
        assert_ne!(
            context.digest, changed.digest,
            "the Dockerfile's content is part of the key"
        );
    }

    #[test]
    fn bad_dockerignore_names_the_file() {
        let dir = sample();
        write(dir.path(), ".dockerignore", "[x\n");
        let err = pack(dir.path(), "Dockerfile", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(".dockerignore: .dockerignore line 1"), "{err}");
    }
}
