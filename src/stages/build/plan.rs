//! From `sources.yaml` to one checked build plan per source, before anything is built: every
//! problem is found up front and named by source and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dockerignore::DockerIgnore;
use crate::adapters::docker::BuildOptions;
use crate::formats::image_ref::ImageRef;
use crate::formats::sources::{KbldConfig, Source};

/// How one image is built and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The image name as the chart writes it (kbld's `image`/`imageRepo`).
    pub image: String,
    /// The context directory as written in `sources.yaml`, relative to the repository.
    pub path: String,
    pub context_dir: PathBuf,
    /// The Dockerfile's name in the context sent to the engine.
    pub dockerfile: String,
    /// A Dockerfile outside the context directory, sent under the name `dockerfile`.
    pub external_dockerfile: Option<PathBuf>,
    /// The repository pushed to (`newImage`).
    pub repository: ImageRef,
    pub extra_tags: Vec<String>,
    pub options: BuildOptions,
}

/// The rawOptions umbrella understands; anything else is refused rather than ignored.
const SUPPORTED_RAW_OPTIONS: &str =
    "--build-arg, --platform, --label, --target, --pull, --no-cache";

/// Plans every source of `config` (or only those named in `only`). All problems are returned
/// together, each naming the source and the field.
pub fn plan(config: &KbldConfig, root: &Path, only: &[String]) -> Result<Vec<Plan>, Vec<String>> {
    let mut problems = Vec::new();
    for name in only {
        if !config.sources.iter().any(|s| s.image.as_str() == name) {
            let known: Vec<&str> = config.sources.iter().map(|s| s.image.as_str()).collect();
            problems.push(format!(
                "--only {name}: no such source (sources: {})",
                known.join(", ")
            ));
        }
    }
    let mut plans = Vec::new();
    for source in &config.sources {
        if !only.is_empty() && !only.iter().any(|n| n == source.image.as_str()) {
            continue;
        }
        match plan_source(config, source, root) {
            Ok(plan) => plans.push(plan),
            Err(mut errors) => problems.append(&mut errors),
        }
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(problems)
    }
}

fn plan_source(config: &KbldConfig, source: &Source, root: &Path) -> Result<Plan, Vec<String>> {
    let name = source.image.as_str();
    let context_dir = root.join(&source.path);
    let dockerfile = checked_dockerfile(source, &context_dir);
    let options = options_of(source);
    let destination = config.destination_for(name);
    let new_image = destination.and_then(|d| d.new_image.as_deref());
    match (dockerfile, options, destination_repository(new_image, name)) {
        (Ok((dockerfile, external_dockerfile)), Ok(options), Ok(repository)) => Ok(Plan {
            image: name.to_string(),
            path: source.path.clone(),
            context_dir,
            dockerfile,
            external_dockerfile,
            repository,
            extra_tags: destination.map(|d| d.tags.clone()).unwrap_or_default(),
            options,
        }),
        (dockerfile, options, repository) => {
            Err([dockerfile.err(), options.err(), repository.err()]
                .into_iter()
                .flatten()
                .collect())
        }
    }
}

/// The source's Dockerfile (see [`locate_dockerfile`]), once the context, the file and the
/// context's `.dockerignore` are found sound.
fn checked_dockerfile(
    source: &Source,
    context_dir: &Path,
) -> Result<(String, Option<PathBuf>), String> {
    let name = source.image.as_str();
    let file = source.docker.file.as_deref().unwrap_or("Dockerfile");
    if !context_dir.is_dir() {
        return Err(format!(
            "source {name}: field `path`: directory {} does not exist",
            context_dir.display()
        ));
    }
    if !context_dir.join(file).is_file() {
        return Err(format!(
            "source {name}: field `docker.build.file`: {} does not exist",
            context_dir.join(file).display()
        ));
    }
    let ignore = context_dir.join(".dockerignore");
    if let Ok(text) = std::fs::read_to_string(&ignore)
        && let Err(e) = DockerIgnore::parse(&text, &[])
    {
        return Err(format!("source {name}: {}: {e}", ignore.display()));
    }
    Ok(locate_dockerfile(context_dir, file))
}

