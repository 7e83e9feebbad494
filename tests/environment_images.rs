//! The image side of the environment is real: a Docker engine builds (running a RUN step), pushes
//! to registry A and, with credentials, to registry B over TLS; each push digest equals the
//! digest the registry serves.

mod common;

use bollard::query_parameters::{BuildImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use umbrella::adapters::credentials::{Credential, credential_for};
use umbrella::adapters::docker::Engine;
use umbrella::adapters::registry::{Registry, RegistryError};

use common::{testenv, unique};

/// A build context whose image content is unique to this run, so every push is a new manifest.
fn context_tar(nonce: &str, base: &str) -> Vec<u8> {
    let dockerfile =
        format!("FROM {base}\nRUN echo {nonce} > /built-by-run\nCOPY hello.txt /hello.txt\n");
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body) in [("Dockerfile", dockerfile.as_str()), ("hello.txt", nonce)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, body.as_bytes())
            .expect("tar entry");
    }
    builder.into_inner().expect("tar")
}

async fn build(engine: &Engine, tag: &str, nonce: &str) {
    let options = BuildImageOptionsBuilder::default().t(tag).rm(true).build();
    let body = bollard::body_full(context_tar(nonce, &testenv("UMBRELLA_TEST_BASE_IMAGE")).into());
    let mut stream = engine.docker.build_image(options, None, Some(body));
    while let Some(item) = stream.next().await {
        item.unwrap_or_else(|e| panic!("docker build {tag} failed: {e}"));
    }
}

async fn tag(engine: &Engine, source: &str, repository: &str, tag: &str) {
    let options = TagImageOptionsBuilder::default()
        .repo(repository)
        .tag(tag)
        .build();
    engine
        .docker
        .tag_image(source, Some(options))
        .await
        .expect("docker tag");
}

#[tokio::test]
async fn builds_and_pushes_to_both_registries_with_matching_digests() {
    let engine = Engine::connect()
        .await
        .expect("the Docker engine of the environment");
    let nonce = unique("envcheck");
    let local = format!("umbrella-envcheck:{nonce}");
    build(&engine, &local, &nonce).await;

    let registry_a = testenv("UMBRELLA_TEST_REGISTRY_A");
    let repo_a = format!("{registry_a}/umbrella-test/envcheck");
    tag(&engine, &local, &repo_a, &nonce).await;
    let pushed_a = engine
        .push(&repo_a, &nonce, None)
        .await
        .expect("push to registry A");
    let served_a = Registry::connect(&registry_a, None)
        .await
        .expect("connect registry A")
        .manifest_digest("umbrella-test/envcheck", &nonce)
        .await
        .expect("HEAD on registry A");
    assert_eq!(pushed_a, served_a);

    let registry_b = testenv("UMBRELLA_TEST_REGISTRY_B");
    let credential = credential_for(&registry_b)
        .expect("Docker config of the environment")
        .expect("registry B credentials in DOCKER_CONFIG");
    let repo_b = format!("{registry_b}/umbrella-test/envcheck");
    tag(&engine, &local, &repo_b, &nonce).await;
    let pushed_b = engine
        .push(&repo_b, &nonce, Some(&credential))
        .await
        .expect("push to registry B");
    let registry = Registry::connect(&registry_b, Some(credential))
        .await
        .expect("connect registry B");
    assert_eq!(registry.ping().await.expect("ping B").scheme, "https");
    let served_b = registry
        .manifest_digest("umbrella-test/envcheck", &nonce)
        .await
        .expect("HEAD on registry B");
    assert_eq!(pushed_b, served_b);
    // The same image content, pushed to both, has one digest.
    assert_eq!(pushed_a, pushed_b);
}

#[tokio::test]
async fn registry_b_refuses_missing_and_wrong_credentials() {
    let registry_b = testenv("UMBRELLA_TEST_REGISTRY_B");
    let anonymous = Registry::connect(&registry_b, None)
        .await
        .expect("connect registry B");
    match anonymous.ping().await {
        Err(RegistryError::Unauthorized {
            had_credentials: false,
            ..
        }) => {}
        other => panic!("registry B answered an anonymous /v2/ with {other:?}"),
    }
    let wrong = Credential::Basic {
        username: testenv("UMBRELLA_TEST_REGISTRY_B_USER"),
        password: "not-the-password".into(),
    };
    let refused = Registry::connect(&registry_b, Some(wrong))
        .await
        .expect("connect registry B");
    let error = refused
        .ping()
        .await
        .expect_err("a wrong password must be refused");
    let message = error.to_string();
    assert!(message.contains("credentials were refused"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");

    let engine = Engine::connect().await.expect("Docker engine");
    let nonce = unique("unauth");
    let local = format!("umbrella-envcheck:{nonce}");
    build(&engine, &local, &nonce).await;
    let repo = format!("{registry_b}/umbrella-test/unauthorized");
    tag(&engine, &local, &repo, &nonce).await;
    engine
        .push(&repo, &nonce, None)
        .await
        .expect_err("an anonymous push to registry B must fail");
}
