//! The render stage: `helm template` of the umbrella chart for one environment, split into one
//! app per subchart, every image pinned to a digest, written as the environment's state
//! directory (`umbrella-state/<env>/<app>/<kind>-<name>.yaml` and `images.lock.yaml`).

pub mod capabilities;
mod dependencies;
pub mod images;
pub mod pin;
pub mod sealing;
mod secret_values;
pub mod split;
pub mod state_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::adapters::helm::{self, HelmError};
use crate::adapters::retry::{Retrier, RetryNote};
use crate::exit::{self, ExitStatus};
use crate::formats::chart::UmbrellaChart;
use crate::formats::environments::Environment;
use crate::formats::images_lock::{ImagesLock, LockedImage};
use crate::formats::layout;
use crate::formats::manifest;
use crate::formats::sops::{Keys, rules::SopsConfig};
use crate::formats::sources::KbldConfig;
use crate::formats::yaml::YamlError;
use crate::progress::Progress;

use images::Rules;
use sealing::Sealer;
use secret_values::SecretValues;
use split::RenderedObject;
use state_dir::StateFiles;

/// The annotation recording where each image of an object came from (kbld's shape).
pub const IMAGES_ANNOTATION: &str = "umbrella.dev/images";
/// Registry lookups in flight at once.
const LOOKUP_CONCURRENCY: usize = 32;

/// What to render.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub root: PathBuf,
    pub env: String,
    /// helm's release name (default: the chart's name).
    pub release: Option<String>,
    /// The namespace of namespaced objects (default: the environment's name).
    pub namespace: Option<String>,
    /// Values files applied after `values.yaml` and the environment's (`umbrella.yaml`'s
    /// `values`, else `values-<env>.yaml`).
    pub extra_values: Vec<PathBuf>,
    /// The environment's settings in `umbrella.yaml`, under the flags.
    pub environment: Environment,
    /// The kube context whose cluster's capabilities charts see (default: `umbrella.yaml`'s).
    pub context: Option<String>,
    /// The Kubernetes version and extra API versions charts see, over `umbrella.yaml`'s and
    /// the cluster's.
    pub capabilities: capabilities::Explicit,
    /// The images lock of the build stage.
    pub build_lock: PathBuf,
    pub allow_plaintext_secrets: bool,
    /// Compare with the state on disk instead of writing it.
    pub check: bool,
    /// `--check` passes though Secrets could not be compared for want of a key.
    pub check_without_secrets: bool,
}

/// One app of the rendered environment.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    pub name: String,
    pub objects: usize,
}

/// What a render produced.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub env: String,
    pub state_dir: PathBuf,
    pub apps: Vec<AppSummary>,
    pub images: Vec<LockedImage>,
    /// Registry manifest lookups made (one per distinct tag reference).
    pub registry_lookups: usize,
    /// Milliseconds spent in helm, in finding and pinning images, and in writing the state.
    pub helm_ms: u128,
    pub pin_ms: u128,
    pub write_ms: u128,
    /// Registry requests that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
    /// The Kubernetes version and API versions charts saw, and where they came from.
    pub capabilities: capabilities::Seen,
    /// Secrets `--check` compared but for their values, for want of a key (state files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverified_secrets: Vec<String>,
    /// Secrets encrypted anew without comparing with the committed ones, for want of a key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted_without_key: Vec<String>,
    #[serde(skip)]
    pub files: StateFiles,
}

/// The render could not produce a complete state; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Input(#[from] YamlError),
    #[error(transparent)]
    Helm(#[from] HelmError),
    /// `helm template` refused the chart or its values.
    #[error("rendering the chart: {0}")]
    Template(HelmError),
    #[error(transparent)]
    Split(#[from] split::SplitError),
    #[error("{0}")]
    Refused(String),
    /// Secret values could not be read, or a Secret could not be encrypted: nothing was written.
    #[error("{0}")]
    Secrets(String),
    /// `--check` without a key: these Secrets were compared but for their values.
    #[error(
        "no age key to compare these Secrets with the committed ones (everything but their values is unchanged):\n  {}\nGive the key (SOPS_AGE_KEY_FILE or SOPS_AGE_KEY), or pass --check-without-secrets",
        .0.join("\n  ")
    )]
    Unverified(Vec<String>),
    /// The chart's output breaks Kubernetes' rules: nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The state is reached through a symbolic link, or holds one: nothing was read or
    /// written there.
    #[error("{0}")]
    Linked(String),
    /// `--check`: the state on disk is not what the sources render.
    #[error("{} differs from a fresh render of the sources", dir.display())]
    Stale { dir: PathBuf, diff: String },
}

