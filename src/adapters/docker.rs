//! The Docker engine, through its API (bollard): connection, version, and pushes that report the
//! digest the registry stored.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use serde::Serialize;

use super::credentials::Credential;
use crate::formats::image_ref::Digest;

/// How the engine builds an image (each of them changes what is built).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildOptions {
    pub target: Option<String>,
    pub platform: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub pull: bool,
    pub no_cache: bool,
    /// Build with the engine's BuildKit builder instead of the classic one.
    pub buildkit: bool,
}

/// A Docker engine call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker engine at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("docker push {image}: {reason}")]
    Push { image: String, reason: String },
    #[error("docker build: {0}")]
    Build(String),
    #[error("docker tag {image}: {reason}")]
    Tag { image: String, reason: String },
}

/// A connected engine, with the API version negotiated down to what it speaks.
pub struct Engine {
    pub docker: Docker,
    /// Where it was reached (`DOCKER_HOST` or the default socket), for messages.
    pub host: String,
}

/// The engine's own version and the API version in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    pub version: String,
    pub api_version: String,
}

impl Engine {
    /// Connects like the Docker CLI: `DOCKER_HOST`, else the default socket.
    pub async fn connect() -> Result<Self, DockerError> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |e: bollard::errors::Error| DockerError::Unreachable {
            host: host.clone(),
            reason: e.to_string(),
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        Ok(Engine { docker, host })
    }

    /// The engine's version and the negotiated API version.
    pub async fn version(&self) -> Result<EngineVersion, DockerError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| DockerError::Unreachable {
                host: self.host.clone(),
                reason: e.to_string(),
            })?;
        Ok(EngineVersion {
            version: version.version.unwrap_or_else(|| "unknown".into()),
            api_version: self.docker.client_version().to_string(),
        })
    }

    /// Pushes `repository:tag` and returns the digest the engine reports for it.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        credential: Option<&Credential>,
    ) -> Result<Digest, DockerError> {
        let image = format!("{repository}:{tag}");
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.docker.push_image(
            repository,
            Some(options),
            credential.map(docker_credentials),
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Push {
                image: image.clone(),
                reason: e.to_string(),
            })?;
            digest = digest.or_else(|| info.status.as_deref().and_then(digest_from_status));
        }
        digest.ok_or(DockerError::Push {
            image,
            reason: "the engine reported no digest for the push".into(),
        })
    }

    /// Builds a tar context with the classic builder and tags the result `tag`. Every line of
    /// the build log is handed to `on_line`.
    pub async fn build(
        &self,
        context: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        options: &BuildOptions,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), DockerError> {
        let build_args: HashMap<&str, &str> = options
            .build_args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let labels: HashMap<&str, &str> = options
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut builder = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .pull(if options.pull { "true" } else { "" })
            .nocache(options.no_cache)
            .buildargs(&build_args)
            .labels(&labels);
        if let Some(target) = &options.target {
            builder = builder.target(target);
        }
        if let Some(platform) = &options.platform {
            builder = builder.platform(platform);
        }
        if options.buildkit {
            self.require_buildkit()?;
            // bollard serves the BuildKit session (credentials, outputs) under this id.
            let session = session_id();
            builder = builder
                .version(BuilderVersion::BuilderBuildKit)
                .session(&session);
            on_line("building with BuildKit");
        }
        let mut stream = self.docker.build_image(
            builder.build(),
            None,
            Some(bollard::body_full(context.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Build(e.to_string()))?;
            relay_build_info(info, &mut on_line)?;
        }
        Ok(())
    }

    /// BuildKit builds through the API need engine API 1.39 (Docker 18.09) or newer.
    fn require_buildkit(&self) -> Result<(), DockerError> {
        let version = self.docker.client_version();
        let (major, minor) = (version.major_version, version.minor_version);
        if (major, minor) < (1, 39) {
            return Err(DockerError::Build(format!(
                "the Docker engine at {} speaks API {major}.{minor}, which has no BuildKit builder (1.39 or newer needed); remove `buildkit: true`",
                self.host
            )));
        }
        Ok(())
    }

    /// Tags the local image `source` as `repository:tag`.
    pub async fn tag(&self, source: &str, repository: &str, tag: &str) -> Result<(), DockerError> {
        let options = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| DockerError::Tag {
                image: format!("{repository}:{tag}"),
                reason: e.to_string(),
            })
    }
}

/// A BuildKit session id unique to this process and build.
fn session_id() -> String {
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("umbrella-{}-{nanos}-{count}", std::process::id())
}

/// The lines a BuildKit status carries: a step when it starts, its output, its error.
fn buildkit_lines(
    status: &bollard::moby::buildkit::v1::StatusResponse,
    on_line: &mut impl FnMut(&str),
) {
    for vertex in &status.vertexes {
        if vertex.started.is_some() && vertex.completed.is_none() {
            on_line(&vertex.name);
        }
        if !vertex.error.is_empty() {
            on_line(&format!("{}: {}", vertex.name, vertex.error));
        }
    }
    for log in &status.logs {
        String::from_utf8_lossy(&log.msg)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .for_each(&mut *on_line);
    }
}

fn docker_credentials(credential: &Credential) -> DockerCredentials {
    match credential {
        Credential::Basic { username, password } => DockerCredentials {
            username: Some(username.clone()),
            password: Some(password.clone()),
            ..Default::default()
        },
        Credential::IdentityToken(token) => DockerCredentials {
            identitytoken: Some(token.clone()),
            ..Default::default()
        },
    }
}

/// Hands a build message's log lines to `on_line`; the build's error, when it reports one.
fn relay_build_info(
    info: bollard::models::BuildInfo,
    on_line: &mut impl FnMut(&str),
) -> Result<(), DockerError> {
    // BuildKit reports steps and their output as trace messages, not stream lines.
    if let Some(BuildInfoAux::BuildKit(status)) = &info.aux {
        buildkit_lines(status, on_line);
    }
    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .for_each(on_line);
    }
    match info.error_detail.and_then(|d| d.message) {
        Some(message) => Err(DockerError::Build(message)),
        None => Ok(()),
    }
}

/// The engine's last push status line reads `TAG: digest: sha256:... size: N`; bollard drops
/// the `aux` message that carries the same digest, so this line is where it is read.
fn digest_from_status(status: &str) -> Option<Digest> {
    let rest = status.split("digest: ").nth(1)?;
    Digest::parse(rest.split_whitespace().next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_digest_from_final_status() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            digest_from_status(&format!("v1: digest: {d} size: 528")),
            Some(Digest::parse(d).unwrap())
        );
        assert_eq!(digest_from_status("Pushed"), None);
        assert_eq!(digest_from_status("v1: digest: sha256:short size: 1"), None);
    }
}
