//! create, disks activate/deactivate, grow and remove in the two-node namespace lab (real
//! libvirtd, qemu, sanlock; the sanlock lease backend). The lab has no LVM (no device-mapper on
//! this kernel): its disks are files in the shared directory, so `[lifecycle] disk_dir` points
//! there and create makes `DIR/VM.raw` — the same plan as on an LV, with `qemu-img create`
//! instead of `lvcreate -an`.
//!
//! - dry run of a create from a qcow2 image: the commands, nothing made;
//! - create on n1 `--from-image` of a qcow2 image the test writes a pattern into: the raw disk
//!   holds the pattern, defined on n1 (intent stopped), lease free;
//! - create of the same name on n2: refused, naming n1; nothing made there;
//! - disks activate on n1: lease exclusive on n1; a start on n2 (definition copied there) and on
//!   n1 are refused, saying the disks are activated for maintenance on n1; `vmwarden check` lists
//!   it; deactivate: lease free;
//! - start on n1; grow asked on n2 is run by n1's agent (virsh domblkinfo shows the new size at
//!   once); remove refused while it runs;
//! - stop, remove: undefined on both nodes, the disk file gone, lease free.
//!
//! Hold /work/lab.lock (`flock /work/lab.lock cargo test --test lab_lifecycle`).

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::Path;

use std::sync::LazyLock;

use lab_support::{lab_dir, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail};
use vmwarden::lock::Held;

const TEST: &str = "lab_lifecycle::create_grow_maintenance_remove";
const VM: &str = "vmw-c";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// The lab as this test runs it: its binary, VMs and extra config (`lab_support::Lab`).
static LAB: LazyLock<Lab> = LazyLock::new(|| Lab {
    repo: repo(),
    env: vec![
        ("VMWARDEN_BIN", bin().to_string()),
        ("VMWARDEN_LAB_VMS", VM.to_string()),
        (
            "VMWARDEN_LAB_EXTRA_TOML",
            format!(
                "[lifecycle]\ndisk_dir = \"{}\"\n",
                lab_dir().join("shared").display()
            ),
        ),
    ],
    bin: bin().to_string(),
});

fn state(node: &str) -> String {
    LAB.virsh(node, &["domstate", VM])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "undefined".into())
}