impl ExitStatus for RenderError {
    fn exit_code(&self) -> u8 {
        match self {
            RenderError::Input(_)
            | RenderError::Split(_)
            | RenderError::Invalid(_)
            | RenderError::Secrets(_)
            | RenderError::Linked(_) => exit::REFUSED,
            RenderError::Template(HelmError::Failed { .. }) => exit::REFUSED,
            _ => exit::FAILURE,
        }
    }
}

/// Renders the environment, then writes its state directory (as a whole, or not at all), or
/// with `check`, compares it with the one on disk.
pub async fn run(
    request: &RenderRequest,
    progress: Arc<dyn Progress>,
) -> Result<Rendered, RenderError> {
    let mut rendered = render(request, progress).await?;
    let dir = rendered.state_dir.clone();
    if request.check {
        let on_disk = StateFiles::read(&dir).map_err(|source| RenderError::Read {
            path: dir.clone(),
            source,
        })?;
        return match rendered.files.diff_from(&on_disk, CHECK_DIFF_LINES) {
            Some(diff) => Err(RenderError::Stale { dir, diff }),
            None if !rendered.unverified_secrets.is_empty() && !request.check_without_secrets => {
                Err(RenderError::Unverified(rendered.unverified_secrets))
            }
            None => Ok(rendered),
        };
    }
    let started = std::time::Instant::now();
    rendered
        .files
        .write(&dir)
        .map_err(|source| RenderError::Write { path: dir, source })?;
    rendered.write_ms = started.elapsed().as_millis();
    Ok(rendered)
}

/// The longest diff `--check` shows.
const CHECK_DIFF_LINES: usize = 200;

/// Renders the environment in memory: nothing is written (see [`state_dir`]).
pub async fn render(
    request: &RenderRequest,
    progress: Arc<dyn Progress>,
) -> Result<Rendered, RenderError> {
    let state_dir = unlinked_state_dir(request)?;
    let chart_dir = request.root.join(layout::CHART_DIR);
    let chart = UmbrellaChart::load(&chart_dir)?;
    let config = kbld_config(&request.root)?;
    let built = ImagesLock::read(&request.build_lock)?;
    let settings = Settings::of(request, &chart)?;
    let seen = capabilities::for_render(
        &settings.capabilities,
        settings.context.as_deref(),
        &state_dir.join(layout::CAPABILITIES_FILE),
    )
    .await?;
    let keys = Keys::from_environment();
    let secrets = SecretValues::load(&chart.dir, &request.env, &keys, request.check)
        .map_err(RenderError::Secrets)?;
    let helm_started = std::time::Instant::now();
    let output = template(&settings, &seen.for_render, &chart, &secrets).await?;
    let helm_ms = helm_started.elapsed().as_millis();
    let mut objects = split::split(&output, &chart.metadata.name)?;
    check_apps(&objects, &request.env)?;
    fill_namespaces(&mut objects, &settings.namespace);
    if !request.allow_plaintext_secrets {
        refuse_leaks(&secrets.leaks(&objects, sealing::is_secret))?;
    }

    let pin_started = std::time::Instant::now();
    let retrier = Retrier::reporting(progress);
    let pinning = pin_images(&mut objects, &config, &built, &retrier).await?;
    let pin_ms = pin_started.elapsed().as_millis();
    let lock = ImagesLock::new(pinning.images.values().cloned().collect());
    let (mut files, sealed) = state_files(request, &objects, &lock, &keys, &state_dir)?;
    if let Some(record) = &seen.record {
        files
            .files
            .insert(PathBuf::from(layout::CAPABILITIES_FILE), record.clone());
    }
    Ok(Rendered {
        env: request.env.clone(),
        state_dir,
        apps: summarize(&objects),
        images: pinning.images.into_values().collect(),
        registry_lookups: pinning.lookups,
        helm_ms,
        pin_ms,
        write_ms: 0,
        retries: retrier.notes(),
        capabilities: seen,
        unverified_secrets: sealed.unverified,
        encrypted_without_key: sealed.unkeyed,
        files,
    })
}

