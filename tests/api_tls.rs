//! TLS with certificates the test makes (rcgen): two agents with TLS listeners and mutual TLS
//! between them; `vmwarden ctl status` goes over TLS to its agent, which asks its peer over
//! https:// with its client certificate. Plain HTTP to a TLS listener, a client without a
//! certificate or with one from another CA, and a client trusting another CA all fail cleanly,
//! and the agent keeps serving.

#[path = "support/api.rs"]
mod api;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ctl, virsh_test_driver, AgentConfig};
use common::*;

struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![
            "t1".to_string(),
            "t2".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (ca_pem, issuer) = ca("vmwarden test CA");
    let (other_pem, other) = ca("another CA");
    let (cert, key) = leaf(&issuer);
    let (scert, skey) = leaf(&other);
    Pki {
        ca: write_file_mode(dir, "ca.pem", &ca_pem, 0o644),
        other_ca: write_file_mode(dir, "other-ca.pem", &other_pem, 0o644),
        cert: write_file_mode(dir, "cert.pem", &cert, 0o644),
        key: write_file_mode(dir, "key.pem", &key, 0o600),
        stranger_cert: write_file_mode(dir, "stranger.pem", &scert, 0o644),
        stranger_key: write_file_mode(dir, "stranger-key.pem", &skey, 0o600),
    }
}

fn node_config(
    dir: &Path,
    name: &str,
    port: u16,
    peer: (&str, u16),
    pki: &Pki,
    ca: &Path,
) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    api::agent_config(
        &d,
        port,
        &AgentConfig {
            node: name,
            watchdog: false,
            cluster: format!(
                "peers = [{{ name = \"{}\", url = \"https://127.0.0.1:{}\", libvirt_uri = \"test:///default\" }}]\n",
                peer.0, peer.1
            ),
            extra: format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nca_file = \"{}\"\n",
                pki.cert.display(),
                pki.key.display(),
                pki.ca.display(),
                ca.display(),
            ),
            ..Default::default()
        },
    )
}

/// GET `path` over TLS trusting `ca`, showing `client` (cert, key) when given: the answer, or
/// why the connection failed.
fn tls_get(
    port: u16,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    path: &str,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // Some servers close without close_notify; what was read counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn tls_and_mutual_tls_between_agents() {
    if !virsh_test_driver("api_tls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d);
    let (p1, p2) = (free_port(), free_port());
    let c1 = node_config(d, "t1", p1, ("t2", p2), &pki, &pki.ca);
    let c2 = node_config(d, "t2", p2, ("t1", p1), &pki, &pki.ca);
    let _a1 = Agent::start_logged(&c1, p1, &d.join("t1.log"));
    let _a2 = Agent::start_logged(&c2, p2, &d.join("t2.log"));

    // The right CA and a client certificate: served.
    let ok = tls_get(p1, &pki.ca, Some((&pki.cert, &pki.key)), "/healthz").unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok\n"),
        "{ok}"
    );

    // ctl over TLS to t1, which asks t2 over https:// with its client certificate.
    let out = ctl(&c1, ["--json", "status", "test"]);
    let text = &out.stdout;
    assert!(out.ok(), "{}", out.text());
    let nodes = out.json();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t1", "t2"], "{text}");
    assert!(
        nodes[1]["error"].is_null() && nodes[1]["ok"] == true,
        "{text}"
    );
    assert_eq!(nodes[1]["state"], "running (unknown)", "{text}");

    // Plain HTTP to the TLS listener: no HTTP answer, the connection is closed promptly.
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", p1)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "{buf:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    // Mutual TLS: no client certificate, or one from another CA: refused.
    let e = tls_get(p1, &pki.ca, None, "/healthz").unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    let e = tls_get(
        p1,
        &pki.ca,
        Some((&pki.stranger_cert, &pki.stranger_key)),
        "/healthz",
    )
    .unwrap_err();
    assert!(!e.is_empty(), "{e}");
    // A client that trusts another CA refuses the agent's certificate.
    let e = tls_get(p1, &pki.other_ca, Some((&pki.cert, &pki.key)), "/healthz").unwrap_err();
    assert!(e.contains("UnknownIssuer") || e.contains("issuer"), "{e}");

    // ctl with the wrong CA: a clean error that says what to check, exit 2.
    let wrong = d.join("t1/wrong-ca.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&c1).unwrap().replace(
            &format!("ca_file = \"{}\"", pki.ca.display()),
            &format!("ca_file = \"{}\"", pki.other_ca.display()),
        ),
    )
    .unwrap();
    let out = ctl(&wrong, ["status", "test"]);
    let err = &out.stderr;
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        err.contains("TLS with the agent") && err.contains("ca_file"),
        "{err}"
    );

    // Still serving after all that.
    let ok = tls_get(p1, &pki.ca, Some((&pki.cert, &pki.key)), "/healthz").unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn a_readable_tls_key_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d);
    std::fs::set_permissions(
        &pki.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let port = free_port();
    let cfg = node_config(d, "t1", port, ("t2", 1), &pki, &pki.ca);
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
}
