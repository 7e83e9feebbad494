//! Registries as they really are: registry C of the environment asks for bearer tokens scoped
//! to one repository, from a token server that counts what it issues. Pinning takes one token
//! per repository and no 401 once the realm is known, tokens that expire are refreshed, and a
//! repository the credentials may not read is named. Requests are counted by an HTTP proxy in
//! front of the registry (`common::http_faults`).

mod common;

use std::time::Duration;

use common::http_faults::{Fault, HttpFaults};
use common::token_registry::{Issued, TokenRegistry};
use common::{unique, write_file};

/// A repository whose chart renders one Pod with a container per image.
fn chart_with_images(images: &[String]) -> tempfile::TempDir {
    let mut pod =
        String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n");
    for (i, image) in images.iter().enumerate() {
        pod.push_str(&format!("  - name: c{i}\n    image: {image}\n"));
    }
    common::chart_repository(&[("pod.yaml", &pod)])
}

fn render(repo: &tempfile::TempDir, env: &[(&str, &str)]) -> (i32, String) {
    let (code, out, err) = common::umbrella(repo.path(), &["render", "--env", "dev"], env);
    (code, format!("{out}{err}"))
}

/// How many of `answered` went to a manifest of a repository under `prefix`, and how many of
/// those were 401s.
fn manifest_requests(faults: &HttpFaults, prefix: &str) -> (usize, usize) {
    let path = format!("/v2/{prefix}");
    let manifests: Vec<Option<u16>> = faults
        .answered()
        .into_iter()
        .filter(|(line, _)| line.contains(&path) && line.contains("/manifests/"))
        .map(|(_, status)| status)
        .collect();
    let refused = manifests.iter().filter(|s| **s == Some(401)).count();
    (manifests.len(), refused)
}

/// The tokens issued after the first `before` of them.
fn issued_since(registry: &TokenRegistry, prefix: &str, before: usize) -> Vec<Issued> {
    registry.issued(prefix).into_iter().skip(before).collect()
}

/// How many containers of the rendered Pod name the seeded image by its digest.
fn pinned_containers(repo: &tempfile::TempDir) -> usize {
    let pod = std::fs::read_to_string(repo.path().join("umbrella-state/dev/shop/pod-p.yaml"))
        .expect("the rendered Pod");
    let digest = format!("@{}", TokenRegistry::seeded_digest());
    pod.lines()
        .filter(|l| l.trim_start().starts_with("image: ") && l.ends_with(&digest))
        .count()
}

#[test]
fn pinning_100_images_in_50_repositories_takes_one_token_per_repository() {
    let registry = TokenRegistry::from_env();
    let prefix = unique("tok");
    let repositories: Vec<String> = (0..50).map(|i| format!("{prefix}/app-{i}")).collect();
    let tags = vec!["a".to_string(), "b".to_string()];
    registry.seed(&repositories, &tags);
    let faults = HttpFaults::start(&registry.host);
    let images: Vec<String> = repositories
        .iter()
        .flat_map(|r| tags.iter().map(move |t| (r, t)))
        .map(|(r, t)| format!("{}/{r}:{t}", faults.address()))
        .collect();
    let repo = chart_with_images(&images);
    let config = registry.docker_config_with(&faults.address());
    let before = registry.issued(&prefix).len();

    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&config))]);

    assert_eq!(code, 0, "{text}");
    assert_eq!(pinned_containers(&repo), 100);
    let issued = issued_since(&registry, &prefix, before);
    let mut scopes: Vec<String> = issued.iter().flat_map(|i| i.scopes.clone()).collect();
    scopes.sort();
    let wanted: Vec<String> = {
        let mut w: Vec<String> = repositories
            .iter()
            .map(|r| format!("repository:{r}:pull"))
            .collect();
        w.sort();
        w
    };
    assert_eq!(scopes, wanted, "one token per repository scope, each once");
    assert!(issued.iter().all(|i| i.account == registry.credentials().0));
    // One GET per image; the realm was learned from the /v2/ ping, so none was refused.
    assert_eq!(manifest_requests(&faults, &prefix), (100, 0));
}