/// Pins every image of the objects: built ones as the images lock has them, the others as
/// their registries answer.
async fn pin_images(
    objects: &mut [RenderedObject],
    config: &KbldConfig,
    built: &ImagesLock,
    retrier: &Retrier,
) -> Result<pin::Pinning, RenderError> {
    let rules = Rules::from_config(config);
    let uses = image_uses(objects, &rules);
    let decisions = pin::decide(&uses.keys().cloned().collect(), config, built);
    let pinning = pin::resolve(decisions, LOOKUP_CONCURRENCY, retrier)
        .await
        .map_err(|unresolved| RenderError::Refused(unresolved_message(&unresolved, &uses)))?;
    for object in objects.iter_mut() {
        pin_object(object, &rules, &pinning.images);
    }
    Ok(pinning)
}

/// The environment's state directory, once neither it, nor the way to it, nor anything in it is
/// a symbolic link: nothing is read or written through one, which could lead anywhere.
fn unlinked_state_dir(request: &RenderRequest) -> Result<PathBuf, RenderError> {
    let dir = layout::env_dir(&request.root, &request.env);
    layout::no_link_to_env(&request.root, &request.env)
        .and_then(|()| state_dir::refuse_links(&dir, true))
        .map_err(RenderError::Linked)?;
    Ok(dir)
}

/// Every object's state file, Secrets encrypted (unless plaintext is allowed), and the lock.
fn state_files(
    request: &RenderRequest,
    objects: &[RenderedObject],
    lock: &ImagesLock,
    keys: &Keys,
    state_dir: &Path,
) -> Result<(StateFiles, sealing::Sealed), RenderError> {
    let config = SopsConfig::load(&request.root)?;
    let mut sealer = Sealer::new(config, keys, &request.env, state_dir, request.check);
    let mut refused = Vec::new();
    let files = StateFiles::from_objects(objects, lock, |object, path| {
        if request.allow_plaintext_secrets {
            return Ok(state_dir::plain_file(object));
        }
        // Every Secret that cannot be encrypted is named, not only the first.
        Ok(sealer.file(object, path).unwrap_or_else(|problem| {
            refused.push(problem);
            String::new()
        }))
    })
    .map_err(RenderError::Refused)?;
    if !refused.is_empty() {
        refused.push(sealing::HOW_TO_ADD_A_RULE.to_string());
        return Err(RenderError::Secrets(refused.join("\n")));
    }
    Ok((files, sealer.sealed))
}

/// Refuses a render that would write a secret value in clear outside a Secret.
fn refuse_leaks(leaks: &[String]) -> Result<(), RenderError> {
    if leaks.is_empty() {
        return Ok(());
    }
    let mut lines = leaks.to_vec();
    lines.push(secret_values::HOW_TO_KEEP_A_VALUE_SECRET.to_string());
    Err(RenderError::Secrets(lines.join("\n")))
}

/// `helm template` of the chart, its dependencies built first where they are missing.
async fn template(
    settings: &Settings,
    capabilities: &capabilities::ForRender,
    chart: &UmbrellaChart,
    secrets: &SecretValues,
) -> Result<String, RenderError> {
    let copy = dependencies::ensure(chart).await?;
    let dir = copy.as_ref().map_or(&chart.dir, |c| &c.dir);
    helm_template(settings, capabilities, dir, secrets.yaml.as_deref())
        .await
        .map_err(|e| RenderError::Template(e.scrubbed(|text| secrets.scrub(text))))
}

/// `sources.yaml`, whose search rules and overrides apply to every image; none is no rules.
fn kbld_config(root: &Path) -> Result<KbldConfig, YamlError> {
    let sources = root.join(layout::SOURCES_FILE);
    if sources.exists() {
        KbldConfig::load(&sources)
    } else {
        Ok(KbldConfig::default())
    }
}

