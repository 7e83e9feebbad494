//! helm is real: it renders the example umbrella chart, and the output holds the objects of
//! both subcharts and of the umbrella chart itself.

mod common;

use umbrella::adapters::helm;

#[tokio::test]
async fn helm_renders_both_subcharts_of_the_example() {
    let version = helm::version().await.expect("helm on PATH");
    assert!(
        version.starts_with("v3.") || version.starts_with("v4."),
        "{version}"
    );

    let chart = common::repo_root().join("umbrella-chart");
    let chart = chart.to_str().expect("utf-8 path");
    let values = format!("{chart}/values-production.yaml");
    let out = helm::run(&[
        "template",
        "shop",
        chart,
        "--namespace",
        "production",
        "--values",
        &values,
    ])
    .await
    .expect("helm template of the example chart");

    for service in ["order-service", "user-service"] {
        for template in ["deployment", "service", "configmap", "serviceaccount"] {
            let source = format!("# Source: shop/charts/{service}/templates/{template}.yaml");
            assert!(out.contains(&source), "missing {source} in:\n{out}");
        }
    }
    assert!(out.contains("# Source: shop/templates/platform-config.yaml"));
    assert!(out.contains("replicas: 3"), "production values not applied");
    assert!(
        out.contains("image: 127.0.0.1:5000/mirror/busybox:1.35"),
        "third-party image missing"
    );
}
