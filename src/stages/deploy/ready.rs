//! When is an applied object really ready, and when has it failed for good: pure functions over
//! the live object's JSON, by kapp's, kubedog's and `kubectl rollout`'s rules combined.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::formats::object_ref::ObjectRef;

/// An object's readiness at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting(String),
    Failed(String),
}

/// Container waiting reasons that do not resolve by waiting.
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
    "InvalidImageName",
];

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition_is(object: &Value, kind: &str, status: &str) -> bool {
    condition(object, kind).is_some_and(|c| c["status"] == status)
}

fn message_of(object: &Value, kind: &str) -> String {
    condition(object, kind)
        .map(|c| {
            format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or(kind),
                c["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// The controller has seen the latest spec.
fn observed(object: &Value) -> bool {
    let generation = int(&object["metadata"]["generation"]);
    int(&object["status"]["observedGeneration"]) >= generation
}

/// The readiness of `object` (its kind decides the rule).
pub fn readiness(object: &Value) -> Readiness {
    let group = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map_or("", |(g, _)| g);
    match (group, object["kind"].as_str().unwrap_or_default()) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        ("", "Pod") => pod(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(object),
        ("bitnami.com", "SealedSecret") => sealed_secret(object),
        ("external-secrets.io", "ExternalSecret") => external_secret(object),
        ("apiregistration.k8s.io", "APIService") => {
            if condition_is(object, "Available", "True") {
                Readiness::Ready
            } else {
                Readiness::Waiting(message_of(object, "Available"))
            }
        }
        ("", "Service") if object["spec"]["type"] == "LoadBalancer" => {
            if object["status"]["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
            {
                Readiness::Ready
            } else {
                Readiness::Waiting("waiting for a load balancer address".into())
            }
        }
        _ => generic(object),
    }
}

fn deployment(d: &Value) -> Readiness {
    if condition(d, "Progressing")
        .is_some_and(|c| c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Readiness::Failed(message_of(d, "Progressing"));
    }
    if !observed(d) {
        return Readiness::Waiting("waiting for the controller to see the new spec".into());
    }
    let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &d["status"];
    let (updated, ready, available, total) = (
        int(&status["updatedReplicas"]),
        int(&status["readyReplicas"]),
        int(&status["availableReplicas"]),
        int(&status["replicas"]),
    );
    if updated < wanted {
        return Readiness::Waiting(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Readiness::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < wanted || ready < wanted {
        return Readiness::Waiting(format!("{available} of {wanted} replicas available"));
    }
    Readiness::Ready
}

fn stateful_set(s: &Value) -> Readiness {
    if !observed(s) {
        return Readiness::Waiting("waiting for the controller to see the new spec".into());
    }
    let wanted = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &s["status"];
    if int(&status["readyReplicas"]) < wanted {
        return Readiness::Waiting(format!(
            "{} of {wanted} replicas ready",
            int(&status["readyReplicas"])
        ));
    }
    let strategy = &s["spec"]["updateStrategy"];
    if strategy["type"] == "OnDelete" {
        return Readiness::Ready;
    }
    match strategy["rollingUpdate"]["partition"].as_i64() {
        Some(partition) if partition > 0 => {
            let needed = wanted - partition;
            if int(&status["updatedReplicas"]) < needed {
                return Readiness::Waiting(format!(
                    "{} of {needed} replicas above the partition updated",
                    int(&status["updatedReplicas"])
                ));
            }
            Readiness::Ready
        }
        _ if status["updateRevision"] != status["currentRevision"] => {
            Readiness::Waiting("rolling update in progress".into())
        }
        _ => Readiness::Ready,
    }
}

fn daemon_set(d: &Value) -> Readiness {
    if !observed(d) {
        return Readiness::Waiting("waiting for the controller to see the new spec".into());
    }
    let status = &d["status"];
    let desired = int(&status["desiredNumberScheduled"]);
    if int(&status["updatedNumberScheduled"]) < desired || int(&status["numberAvailable"]) < desired
    {
        return Readiness::Waiting(format!(
            "{} of {desired} pods updated and available",
            int(&status["numberAvailable"])
        ));
    }
    Readiness::Ready
}

fn job(j: &Value) -> Readiness {
    if condition_is(j, "Failed", "True") {
        return Readiness::Failed(message_of(j, "Failed"));
    }
    if condition_is(j, "Complete", "True") {
        return Readiness::Ready;
    }
    Readiness::Waiting(format!(
        "{} of {} completions",
        int(&j["status"]["succeeded"]),
        j["spec"]["completions"].as_i64().unwrap_or(1)
    ))
}

fn pod(p: &Value) -> Readiness {
    if let Some(reason) = pod_failure(p) {
        return Readiness::Failed(reason);
    }
    match p["status"]["phase"].as_str() {
        Some("Succeeded") => Readiness::Ready,
        _ if condition_is(p, "Ready", "True") => Readiness::Ready,
        phase => Readiness::Waiting(format!("pod {}", phase.unwrap_or("Pending"))),
    }
}

/// A hook Pod runs to completion: done when it succeeded.
pub fn hook_pod(p: &Value) -> Readiness {
    if let Some(reason) = pod_failure(p) {
        return Readiness::Failed(reason);
    }
    match p["status"]["phase"].as_str() {
        Some("Succeeded") => Readiness::Ready,
        Some("Failed") => Readiness::Failed("the hook pod failed".into()),
        phase => Readiness::Waiting(format!("pod {}", phase.unwrap_or("Pending"))),
    }
}

/// Whether an object deleted while it was waited for had completed: a Job is deleted only
/// after it finished (`ttlSecondsAfterFinished`, a hook's delete policy).
pub fn completes_when_gone(reference: &ObjectRef) -> bool {
    reference.kind == "Job" && reference.group() == "batch"
}

fn crd(c: &Value) -> Readiness {
    if condition_is(c, "NamesAccepted", "False") {
        return Readiness::Failed(message_of(c, "NamesAccepted"));
    }
    if condition_is(c, "Established", "True") && condition_is(c, "NamesAccepted", "True") {
        Readiness::Ready
    } else {
        Readiness::Waiting("waiting for the CRD to be established".into())
    }
}

/// Unsealed by the sealed-secrets controller: `Synced` True for the current generation; False is
/// a sealing error that waiting does not mend (wrong key, wrong name or namespace).
fn sealed_secret(s: &Value) -> Readiness {
    let current = s["status"]["observedGeneration"].is_null() || observed(s);
    match condition(s, "Synced").map(|c| &c["status"]) {
        Some(status) if current && status == "True" => Readiness::Ready,
        Some(status) if current && status == "False" => Readiness::Failed(message_of(s, "Synced")),
        _ => Readiness::Waiting("waiting for the sealed-secrets controller to unseal it".into()),
    }
}

/// Fetched by the External Secrets Operator: `Ready` True. Until then (no condition yet, or a
/// provider error it retries) it waits, and says why.
fn external_secret(e: &Value) -> Readiness {
    match condition(e, "Ready") {
        Some(c) if c["status"] == "True" => Readiness::Ready,
        Some(_) => Readiness::Waiting(message_of(e, "Ready")),
        None => Readiness::Waiting("waiting for the External Secrets Operator to sync it".into()),
    }
}

/// Any other kind: its Ready or Available condition when it has one, else ready once applied.
fn generic(o: &Value) -> Readiness {
    for kind in ["Ready", "Available"] {
        if let Some(c) = condition(o, kind) {
            return match c["status"].as_str() {
                Some("True") => Readiness::Ready,
                Some("False") if c["reason"].as_str().is_some_and(|r| r.contains("Fail")) => {
                    Readiness::Failed(message_of(o, kind))
                }
                _ => Readiness::Waiting(message_of(o, kind)),
            };
        }
    }
    Readiness::Ready
}

/// The label selector of a workload's pods (`k=v,...`), for the kinds whose pods tell why they
/// are not ready; `None` for other kinds.
pub fn pod_selector(object: &Value) -> Option<String> {
    let labels = pod_match_labels(object)?;
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(pairs.join(","))
}

/// The labels that select a workload's pods (never empty: that would select every pod of the
/// namespace).
pub fn pod_match_labels(object: &Value) -> Option<BTreeMap<String, String>> {
    let labels: BTreeMap<String, String> = match object["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            object["spec"]["selector"]["matchLabels"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        }
        "Job" => BTreeMap::from([(
            "job-name".to_string(),
            object["metadata"]["name"].as_str()?.to_string(),
        )]),
        _ => return None,
    };
    (!labels.is_empty()).then_some(labels)
}

/// Why a workload's pod has failed for good, by the kind's rule: a Job retries failed pods up
/// to its backoffLimit, so only a fatal waiting reason counts for its pods.
pub fn workload_pod_failure(kind: &str, pod: &Value) -> Option<String> {
    if kind == "Job" {
        fatal_waiting(pod)
    } else {
        pod_failure(pod)
    }
}

/// Why a pod has failed for good: a fatal container waiting reason, or phase Failed.
pub fn pod_failure(pod: &Value) -> Option<String> {
    fatal_waiting(pod).or_else(|| failed_phase(pod))
}

/// A container of the pod waits for a reason that does not heal by waiting.
pub fn fatal_waiting(pod: &Value) -> Option<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let statuses = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten();
    for status in statuses {
        let waiting = &status["state"]["waiting"];
        if let Some(reason) = waiting["reason"]
            .as_str()
            .filter(|r| FATAL_WAITING_REASONS.contains(r))
        {
            return Some(format!(
                "pod {name}, container {}: {reason}: {}",
                status["name"].as_str().unwrap_or_default(),
                waiting["message"].as_str().unwrap_or_default()
            ));
        }
    }
    None
}

fn failed_phase(pod: &Value) -> Option<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if pod["status"]["phase"] == "Failed" {
        let reason = pod["status"]["reason"].as_str().unwrap_or("Failed");
        let terminated = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|s| {
                s["state"]["terminated"].as_object().map(|t| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        t.clone(),
                    )
                })
            });
        return Some(match terminated {
            Some((container, t)) => format!(
                "pod {name}, container {container}: {} (exit code {}): {}",
                t.get("reason").and_then(Value::as_str).unwrap_or(reason),
                t.get("exitCode").and_then(Value::as_i64).unwrap_or(-1),
                t.get("message").and_then(Value::as_str).unwrap_or_default()
            ),
            None => format!(
                "pod {name}: {reason}: {}",
                pod["status"]["message"].as_str().unwrap_or_default()
            ),
        });
    }
    None
}

/// A Warning event whose reason contains `Failed`, about one of `involved` (the object and its
/// pods), that happened after `since`: the reason and message.
pub fn warning_failure(
    event: &Value,
    involved: &std::collections::BTreeSet<String>,
    since: k8s_openapi::jiff::Timestamp,
) -> Option<String> {
    let reason = event["reason"].as_str()?;
    let name = event["involvedObject"]["name"].as_str()?;
    let when = ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|k| event[k].as_str())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let recent = when.is_some_and(|t| t >= since - k8s_openapi::jiff::SignedDuration::from_secs(2));
    // FailedScheduling can heal (a node may come): it counts only after the Unschedulable grace.
    let counts = reason.contains("Failed") && reason != "FailedScheduling";
    (event["type"] == "Warning" && counts && involved.contains(name) && recent).then(|| {
        format!(
            "{} {name}: {reason}: {}",
            event["involvedObject"]["kind"].as_str().unwrap_or_default(),
            event["message"].as_str().unwrap_or_default()
        )
    })
}

/// Whether a pod has been unschedulable (condition PodScheduled=False, reason Unschedulable).
pub fn unschedulable(pod: &Value) -> Option<String> {
    let c = condition(pod, "PodScheduled")?;
    (c["status"] == "False" && c["reason"] == "Unschedulable").then(|| {
        format!(
            "pod {}: Unschedulable: {}",
            pod["metadata"]["name"].as_str().unwrap_or_default(),
            c["message"].as_str().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_selectors_of_workloads() {
        let deployment = serde_json::json!({
            "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}},
        });
        assert_eq!(
            pod_selector(&deployment).as_deref(),
            Some("app=web,tier=front")
        );
        let job = serde_json::json!({"kind": "Job", "metadata": {"name": "migrate"}});
        assert_eq!(pod_selector(&job).as_deref(), Some("job-name=migrate"));
        let config_map = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(pod_selector(&config_map), None);
        let by_expressions = serde_json::json!({
            "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
        });
        assert_eq!(pod_selector(&by_expressions), None);
    }
    use serde_json::json;

    fn deploy(generation: i64, observed: i64, status: Value) -> Value {
        let mut status = status;
        status["observedGeneration"] = json!(observed);
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_needs_the_new_generation_and_all_replicas() {
        let all = json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert_eq!(readiness(&deploy(2, 2, all.clone())), Readiness::Ready);
        assert!(
            matches!(readiness(&deploy(3, 2, all)), Readiness::Waiting(_)),
            "a stale status is not ready"
        );
        let rolling = json!({"replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert!(
            matches!(readiness(&deploy(2, 2, rolling)), Readiness::Waiting(m) if m.contains("old replicas"))
        );
        let stuck = json!({"replicas": 3, "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet x has timed out progressing."}]});
        assert!(
            matches!(readiness(&deploy(2, 2, stuck)), Readiness::Failed(m) if m.contains("ProgressDeadlineExceeded"))
        );
    }

    #[test]
    fn stateful_set_partitions() {
        let set = |partition: i64, updated: i64| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
                   "spec": {"replicas": 4, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}},
                   "status": {"observedGeneration": 1, "readyReplicas": 4, "updatedReplicas": updated, "currentRevision": "a", "updateRevision": "b"}})
        };
        assert_eq!(readiness(&set(2, 2)), Readiness::Ready);
        assert!(matches!(readiness(&set(2, 1)), Readiness::Waiting(_)));
        assert!(matches!(readiness(&set(0, 4)), Readiness::Waiting(m) if m.contains("rolling")));
    }

    #[test]
    fn jobs_pods_crds_and_conditions() {
        let job = |c: &str| json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [{"type": c, "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        assert_eq!(readiness(&job("Complete")), Readiness::Ready);
        assert!(
            matches!(readiness(&job("Failed")), Readiness::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "status": {"conditions": [{"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}]}});
        assert_eq!(readiness(&crd), Readiness::Ready);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(readiness(&cm), Readiness::Ready);
        let cr = json!({"apiVersion": "x.io/v1", "kind": "Thing", "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Reconciling"}]}});
        assert!(matches!(readiness(&cr), Readiness::Waiting(_)));
    }

    #[test]
    fn sealed_secrets_need_synced_and_external_secrets_ready() {
        let sealed = |status: Value| json!({"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "metadata": {"generation": 2}, "status": status});
        let synced = |s: &str, generation: i64| {
            sealed(
                json!({"observedGeneration": generation, "conditions": [{"type": "Synced", "status": s, "reason": "ErrUnsealFailed", "message": "no key could decrypt secret (password)"}]}),
            )
        };
        assert!(matches!(
            readiness(&sealed(Value::Null)),
            Readiness::Waiting(_)
        ));
        assert_eq!(readiness(&synced("True", 2)), Readiness::Ready);
        assert!(matches!(
            readiness(&synced("True", 1)),
            Readiness::Waiting(_)
        ));
        assert_eq!(
            readiness(&synced("False", 2)),
            Readiness::Failed("ErrUnsealFailed: no key could decrypt secret (password)".into())
        );
        let external = |conditions: Value| json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "status": {"conditions": conditions}});
        assert!(
            matches!(readiness(&external(Value::Null)), Readiness::Waiting(m) if m.contains("External Secrets Operator"))
        );
        assert!(
            matches!(readiness(&external(json!([{"type": "Ready", "status": "False", "reason": "SecretSyncedError", "message": "could not get secret data from provider"}]))), Readiness::Waiting(m) if m.contains("could not get secret data"))
        );
        assert_eq!(
            readiness(&external(json!([{"type": "Ready", "status": "True"}]))),
            Readiness::Ready
        );
    }

    #[test]
    fn recent_failed_warnings_about_the_object_or_its_pods_count() {
        let since: k8s_openapi::jiff::Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let involved = std::collections::BTreeSet::from(["web".to_string(), "web-1".to_string()]);
        let event = |name: &str, reason: &str, at: &str| json!({"type": "Warning", "reason": reason, "message": "m", "lastTimestamp": at, "involvedObject": {"kind": "Pod", "name": name}});
        assert_eq!(
            warning_failure(
                &event("web-1", "FailedMount", "2026-01-01T10:00:05Z"),
                &involved,
                since
            )
            .unwrap(),
            "Pod web-1: FailedMount: m"
        );
        assert_eq!(
            warning_failure(
                &event("other", "FailedMount", "2026-01-01T10:00:05Z"),
                &involved,
                since
            ),
            None
        );
        assert_eq!(
            warning_failure(
                &event("web-1", "BackOff", "2026-01-01T10:00:05Z"),
                &involved,
                since
            ),
            None
        );
        assert_eq!(
            warning_failure(
                &event("web-1", "FailedScheduling", "2026-01-01T10:00:05Z"),
                &involved,
                since
            ),
            None
        );
        assert_eq!(
            warning_failure(
                &event("web-1", "FailedMount", "2026-01-01T09:00:00Z"),
                &involved,
                since
            ),
            None,
            "an old event"
        );
    }

    #[test]
    fn fatal_pod_states_are_failures_with_their_reason() {
        let pulling = json!({"metadata": {"name": "web-1"}, "status": {"phase": "Pending", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}});
        assert_eq!(
            pod_failure(&pulling).unwrap(),
            "pod web-1, container app: ImagePullBackOff: Back-off pulling image \"x\""
        );
        let creating = json!({"metadata": {"name": "web-1"}, "status": {"containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_failure(&creating), None);
        let failed = json!({"metadata": {"name": "job-1"}, "status": {"phase": "Failed", "containerStatuses": [{"name": "c", "state": {"terminated": {"reason": "Error", "exitCode": 2}}}]}});
        assert!(
            pod_failure(&failed)
                .unwrap()
                .contains("Error (exit code 2)")
        );
        let pending = json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}});
        assert!(unschedulable(&pending).unwrap().contains("0/3 nodes"));
    }
}