/// The settings of this render: the flags over `umbrella.yaml`'s environment over the defaults.
struct Settings {
    release: String,
    namespace: String,
    context: Option<String>,
    /// `values.yaml` and the environment's values files, in order.
    values: Vec<PathBuf>,
    /// The caller's values files, layered after the secret values.
    extra_values: Vec<PathBuf>,
    capabilities: capabilities::Explicit,
}

impl Settings {
    fn of(request: &RenderRequest, chart: &UmbrellaChart) -> Result<Self, RenderError> {
        let env = request.environment.clone();
        let values = env.values_files(&request.root, &chart.dir, &request.env);
        for file in &request.extra_values {
            check_values_file(file)?;
        }
        let mut api_versions = env.api_versions;
        api_versions.extend(request.capabilities.api_versions.iter().cloned());
        Ok(Settings {
            release: first(&request.release, env.release, || {
                chart.metadata.name.clone()
            }),
            namespace: first(&request.namespace, env.namespace, || request.env.clone()),
            context: request.context.clone().or(env.context),
            values,
            extra_values: request.extra_values.clone(),
            capabilities: capabilities::Explicit {
                kube_version: request
                    .capabilities
                    .kube_version
                    .clone()
                    .or(env.kube_version),
                api_versions,
            },
        })
    }
}

/// The flag, else the configured value, else the default.
fn first(
    flag: &Option<String>,
    configured: Option<String>,
    default: impl FnOnce() -> String,
) -> String {
    flag.clone().or(configured).unwrap_or_else(default)
}

