//! Calls between agents (and from `vmwarden ctl` to its local agent): JSON over HTTP/1.1,
//! authenticated with the cluster secret. The client side is here; the server side is in
//! `api/server.rs` (routes) and `actions/` (what a request does).

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// What one agent asks another during a migration (the target's part of the lock dance), or to
/// learn where a VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerOp {
    /// Where the VM is and which lock this node holds on it; which of `disks` it cannot see.
    Status,
    /// Incoming migration: take the VM's lock shared.
    AcquireShared,
    /// Migration finished here: shared → exclusive.
    ConvertToExclusive,
    /// Migration rolled back (or the VM left): drop this node's lock.
    Release,
    /// What this node's hypervisor can run (`virsh domcapabilities` for `platform`, machine
    /// types, qemu and libvirt versions), for the migration preflight's compatibility check.
    /// An older agent answers 400 (unknown op): the caller warns that it cannot tell.
    Capabilities,
    /// Run an action here for a peer: only `grow` (it runs where the VM runs).
    Act,
    /// Undefine the (stopped) VM here: `ctl remove` run on another node.
    Undefine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    pub op: PeerOp,
    pub vm: String,
    /// Disk sources of the VM as the caller sees them: the peer checks it sees them too, and
    /// derives the VM's LV locks from them (lvmlockd backend) before the VM is defined there.
    #[serde(default)]
    pub disks: Vec<String>,
    /// The action this call belongs to (journal id), for the peer's log.
    #[serde(default)]
    pub action_id: String,
    /// Capabilities requests: the guest's virt type and arch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::actions::compat::Platform>,
    /// Act requests: the action to run here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Box<crate::actions::ActionRequest>>,
    /// Status requests of a live migration's preflight: also judge the DRBD under `disks` here
    /// (`drbd_problems` of the reply). Sent only when set, so other requests still reach an
    /// agent that predates it (this struct refuses unknown fields).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drbd: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerReply {
    pub node: String,
    /// The operation was done (for Status: the status could be read).
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// `virsh domstate --reason` of the VM there ("running (booted)"), or "undefined".
    #[serde(default)]
    pub state: String,
    /// A qemu process exists for the VM there.
    #[serde(default)]
    pub active: bool,
    /// "exclusive", "shared", "unlocked", or "unknown: why" (status requests only; empty otherwise).
    #[serde(default)]
    pub lock: String,
    /// Disks of the request the peer cannot see.
    #[serde(default)]
    pub missing_disks: Vec<String>,
    /// What keeps the DRBD under those disks from serving I/O there (Status with `drbd` set:
    /// "DRBD r0/0 is Inconsistent here, not UpToDate"; empty otherwise).
    #[serde(default)]
    pub drbd_problems: Vec<String>,
    /// Capabilities requests: what this node's hypervisor reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<crate::actions::compat::HostCaps>,
    /// Status: the VM's disks are activated for maintenance here (the refusal, in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// Status: an action, a peer call or recovery owns the VM here (or its journal is unfinished).
    #[serde(default)]
    pub owned_by_action: bool,
    /// Act: the report of the action run here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<crate::actions::ActionReport>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{url}: not an http://HOST:PORT or https://HOST:PORT address")]
    BadUrl { url: String },
    #[error(
        "cannot reach the agent at {url}: {why} — is vmwarden running there and is the port open?"
    )]
    Unreachable { url: String, why: String },
    #[error("the agent at {url} refused the token (401) — between agents: every node needs the same cluster secret ([cluster] secret_file); for `vmwarden ctl`: a token configured in the agent's [api] tokens, given with --token-file or [api] token_file")]
    Unauthorized { url: String },
    #[error("TLS with the agent at {url} failed: {why} — check [tls] ca_file (the CA its certificate chains to), that its certificate names the host of the url, and, with mutual TLS, this node's [tls] cert_file")]
    Tls { url: String, why: String },
    #[error("the agent at {url} did not answer within {secs:.0} s")]
    Timeout { url: String, secs: f64 },
    #[error("the agent at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the agent at {url} sent an answer that is not the expected JSON: {why}")]
    BadReply { url: String, why: String },
}

/// `http://HOST:PORT[/]` → (false, `HOST:PORT`); `https://...` → (true, ...).
fn authority(url: &str) -> Option<(bool, &str)> {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://")?),
    };
    let a = rest.trim_end_matches('/');
    (!a.is_empty() && !a.contains('/') && a.contains(':')).then_some((tls, a))
}

