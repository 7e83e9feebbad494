//! Secrets without plaintext in git, against the real `sops` CLI, helm, registry and cluster:
//! secret values files that sops encrypted are read, the state's Secrets are encrypted so that
//! `sops decrypt` opens them, renders keep them byte for byte, `--check` works with and without
//! a key, deploys decrypt them (and refuse without the key, or after a hand edit), and no
//! output ever shows a value.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use common::group::{Group, client, crd};
use common::{demo_key_file, fresh_example, testenv, umbrella, umbrella_command, unique};
use serde_json::Value;

/// The state file of the example's database Secret.
const SECRET_FILE: &str = "order-service/secret-order-service-database.yaml";

/// Runs the real `sops` in `dir` with `key` as its only age key.
fn sops(dir: &Path, args: &[&str], key: &Path) -> (i32, String, String) {
    let output = Command::new("sops")
        .args(args)
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", key)
        .env("SOPS_DISABLE_VERSION_CHECK", "true")
        .env_remove("SOPS_AGE_KEY")
        .env("XDG_CONFIG_HOME", "/nonexistent/umbrella-tests")
        .output()
        .expect("run sops (built by scripts/testenv)");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A new age key from the real `age-keygen`: its file and its public key.
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .expect("run age-keygen (Debian's age package)");
    assert!(status.success());
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&file)
        .output()
        .expect("age-keygen -y");
    (
        file,
        String::from_utf8_lossy(&public.stdout).trim().to_string(),
    )
}

/// No age key at all.
const NO_KEY: [(&str, &str); 1] = [("SOPS_AGE_KEY_FILE", "/nonexistent/umbrella-tests/keys.txt")];

/// The example in environment `env`, whose order-service gets `password` from
/// `umbrella-chart/secrets-<env>.yaml`, encrypted by the real sops under the example's
/// `.sops.yaml`.
fn example_with_password(env: &str, password: &str) -> tempfile::TempDir {
    let (repo, _) = fresh_example(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    let file = format!("umbrella-chart/secrets-{env}.yaml");
    std::fs::write(
        repo.path().join(&file),
        format!("order-service:\n  database:\n    password: {password}\n"),
    )
    .expect("write secret values");
    let (code, _, err) = sops(repo.path(), &["encrypt", "-i", &file], &demo_key_file());
    assert_eq!(code, 0, "sops encrypt: {err}");
    assert!(!read(&repo.path().join(&file)).contains(password));
    let (code, _, err) = umbrella(repo.path(), &["build"], &[]);
    assert_eq!(code, 0, "{err}");
    repo
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn secret_file(repo: &Path, env: &str) -> PathBuf {
    repo.join("umbrella-state").join(env).join(SECRET_FILE)
}

/// Every file below `dir`, concatenated (to look for a value that must not be there).
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text(&path));
        } else if let Ok(content) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&content));
        }
    }
    text
}

/// `sops decrypt` of a state file with `key`: the Secret as JSON.
fn sops_decrypted(repo: &Path, file: &Path, key: &Path) -> Value {
    let (code, out, err) = sops(
        repo,
        &[
            "decrypt",
            "--output-type",
            "json",
            &file.display().to_string(),
        ],
        key,
    );
    assert_eq!(code, 0, "sops decrypt {}: {err}", file.display());
    serde_json::from_str(&out).expect("sops' JSON")
}

fn set_password(repo: &Path, env: &str, password: &str) {
    let file = format!("umbrella-chart/secrets-{env}.yaml");
    let (code, _, err) = sops(
        repo,
        &[
            "set",
            &file,
            r#"["order-service"]["database"]["password"]"#,
            &format!("\"{password}\""),
        ],
        &demo_key_file(),
    );
    assert_eq!(code, 0, "sops set: {err}");
}