/// The build options of `docker.build` and its `rawOptions`.
fn options_of(source: &Source) -> Result<BuildOptions, String> {
    let mut options = BuildOptions {
        target: source.docker.target.clone(),
        pull: source.docker.pull.unwrap_or(false),
        no_cache: source.docker.no_cache.unwrap_or(false),
        buildkit: source.docker.buildkit.unwrap_or(false),
        ..Default::default()
    };
    apply_raw_options(&source.docker.raw_options, &mut options).map_err(|e| {
        format!(
            "source {}: field `docker.build.rawOptions`: {e}",
            source.image.as_str()
        )
    })?;
    Ok(options)
}

/// The repository a source is pushed to: its destination's `newImage`, else its own name;
/// a repository, without tag or digest.
fn destination_repository(new_image: Option<&str>, name: &str) -> Result<ImageRef, String> {
    let repository = new_image.unwrap_or(name);
    let invalid =
        |why: String| format!("source {name}: destination `newImage` {repository}: {why}");
    let parsed = ImageRef::parse(repository).map_err(|e| invalid(e.to_string()))?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        return Err(invalid("must be a repository without tag or digest".into()));
    }
    Ok(parsed)
}

/// The Dockerfile's name inside the context, or, for one outside it (`file: ../Dockerfile`),
/// the name it is sent under and its path.
fn locate_dockerfile(context_dir: &Path, file: &str) -> (String, Option<PathBuf>) {
    let inside = std::fs::canonicalize(context_dir.join(file))
        .ok()
        .zip(std::fs::canonicalize(context_dir).ok())
        .and_then(|(path, dir)| {
            path.strip_prefix(&dir)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        });
    match inside {
        Some(relative) => (relative, None),
        None => (
            ".dockerfile.umbrella".to_string(),
            Some(context_dir.join(file)),
        ),
    }
}

/// Applies `docker build` flags given as kbld `rawOptions` (`--flag value` or `--flag=value`).
pub fn apply_raw_options(raw: &[String], options: &mut BuildOptions) -> Result<(), String> {
    let mut tokens = raw.iter();
    while let Some(token) = tokens.next() {
        let (flag, inline) = match token.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (token.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| tokens.next().cloned())
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        // Boolean flags take `--flag` or `--flag=true|false`, never the next token.
        let switch = |inline: &Option<String>| match inline.as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("`{flag}={other}`: expected true or false")),
        };
        match flag {
            "--build-arg" => {
                let arg = value()?;
                match arg.split_once('=') {
                    Some((key, val)) => {
                        options.build_args.insert(key.to_string(), val.to_string());
                    }
                    // Docker's rule: `--build-arg KEY` takes KEY from the environment, if set.
                    None => {
                        if let Ok(val) = std::env::var(&arg) {
                            options.build_args.insert(arg, val);
                        }
                    }
                }
            }
            "--label" => {
                let label = value()?;
                let (key, val) = label.split_once('=').unwrap_or((label.as_str(), ""));
                options.labels.insert(key.to_string(), val.to_string());
            }
            "--platform" => options.platform = Some(value()?),
            "--target" => options.target = Some(value()?),
            "--pull" => options.pull = switch(&inline)?,
            "--no-cache" => options.no_cache = switch(&inline)?,
            other => {
                return Err(format!(
                    "`{other}` is not supported (supported: {SUPPORTED_RAW_OPTIONS})"
                ));
            }
        }
    }
    Ok(())
}

