mod common;

#[test]
fn quickstart_validates_and_runs_to_completion() {
    let out = std::process::Command::new(common::bin())
        .args(["validate", "-c", "pipelines/quickstart.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(common::bin())
        .args(["run", "-c", "pipelines/quickstart.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!common::ndjson(&String::from_utf8_lossy(&out.stdout)).is_empty());
}
