//! Load and hostile clients on the agent's port (issue 16, part 4): the real `vmwarden run` on
//! 127.0.0.1 at a random port, and nothing but loopback. Four phases, one agent each:
//! - 50 concurrent scrapers of /metrics while `lvs` hangs;
//! - 10,000 requests with wrong tokens while a legitimate caller keeps calling;
//! - slowloris, silent and idle keep-alive connections;
//! - a 1 GiB body (declared, and chunked) of which only a little is sent.
//!
//! After each phase the agent's open file descriptors, its child processes, its threads and its
//! RSS are back where they were. Assertions bound times only by the configured timeouts (plus
//! `MARGIN`); the latencies are printed (`-- --nocapture`) for docs/benchmarks.md.
//!
//! Fault injection (named, as in tests/lvm_probe.rs): the `lvm` and `lvmlockctl` commands are a
//! script that sleeps, as lvm does on dead storage.
//!
//! Helpers: `Agent`, `write_file_mode` and `sample` from tests/common; the config, the async
//! client and the /proc readers are this file's own.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `[agent] collector_timeout_seconds`.
const COLLECT_S: f64 = 2.0;
/// `[api] read_timeout_seconds`.
const READ_S: f64 = 2.0;
/// `[api] auth_failures_per_minute` (the default).
const FAIL_LIMIT: usize = 10;
/// `[api] max_body_bytes` (the default).
const MAX_BODY: usize = 65536;
/// Slack on top of a configured timeout for the agent and this test to be scheduled, on a
/// 2-vCPU machine shared with builds. Less than either timeout, so waiting for a timeout twice
/// (one collection queued behind another) cannot pass.
const MARGIN: Duration = Duration::from_millis(1500);
/// RSS after a phase may exceed RSS before it by this much. What a phase's peak allocated (240
/// connections' buffers, 150 renderings) is freed, but glibc hands back to the kernel only the
/// top of each heap (the agent runs two arenas), so fragments of the peak stay resident: measured
/// +1.3 MiB after the token flood, +2.3 MiB after the scrapers, and after rounds of 240 slow
/// connections +6, +9.5, +10.5, +11, +11, +11 MiB: it levels off, a leak would not. On an Intel
/// Xeon CI machine it levelled off higher and more slowly: +9.3, +11.2, +15.5, +16.0, +16.4 MiB.
/// A leak is therefore told by repeating a phase (`RSS_REPEAT_KIB`), this bound only catches
/// gross growth.
const RSS_TOLERANCE_KIB: u64 = 24 * 1024;
/// Growth allowed in at least one of the last three of `SLOW_ROUNDS` rounds of slow
/// connections. A leak adds the same every round (8 KiB per connection: 1.9 MiB a round), so
/// every round would exceed this; fragmentation levels off unevenly: one CI run grew +2.0, +3.1,
/// +1.6 MiB in rounds 2–4, another +1.4, +0.2, +2.0, a third +1.9, +4.3, +0.5, +0.4 in rounds
/// 2–5, so the last round alone is not the test.
const RSS_REPEAT_KIB: u64 = 1024;
const SLOW_ROUNDS: usize = 5;
/// How long tokio keeps an idle blocking-pool thread (its default), after which the agent's
/// thread count is back at most where it was.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

const READER: &str = "reader-token-for-load-0123456789";
const OPS: &str = "ops-token-for-load-0123456789abc";
const SECRET: &str = "cluster-secret-for-load-0123456789";

/// The source address of hostile clients: another loopback address, so the per-source limits
/// apply to them and not to the legitimate caller on 127.0.0.1.
const HOSTILE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// `[api] max_connections_per_source` (the default).
const PER_SOURCE: usize = 64;

