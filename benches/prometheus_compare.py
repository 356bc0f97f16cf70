#!/usr/bin/env python3
"""What a scrape costs the user, as a real Prometheus sees it: vmwarden and its peer side by side,
scraped by one Prometheus every second, plus the *static-file floor* of each payload (the same
bytes, headers included, served by a trivial server: what Prometheus spends on fetch + parse +
ingest alone). Reports Prometheus' own scrape_duration_seconds (median, p90) and
scrape_samples_scraped per target, each exporter's CPU per scrape and RSS.

Pairs (each its own Prometheus run, same inputs for both sides):
  drbd     vmwarden (drbd collector) vs prometheus-node-exporter --collector.drbd on one
           generated /proc/drbd of N minors (default 1,000)
  libvirt  vmwarden (libvirt collector) vs prometheus-libvirt-exporter on G running OS-less
           guests (default 10) that this script defines, starts and removes
  all      vmwarden with every collector on (drbd on the generated file, libvirt on the guests,
           lvm and sanlock as the node has them): its RSS and scrape cost
  formats  which exposition format Prometheus ingests faster: vmwarden's drbd payload (N minors)
           captured once as OpenMetrics and once as classic text (both gzip), each served alone as
           a static file to a Prometheus of its own, alternately, --format-rounds times; reports
           scrape_duration_seconds and Prometheus' own CPU per scrape (nothing else is scraped,
           so the two formats never share the cores within one run)

usage: prometheus_compare.py VMWARDEN_BIN GEN_BIN [--seconds 45] [--minors 1000] [--guests 10]
       [--pairs drbd,libvirt,all,formats] [--settle 30] [--format-rounds 2] [--rounds 1]
--rounds N runs the drbd and libvirt pairs N times each (fresh exporters and Prometheus every
time) and reports each round's ratios and their median: on a 2-vCPU machine one run's ratio of
medians moves by +-30 %, since every target of the pair shares the cores within each interval.
Loopback only. Needs root for the guests (libvirtd running: scripts/test-services.sh).
"""
import argparse, http.client, http.server, json, os, shutil, signal, socket, statistics, subprocess
import sys, tempfile, threading, time, urllib.parse, urllib.request