#[test]
fn tokens_that_expire_mid_render_are_refreshed() {
    let registry = TokenRegistry::from_env();
    let id = unique("exp");
    // Tokens for short/* live 1 s; the render's 40 lookups there (32 at a time) outlive the
    // first token when the first 32 take 1.5 s.
    let short = format!("short/{id}/app");
    let short_tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    // The first token for a scope of stale/* is already expired when it is handed out.
    let stale = format!("stale/{id}/app");
    registry.seed(std::slice::from_ref(&short), &short_tags);
    registry.seed(std::slice::from_ref(&stale), &["1".to_string()]);
    let faults = HttpFaults::start(&registry.host);
    faults.fault(
        "GET",
        &format!("/v2/{short}/manifests/"),
        32,
        Fault::Delay(Duration::from_millis(1500)),
    );
    let mut images: Vec<String> = short_tags
        .iter()
        .map(|t| format!("{}/{short}:{t}", faults.address()))
        .collect();
    images.push(format!("{}/{stale}:1", faults.address()));
    let repo = chart_with_images(&images);
    let config = registry.docker_config_with(&faults.address());
    let short_before = registry.issued(&short).len();
    let stale_before = registry.issued(&stale).len();

    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&config))]);

    assert_eq!(code, 0, "{text}");
    assert_eq!(pinned_containers(&repo), 41);
    let short_issued = issued_since(&registry, &short, short_before);
    assert_eq!(
        short_issued.len(),
        2,
        "the 1 s token was replaced once it expired: {short_issued:?}"
    );
    let stale_issued = issued_since(&registry, &stale, stale_before);
    assert_eq!(
        stale_issued.iter().map(|i| i.expired).collect::<Vec<_>>(),
        [true, false],
        "the refused token was replaced once: {stale_issued:?}"
    );
    assert_eq!(manifest_requests(&faults, &stale), (2, 1));
    assert_eq!(manifest_requests(&faults, &short), (40, 0));
}

#[test]
fn a_repository_the_credentials_may_not_read_is_named() {
    let registry = TokenRegistry::from_env();
    let id = unique("deny");
    let readable = format!("{id}/app");
    registry.seed(std::slice::from_ref(&readable), &["1".to_string()]);
    let forbidden = format!("forbidden/{id}/app");
    let repo = chart_with_images(&[
        format!("{}/{readable}:1", registry.host),
        format!("{}/{forbidden}:1", registry.host),
    ]);

    let (code, text) = render(&repo, &[]);

    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "registry {}: {forbidden}:1: access denied (HTTP 401, insufficient_scope): the credentials given are not allowed to pull from repository {forbidden}",
            registry.host
        )),
        "{text}"
    );
    assert!(!text.contains("credentials were refused"), "{text}");
    assert!(!repo.path().join("umbrella-state").exists());
}

/// The distribution token spec has a realm hand out what it can and leave the refusal to the
/// registry (as registry C's token server does, above); some realms answer 403 instead. A
/// proxy in front of registry C points its challenge at a proxy in front of the real token
/// server, which answers 403 for one repository's scope and forwards the rest.
#[test]
fn a_realm_that_forbids_a_repository_is_told_from_one_refusing_the_credentials() {
    let registry = TokenRegistry::from_env();
    let id = unique("realm");
    let readable = format!("{id}/app");
    let denied_id = unique("realm403");
    let denied = format!("{denied_id}/app");
    registry.seed(&[readable.clone(), denied.clone()], &["1".to_string()]);
    let realm = HttpFaults::start(&common::testenv("UMBRELLA_TEST_TOKEN_SERVER"));
    realm.fault("GET", &denied_id, usize::MAX, Fault::Answer(403, vec![]));
    let front = HttpFaults::start(&registry.host);
    let challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"{}\"",
        realm.address(),
        common::testenv("UMBRELLA_TEST_TOKEN_SERVICE")
    );
    let challenge: &'static str = Box::leak(challenge.into_boxed_str());
    front.fault(
        "GET",
        "/v2/",
        usize::MAX,
        Fault::Header("WWW-Authenticate", challenge),
    );
    let repo = chart_with_images(&[
        format!("{}/{readable}:1", front.address()),
        format!("{}/{denied}:1", front.address()),
    ]);
    let config = registry.docker_config_with(&front.address());

    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&config))]);

    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("registry {}: token from http://{}/token: access denied (HTTP 403 Forbidden): the credentials given are not allowed to pull from repository {denied}", front.address(), realm.address())),
        "{text}"
    );
    assert!(!text.contains("credentials were refused"), "{text}");
    assert!(!text.contains(&format!("repository {readable}")), "{text}");
    assert!(
        realm
            .answered()
            .iter()
            .any(|(line, status)| line.contains(&id) && *status == Some(200)),
        "the readable repository's token came from the real token server: {:?}",
        realm.answered()
    );
    assert!(!repo.path().join("umbrella-state").exists());
}

/// A Docker config holding `entry` for registry C only.
fn docker_config_for(registry: &TokenRegistry, entry: serde_json::Value) -> tempfile::TempDir {
    let config = tempfile::tempdir().expect("temp dir");
    write_file(
        config.path().join("config.json"),
        serde_json::json!({"auths": {registry.host.clone(): entry}}).to_string(),
    );
    config
}

