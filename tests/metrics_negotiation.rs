//! `/metrics` content negotiation over real HTTP against `vmwarden run`: every combination of
//! exposition format (`Accept`) and encoding (`Accept-Encoding`) a scraper can ask for, checked
//! on the headers and on the (inflated) body. The header parsing itself is unit-tested in
//! `src/negotiate.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// What Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn get(port: u16, headers: &[(&str, &str)]) -> Answer {
    let mut req = String::from("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn inflate(gz: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut out)
        .expect("a valid gzip stream");
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum F {
    OpenMetrics,
    Classic,
}

/// The default: classic text to every client that takes it, Prometheus included.
#[test]
fn every_format_and_encoding_combination() {
    combinations(
        "",
        [
            (Some(PROMETHEUS_ACCEPT), F::Classic),
            (Some("application/openmetrics-text"), F::OpenMetrics),
            (Some("text/plain;version=0.0.4"), F::Classic),
            (
                Some("application/openmetrics-text;q=0.9,text/plain;q=0.2"),
                F::Classic,
            ),
            (None, F::Classic),
        ],
    );
}

/// `[agent] openmetrics = true`: the format the client prefers.
#[test]
fn every_format_and_encoding_combination_preferring_openmetrics() {
    combinations(
        "openmetrics = true\n",
        [
            (Some(PROMETHEUS_ACCEPT), F::OpenMetrics),
            (Some("application/openmetrics-text"), F::OpenMetrics),
            (Some("text/plain;version=0.0.4"), F::Classic),
            (
                Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
                F::Classic,
            ),
            (None, F::Classic),
        ],
    );
}

/// One agent with `agent_keys` under `[agent]`, asked with every `Accept` of `accepts` and every
/// `Accept-Encoding` below.
fn combinations(agent_keys: &str, accepts: [(Option<&str>, F); 5]) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc_drbd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/drbd/proc84_syncsource.txt");
    let cfg = write_config(
        dir.path(),
        port,
        &format!(
            "{agent_keys}[drbd]\nproc_path = \"{}\"\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
             [libvirt]\nenabled = false\n",
            proc_drbd.display()
        ),
    );
    let _agent = Agent::start(&cfg, port);

    let encodings: [(Option<&str>, bool); 5] = [
        (Some("gzip"), true),
        (Some("gzip, deflate, br"), true),
        (None, false),
        (Some("gzip;q=0"), false),
        (Some("identity"), false),
    ];
    for (accept, want_format) in accepts {
        for (encoding, want_gzip) in encodings {
            let mut h = Vec::new();
            if let Some(a) = accept {
                h.push(("Accept", a));
            }
            if let Some(e) = encoding {
                h.push(("Accept-Encoding", e));
            }
            let what = format!("Accept {accept:?}, Accept-Encoding {encoding:?}");
            let a = get(port, &h);
            assert_eq!(a.status, 200, "{what}");
            assert_eq!(a.header("Vary"), Some("Accept, Accept-Encoding"), "{what}");
            let body = if want_gzip {
                assert_eq!(a.header("Content-Encoding"), Some("gzip"), "{what}");
                let text = inflate(&a.body);
                assert!(
                    a.body.len() * 3 < text.len(),
                    "{what}: gzip should shrink {} bytes, got {}",
                    text.len(),
                    a.body.len()
                );
                text
            } else {
                assert_eq!(a.header("Content-Encoding"), None, "{what}");
                String::from_utf8(a.body.clone()).unwrap()
            };
            assert_eq!(
                a.header("Content-Length"),
                Some(a.body.len().to_string().as_str()),
                "{what}"
            );
            let ctype = a.header("Content-Type").unwrap_or("");
            match want_format {
                F::OpenMetrics => {
                    assert!(
                        ctype.starts_with("application/openmetrics-text; version=1.0.0"),
                        "{what}: {ctype}"
                    );
                    assert!(body.ends_with("# EOF\n"), "{what}");
                    // OpenMetrics names a counter family without `_total`.
                    assert!(
                        body.contains("# TYPE vmwarden_drbd_network_sent_bytes counter\n"),
                        "{what}"
                    );
                }
                F::Classic => {
                    assert!(
                        ctype.starts_with("text/plain; version=0.0.4"),
                        "{what}: {ctype}"
                    );
                    assert!(!body.contains("# EOF"), "{what}");
                    assert!(
                        body.contains("# TYPE vmwarden_drbd_network_sent_bytes_total counter\n"),
                        "{what}"
                    );
                }
            }
            // The same data whatever the wrapping.
            assert!(
                body.contains(
                    "vmwarden_drbd_network_sent_bytes_total{resource=\"drbd0\",volume=\"0\",minor=\"0\",peer=\"peer\"} 3145080832\n"
                ),
                "{what}:\n{body}"
            );
        }
    }
}