/// The `i`th of four hostile addresses (127.0.0.2–5): slowloris spread so that each stays under
/// `PER_SOURCE`, and together nearly fill `max_connections` (256).
fn hostile(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

struct Lab {
    dir: tempfile::TempDir,
    agent: Agent,
    addr: SocketAddr,
    log: PathBuf,
}

impl Lab {
    /// An agent with the lvm collector on the hanging stand-in, the other collectors off,
    /// /healthz behind a token (so the legitimate caller is authenticated and collects nothing)
    /// and an engine (the cluster secret), so bodies of action routes are read.
    fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lvm = hanging_lvm(d);
        write_file_mode(d, "cluster.secret", &format!("{SECRET}\n"), 0o600);
        write_file_mode(d, "reader", &format!("{READER}\n"), 0o600);
        write_file_mode(d, "ops", &format!("{OPS}\n"), 0o600);
        let port = free_port();
        let cfg = d.join("vmwarden.toml");
        std::fs::write(
            &cfg,
            format!(
                "[agent]\nlisten = \"127.0.0.1:{port}\"\ncollector_timeout_seconds = {COLLECT_S:.1}\n\
                 [drbd]\nenabled = false\n[sanlock]\nenabled = false\n\
                 [lvm]\nenabled = true\nlvm = \"{lvm}\"\nlvmlockctl = \"{lvm}\"\n\
                 [libvirt]\nenabled = false\nuri = \"test:///default\"\n[watchdog]\nenabled = false\n\
                 [cluster]\nnode = \"t1\"\nsecret_file = \"{d}/cluster.secret\"\nstate_dir = \"{d}/state\"\n\
                 [api]\ntokens = [{{ name = \"reader\", role = \"read\", file = \"{d}/reader\" }},\n\
                   {{ name = \"ops\", role = \"operate\", file = \"{d}/ops\" }}]\n\
                 open_metrics = true\nopen_healthz = false\nread_timeout_seconds = {READ_S:.1}\n\
                 auth_failures_per_minute = {FAIL_LIMIT}\nmax_body_bytes = {MAX_BODY}\n\
                 max_connections = 256\nmax_connections_per_source = {PER_SOURCE}\n",
                lvm = lvm.display(),
                d = d.display()
            ),
        )
        .unwrap();
        let log = d.join("agent.log");
        let agent = Agent::start_logged(&cfg, port, &log);
        let addr = SocketAddr::new(LEGIT, port);
        Lab {
            dir,
            agent,
            addr,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.agent.child.id() as i32
    }

    /// How often the lvm stand-in was started.
    fn lvm_calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("lvm.calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The legitimate caller: GET /healthz with the reader's token on a new connection.
    async fn legit(&self) -> (u16, Duration) {
        let t = Instant::now();
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: t1\r\nAuthorization: Bearer {READER}\r\nConnection: close\r\n\r\n"
        );
        let (st, _, _) = once(LEGIT, self.addr, req.as_bytes()).await.unwrap();
        (st, t.elapsed())
    }

    async fn metrics(&self) -> String {
        let (st, _, body) = once(
            LEGIT,
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(st, 200);
        String::from_utf8(body).unwrap()
    }

    /// Usage once the agent has settled: no more children than one collection's, and its fds steady for
    /// 300 ms (before a phase) or back at most where they were in `base` (after it).
    async fn settled(&self, base: Option<&Usage>, phase: &str) -> Usage {
        let deadline = Instant::now() + MARGIN + secs(READ_S.max(COLLECT_S));
        let mut last = Usage::of(self.pid());
        let mut steady = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let u = Usage::of(self.pid());
            steady = if u.fds == last.fds { steady + 1 } else { 0 };
            last = u;
            let fds_ok = match base {
                Some(b) => u.fds <= b.fds,
                None => steady >= 6,
            };
            // The agent's own periodic collection may be in flight with its (hanging) lvm and
            // lvmlockctl stand-ins: at most one collection's two commands, never a pile-up.
            if u.children <= 2 && fds_ok {
                return u;
            }
            if Instant::now() > deadline {
                panic!(
                    "{phase}: the agent did not settle: {u:?}, before {base:?}; its fds: {:?}",
                    fd_targets(self.pid())
                );
            }
        }
    }

    /// After a phase: fds and children back to `base` (asserted by `settled`), RSS within the
    /// tolerance, threads back at most where they were once tokio's idle ones have gone.
    async fn check_back(&self, base: &Usage, phase: &str) -> Usage {
        let after = self.settled(Some(base), phase).await;
        println!("LOAD {phase}: before {base:?} after {after:?}");
        assert!(
            after.rss_kib <= base.rss_kib + RSS_TOLERANCE_KIB,
            "{phase}: RSS grew from {} to {} KiB (tolerance {RSS_TOLERANCE_KIB} KiB)",
            base.rss_kib,
            after.rss_kib
        );
        let deadline = Instant::now() + BLOCKING_KEEP_ALIVE + MARGIN * 2;
        loop {
            let t = Usage::of(self.pid()).threads;
            if t <= base.threads {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: {t} threads, {} before",
                base.threads
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        after
    }
}

/// Fault injection: `lvm` (and `lvmlockctl`) that counts its calls and then sleeps like lvm on
/// dead storage, until the collector's timeout kills it.
fn hanging_lvm(dir: &Path) -> PathBuf {
    executable(
        &dir.join("lvm-hangs"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec sleep 1000\n",
            dir.join("lvm.calls").display()
        ),
    )
}

/// What the agent holds, from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Usage {
    fds: usize,
    threads: usize,
    /// Descendants (children, their children…), from every process's ppid.
    children: usize,
    rss_kib: u64,
}

impl Usage {
    fn of(pid: i32) -> Usage {
        let count = |p: String| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Usage {
            fds: count(format!("/proc/{pid}/fd")),
            threads: count(format!("/proc/{pid}/task")),
            children: descendants(pid).len(),
            rss_kib,
        }
    }
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces and parentheses, so split at the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok());
        if let Some(pp) = ppid {
            parent.push((p, pp));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn fd_targets(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn connect(src: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    s.connect(to).await
}

/// One request on its own connection, the answer read to the end: (status, head, body).
async fn once(src: IpAddr, to: SocketAddr, req: &[u8]) -> io::Result<(u16, String, Vec<u8>)> {
    let mut s = connect(src, to).await?;
    s.write_all(req).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in 60 s"))??;
    let (st, head, n) = parse_head(&buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP answer"))?;
    Ok((st, head, buf[n..].to_vec()))
}

/// (status, head in lower case, length of the head) once `buf` holds a whole head.
fn parse_head(buf: &[u8]) -> Option<(u16, String, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let st = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((st, head, end))
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One answer on a keep-alive connection: its status and whether the agent keeps the
/// connection; `Ok(None)`: the agent closed it before answering.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<(u16, bool)>> {
    loop {
        if let Some((st, head, n)) = parse_head(buf) {
            let len = content_length(&head);
            while buf.len() < n + len {
                let mut chunk = [0u8; 4096];
                let k = s.read(&mut chunk).await?;
                if k == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            buf.drain(..n + len);
            return Ok(Some((st, !head.contains("connection: close"))));
        }
        let mut chunk = [0u8; 4096];
        let k = match s.read(&mut chunk).await {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if k == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut"))
            };
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn stats(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}",
        v.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        v[v.len() - 1]
    )
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_scrapers_while_lvs_hangs() {
    const SCRAPERS: usize = 50;
    const ROUNDS: usize = 3;
    let lab = Arc::new(Lab::start());
    // Warm-up: the first scrape opens what the agent keeps (the SIGCHLD pipe, …).
    let m = lab.metrics().await;
    assert_eq!(
        sample(&m, "vmwarden_collector_success{collector=\"lvm\"}"),
        Some(0.0),
        "{m}"
    );
    let base = lab.settled(None, "scrapers").await;
    let calls0 = lab.lvm_calls();

    // While scraping: the most processes and fds the agent has at once.
    let stop = Arc::new(AtomicBool::new(false));
    let max_children = Arc::new(AtomicUsize::new(0));
    let max_fds = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, mc, mf, pid) = (
            stop.clone(),
            max_children.clone(),
            max_fds.clone(),
            lab.pid(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let u = Usage::of(pid);
                mc.fetch_max(u.children, Ordering::SeqCst);
                mf.fetch_max(u.fds, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SCRAPERS {
        let lab = lab.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the arrivals over one collection, as unsynchronized scrapers arrive.
            tokio::time::sleep(secs(COLLECT_S) * i as u32 / SCRAPERS as u32).await;
            let mut out = Vec::new();
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let m = lab.metrics().await;
                out.push((
                    t.elapsed(),
                    sample(&m, "vmwarden_collector_success{collector=\"lvm\"}"),
                ));
            }
            out
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        for (d, lvm_ok) in t.await.unwrap() {
            assert_eq!(lvm_ok, Some(0.0), "a scrape did not show the hung lvm");
            lat.push(d);
        }
    }
    let load = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();

    let bound = secs(COLLECT_S) + MARGIN;
    let worst = *lat.iter().max().unwrap();
    let calls = lab.lvm_calls() - calls0;
    println!(
        "LOAD scrapers: {SCRAPERS}×{ROUNDS} scrapes in {load:.1?}, latency {}; lvm started {calls} times; \
         at most {} child processes and {} fds (baseline {})",
        stats(&mut lat),
        max_children.load(Ordering::SeqCst),
        max_fds.load(Ordering::SeqCst),
        base.fds
    );
    assert!(
        worst <= bound,
        "a scrape took {worst:?}, more than the collector timeout {COLLECT_S} s + {MARGIN:?}"
    );
    // One collection at a time (lvm and lvmlockctl of it), each lasting the timeout: at most
    // one collection per timeout of load, and never more than its two commands alive.
    let collections_bound = (load.as_secs_f64() / COLLECT_S).floor() as usize + 1;
    assert!(
        calls <= 2 * collections_bound,
        "lvm ran {calls} times in {load:?}: more than one collection at a time"
    );
    assert!(max_children.load(Ordering::SeqCst) <= 2);
    lab.check_back(&base, "scrapers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_wrong_tokens() {
    const REQUESTS: usize = 10_000;
    const WORKERS: usize = 32;
    let lab = Arc::new(Lab::start());
    lab.metrics().await;
    assert_eq!(lab.legit().await.0, 200);
    let base = lab.settled(None, "wrong tokens").await;

    let mut before = Vec::new();
    for _ in 0..100 {
        let (st, d) = lab.legit().await;
        assert_eq!(st, 200);
        before.push(d);
    }

    // The flood: keep-alive connections from HOSTILE, each request a wrong credential of its
    // own (bearer tokens of many lengths, none, another scheme) on a read route, the mutating
    // stop route (audited) and /healthz.
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (next, addr) = (next.clone(), lab.addr);
        workers.push(tokio::spawn(async move {
            let mut seen: BTreeMap<(&'static str, u16), usize> = BTreeMap::new();
            let mut reconnects = 0usize;
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            let mut i = next.fetch_add(1, Ordering::SeqCst);
            while i < REQUESTS {
                let auth = match i % 5 {
                    0 => String::new(),
                    1 => format!("Authorization: Basic d3Jvbmc6{i}\r\n"),
                    _ => format!("Authorization: Bearer wrong-{i}-{}\r\n", "x".repeat(i % 300)),
                };
                let (route, req) = match i % 3 {
                    0 => ("/v1/node", format!("GET /v1/node HTTP/1.1\r\nHost: t1\r\n{auth}\r\n")),
                    1 => (
                        "/v1/vms/{vm}/stop",
                        format!(
                            "POST /v1/vms/test/stop HTTP/1.1\r\nHost: t1\r\n{auth}Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{{\"dry_run\":true}}"
                        ),
                    ),
                    _ => ("/healthz", format!("GET /healthz HTTP/1.1\r\nHost: t1\r\n{auth}\r\n")),
                };
                if conn.is_none() {
                    conn = Some(connect(HOSTILE, addr).await.unwrap());
                    buf.clear();
                }
                let s = conn.as_mut().unwrap();
                let answer = match s.write_all(req.as_bytes()).await {
                    Ok(()) => read_answer(s, &mut buf).await,
                    Err(_) => Ok(None),
                };
                match answer {
                    Ok(Some((st, keep))) => {
                        *seen.entry((route, st)).or_default() += 1;
                        if !keep {
                            conn = None;
                        }
                        i = next.fetch_add(1, Ordering::SeqCst);
                    }
                    // Closed before answering (after a body it did not read): again, anew.
                    Ok(None) => {
                        reconnects += 1;
                        conn = None;
                    }
                    Err(e) => panic!("request {i}: {e}"),
                }
            }
            (seen, reconnects)
        }));
    }
    // The legitimate caller, all along the flood.
    let legit = {
        let (lab, done) = (lab.clone(), done.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            while !done.load(Ordering::SeqCst) {
                out.push(lab.legit().await);
            }
            out
        })
    };
    let mut seen: BTreeMap<(&'static str, u16), usize> = BTreeMap::new();
    let mut reconnects = 0;
    for w in workers {
        let (s, r) = w.await.unwrap();
        for (k, n) in s {
            *seen.entry(k).or_default() += n;
        }
        reconnects += r;
    }
    let flood = t0.elapsed();
    done.store(true, Ordering::SeqCst);
    let during = legit.await.unwrap();

    let refused: Vec<_> = during.iter().filter(|(st, _)| *st != 200).collect();
    let mut during_lat: Vec<Duration> = during.iter().map(|(_, d)| *d).collect();
    println!(
        "LOAD wrong tokens: {REQUESTS} requests from {WORKERS} connections in {flood:.1?} \
         ({:.0}/s, {reconnects} reconnects): {seen:?}",
        REQUESTS as f64 / flood.as_secs_f64()
    );
    println!(
        "LOAD legitimate caller: before {}; during the flood {}",
        stats(&mut before),
        stats(&mut during_lat)
    );
    assert!(
        refused.is_empty(),
        "the legitimate caller was refused: {refused:?}"
    );
    assert!(
        during.len() >= 5,
        "the legitimate caller ran {} times",
        during.len()
    );
    let total: usize = seen.values().sum();
    assert_eq!(total, REQUESTS);
    let n401: usize = seen
        .iter()
        .filter(|((_, c), _)| *c == 401)
        .map(|(_, n)| n)
        .sum();
    let n429: usize = seen
        .iter()
        .filter(|((_, c), _)| *c == 429)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(n401 + n429, REQUESTS, "{seen:?}");
    // The limit counts failures after their check: concurrent requests may pass the check
    // together, at most one per connection.
    assert!(
        (FAIL_LIMIT..=FAIL_LIMIT + WORKERS).contains(&n401),
        "{n401} × 401 for a limit of {FAIL_LIMIT}: {seen:?}"
    );

    // Counted by route and code, exactly as answered.
    let m = lab.metrics().await;
    for ((route, code), n) in &seen {
        let key = format!("vmwarden_api_requests_total{{route=\"{route}\",code=\"{code}\"}}");
        assert_eq!(sample(&m, &key), Some(*n as f64), "{key}");
    }
    // The mutating route is audited once per refusal, and no credential is logged.
    let log = std::fs::read_to_string(&lab.log).unwrap();
    let audited = log
        .lines()
        .filter(|l| l.contains("vmwarden::audit") && l.contains("route=\"/v1/vms/{vm}/stop\""))
        .count();
    let stops: usize = seen
        .iter()
        .filter(|((r, _), _)| *r == "/v1/vms/{vm}/stop")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(audited, stops);
    assert!(!log.contains("wrong-") && !log.contains("d3Jvbmc6"));
    lab.check_back(&base, "wrong tokens").await;
}

/// The connection's fate: when (after `since`) the agent closed it, and whether it answered.
async fn until_closed(
    mut s: TcpStream,
    since: Instant,
    trickle: Option<&[u8]>,
) -> (Duration, bool) {
    let mut answered = false;
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut chunk = [0u8; 1024];
    loop {
        tokio::select! {
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return (since.elapsed(), answered),
                Ok(_) => answered = true,
            },
            _ = tick.tick(), if trickle.is_some() => {
                let t = trickle.unwrap_or_default();
                if let Some(b) = t.get(sent % t.len()) {
                    // One header byte a second; a refused write means the agent closed it.
                    if s.write_all(&[*b]).await.is_err() {
                        return (since.elapsed(), answered);
                    }
                    sent += 1;
                }
            }
        }
    }
}

/// One round: `SLOW` connections sending a header byte a second, `SILENT` ones sending nothing,
/// `IDLE` keep-alive ones silent after one answer; a normal request while they are all open.
async fn slowloris_round(lab: &Lab, round: usize) {
    const SLOW: usize = 200;
    const SILENT: usize = 30;
    const IDLE: usize = 10;
    let mut tasks = Vec::new();
    let trickle: &'static [u8] =
        b"GET /healthz HTTP/1.1\r\nHost: t1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for i in 0..SLOW {
        let s = connect(hostile(i), lab.addr).await.unwrap();
        let t = Instant::now();
        tasks.push(("slow", tokio::spawn(until_closed(s, t, Some(trickle)))));
    }
    for i in 0..SILENT {
        let s = connect(hostile(i), lab.addr).await.unwrap();
        let t = Instant::now();
        tasks.push(("silent", tokio::spawn(until_closed(s, t, None))));
    }
    for i in 0..IDLE {
        let mut s = connect(hostile(i), lab.addr).await.unwrap();
        let req =
            format!("GET /healthz HTTP/1.1\r\nHost: t1\r\nAuthorization: Bearer {READER}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_answer(&mut s, &mut buf).await.unwrap(),
            Some((200, true))
        );
        let t = Instant::now();
        tasks.push(("idle", tokio::spawn(until_closed(s, t, None))));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = Usage::of(lab.pid());
    let (st, took) = lab.legit().await;
    assert_eq!(st, 200);
    println!(
        "LOAD slowloris round {round}: {SLOW} slow + {SILENT} silent + {IDLE} idle connections, \
         the agent held {} fds and {} KiB RSS; a normal request meanwhile took {took:.1?}",
        held.fds, held.rss_kib
    );
    assert!(took < secs(READ_S), "the normal request took {took:?}");

    let mut by_kind: HashMap<&str, Vec<Duration>> = HashMap::new();
    for (kind, t) in tasks {
        let (closed, answered) = t.await.unwrap();
        // hyper closes a connection whose headers did not arrive in time without an answer.
        assert!(!answered, "{kind}: answered after its headers' timeout");
        by_kind.entry(kind).or_default().push(closed);
    }
    for (kind, v) in by_kind.iter_mut() {
        let (min, max) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        println!(
            "LOAD slowloris round {round}: {kind} connections closed after {}",
            stats(v)
        );
        assert!(
            max <= secs(READ_S) + MARGIN,
            "{kind}: a connection stayed {max:?} (read timeout {READ_S} s + {MARGIN:?})"
        );
        // Closed by the read timeout, not by something sooner.
        assert!(min >= secs(READ_S) * 9 / 10, "{kind}: closed after {min:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_and_silent_connections() {
    let lab = Lab::start();
    lab.metrics().await;
    assert_eq!(lab.legit().await.0, 200);
    let base = lab.settled(None, "slowloris").await;
    let mut rss = vec![base.rss_kib];
    for round in 1..=SLOW_ROUNDS {
        slowloris_round(&lab, round).await;
        rss.push(lab.settled(Some(&base), "slowloris").await.rss_kib);
    }
    println!("LOAD slowloris: RSS before and after each round {rss:?} KiB");
    // A leak grows with every round; what the allocator keeps of the peak levels off.
    let least = rss[SLOW_ROUNDS - 3..]
        .windows(2)
        .map(|w| w[1] as i64 - w[0] as i64)
        .min()
        .unwrap_or(0);
    assert!(
        least <= RSS_REPEAT_KIB as i64,
        "RSS grew by at least {least} KiB in each of the last three rounds: {rss:?}"
    );
    lab.check_back(&base, "slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gibibyte_body_is_refused_unread() {
    const GIB: u64 = 1 << 30;
    let lab = Lab::start();
    lab.metrics().await;
    assert_eq!(lab.legit().await.0, 200);
    let base = lab.settled(None, "1 GiB body").await;

    let ops = format!("Authorization: Bearer {OPS}\r\n");
    let declared = |auth: &str, path: &str, expect: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t1\r\n{auth}Content-Type: application/json\r\n{expect}Content-Length: {GIB}\r\n\r\n"
        )
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("declared, operator", declared(&ops, "/v1/vms/test/stop", ""), 413),
        (
            "declared, operator, Expect: 100-continue",
            declared(&ops, "/v1/action", "Expect: 100-continue\r\n"),
            413,
        ),
        ("declared, no token", declared("", "/v1/vms/test/stop", ""), 401),
        (
            "chunked, operator",
            format!(
                "POST /v1/vms/test/stop HTTP/1.1\r\nHost: t1\r\n{ops}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            413,
        ),
    ];
    let block = vec![b'x'; 64 * 1024];
    for (what, head, want) in cases {
        let chunked = head.contains("chunked");
        let piece = |b: &[u8]| -> Vec<u8> {
            if chunked {
                let mut v = format!("{:x}\r\n", b.len()).into_bytes();
                v.extend_from_slice(b);
                v.extend_from_slice(b"\r\n");
                v
            } else {
                b.to_vec()
            }
        };
        let rss0 = Usage::of(lab.pid()).rss_kib;
        let t = Instant::now();
        let mut s = connect(LEGIT, lab.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // A little of the body: two blocks (more than max_body_bytes when chunked).
        let mut sent = 0u64;
        for _ in 0..2 {
            if s.write_all(&piece(&block)).await.is_err() {
                break;
            }
            sent += block.len() as u64;
        }
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(secs(READ_S) + MARGIN, read_answer(&mut s, &mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within the read timeout"));
        let took = t.elapsed();
        let (st, _) = answer
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: closed unanswered"));
        assert_eq!(st, want, "{what}");
        // The agent does not read on: the rest of the gibibyte is refused long before its
        // end (the kernel's socket buffers take a few MiB).
        let deadline = Instant::now() + secs(READ_S) + MARGIN;
        let mut refused = false;
        while sent < GIB && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), s.write_all(&piece(&block)))
                .await
            {
                Ok(Ok(())) => sent += block.len() as u64,
                Ok(Err(_)) => {
                    refused = true;
                    break;
                }
                // Buffers full and nobody reading: check the deadline again.
                Err(_) => {}
            }
        }
        let rss1 = Usage::of(lab.pid()).rss_kib;
        println!(
            "LOAD 1 GiB body, {what}: {st} after {took:.1?}; the agent stopped reading after \
             {:.1} MiB sent; RSS {rss0} -> {rss1} KiB",
            sent as f64 / (1 << 20) as f64
        );
        assert!(
            refused || sent < 64 << 20,
            "{what}: the agent kept reading ({sent} bytes)"
        );
        assert!(
            rss1 <= rss0 + RSS_TOLERANCE_KIB,
            "{what}: RSS {rss0} -> {rss1} KiB"
        );
    }
    lab.check_back(&base, "1 GiB body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_take_every_connection() {
    const TRIES: usize = 300;
    let lab = Lab::start();
    lab.metrics().await;
    assert_eq!(lab.legit().await.0, 200);
    let base = lab.settled(None, "one address").await;
    // More silent connections from one address than the agent takes at all (256).
    let mut held = Vec::new();
    for _ in 0..TRIES {
        let s = connect(HOSTILE, lab.addr).await.unwrap();
        held.push((Instant::now(), s));
    }
    let pid = lab.pid();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..40 {
            most = most.max(Usage::of(pid).fds);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        most
    });
    let mut fates = Vec::new();
    for (t, s) in held {
        fates.push(tokio::spawn(until_closed(s, t, None)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Other addresses are served meanwhile: the legitimate caller, and another client.
    let (st, took) = lab.legit().await;
    assert_eq!(st, 200);
    let other = format!(
        "GET /healthz HTTP/1.1\r\nHost: t1\r\nAuthorization: Bearer {READER}\r\nConnection: close\r\n\r\n"
    );
    let (st2, _, _) = once(hostile(1), lab.addr, other.as_bytes()).await.unwrap();
    assert_eq!(st2, 200);
    let most_fds = sampler.await.unwrap();
    let mut closed: Vec<Duration> = Vec::new();
    for f in fates {
        let (d, answered) = f.await.unwrap();
        assert!(!answered);
        closed.push(d);
    }
    closed.sort();
    // Beyond its share, the address's connections are closed at once; its share by the timeout.
    let at_once = closed.iter().filter(|d| **d < secs(READ_S) / 2).count();
    let log = std::fs::read_to_string(&lab.log).unwrap();
    let refused = log.matches("max_connections_per_source").count();
    println!(
        "LOAD one address: {TRIES} connections, {refused} refused at accept, {at_once} closed \
         within half the read timeout, the rest after {}; the agent held at most {most_fds} fds \
         ({} before); the legitimate caller meanwhile took {took:.1?}",
        stats(&mut closed[at_once..].to_vec()),
        base.fds
    );
    // The address holds at most its share of the agent's connections, whatever the kernel's
    // accept queue delays (past its length connections reach the agent a second later).
    assert_eq!(refused, TRIES - PER_SOURCE, "{closed:?}");
    assert!(most_fds <= base.fds + PER_SOURCE + 2, "{most_fds} fds");
    assert!(closed[TRIES - 1] <= secs(READ_S) + MARGIN, "{closed:?}");
    lab.check_back(&base, "one address").await;
}
