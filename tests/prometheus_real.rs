//! A real Prometheus server scrapes two running agents, one answering in classic text (the
//! default) and one in OpenMetrics (`[agent] openmetrics = true`): both expositions must be
//! accepted (targets up, no scrape error) and our series queryable from each.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn require_real() -> bool {
    std::env::var("VMWARDEN_REQUIRE_REAL").is_ok_and(|v| v == "1")
}

#[test]
fn real_prometheus_scrapes_the_agent() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !require_real(),
            "prometheus is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("SKIPPED real_prometheus_scrapes_the_agent: prometheus not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The hung-free collectors only: this test is about the exposition, not the sources.
    let collectors =
        "[drbd]\nproc_path = \"/nonexistent\"\ndrbdsetup = \"/nonexistent/drbdsetup\"\n\
         [lvm]\nenabled = false\n[sanlock]\nenabled = false\n[libvirt]\nenabled = false\n";
    let mut agents = Vec::new();
    let mut jobs = String::new();
    for (job, agent_keys) in [("classic", ""), ("openmetrics", "openmetrics = true\n")] {
        let sub = dir.path().join(job);
        std::fs::create_dir(&sub).unwrap();
        let port = free_port();
        let cfg = write_config(&sub, port, &format!("{agent_keys}{collectors}"));
        agents.push(Agent::start(&cfg, port));
        jobs.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ));
    }

    let prom_port = free_port();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut prom);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the agent successfully; last targets answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
            continue;
        }
        let (_, targets) = http(prom_port, "GET", "/api/v1/targets", None);
        last = targets.clone();
        if targets.matches("\"health\":\"up\"").count() == 2 {
            assert_eq!(
                targets.matches("\"lastError\":\"\"").count(),
                2,
                "{targets}"
            );
            break;
        }
        assert!(
            !targets.contains("\"health\":\"down\""),
            "scrape failed: {targets}"
        );
    }
    // Our own series are stored from each: the drbd collector reported absent on this node,
    // and a counter keeps its `_total` name whichever format carried it.
    for (query, want) in [
        (
            "vmwarden_collector_absent%7Bcollector%3D%22drbd%22%2Cjob%3D%22{job}%22%7D",
            "\"1\"]",
        ),
        (
            "vmwarden_parse_errors_total%7Bjob%3D%22{job}%22%7D",
            "\"value\":[",
        ),
    ] {
        for job in ["classic", "openmetrics"] {
            let query = query.replace("{job}", job);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, q) = http(
                    prom_port,
                    "GET",
                    &format!("/api/v1/query?query={query}"),
                    None,
                );
                if q.contains("\"value\":[") {
                    assert!(q.contains(want), "{job}: {q}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{job}: series not queryable: {q}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    drop(agents);
}