#[test]
fn encrypted_values_render_into_an_encrypted_state_sops_opens_kept_byte_for_byte_and_rotated() {
    let env = unique("sec");
    let password = unique("pw-first");
    let repo = example_with_password(&env, &password);
    let (code, out, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    let file = secret_file(repo.path(), &env);
    let text = read(&file);
    assert!(
        text.contains("name: order-service-database")
            && text.contains("password: ENC[AES256_GCM,")
            && text.contains("encrypted_regex: ^(data|stringData)$"),
        "{text}"
    );
    assert!(!all_text(&repo.path().join("umbrella-state")).contains(&password));
    assert!(!format!("{out}{err}").contains(&password));

    // Exactly the rendered Secret, for the real sops.
    let secret = sops_decrypted(repo.path(), &file, &demo_key_file());
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["namespace"], env.as_str());
    assert_eq!(
        secret["stringData"],
        serde_json::json!({"password": password})
    );

    // Same inputs, same bytes; a new value, a new file.
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&file), text, "an unchanged Secret was encrypted again");
    let second = unique("pw-second");
    set_password(repo.path(), &env, &second);
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    let changed = sops_decrypted(repo.path(), &file, &demo_key_file());
    assert_eq!(changed["stringData"]["password"], second.as_str());

    // A new recipient for the state: encrypted again for it alone.
    let keys = tempfile::tempdir().expect("temp dir");
    let (new_key, new_recipient) = age_key(keys.path(), "new.txt");
    let config = read(&repo.path().join(".sops.yaml"));
    let (head, _) = config
        .rsplit_once("age: ")
        .expect("the state rule's recipient");
    std::fs::write(
        repo.path().join(".sops.yaml"),
        format!("{head}age: {new_recipient}\n"),
    )
    .expect("write .sops.yaml");
    let before_rotation = read(&file);
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(read(&file), before_rotation);
    let rotated = sops_decrypted(repo.path(), &file, &new_key);
    assert_eq!(rotated["stringData"]["password"], second.as_str());
    let (code, _, _) = sops(
        repo.path(),
        &["decrypt", &file.display().to_string()],
        &demo_key_file(),
    );
    assert_ne!(code, 0, "the old key still opens the rotated file");

    // Exactly the rendered Secret: what the same render writes when told to keep it in clear.
    let (code, _, err) = umbrella(
        repo.path(),
        &["render", "--env", &env, "--allow-plaintext-secrets"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let plain: Value = yaml_serde::from_str(&read(&file)).expect("the Secret in clear");
    assert_eq!(rotated, plain);
}

#[test]
fn a_secret_value_a_chart_puts_outside_a_secret_is_refused_never_written() {
    let env = unique("leak");
    let password = unique("pw-leak");
    let repo = example_with_password(&env, &password);
    std::fs::write(
        repo.path()
            .join("umbrella-chart/charts/order-service/templates/leak.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  url: postgres://app:{{ .Values.database.password }}@db\n",
    )
    .expect("write a template");
    let (code, out, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("ConfigMap/leak")
            && err.contains("`data.url`")
            && err.contains(&format!(
                "`order-service.database.password` from secrets-{env}.yaml"
            )),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains(&password));
    assert!(
        !repo.path().join("umbrella-state").join(&env).exists(),
        "nothing written"
    );
}

#[test]
fn keys_are_found_in_the_variable_and_in_sops_default_file() {
    let env = unique("keys");
    let repo = example_with_password(&env, &unique("pw-keys"));
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    let check = ["render", "--env", env.as_str(), "--check"];
    let key_text = read(&demo_key_file());
    let (code, out, err) = umbrella(
        repo.path(),
        &check,
        &[NO_KEY[0], ("SOPS_AGE_KEY", key_text.as_str())],
    );
    assert_eq!(code, 0, "SOPS_AGE_KEY: {out}{err}");

    let config = tempfile::tempdir().expect("temp dir");
    let default = config.path().join("sops/age/keys.txt");
    std::fs::create_dir_all(default.parent().expect("parent")).expect("mkdir");
    std::fs::copy(demo_key_file(), &default).expect("copy the key");
    let xdg = config.path().display().to_string();
    let (code, out, err) = umbrella(repo.path(), &check, &[NO_KEY[0], ("XDG_CONFIG_HOME", &xdg)]);
    assert_eq!(code, 0, "$XDG_CONFIG_HOME/sops/age/keys.txt: {out}{err}");

    let home = tempfile::tempdir().expect("temp dir");
    let below_home = home.path().join(".config");
    std::fs::create_dir_all(&below_home).expect("mkdir");
    std::fs::rename(config.path().join("sops"), below_home.join("sops")).expect("move");
    let home_dir = home.path().display().to_string();
    let (code, out, err) = umbrella(
        repo.path(),
        &check,
        &[NO_KEY[0], ("XDG_CONFIG_HOME", ""), ("HOME", &home_dir)],
    );
    assert_eq!(code, 0, "~/.config/sops/age/keys.txt: {out}{err}");

    let (code, _, _) = umbrella(repo.path(), &check, &[NO_KEY[0], ("HOME", &home_dir)]);
    assert_eq!(code, 1, "no key where the variables point");
}

#[test]
fn secret_values_layer_after_the_environments_values_and_before_values_flags() {
    let env = unique("lay");
    let repo = example_with_password(&env, "from-env-secrets");
    let path = |name: &str| repo.path().join("umbrella-chart").join(name);
    std::fs::write(
        path("secrets.yaml"),
        "order-service:\n  database:\n    password: from-all-secrets\n",
    )
    .expect("write");
    let (code, _, err) = sops(
        repo.path(),
        &["encrypt", "-i", "umbrella-chart/secrets.yaml"],
        &demo_key_file(),
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        path(&format!("values-{env}.yaml")),
        "order-service:\n  database:\n    password: from-env-values\n",
    )
    .expect("write");
    // secrets.yaml over values-ENV.yaml, then secrets-ENV.yaml over both.
    let for_env = path(&format!("secrets-{env}.yaml"));
    let aside = repo.path().join("secrets-env.aside");
    std::fs::rename(&for_env, &aside).expect("set secrets-ENV.yaml aside");
    let file = secret_file(repo.path(), &env);
    for (expected, restore) in [("from-all-secrets", true), ("from-env-secrets", false)] {
        let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
        assert_eq!(code, 0, "{err}");
        let secret = sops_decrypted(repo.path(), &file, &demo_key_file());
        assert_eq!(secret["stringData"]["password"], expected);
        if restore {
            std::fs::rename(&aside, &for_env).expect("put secrets-ENV.yaml back");
        }
    }

    std::fs::write(
        repo.path().join("flag.yaml"),
        "order-service:\n  database:\n    password: from-the-flag\n",
    )
    .expect("write");
    let (code, _, err) = umbrella(
        repo.path(),
        &["render", "--env", &env, "-f", "flag.yaml"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let secret = sops_decrypted(repo.path(), &file, &demo_key_file());
    assert_eq!(secret["stringData"]["password"], "from-the-flag");
}

#[test]
fn check_compares_secrets_with_a_key_and_without_one_names_them_unless_told_not_to() {
    let env = unique("chk");
    let password = unique("pw-check");
    let repo = example_with_password(&env, &password);
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    let check = ["render", "--env", env.as_str(), "--check"];
    let (code, _, err) = umbrella(repo.path(), &check, &[]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = umbrella(repo.path(), &check, &NO_KEY);
    assert_eq!(code, 1, "{out}{err}");
    let listed = format!("umbrella-state/{env}/{SECRET_FILE}");
    assert!(
        err.contains("no age key to compare") && err.contains(&listed),
        "{err}"
    );
    let mut without = check.to_vec();
    without.push("--check-without-secrets");
    let (code, out, err) = umbrella(repo.path(), &without, &NO_KEY);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("not compared without an age key") && err.contains(&listed),
        "{err}"
    );

    // What can be compared without a key still is: a new label is a difference.
    let template = repo
        .path()
        .join("umbrella-chart/charts/order-service/templates/secret.yaml");
    let source = read(&template).replace("type: Opaque", "immutable: false\ntype: Opaque");
    std::fs::write(&template, source).expect("write template");
    let (code, out, err) = umbrella(repo.path(), &without, &NO_KEY);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(SECRET_FILE) && out.contains("+immutable: false"),
        "{out}"
    );
    for text in [&out, &err] {
        assert!(!text.contains(&password), "{text}");
    }

    // A render that writes needs the key: refused, named, nothing written.
    let before = all_text(&repo.path().join("umbrella-state"));
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", &env], &NO_KEY);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("secrets-{env}.yaml: cannot decrypt: no age key"))
            && err.contains("SOPS_AGE_KEY_FILE"),
        "{err}"
    );
    assert_eq!(all_text(&repo.path().join("umbrella-state")), before);

    // helm repeating a value in its error does not show it.
    std::fs::write(
        repo.path()
            .join("umbrella-chart/charts/order-service/templates/fail.yaml"),
        "{{ fail (printf \"refusing password %s\" .Values.database.password) }}\n",
    )
    .expect("write template");
    let (code, out, err) = umbrella(repo.path(), &["render", "--env", &env], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing password (secret value)"), "{err}");
    assert!(!format!("{out}{err}").contains(&password));
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_decrypts_with_the_key_and_applies_nothing_without_it_or_after_a_hand_edit() {
    let env = unique("dep");
    let password = unique("pw-deploy");
    let repo = example_with_password(&env, &password);
    common::commit_all(repo.path(), "sources");
    let cleanup = Group {
        repo: tempfile::tempdir().expect("temp dir"),
        env: env.clone(),
    };
    let run = |args: &[&str], extra_env: &[(&str, &str)]| umbrella(repo.path(), args, extra_env);
    let (code, _, err) = run(&["ci", "--env", &env], &[]);
    assert_eq!(code, 0, "{err}");
    let deploy = ["deploy", "app-group", env.as_str(), "--yes", "-o", "json"];
    let file = secret_file(repo.path(), &env);
    let recipient = read(&file)
        .lines()
        .find_map(|l| l.trim().strip_prefix("- recipient: ").map(str::to_string))
        .expect("recipient");

    let (code, out, err) = run(&deploy, &NO_KEY);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(SECRET_FILE) && err.contains("no age key") && err.contains(&recipient),
        "{err}"
    );
    let keys = tempfile::tempdir().expect("temp dir");
    let (wrong, _) = age_key(keys.path(), "wrong.txt");
    let wrong = wrong.display().to_string();
    let (code, _, err) = run(&deploy, &[("SOPS_AGE_KEY_FILE", &wrong)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("none of the age keys found") && err.contains(&recipient),
        "{err}"
    );
    let committed = read(&file);
    std::fs::write(
        &file,
        committed.replace("part-of: shop", "part-of: shop-edited"),
    )
    .expect("edit by hand");
    let (code, _, err) = run(&deploy, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MAC does not match"), "{err}");
    std::fs::write(&file, &committed).expect("restore");
    let config_maps =
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client().await, &env);
    assert!(
        config_maps
            .get_opt("order-service")
            .await
            .expect("get")
            .is_none(),
        "something was applied by a refused deploy"
    );

    let (code, out, err) = run(&deploy, &[]);
    assert_eq!(code, 0, "{err}");
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client().await, &env);
    let live = secrets
        .get("order-service-database")
        .await
        .expect("the Secret");
    let value = live
        .data
        .expect("data")
        .remove("password")
        .expect("password");
    assert_eq!(value.0, password.as_bytes());

    // A changed value: diff, status and the deploy report never show it, old or new.
    let changed = unique("pw-changed");
    set_password(repo.path(), &env, &changed);
    common::commit_all(repo.path(), "a new password");
    let (code, ci_out, ci_err) = run(&["ci", "--env", &env], &[]);
    assert_eq!(code, 0, "{ci_err}");
    let (code, diff, diff_err) = run(&["diff", "app-group", &env, "--color", "never"], &[]);
    assert_eq!(code, 0, "{diff_err}");
    assert!(
        diff.contains("Secret/order-service-database") && diff.contains("masked"),
        "{diff}"
    );
    let (code, diff_json, diff_json_err) = run(&["diff", "app-group", &env, "-o", "json"], &[]);
    assert_eq!(code, 0, "{diff_json_err}");
    assert!(diff_json.contains("order-service-database"), "{diff_json}");
    let (code, status, status_err) = run(&["status", "app-group", &env, "-o", "json"], &[]);
    assert_eq!(
        code, 0,
        "the live commit's state, decrypted, matches: {status}{status_err}"
    );
    assert!(status.contains("order-service-database"), "{status}");
    let (code, redeploy, redeploy_err) = run(&deploy, &[]);
    assert_eq!(code, 0, "{redeploy_err}");
    let encoded = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let everything = [
        out,
        err,
        ci_out,
        ci_err,
        diff,
        diff_err,
        diff_json,
        diff_json_err,
        status,
        status_err,
        redeploy,
        redeploy_err,
    ]
    .concat();
    for secret in [&password, &changed, &encoded(&password), &encoded(&changed)] {
        assert!(
            !everything.contains(secret.as_str()),
            "{secret} shown in:\n{everything}"
        );
    }
    let live = secrets
        .get("order-service-database")
        .await
        .expect("the Secret");
    assert_eq!(
        live.data
            .expect("data")
            .remove("password")
            .expect("password")
            .0,
        changed.as_bytes()
    );
    drop(cleanup);
}

#[test]
fn ctrl_c_during_a_render_leaves_no_decrypted_value_on_disk() {
    let env = unique("int");
    let password = unique("pw-interrupt");
    let repo = example_with_password(&env, &password);
    let scratch = tempfile::tempdir().expect("temp dir");
    // A helm that is slow to start, so the render is interrupted while helm holds the values.
    let slow_helm = scratch.path().join("slow-helm");
    std::fs::write(&slow_helm, "#!/bin/sh\nsleep 3\nexec helm \"$@\"\n").expect("write");
    std::fs::set_permissions(
        &slow_helm,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let temp = scratch.path().join("tmp");
    std::fs::create_dir(&temp).expect("tmp");
    let mut child = umbrella_command()
        .args(["render", "--env", &env])
        .current_dir(repo.path())
        .env("UMBRELLA_HELM", &slow_helm)
        .env("TMPDIR", &temp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start umbrella render");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the render was not interrupted");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !all_text(&temp).contains(&password),
        "a decrypted value was left in TMPDIR"
    );
    assert!(
        !all_text(repo.path()).contains(&password),
        "a decrypted value was left in the repository"
    );
    assert!(!repo.path().join("umbrella-state").join(&env).exists());
}

#[test]
fn a_sealed_secret_waits_for_synced_and_fails_fast_on_a_sealing_error() {
    let group = Group::new("sealed");
    // The CRD is the cluster's (as the controller's chart would install it), shared by runs.
    apply_crd(&crd("bitnami.com", "SealedSecret", "Namespaced"));
    let sealed = |name: &str| {
        format!(
            "apiVersion: bitnami.com/v1\nkind: SealedSecret\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n  encryptedData:\n    password: AgBy8hCi\n",
            group.env
        )
    };
    group.write("app", "sealed.yaml", &sealed("db"));
    let running = group.deploy_in_background(&["--wait-timeout", "90s"]);
    // Play the controller: it cannot unseal it.
    let patched = wait_and_patch_status(
        &group.env,
        "db",
        r#"{"status": {"conditions": [{"type": "Synced", "status": "False", "reason": "ErrUnsealFailed", "message": "no key could decrypt secret (password)"}]}}"#,
    );
    if !patched {
        let (code, out, err) = running.join().expect("deploy");
        panic!("the SealedSecret never appeared; the deploy: exit {code}\n{out}{err}");
    }
    let started = std::time::Instant::now();
    let (code, _, err) = running.join().expect("deploy");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no key could decrypt secret (password)"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not fast: {err}"
    );

    group.write("app", "sealed.yaml", &sealed("db2"));
    let running = group.deploy_in_background(&["--wait-timeout", "90s"]);
    assert!(wait_and_patch_status(
        &group.env,
        "db2",
        r#"{"status": {"conditions": [{"type": "Synced", "status": "True"}]}}"#,
    ));
    let (code, _, err) = running.join().expect("deploy");
    assert_eq!(code, 0, "{err}");
}

fn apply_crd(yaml: &str) {
    let mut apply = Command::new("kubectl")
        .args(["--context", "umbrella-test", "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl apply");
    std::io::Write::write_all(&mut apply.stdin.take().expect("stdin"), yaml.as_bytes())
        .expect("write the CRD");
    assert!(apply.wait().expect("kubectl apply").success());
    let established = Command::new("kubectl")
        .args([
            "--context",
            "umbrella-test",
            "wait",
            "--for=condition=Established",
        ])
        .args(["crd/sealedsecrets.bitnami.com", "--timeout=60s"])
        .stdout(Stdio::null())
        .status()
        .expect("kubectl wait");
    assert!(established.success());
}

/// Waits (up to 60 s) for SealedSecret `name` and sets its status, as its controller would.
fn wait_and_patch_status(namespace: &str, name: &str, status: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let patched = Command::new("kubectl")
            .args([
                "--context",
                "umbrella-test",
                "-n",
                namespace,
                "patch",
                "sealedsecret",
                name,
            ])
            .args(["--type", "merge", "-p", status])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if patched {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}