async fn helm_template(
    settings: &Settings,
    capabilities: &capabilities::ForRender,
    chart_dir: &Path,
    secret_values: Option<&str>,
) -> Result<String, HelmError> {
    let mut args = vec![
        "template".to_string(),
        settings.release.clone(),
        chart_dir.display().to_string(),
        "--namespace".into(),
        settings.namespace.clone(),
        "--include-crds".into(),
        "--skip-tests".into(),
    ];
    let mut values: Vec<String> = settings
        .values
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    if secret_values.is_some() {
        values.push("-".into());
    }
    values.extend(
        settings
            .extra_values
            .iter()
            .map(|f| f.display().to_string()),
    );
    for file in values {
        args.push("--values".into());
        args.push(file);
    }
    if let Some(version) = &capabilities.kube_version {
        args.push("--kube-version".into());
        args.push(version.clone());
    }
    for api in &capabilities.api_versions {
        args.push("--api-versions".into());
        args.push(api.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm::run_with_input(&args, secret_values).await
}

/// A `--values` file exists and is YAML (helm's own message for a missing one is obscure).
fn check_values_file(file: &Path) -> Result<(), RenderError> {
    crate::formats::yaml::read_documents::<yaml_serde::Value>(file)?;
    Ok(())
}

/// Every app's directory and name follow Kubernetes' rules (they become paths, ConfigMap names
/// and label values).
fn check_apps(objects: &[RenderedObject], env: &str) -> Result<(), RenderError> {
    let apps: BTreeMap<&str, &str> = objects
        .iter()
        .map(|o| (o.app.as_str(), o.source.as_str()))
        .collect();
    let problems: Vec<String> = apps
        .into_iter()
        .filter_map(|(app, source)| {
            let problem = layout::AppId::checked(env, app).err()?;
            Some(format!(
                "{source}: {problem} (the subchart's name or alias)"
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RenderError::Invalid(problems.join("\n")))
    }
}

/// Kinds without a namespace. Custom resources are namespaced unless their CRD (rendered here)
/// says `scope: Cluster`.
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "APIService",
    "CSIDriver",
    "CSINode",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// Whether objects of `kind` live in a namespace, given the CRDs being rendered.
pub fn is_namespaced(kind: &str, cluster_scoped_crd_kinds: &BTreeSet<String>) -> bool {
    !CLUSTER_SCOPED_KINDS.contains(&kind) && !cluster_scoped_crd_kinds.contains(kind)
}

fn fill_namespaces(objects: &mut [RenderedObject], namespace: &str) {
    let cluster_crds: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition" && o.value["spec"]["scope"] == "Cluster")
        .filter_map(|o| {
            o.value["spec"]["names"]["kind"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    for object in objects {
        if object.namespace().is_none()
            && is_namespaced(object.kind(), &cluster_crds)
            && let Some(metadata) = object.value["metadata"].as_object_mut()
        {
            metadata.insert("namespace".into(), Value::String(namespace.to_string()));
        }
    }
}

/// Every distinct image reference, with where it is used: (app, object, field).
type Uses = BTreeMap<String, Vec<(String, String, String)>>;

fn image_uses(objects: &[RenderedObject], rules: &Rules) -> Uses {
    let mut uses = Uses::new();
    for object in objects {
        for (field, image) in images::find(&object.value, rules) {
            uses.entry(image)
                .or_default()
                .push((object.app.clone(), object.describe(), field));
        }
    }
    uses
}

fn unresolved_message(unresolved: &[pin::Unresolved], uses: &Uses) -> String {
    let mut lines = vec!["cannot pin these images to a digest; nothing was written:".to_string()];
    for item in unresolved {
        lines.push(format!("  {}: {}", item.reference, item.reason));
        for (app, object, field) in uses.get(&item.reference).into_iter().flatten() {
            lines.push(format!("    used by app {app}, {object}, field {field}"));
        }
    }
    lines.join("\n")
}

/// Replaces every image of `object` by its pinned reference and records the origins.
fn pin_object(object: &mut RenderedObject, rules: &Rules, pinned: &BTreeMap<String, LockedImage>) {
    let mut used: BTreeMap<String, &LockedImage> = BTreeMap::new();
    images::rewrite(&mut object.value, rules, &mut |_, image| {
        let entry = pinned.get(image)?;
        used.insert(entry.new_image.clone(), entry);
        Some(entry.new_image.clone())
    });
    if used.is_empty() {
        return;
    }
    let record: Vec<Value> = used
        .values()
        .map(|entry| serde_json::json!({"url": entry.new_image, "origins": entry.origins}))
        .collect();
    let text = manifest::to_yaml(&Value::Array(record));
    if let Some(metadata) = object.value["metadata"].as_object_mut() {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(IMAGES_ANNOTATION.into(), Value::String(text));
        }
    }
}

fn summarize(objects: &[RenderedObject]) -> Vec<AppSummary> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for object in objects {
        *counts.entry(&object.app).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(name, objects)| AppSummary {
            name: name.into(),
            objects,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str, extra: Value) -> RenderedObject {
        let mut value =
            serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
        if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
            v.extend(e.clone());
        }
        RenderedObject {
            app: "a".into(),
            source: "shop/charts/a/templates/x.yaml".into(),
            value,
        }
    }

    #[test]
    fn namespaces_are_filled_for_namespaced_kinds_only() {
        let crd = object(
            "CustomResourceDefinition",
            "widgets.example.com",
            serde_json::json!({"spec": {"scope": "Cluster", "names": {"kind": "Widget"}}}),
        );
        let mut objects = vec![
            object("ConfigMap", "c", Value::Null),
            object("ClusterRole", "r", Value::Null),
            object("Widget", "w", Value::Null),
            object("Gadget", "g", Value::Null),
            crd,
        ];
        objects[0].value["metadata"]["namespace"] = "explicit".into();
        fill_namespaces(&mut objects, "production");
        let namespaces: Vec<Option<&str>> = objects.iter().map(|o| o.namespace()).collect();
        assert_eq!(
            namespaces,
            [Some("explicit"), None, None, Some("production"), None]
        );
    }

    #[test]
    fn pinning_rewrites_and_annotates() {
        let mut o = object(
            "Pod",
            "p",
            serde_json::json!({"spec": {"containers": [{"image": "app"}, {"image": "app"}]}}),
        );
        let entry = LockedImage {
            image: "app".into(),
            new_image: "r/app@sha256:abc".into(),
            preresolved: true,
            origins: vec![crate::formats::images_lock::Origin::Local {
                path: "services/app".into(),
            }],
        };
        let pinned = BTreeMap::from([("app".to_string(), entry)]);
        pin_object(&mut o, &Rules::default_only(), &pinned);
        assert_eq!(
            o.value["spec"]["containers"][1]["image"],
            "r/app@sha256:abc"
        );
        assert_eq!(
            o.value["metadata"]["annotations"][IMAGES_ANNOTATION],
            "- url: r/app@sha256:abc\n  origins:\n  - local:\n      path: services/app\n"
        );
    }
}