CLK = os.sysconf("SC_CLK_TCK")
# What Prometheus 2.42 sends; used to capture each payload exactly as Prometheus receives it.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
WARMUP = 5  # seconds of scrapes left out of the statistics


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK  # utime + stime


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"process on port {port} exited early: rc={proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def capture(port, expect):
    """The payload as Prometheus gets it: (body bytes, content-type, content-encoding)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    r = c.getresponse()
    body = r.read()
    ctype, cenc = r.getheader("Content-Type"), r.getheader("Content-Encoding")
    c.close()
    import gzip
    plain = gzip.decompress(body) if cenc == "gzip" else body
    if expect not in plain:
        sys.exit(f"payload on {port} lacks {expect!r}")
    return body, ctype, cenc, plain


class Static:
    """Serves one fixed payload with its headers: the floor (no exporter work at all)."""

    def __init__(self, body, ctype, cenc):
        payload = (body, ctype, cenc)

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                b, t, e = payload
                self.send_response(200)
                self.send_header("Content-Type", t)
                if e:
                    self.send_header("Content-Encoding", e)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown(); self.srv.server_close()


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()


def prom_query(port, q, at):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at})
    with urllib.request.urlopen(url, timeout=30) as r:
        d = json.load(r)
    if d.get("status") != "success":
        sys.exit(f"prometheus query {q} failed: {d}")
    return d["data"]["result"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def run_pair(name, targets, seconds, tmp):
    """targets: {job: (port, pid or None)}. One Prometheus scrapes them all every second."""
    pport = free_port()
    cfg = os.path.join(tmp, f"prometheus-{name}.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")
        for job, (port, _) in targets.items():
            f.write(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    data = os.path.join(tmp, f"tsdb-{name}")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(pport, prom)
        time.sleep(WARMUP)
        t0 = time.time()
        c0 = {j: cpu_seconds(pid) for j, (_, pid) in targets.items() if pid}
        p0 = cpu_seconds(prom.pid)
        time.sleep(seconds)
        t1 = time.time()
        c1 = {j: cpu_seconds(pid) for j, (_, pid) in targets.items() if pid}
        p1 = cpu_seconds(prom.pid)
        rss = {j: rss_mib(pid) for j, (_, pid) in targets.items() if pid}
        win = int(t1 - t0)
        out = {}
        for job, (port, pid) in targets.items():
            def samples(metric):
                r = prom_query(pport, f'{metric}{{job="{job}"}}[{win}s]', t1)
                return [float(v) for _, v in r[0]["values"]] if r else []
            durs = samples("scrape_duration_seconds")
            ups = samples("up")
            n = len(durs)
            if n == 0:
                sys.exit(f"{name}/{job}: no scrapes recorded")
            # A failed scrape (timeout at 1 s on a loaded machine) is counted, and its duration
            # stays in the statistics: it is what the user paid.
            res = {"scrapes": n, "failed_scrapes": sum(1 for u in ups if u < 1),
                   "scrape_median_ms": statistics.median(durs) * 1e3,
                   "scrape_p90_ms": pct(durs, 0.9) * 1e3,
                   "samples_per_scrape": statistics.median(samples("scrape_samples_scraped"))}
            if pid:
                res["cpu_ms_per_scrape"] = (c1[job] - c0[job]) / n * 1e3
                res["rss_mib"] = rss[job]
            out[job] = res
        # Prometheus' own CPU per 1 s interval: with one target, what one scrape of it costs
        # Prometheus (fetch, inflate, parse, ingest) plus its idle baseline.
        out["_prometheus_cpu_ms_per_s"] = (p1 - p0) / (t1 - t0) * 1e3
        return out
    finally:
        stop(prom)


def start(argv, port, expect):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    body, ctype, cenc, plain = capture(port, expect)
    return p, Static(body, ctype, cenc), (ctype, cenc, len(body), len(plain))


def vmwarden_config(tmp, port, drbd=None, libvirt=False, lvm=False, sanlock=False):
    path = os.path.join(tmp, f"vmwarden-{port}.toml")
    with open(path, "w") as f:
        f.write(f'[agent]\nlisten = "127.0.0.1:{port}"\n')
        f.write(f'[drbd]\nproc_path = "{drbd}"\n' if drbd else "[drbd]\nenabled = false\n")
        for sec, on in (("lvm", lvm), ("sanlock", sanlock), ("libvirt", libvirt)):
            if not on:
                f.write(f"[{sec}]\nenabled = false\n")
    return path


GUEST_XML = """<domain type='{ty}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'><model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>
"""


def virsh(*args, check=True):
    r = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"virsh {' '.join(args)}: {r.stderr.strip()}")
    return r


class Guests:
    """G running OS-less guests named vmwarden-bench-<pid>-<i>, removed on close."""

    def __init__(self, n, tmp):
        self.names = []
        ty = "kvm" if os.path.exists("/dev/kvm") else "qemu"
        for i in range(n):
            name = f"vmwarden-bench-{os.getpid()}-{i}"
            disk = os.path.join(tmp, f"{name}.img")
            with open(disk, "wb") as f:
                f.truncate(16 << 20)
            xml = os.path.join(tmp, f"{name}.xml")
            with open(xml, "w") as f:
                f.write(GUEST_XML.format(ty=ty, name=name, disk=disk))
            self.names.append(name)
            virsh("define", xml)
            virsh("start", name)

    def close(self):
        for n in self.names:
            virsh("destroy", n, check=False)
            virsh("undefine", n, check=False)


def pair_drbd(a, tmp):
    proc = os.path.join(tmp, "drbd")  # written by main()
    ne = shutil.which("prometheus-node-exporter") or sys.exit("prometheus-node-exporter missing (scripts/setup.sh)")
    pv, pn = free_port(), free_port()
    v, sv, v_wire = start([a.vmwarden, "run", "--config", vmwarden_config(tmp, pv, drbd=proc)], pv,
                          b"vmwarden_drbd_peer_state")
    n, sn, n_wire = start([ne, "--collector.disable-defaults", "--collector.drbd", f"--path.procfs={tmp}",
                           f"--web.listen-address=127.0.0.1:{pn}"], pn, b"node_drbd_network_sent_bytes_total")
    # The same vmwarden data in classic text (gzip too): which format does Prometheus ingest faster?
    c = http.client.HTTPConnection("127.0.0.1", pv, timeout=30)
    c.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"})
    r = c.getresponse(); classic = Static(r.read(), r.getheader("Content-Type"), r.getheader("Content-Encoding"))
    c.close()
    try:
        res = run_pair("drbd", {"vmwarden": (pv, v.pid), "node_exporter": (pn, n.pid),
                                "floor_vmwarden": (sv.port, None), "floor_node_exporter": (sn.port, None),
                                "floor_vmwarden_classic": (classic.port, None)}, a.seconds, tmp)
    finally:
        stop(v); stop(n); sv.close(); sn.close(); classic.close()
    res["wire"] = {"vmwarden": v_wire, "node_exporter": n_wire}
    return res


def pair_libvirt(a, tmp, guests):
    le = shutil.which("prometheus-libvirt-exporter") or sys.exit("prometheus-libvirt-exporter missing (scripts/setup.sh)")
    pv, pl = free_port(), free_port()
    v, sv, v_wire = start([a.vmwarden, "run", "--config", vmwarden_config(tmp, pv, libvirt=True)], pv,
                          guests.names[0].encode())
    l, sl, l_wire = start([le, f"--web.listen-address=127.0.0.1:{pl}", "--libvirt.uri=qemu:///system"], pl,
                          guests.names[0].encode())
    try:
        res = run_pair("libvirt", {"vmwarden": (pv, v.pid), "libvirt_exporter": (pl, l.pid),
                                   "floor_vmwarden": (sv.port, None), "floor_libvirt_exporter": (sl.port, None)},
                       a.seconds, tmp)
    finally:
        stop(v); stop(l); sv.close(); sl.close()
    res["wire"] = {"vmwarden": v_wire, "libvirt_exporter": l_wire}
    return res


def pair_all(a, tmp):
    proc = os.path.join(tmp, "drbd")
    pv = free_port()
    v, sv, v_wire = start([a.vmwarden, "run", "--config",
                           vmwarden_config(tmp, pv, drbd=proc, libvirt=True, lvm=True, sanlock=True)], pv,
                          b"vmwarden_collector_success")
    try:
        res = run_pair("all", {"vmwarden": (pv, v.pid), "floor_vmwarden": (sv.port, None)}, a.seconds, tmp)
    finally:
        stop(v); sv.close()
    res["wire"] = {"vmwarden": v_wire}
    return res


def pair_formats(a, tmp):
    proc = os.path.join(tmp, "drbd")
    pv = free_port()
    v, _, _ = start([a.vmwarden, "run", "--config", vmwarden_config(tmp, pv, drbd=proc)], pv,
                    b"vmwarden_drbd_peer_state")
    floors = {}
    try:
        for fmt, accept in (("openmetrics", "application/openmetrics-text;version=1.0.0"),
                            ("classic", "text/plain;version=0.0.4")):
            c = http.client.HTTPConnection("127.0.0.1", pv, timeout=30)
            c.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
            r = c.getresponse()
            floors[fmt] = Static(r.read(), r.getheader("Content-Type"), r.getheader("Content-Encoding"))
            c.close()
    finally:
        stop(v)
    runs = {"openmetrics": [], "classic": []}
    try:
        for rnd in range(a.format_rounds):
            # Alternate which goes first, so a drift of the machine's load favours neither.
            order = ("openmetrics", "classic") if rnd % 2 == 0 else ("classic", "openmetrics")
            for fmt in order:
                r = run_pair(f"formats-{fmt}-{rnd}", {"floor": (floors[fmt].port, None)}, a.seconds, tmp)
                runs[fmt].append({"scrape_median_ms": r["floor"]["scrape_median_ms"],
                                  "scrape_p90_ms": r["floor"]["scrape_p90_ms"],
                                  "samples_per_scrape": r["floor"]["samples_per_scrape"],
                                  "prometheus_cpu_ms_per_s": r["_prometheus_cpu_ms_per_s"]})
    finally:
        for f in floors.values():
            f.close()
    med = lambda fmt, k: statistics.median(x[k] for x in runs[fmt])
    return {"runs": runs,
            "classic_vs_openmetrics_scrape_median": med("classic", "scrape_median_ms") / med("openmetrics", "scrape_median_ms"),
            "classic_vs_openmetrics_prometheus_cpu": med("classic", "prometheus_cpu_ms_per_s") / med("openmetrics", "prometheus_cpu_ms_per_s")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vmwarden"); ap.add_argument("gen")
    ap.add_argument("--seconds", type=int, default=45)
    ap.add_argument("--minors", type=int, default=1000)
    ap.add_argument("--guests", type=int, default=10)
    ap.add_argument("--pairs", default="drbd,libvirt,all")
    ap.add_argument("--settle", type=int, default=30, help="seconds between starting the guests and measuring")
    ap.add_argument("--format-rounds", type=int, default=2, help="rounds of the formats pair (each: one run per format)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of the drbd and libvirt pairs (ratios: per run and their median)")
    a = ap.parse_args()
    if a.seconds < 40:
        print("note: fewer than 40 s of scrapes; the issue's method asks for >= 40", file=sys.stderr)
    shutil.which("prometheus") or sys.exit("prometheus missing (scripts/setup.sh)")
    pairs = a.pairs.split(",")
    out = {"seconds": a.seconds, "minors": a.minors, "guests": a.guests}
    with tempfile.TemporaryDirectory() as tmp:
        # 'all' reads the same generated /proc/drbd.
        if "drbd" in pairs or "all" in pairs or "formats" in pairs:
            with open(os.path.join(tmp, "drbd"), "w") as f:
                f.write(subprocess.run([a.gen, str(a.minors)], check=True, capture_output=True, text=True).stdout)
        if "drbd" in pairs:
            out["drbd"] = [pair_drbd(a, tmp) for _ in range(a.rounds)]
        if "formats" in pairs:
            out["formats"] = pair_formats(a, tmp)
        guests = Guests(a.guests, tmp) if ("libvirt" in pairs or "all" in pairs) else None
        if guests:
            # OS-less guests keep the CPU busy in their BIOS for ~20 s after start; measure
            # the steady state a node with idle VMs is in.
            time.sleep(a.settle)
        try:
            if "libvirt" in pairs:
                out["libvirt"] = [pair_libvirt(a, tmp, guests) for _ in range(a.rounds)]
            if "all" in pairs:
                out["all"] = pair_all(a, tmp)
        finally:
            if guests:
                guests.close()
    def drbd_ratios(d):
        return {
            "speed_vs_node_exporter_median": d["node_exporter"]["scrape_median_ms"] / d["vmwarden"]["scrape_median_ms"],
            "vmwarden_vs_own_floor_median": d["vmwarden"]["scrape_median_ms"] / d["floor_vmwarden"]["scrape_median_ms"],
            "classic_vs_openmetrics_floor_median": d["floor_vmwarden_classic"]["scrape_median_ms"] / d["floor_vmwarden"]["scrape_median_ms"],
        }

    def libvirt_ratios(lv):
        return {
            "vmwarden_vs_libvirt_exporter_median": lv["vmwarden"]["scrape_median_ms"] / lv["libvirt_exporter"]["scrape_median_ms"],
            "cpu_vs_libvirt_exporter": lv["vmwarden"]["cpu_ms_per_scrape"] / max(lv["libvirt_exporter"]["cpu_ms_per_scrape"], 1e-9),
            "vmwarden_vs_own_floor_median": lv["vmwarden"]["scrape_median_ms"] / lv["floor_vmwarden"]["scrape_median_ms"],
        }

    for name, ratios in (("drbd", drbd_ratios), ("libvirt", libvirt_ratios)):
        runs = out.get(name)
        if not runs:
            continue
        per = [ratios(r) for r in runs]
        # One round keeps the report's earlier shape (a dict per pair); several keep every round.
        out[f"{name}_ratios"] = {k: statistics.median(p[k] for p in per) for k in per[0]}
        if len(runs) == 1:
            out[name] = runs[0]
        else:
            out[f"{name}_ratios"]["rounds"] = per
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