#[test]
fn create_grow_maintenance_remove() {
    if !lab_ready(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let _down = Down(LAB.clone());
    let up = LAB.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let shared = lab_dir().join("shared");
    let disk = shared.join(format!("{VM}.raw"));
    // A small qcow2 image with a pattern at 64 KiB: the copy must carry it into the raw disk.
    let img = lab_support::base_qcow2();
    // The operator's XML: its disk points anywhere; create points it at the new disk.
    let xml = shared.join(format!("{VM}.xml"));
    std::fs::write(
        &xml,
        lab_support::guest_xml(LAB.domain_type(), VM, None, Path::new("/nowhere.qcow2")),
    )
    .unwrap();
    let (xml_s, img_s) = (xml.to_str().unwrap(), img.to_str().unwrap());
    let create = |node: &str, dry: bool| {
        let mut a = vec![
            "create",
            VM,
            "--size",
            "32M",
            "--from-image",
            img_s,
            "--xml",
            xml_s,
        ];
        if dry {
            a.push("--dry-run");
        }
        LAB.ctl(node, &a)
    };

    // Dry run: the concrete commands, nothing made.
    let (rc, out) = create("n1", true);
    assert_eq!(rc, 0, "{out}");
    for want in [
        "sanlock client init -r vmwarden:vmw-c:",
        &format!("qemu-img create -q -f raw {} 33554432", disk.display()),
        &format!(
            "qemu-img convert -n -f FORMAT_FROM_INFO -O raw {img_s} {}",
            disk.display()
        ),
        "sanlock client acquire -r vmwarden:vmw-c:",
        " define ",
    ] {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{out}");
    }
    assert!(!disk.exists() && state("n1") == "undefined");

    // Create on n1.
    let (rc, out) = create("n1", false);
    assert_eq!(rc, 0, "create: {out}");
    assert_eq!(state("n1"), "shut off");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 32 << 20);
    let bytes = std::fs::read(&disk).unwrap();
    assert!(
        bytes[65536..131072].iter().all(|b| *b == 0xab),
        "the image's pattern is not in the new disk"
    );
    assert!(bytes[..65536].iter().all(|b| *b == 0));
    let dumped = LAB.virsh("n1", &["dumpxml", "--inactive", VM]).unwrap();
    assert!(
        dumped.contains(&format!("<source file='{}'", disk.display())),
        "{dumped}"
    );
    let intent = LAB
        .virsh(
            "n1",
            &[
                "metadata",
                VM,
                "--uri",
                "http://vmwarden.org/xmlns/intent/1",
                "--config",
            ],
        )
        .unwrap();
    assert!(intent.contains("stop"), "intent: {intent}");
    assert_eq!(
        LAB.lease("n1", VM),
        Held::None,
        "create leaves no lock behind"
    );

    // The name is taken in the cluster: refused on n2, naming n1; nothing made there.
    let (rc, out) = create("n2", false);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("already defined on node n1"), "{out}");
    assert_eq!(state("n2"), "undefined");

    // The definition on n2 too (a cluster keeps one; this is what a cold migration leaves).
    let def = shared.join("def.xml");
    std::fs::write(&def, &dumped).unwrap();
    LAB.virsh("n2", &["define", def.to_str().unwrap()]).unwrap();

    // Maintenance on n1: starts refused on both nodes, saying why.
    let (rc, out) = LAB.ctl("n1", &["disks", "activate", VM]);
    assert_eq!(rc, 0, "activate: {out}");
    assert!(
        out.contains(&format!("device: {}", disk.display())),
        "{out}"
    );
    assert_eq!(LAB.lease("n1", VM), Held::Exclusive);
    let (rc, out) = LAB.ctl("n2", &["start", VM]);
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("activated for maintenance on node n1"),
        "start on n2: {out}"
    );
    let (rc, out) = LAB.ctl("n1", &["start", VM]);
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("activated for maintenance on node n1"),
        "start on n1: {out}"
    );
    let e = LAB.virsh("n1", &["start", VM]).unwrap_err();
    assert!(
        e.contains("activated for maintenance"),
        "plain virsh start on n1: {e}"
    );
    let (_, out) = LAB.vmw("n1", "check", &[]);
    assert!(
        out.contains("maintenance: vmw-c's disks activated on n1"),
        "check: {out}"
    );
    let (rc, out) = LAB.ctl("n1", &["disks", "deactivate", VM]);
    assert_eq!(rc, 0, "deactivate: {out}");
    assert_eq!(LAB.lease("n1", VM), Held::None);

    // Start on n1; grow asked on n2 runs on n1 and the guest sees it at once.
    let (rc, out) = LAB.ctl("n1", &["start", VM]);
    assert_eq!(rc, 0, "start: {out}");
    let (rc, out) = LAB.ctl("n2", &["grow", VM, "vda", "+16M"]);
    assert_eq!(rc, 0, "grow: {out}");
    assert!(
        out.contains("asked its agent to grow it there") && out.contains("growpart"),
        "{out}"
    );
    let info = LAB.virsh("n1", &["domblkinfo", VM, "vda"]).unwrap();
    assert!(
        info.contains(&format!("Capacity:       {}", 48u64 << 20)),
        "{info}"
    );
    let (rc, out) = LAB.ctl("n1", &["grow", VM, "vda", "40M"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("shrink"), "{out}");

    // Remove refused while it runs; then stop and remove.
    let (rc, out) = LAB.ctl("n1", &["remove", VM]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("stop it first"), "{out}");
    assert!(disk.exists());
    let (rc, out) = LAB.ctl("n1", &["stop", VM]);
    assert_eq!(rc, 0, "stop: {out}");
    let (rc, out) = LAB.ctl("n1", &["remove", VM]);
    assert_eq!(rc, 0, "remove: {out}");
    assert!(out.contains("undefined vmw-c on node n2 too"), "{out}");
    assert!(out.contains("[lock.sanlock] leases"), "{out}");
    assert_eq!(state("n1"), "undefined");
    assert_eq!(state("n2"), "undefined");
    assert!(!disk.exists(), "the disk file is removed");
    assert_eq!(LAB.lease("n1", VM), Held::None);
}