/// An address to reach a listen address from this host (0.0.0.0 → 127.0.0.1, [::] → [::1]),
/// over https when the listener speaks TLS.
pub fn local_url(listen: &str, tls: bool) -> String {
    let l = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("{}://{l}", if tls { "https" } else { "http" })
}

/// POST `body` as JSON to `url` + `path`; the JSON answer. Answers are bounded to 4 MiB.
pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
    url: &str,
    path: &str,
    secret: &Secret,
    body: &Req,
    timeout: Duration,
) -> Result<Rep, PeerError> {
    match tokio::time::timeout(timeout, call_inner(url, path, secret, Some(body))).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Timeout {
            url: url.to_string(),
            secs: timeout.as_secs_f64(),
        }),
    }
}

/// GET `url` + `path`; the JSON answer (bounded like `call`).
pub async fn get<Rep: DeserializeOwned>(
    url: &str,
    path: &str,
    secret: &Secret,
    timeout: Duration,
) -> Result<Rep, PeerError> {
    match tokio::time::timeout(timeout, call_inner::<(), Rep>(url, path, secret, None)).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Timeout {
            url: url.to_string(),
            secs: timeout.as_secs_f64(),
        }),
    }
}

async fn call_inner<Req: Serialize, Rep: DeserializeOwned>(
    url: &str,
    path: &str,
    secret: &Secret,
    body: Option<&Req>,
) -> Result<Rep, PeerError> {
    let (tls, host) = authority(url).ok_or_else(|| PeerError::BadUrl {
        url: url.to_string(),
    })?;
    let unreachable = |why: String| PeerError::Unreachable {
        url: url.to_string(),
        why,
    };
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !tls {
        return exchange(TokioIo::new(stream), url, host, path, secret, body).await;
    }
    let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let (config, name) = crate::api::tls::for_host(bare).map_err(|why| PeerError::Tls {
        url: url.to_string(),
        why,
    })?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| PeerError::Tls {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    exchange(TokioIo::new(stream), url, host, path, secret, body).await
}

/// One request over an established connection (plain or TLS).
async fn exchange<Req: Serialize, Rep: DeserializeOwned, I>(
    io: I,
    url: &str,
    host: &str,
    path: &str,
    secret: &Secret,
    body: Option<&Req>,
) -> Result<Rep, PeerError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let unreachable = |why: String| PeerError::Unreachable {
        url: url.to_string(),
        why,
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = match body {
        Some(body) => {
            let json = serde_json::to_vec(body).map_err(|e| PeerError::BadReply {
                url: url.to_string(),
                why: format!("cannot encode the request: {e}"),
            })?;
            Request::post(path)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json)))
        }
        None => Request::get(path).body(Full::new(Bytes::new())),
    };
    let mut req = req.map_err(|e| unreachable(e.to_string()))?;
    let h = req.headers_mut();
    h.insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_str(host).map_err(|e| unreachable(e.to_string()))?,
    );
    h.insert(
        hyper::header::AUTHORIZATION,
        hyper::header::HeaderValue::from_str(&secret.bearer())
            .map_err(|_| unreachable("the token is not a valid header value".into()))?,
    );
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| unreachable(format!("reading the answer: {e}")))?
        .to_bytes();
    if status == StatusCode::UNAUTHORIZED {
        return Err(PeerError::Unauthorized {
            url: url.to_string(),
        });
    }
    if !status.is_success() {
        // The agent's errors are `{"error": "..."}` (older agents: plain text).
        let body = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(PeerError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| PeerError::BadReply {
        url: url.to_string(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://10.0.0.2:10177"),
            Some((false, "10.0.0.2:10177"))
        );
        assert_eq!(authority("http://n2:10177/"), Some((false, "n2:10177")));
        assert_eq!(authority("https://n2:10177"), Some((true, "n2:10177")));
        assert_eq!(authority("ftp://n2:10177"), None);
        assert_eq!(authority("http://n2"), None);
        assert_eq!(authority("http://n2:1/x"), None);
        assert_eq!(local_url("0.0.0.0:10177", false), "http://127.0.0.1:10177");
        assert_eq!(
            local_url("10.77.0.1:10177", false),
            "http://10.77.0.1:10177"
        );
        assert_eq!(local_url("[::]:10177", true), "https://[::1]:10177");
    }
}