#[test]
fn wrong_or_missing_credentials_are_told_apart_from_a_forbidden_repository() {
    use base64::Engine;
    let registry = TokenRegistry::from_env();
    let id = unique("cred");
    let private = format!("{id}/app");
    let public = format!("public/{id}/app");
    registry.seed(&[private.clone(), public.clone()], &["1".to_string()]);
    let (user, _) = registry.credentials();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:sup3r-wrong"));
    let wrong = docker_config_for(&registry, serde_json::json!({"auth": auth}));
    let none = tempfile::tempdir().expect("temp dir");
    let private_image = format!("{}/{private}:1", registry.host);

    let repo = chart_with_images(std::slice::from_ref(&private_image));
    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&wrong))]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "registry {}: credentials were refused",
            registry.host
        )),
        "{text}"
    );
    assert!(
        !text.contains("sup3r-wrong") && !text.contains(&auth),
        "{text}"
    );
    assert!(!repo.path().join("umbrella-state").exists());

    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&none))]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "registry {}: credentials were missing (run `docker login` for it)",
            registry.host
        )),
        "{text}"
    );

    // Anonymous tokens where the registry gives anonymous access.
    let before = registry.issued(&public).len();
    let repo = chart_with_images(&[format!("{}/{public}:1", registry.host)]);
    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&none))]);
    assert_eq!(code, 0, "{text}");
    let issued = issued_since(&registry, &public, before);
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(
        (issued[0].grant.as_str(), issued[0].account.as_str()),
        ("anonymous", "")
    );
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 path")
}

#[test]
fn an_identity_token_is_exchanged_at_the_realm_and_the_password_never_sent() {
    let registry = TokenRegistry::from_env();
    let id = unique("idt");
    let repositories: Vec<String> = (0..3).map(|i| format!("{id}/app-{i}")).collect();
    registry.seed(&repositories, &["1".to_string()]);
    let config = docker_config_for(
        &registry,
        serde_json::json!({"identitytoken": registry.identity_token()}),
    );
    let images: Vec<String> = repositories
        .iter()
        .map(|r| format!("{}/{r}:1", registry.host))
        .collect();
    let repo = chart_with_images(&images);
    let before = registry.issued(&id).len();

    let (code, text) = render(&repo, &[("DOCKER_CONFIG", path(&config))]);

    assert_eq!(code, 0, "{text}");
    let issued = issued_since(&registry, &id, before);
    assert_eq!(issued.len(), 3, "{issued:?}");
    assert!(
        issued.iter().all(|i| i.grant == "refresh_token"),
        "{issued:?}"
    );
}

#[test]
fn build_pushes_and_retags_through_the_token_registry() {
    let registry = TokenRegistry::from_env();
    let (repo, prefix) = common::fresh_example(&registry.host);
    let (code, out, err) = common::umbrella(repo.path(), &["build", "-o", "json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let first: serde_json::Value = serde_json::from_str(&out).expect("build report");
    assert!(
        first["images"]
            .as_array()
            .expect("images")
            .iter()
            .all(|i| i["outcome"] == "built"),
        "{first}"
    );

    // A new destination tag on an image the registry has: pointed at it registry-side.
    let sources = repo.path().join("sources.yaml");
    let text = std::fs::read_to_string(&sources).expect("sources.yaml");
    let order = format!("newImage: {}/{prefix}/order-service", registry.host);
    std::fs::write(
        &sources,
        text.replace(&order, &format!("{order}\n    tags: [release]")),
    )
    .expect("write sources.yaml");
    let before = registry.issued(&prefix).len();
    let (code, out, err) = common::umbrella(
        repo.path(),
        &["build", "-o", "json", "--only", "order-service"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let second: serde_json::Value = serde_json::from_str(&out).expect("build report");
    assert_eq!(second["images"][0]["outcome"], "cached", "{second}");
    let digest = second["images"][0]["digest"].as_str().expect("digest");
    assert_eq!(Some(digest), first["images"][0]["digest"].as_str());
    let issued = issued_since(&registry, &prefix, before);
    let scopes: Vec<&str> = issued
        .iter()
        .flat_map(|i| i.scopes.iter().map(String::as_str))
        .collect();
    let repository = format!("{prefix}/order-service");
    assert_eq!(
        scopes,
        [
            format!("repository:{repository}:pull"),
            format!("repository:{repository}:pull,push")
        ],
        "{issued:?}"
    );
    let credential =
        umbrella::adapters::credentials::credential_for(&registry.host).expect("Docker config");
    let served = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            umbrella::adapters::registry::Registry::connect(&registry.host, credential)
                .await
                .expect("connect")
                .manifest_digest(&repository, "release")
                .await
                .expect("the new tag")
        });
    assert_eq!(served.as_str(), digest);
}
