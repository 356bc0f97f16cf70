//! sanlock probe() edge cases that need no daemon.

use std::time::Duration;

use vmwarden::config::SanlockConfig;
use vmwarden::probe::sanlock::probe;
use vmwarden::probe::ProbeError;

#[tokio::test]
async fn missing_binary_is_absent() {
    let cfg = SanlockConfig {
        enabled: true,
        sanlock: "/nonexistent/vmwarden-test/sanlock".into(),
    };
    let err = probe(&cfg, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Absent(_)), "{err}");
}
