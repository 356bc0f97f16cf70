//! libvirt families: one set of series per domain (active and inactive); runtime counters (CPU,
//! block, network) only for running domains, since libvirt has none for a stopped one.

use super::Registry;

use super::{counter, gauge};
use crate::probe::libvirt::LibvirtSnapshot;

pub fn encode(reg: &mut Registry, snap: &LibvirtSnapshot) {
    let info = gauge(
        reg,
        "vmwarden_domain_info",
        "Each libvirt domain on this node: value 1; uuid, persistent (defined) and autostart in labels",
    );
    // One series per domain carries state and reason (a 0/1 series per state would cost 8).
    let state = gauge(
        reg,
        "vmwarden_domain_state",
        "Always 1: the domain's state and libvirt's reason for it (e.g. shutoff/crashed vs shutoff/destroyed) in labels",
    );
    let vcpus = gauge(reg, "vmwarden_domain_vcpus", "Virtual CPUs of the domain");
    let memory = gauge(
        reg,
        "vmwarden_domain_memory_bytes",
        "Domain memory in bytes: kind=current (balloon target) or kind=max",
    );
    let cpu = counter(
        reg,
        "vmwarden_domain_cpu_seconds_total",
        "CPU time used by a running domain, seconds (resets when it restarts)",
    );
    let disk_source = gauge(
        reg,
        "vmwarden_domain_disk_source_info",
        "Each domain disk's host source (path, pool/volume or protocol:name) and disk type: value 1",
    );
    let rd_bytes = counter(
        reg,
        "vmwarden_domain_block_read_bytes_total",
        "Bytes a running domain read from the disk",
    );
    let wr_bytes = counter(
        reg,
        "vmwarden_domain_block_written_bytes_total",
        "Bytes a running domain wrote to the disk",
    );
    let rd_req = counter(
        reg,
        "vmwarden_domain_block_read_requests_total",
        "Read requests a running domain issued to the disk",
    );
    let wr_req = counter(
        reg,
        "vmwarden_domain_block_write_requests_total",
        "Write requests a running domain issued to the disk",
    );
    let rx_bytes = counter(
        reg,
        "vmwarden_domain_network_receive_bytes_total",
        "Bytes received by a running domain's interface (host-side device in `interface`)",
    );
    let tx_bytes = counter(
        reg,
        "vmwarden_domain_network_transmit_bytes_total",
        "Bytes transmitted by a running domain's interface",
    );
    let rx_pkts = counter(
        reg,
        "vmwarden_domain_network_receive_packets_total",
        "Packets received by a running domain's interface",
    );
    let tx_pkts = counter(
        reg,
        "vmwarden_domain_network_transmit_packets_total",
        "Packets transmitted by a running domain's interface",
    );
    let rx_drop = counter(
        reg,
        "vmwarden_domain_network_receive_drops_total",
        "Received packets dropped on a running domain's interface",
    );
    let tx_drop = counter(
        reg,
        "vmwarden_domain_network_transmit_drops_total",
        "Transmitted packets dropped on a running domain's interface",
    );

    let reconnects = counter(
        reg,
        "vmwarden_libvirt_reconnects_total",
        "Times the agent re-established a lost libvirt connection (libvirtd restarts it saw)",
    );
    reconnects.set(&[], snap.reconnects as f64);

    let set = |f: &super::CounterFam, labels: &[(&'static str, &str)], v: Option<u64>| {
        if let Some(v) = v {
            f.set(labels, v as f64);
        }
    };

    for d in &snap.domains {
        let dom = d.name.as_str();
        let l = [("domain", dom)];
        info.set(
            &[
                ("domain", dom),
                ("uuid", &d.uuid),
                ("persistent", bool_str(d.persistent)),
                ("autostart", bool_str(d.autostart)),
            ],
            1.0,
        );
        state.set(
            &[
                ("domain", dom),
                ("state", &d.state.name()),
                ("reason", &d.state.reason()),
            ],
            1.0,
        );
        vcpus.set(&l, f64::from(d.vcpus));
        memory.set(
            &[("domain", dom), ("kind", "current")],
            d.memory_bytes as f64,
        );
        memory.set(
            &[("domain", dom), ("kind", "max")],
            d.max_memory_bytes as f64,
        );
        if let Some(s) = d.cpu_seconds {
            cpu.set(&l, s);
        }
        for disk in &d.disks {
            let dl = [("domain", dom), ("device", disk.target.as_str())];
            if let Some(src) = &disk.source {
                disk_source.set(
                    &[
                        ("domain", dom),
                        ("device", &disk.target),
                        ("type", &disk.source_type),
                        ("source", src),
                    ],
                    1.0,
                );
            }
            if let Some(s) = &disk.stats {
                set(&rd_bytes, &dl, s.read_bytes);
                set(&wr_bytes, &dl, s.written_bytes);
                set(&rd_req, &dl, s.read_requests);
                set(&wr_req, &dl, s.write_requests);
            }
        }
        for i in &d.interfaces {
            let (Some(t), Some(s)) = (&i.target, &i.stats) else {
                continue;
            };
            let il = [("domain", dom), ("interface", t.as_str())];
            set(&rx_bytes, &il, s.rx_bytes);
            set(&tx_bytes, &il, s.tx_bytes);
            set(&rx_pkts, &il, s.rx_packets);
            set(&tx_pkts, &il, s.tx_packets);
            set(&rx_drop, &il, s.rx_drops);
            set(&tx_drop, &il, s.tx_drops);
        }
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}
