//! Registry C of the environment: distribution v3 asking for bearer tokens from the token
//! server (`scripts/token-server`). Tests seed images in it over the registry API (with the
//! environment's credentials, as a CI job pushing images would) and read from the token
//! server which tokens it issued for their repositories.

use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::testenv;
use umbrella::adapters::credentials::{Credential, credential_for};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Registry C and its token server.
pub struct TokenRegistry {
    pub host: String,
    token_server: String,
    http: reqwest::Client,
}

/// One token the token server issued, as its `/stats` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Issued {
    pub account: String,
    pub scopes: Vec<String>,
    /// `basic`, `anonymous`, `refresh_token` or `password`.
    pub grant: String,
    /// Issued already expired (the `stale/*` repositories' first token).
    pub expired: bool,
}

#[derive(Deserialize)]
struct Stats {
    issued: Vec<Issued>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
    refresh_token: Option<String>,
}

/// A small image: its config and one layer, the same in every repository.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn image() -> Image {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = b"umbrella token registry test layer".to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    Image {
        config,
        layer,
        manifest,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test's registry calls")
}

impl TokenRegistry {
    pub fn from_env() -> Self {
        umbrella::adapters::tls::install_crypto_provider();
        TokenRegistry {
            host: testenv("UMBRELLA_TEST_REGISTRY_C"),
            token_server: testenv("UMBRELLA_TEST_TOKEN_SERVER"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    /// The environment's user and password for registry C (from the Docker config).
    pub fn credentials(&self) -> (String, String) {
        match credential_for(&self.host) {
            Ok(Some(Credential::Basic { username, password })) => (username, password),
            other => panic!("registry C's credentials in DOCKER_CONFIG: {other:?}"),
        }
    }

    /// A Docker config with the environment's credentials for registry C under `host` too
    /// (a proxy in front of it: credentials are looked up by the host an image names).
    pub fn docker_config_with(&self, host: &str) -> tempfile::TempDir {
        use base64::Engine;
        let (user, password) = self.credentials();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let config = tempfile::tempdir().expect("temp dir");
        let auths = serde_json::json!({
            self.host.clone(): {"auth": auth},
            host: {"auth": auth},
        });
        std::fs::write(
            config.path().join("config.json"),
            serde_json::json!({ "auths": auths }).to_string(),
        )
        .expect("config.json");
        config
    }

    /// The digest of the image every seeded tag points at.
    pub fn seeded_digest() -> String {
        sha256(&image().manifest)
    }

    /// Pushes the small image under each of `tags` in each of `repositories`, at most 16
    /// repositories at once.
    pub fn seed(&self, repositories: &[String], tags: &[String]) {
        use futures_util::StreamExt;
        runtime().block_on(async {
            let image = image();
            futures_util::stream::iter(repositories)
                .map(|repository| self.seed_one(repository, tags, &image))
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
        });
    }

    async fn seed_one(&self, repository: &str, tags: &[String], image: &Image) {
        let scope = format!("repository:{repository}:pull,push");
        // The first token for a scope of stale/* is issued expired: one more is asked for.
        let mut token = self.token(&scope).await;
        if !self.accepts(repository, &token).await {
            token = self.token(&scope).await;
        }
        let base = format!("http://{}", self.host);
        push(
            &self.http,
            &base,
            repository,
            &Auth::Bearer(token),
            tags,
            image,
        )
        .await;
    }

    async fn accepts(&self, repository: &str, token: &str) -> bool {
        let url = format!("http://{}/v2/{repository}/tags/list", self.host);
        let answer = self.http.get(&url).bearer_auth(token).send().await;
        answer.expect("GET tags").status() != reqwest::StatusCode::UNAUTHORIZED
    }

    /// A token for `scope` with the environment's credentials.
    async fn token(&self, scope: &str) -> String {
        self.token_answer(&[("scope", scope)]).await.token
    }

    async fn token_answer(&self, query: &[(&str, &str)]) -> TokenAnswer {
        let (user, password) = self.credentials();
        let url = format!("http://{}/token", self.token_server);
        let answer = self
            .http
            .get(&url)
            .query(&[("service", testenv("UMBRELLA_TEST_TOKEN_SERVICE").as_str())])
            .query(query)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("token request");
        assert!(answer.status().is_success(), "token: {}", answer.status());
        answer.json().await.expect("token answer")
    }

    /// A refresh token for the environment's user, as `docker login` keeps an identity token.
    pub fn identity_token(&self) -> String {
        let answer = runtime().block_on(
            self.token_answer(&[("offline_token", "true"), ("client_id", "umbrella-tests")]),
        );
        answer.refresh_token.expect("a refresh token")
    }

    /// The tokens issued so far for scopes of repositories whose names start with `prefix`.
    pub fn issued(&self, prefix: &str) -> Vec<Issued> {
        runtime().block_on(async {
            let url = format!("http://{}/stats", self.token_server);
            let answer = self
                .http
                .get(&url)
                .query(&[("prefix", prefix)])
                .send()
                .await
                .expect("token server /stats");
            answer.json::<Stats>().await.expect("stats").issued
        })
    }
}

/// Pushes the small image to a registry without auth (registry A) under each of `tags`.
pub fn seed_plain(host: &str, repository: &str, tags: &[String]) {
    umbrella::adapters::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{host}");
    runtime().block_on(push(&http, &base, repository, &Auth::None, tags, &image()));
}

/// Pushes the small image under each of `tags` to registry B: HTTPS with the environment's CA
/// (from the Docker config's `certs.d`) and its Basic credentials.
pub fn seed_tls_basic(host: &str, repository: &str, tags: &[String]) {
    umbrella::adapters::tls::install_crypto_provider();
    let ca = std::path::Path::new(&testenv("DOCKER_CONFIG"))
        .join("certs.d")
        .join(host)
        .join("ca.crt");
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("registry B's CA"))
        .build()
        .expect("HTTPS client");
    let Ok(Some(Credential::Basic { username, password })) = credential_for(host) else {
        panic!("registry B's credentials in DOCKER_CONFIG");
    };
    let base = format!("https://{host}");
    let auth = Auth::Basic(username, password);
    runtime().block_on(push(&http, &base, repository, &auth, tags, &image()));
}

/// How the seeding requests authenticate.
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

fn authorized(request: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
    }
}

/// Uploads the image's blobs to `repository` at `base` (`http://host`), then its manifest
/// under each of `tags`.
async fn push(
    http: &reqwest::Client,
    base: &str,
    repository: &str,
    auth: &Auth,
    tags: &[String],
    image: &Image,
) {
    for blob in [&image.config, &image.layer] {
        upload(http, base, repository, auth, blob).await;
    }
    for tag in tags {
        let url = format!("{base}/v2/{repository}/manifests/{tag}");
        let answer = authorized(http.put(&url), auth)
            .header("Content-Type", MANIFEST_TYPE)
            .body(image.manifest.clone())
            .send()
            .await
            .expect("PUT manifest");
        assert!(
            answer.status().is_success(),
            "PUT {url}: {}",
            answer.status()
        );
    }
}

async fn upload(http: &reqwest::Client, base: &str, repository: &str, auth: &Auth, blob: &[u8]) {
    let start = format!("{base}/v2/{repository}/blobs/uploads/");
    let answer = authorized(http.post(&start), auth)
        .send()
        .await
        .expect("POST upload");
    assert_eq!(answer.status(), 202, "POST {start}");
    let location = answer
        .headers()
        .get("Location")
        .and_then(|l| l.to_str().ok())
        .expect("upload Location")
        .to_string();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={}", sha256(blob));
    let answer = authorized(http.put(&url), auth)
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .expect("PUT blob");
    assert_eq!(answer.status(), 201, "PUT blob to {repository}");
}
