#!/usr/bin/env python3
"""Side-by-side: vmwarden vs Debian's prometheus-node-exporter (drbd collector only), both reading the
same generated /proc/drbd of N minors. Reports scrape latency (median, p99), CPU per scrape, and the
resident memory of `vmwarden run` after all scrapes. Loopback only; bounded scrape count.

usage: node_exporter_compare.py VMWARDEN_BIN GEN_BIN [--minors 1000] [--scrapes 1000]
GEN_BIN is the `gen_proc_drbd` example binary (prints a realistic DRBD 8.4 /proc/drbd).
"""
import argparse, http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

CLK = os.sysconf("SC_CLK_TCK")
# What Prometheus 2.42 sends when it scrapes: both exporters answer in the format it prefers.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK  # utime + stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"process exited early: rc={proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def scrape_loop(port, n, expect):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        body = conn.getresponse().read()
        lat.append(time.perf_counter() - t)
        if expect not in body:
            sys.exit(f"scrape on {port} lacks {expect!r}")
    conn.close()
    return lat


def measure(name, argv, port, n, expect):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, p)
        scrape_loop(port, 20, expect)  # warm-up
        c0 = cpu_seconds(p.pid)
        lat = scrape_loop(port, n, expect)
        c1 = cpu_seconds(p.pid)
        lat.sort()
        return {
            "name": name,
            "scrapes": n,
            "median_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "cpu_ms_per_scrape": (c1 - c0) / n * 1e3,
            "rss_mib": rss_kib(p.pid) / 1024,
        }
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vmwarden"); ap.add_argument("gen")
    ap.add_argument("--minors", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=1000)
    a = ap.parse_args()
    ne = shutil.which("prometheus-node-exporter")
    if not ne:
        sys.exit("prometheus-node-exporter not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "drbd"), "w") as f:
            f.write(subprocess.run([a.gen, str(a.minors)], check=True, capture_output=True, text=True).stdout)
        port_v, port_n = free_port(), free_port()
        cfg = os.path.join(d, "vmwarden.toml")
        with open(cfg, "w") as f:
            f.write(f'[agent]\nlisten = "127.0.0.1:{port_v}"\n[drbd]\nproc_path = "{d}/drbd"\n'
                    '[lvm]\nenabled = false\n[sanlock]\nenabled = false\n[libvirt]\nenabled = false\n')
        v = measure("vmwarden", [a.vmwarden, "run", "--config", cfg], port_v, a.scrapes,
                    b"vmwarden_drbd_network_sent_bytes_total")
        n = measure("node_exporter", [ne, "--collector.disable-defaults", "--collector.drbd",
                                      f"--path.procfs={d}", f"--web.listen-address=127.0.0.1:{port_n}"],
                    port_n, a.scrapes, b"node_drbd_network_sent_bytes_total")
    out = {"minors": a.minors, "vmwarden": v, "node_exporter": n,
           "ratio_median": n["median_ms"] / v["median_ms"],
           "ratio_p99": n["p99_ms"] / v["p99_ms"],
           "ratio_cpu": n["cpu_ms_per_scrape"] / max(v["cpu_ms_per_scrape"], 1e-9)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
