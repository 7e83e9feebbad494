//! Image references as Docker reads them: `[registry/]path[:tag][@digest]`, and the digests
//! registries answer with. Every image string umbrella handles is parsed here.

use std::fmt;

/// The registry of references that name none (Docker Hub).
pub const DOCKER_HUB: &str = "docker.io";

/// A content digest, `algorithm:hex`, checked: `sha256` with 64 and `sha512` with 128 lowercase
/// hex digits. Anything else a registry or a chart says is refused, never written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Text that is not an image reference or not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {what}: {reason}")]
pub struct ReferenceError {
    pub text: String,
    pub what: &'static str,
    pub reason: String,
}

impl ReferenceError {
    fn new(text: &str, what: &'static str, reason: impl Into<String>) -> Self {
        ReferenceError {
            text: text.to_string(),
            what,
            reason: reason.into(),
        }
    }
}

impl Digest {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::new(text, "a digest", reason);
        let (algorithm, hex) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected `sha256:` and 64 hex digits"))?;
        let length = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid("the algorithm is neither sha256 nor sha512")),
        };
        if hex.len() != length || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(&format!(
                "{algorithm} needs {length} lowercase hex digits"
            )));
        }
        Ok(Digest(text.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn of_sha256(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// The digest of `bytes` with this digest's algorithm, to check content against it.
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        use sha2::Digest as _;
        let actual = match self.algorithm() {
            "sha256" => hex::encode(sha2::Sha256::digest(bytes)),
            _ => hex::encode(sha2::Sha512::digest(bytes)),
        };
        self.hex() == actual
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// The registry host (`docker.io` when the reference names none).
    pub registry: String,
    /// The repository's path on its registry (`library/nginx` for a bare `nginx`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// The repository as written, without tag and digest: what a pinned reference keeps.
    name: String,
}

impl ImageRef {
    /// Parses `[registry/]path[:tag][@digest]`. The first component is a registry when it has
    /// a `.` or a `:` or is `localhost` (Docker's rule); otherwise the image is on Docker Hub.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::new(text, "an image reference", reason);
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (text, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(rest[colon + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(invalid(&format!("bad tag `{tag}`")));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                if !valid_host(first) {
                    return Err(invalid(&format!("bad registry `{first}`")));
                }
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        if let Some(component) = path.split('/').find(|c| !valid_path_component(c)) {
            return Err(invalid(&format!(
                "bad repository component `{component}` (lowercase letters, digits and . _ - between them)"
            )));
        }
        Ok(ImageRef {
            registry,
            repository: path,
            tag,
            digest,
            name: name.to_string(),
        })
    }

    /// The repository as written (`nginx`, `127.0.0.1:5000/shop/web`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag to ask a registry for: the one written, else `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `name@digest`: the reference pinned, without its tag.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(text)
    }
}

impl fmt::Display for ImageRef {
    /// The reference as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_host(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, after)) => (
                address.parse::<std::net::Ipv6Addr>().is_ok(),
                (!after.is_empty()).then(|| after.strip_prefix(':').unwrap_or("")),
            ),
            None => return false,
        },
        None => {
            let (name, port) = match host.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            };
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            (name_ok, port)
        }
    };
    name_ok && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or runs of `-`.
fn valid_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut separator = String::new();
    let mut started = false;
    for c in component.chars() {
        if alnum(c) {
            let joined = matches!(separator.as_str(), "" | "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !joined {
                return false;
            }
            separator.clear();
            started = true;
        } else if started && "._-".contains(c) {
            separator.push(c);
        } else {
            return false;
        }
    }
    started && separator.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>, String) {
        let r = ImageRef::parse(text).unwrap();
        (
            r.registry.clone(),
            r.repository.clone(),
            r.tag.clone(),
            r.digest.as_ref().map(ToString::to_string),
            r.name().to_string(),
        )
    }

    #[test]
    fn parses_like_docker() {
        let s = |x: &str| x.to_string();
        assert_eq!(
            parts("nginx"),
            (s("docker.io"), s("library/nginx"), None, None, s("nginx"))
        );
        assert_eq!(
            parts("bitnami/redis:7.2"),
            (
                s("docker.io"),
                s("bitnami/redis"),
                Some(s("7.2")),
                None,
                s("bitnami/redis")
            )
        );
        assert_eq!(
            parts("ghcr.io/a/b"),
            (s("ghcr.io"), s("a/b"), None, None, s("ghcr.io/a/b"))
        );
        assert_eq!(
            parts(&format!("127.0.0.1:5000/x/y:v2@sha256:{HEX}")),
            (
                s("127.0.0.1:5000"),
                s("x/y"),
                Some(s("v2")),
                Some(format!("sha256:{HEX}")),
                s("127.0.0.1:5000/x/y")
            )
        );
        assert_eq!(parts("localhost/x").0, "localhost");
        assert_eq!(parts("[::1]:5000/x").0, "[::1]:5000");
        assert_eq!(parts("[::1]/x").0, "[::1]");
        assert_eq!(parts("r.io/a__b.c-d---e/f_g").1, "a__b.c-d---e/f_g");
        assert_eq!(ImageRef::parse("a:v3").unwrap().tag_or_latest(), "v3");
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/a").unwrap().tag_or_latest(),
            "latest"
        );
    }

    #[test]
    fn displays_as_written_and_pins_without_the_tag() {
        for text in ["nginx", "nginx:1.25", &format!("r.io/a/b:1@sha256:{HEX}")] {
            assert_eq!(ImageRef::parse(text).unwrap().to_string(), text);
        }
        let digest = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(
            ImageRef::parse("r.io:5000/a:1").unwrap().pinned(&digest),
            format!("r.io:5000/a@sha256:{HEX}")
        );
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "a:",
            "a b",
            "-a",
            "a@sha256:short",
            "a@md5:0123",
            "r.io:port/a",
            "../../x",
            "a_.b",
            "a___b",
            "[::1/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn digests_are_well_formed_and_verify_content() {
        assert!(Digest::parse("sha256:zz../../not-a-digest").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{HEX}{HEX}")).is_ok());
        let empty = Digest::parse(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        assert!(empty.verifies(b""));
        assert!(!empty.verifies(b"x"));
    }
}