/// The content key: what the context holds, which Dockerfile, and every build option.
/// Same key, same image: a key already in the destination is not built again.
///
/// `base_images` are the identities (image IDs or registry digests) of the images the
/// Dockerfile builds FROM: a new base image is a new input, and is built again.
pub fn content_key(context_digest: &str, plan: &Plan, base_images: &[String]) -> String {
    let mut hasher = Sha256::new();
    // v2: base images joined the key.
    hasher.update(b"umbrella-build-key-v2\n");
    hasher.update(context_digest.as_bytes());
    hasher.update(b"\n");
    hasher.update(plan.dockerfile.as_bytes());
    hasher.update(b"\n");
    hasher.update(
        serde_json::to_string(&plan.options)
            .unwrap_or_default()
            .as_bytes(),
    );
    for base in base_images {
        hasher.update(b"\nFROM ");
        hasher.update(base.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The images a Dockerfile builds FROM, with `ARG` defaults and build arguments substituted;
/// `scratch` and earlier stages are left out.
pub fn base_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut bases = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        match instruction.to_ascii_uppercase().as_str() {
            // Only ARGs before the first FROM apply to FROM lines.
            "ARG" if stages.is_empty() && bases.is_empty() => {
                if let Some(definition) = words.next() {
                    let (name, default) = definition.split_once('=').unwrap_or((definition, ""));
                    let value = build_args
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| default.trim_matches('"').to_string());
                    args.insert(name.to_string(), value);
                }
            }
            "FROM" => {
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let Some(image) = rest.first() else { continue };
                let image = substitute(image, &args);
                if image != "scratch" && !stages.contains(&image) && !bases.contains(&image) {
                    bases.push(image);
                }
                if let [_, alias, name] = rest.as_slice()
                    && alias.eq_ignore_ascii_case("as")
                {
                    stages.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    bases
}

/// `${NAME}` and `$NAME` from `args`.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (name, value) in args {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The tag that carries the content key in the destination repository.
pub fn key_tag(key: &str) -> String {
    format!("umbrella-{}", &key[..32.min(key.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(tokens: &[&str]) -> Result<BuildOptions, String> {
        let mut options = BuildOptions::default();
        apply_raw_options(
            &tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            &mut options,
        )?;
        Ok(options)
    }

    #[test]
    fn raw_options_both_spellings() {
        let options = raw(&[
            "--build-arg",
            "A=1",
            "--build-arg=B=2=3",
            "--platform",
            "linux/amd64",
            "--label=x=y",
            "--no-cache",
            "--target",
            "t",
        ])
        .unwrap();
        assert_eq!(options.build_args.get("A").map(String::as_str), Some("1"));
        assert_eq!(options.build_args.get("B").map(String::as_str), Some("2=3"));
        assert_eq!(options.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(options.labels.get("x").map(String::as_str), Some("y"));
        assert!(options.no_cache);
        assert_eq!(options.target.as_deref(), Some("t"));
        let options = raw(&["--pull=false", "--no-cache=true"]).unwrap();
        assert!(!options.pull && options.no_cache);
        assert!(raw(&["--pull=maybe"]).is_err());
    }

    #[test]
    fn unsupported_or_incomplete_raw_options_are_refused() {
        let err = raw(&["--squash"]).unwrap_err();
        assert!(err.contains("`--squash` is not supported"), "{err}");
        let err = raw(&["--build-arg"]).unwrap_err();
        assert!(err.contains("`--build-arg` needs a value"), "{err}");
    }

    fn plan_for(options: BuildOptions) -> Plan {
        Plan {
            image: "a".into(),
            path: "a".into(),
            context_dir: PathBuf::from("a"),
            dockerfile: "Dockerfile".into(),
            external_dockerfile: None,
            repository: ImageRef::parse("r/a").unwrap(),
            extra_tags: vec![],
            options,
        }
    }

    #[test]
    fn from_lines_give_the_base_images() {
        let dockerfile = "# syntax=docker/dockerfile:1\nARG BASE=busybox:1\nARG OTHER\nFROM --platform=linux/amd64 ${BASE} AS build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\nFROM build AS test\nFROM $OTHER\n";
        let args = BTreeMap::from([("OTHER".to_string(), "alpine:3".to_string())]);
        assert_eq!(
            base_images(dockerfile, &args),
            vec!["busybox:1", "alpine:3"]
        );
        let args = BTreeMap::from([
            ("BASE".to_string(), "debian:12".to_string()),
            ("OTHER".to_string(), "debian:12".to_string()),
        ]);
        assert_eq!(base_images(dockerfile, &args), vec!["debian:12"]);
    }

    #[test]
    fn key_changes_with_options_context_and_base_images_only() {
        let base = content_key("ctx", &plan_for(BuildOptions::default()), &[]);
        assert_eq!(
            base,
            content_key("ctx", &plan_for(BuildOptions::default()), &[])
        );
        assert_ne!(
            base,
            content_key("ctx2", &plan_for(BuildOptions::default()), &[])
        );
        assert_ne!(
            base,
            content_key(
                "ctx",
                &plan_for(BuildOptions::default()),
                &["sha256:new-base".into()]
            )
        );
        let mut with_arg = BuildOptions::default();
        with_arg.build_args.insert("A".into(), "1".into());
        assert_ne!(base, content_key("ctx", &plan_for(with_arg), &[]));
        assert_eq!(key_tag(&base).len(), "umbrella-".len() + 32);
    }
}
