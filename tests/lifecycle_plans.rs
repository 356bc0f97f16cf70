//! The lifecycle actions' plans, dry runs and refusals through the real engine, against a real
//! libvirt (the `test:///` driver: a node file with a stopped VM `vm1` whose disk is the LV
//! vg1/vm1, no daemon needed) and real virsh. Dry runs print the concrete lvm / virsh / qemu-img
//! commands and change nothing; refusals happen before anything is made.

mod support;

use vmwarden::actions::lifecycle::maintenance::{self, Marker};
use vmwarden::actions::lifecycle::Params;
use vmwarden::actions::{ActionKind, ActionReport, ActionRequest, Engine};
use vmwarden::config::Config;
use vmwarden::secret::Secret;

const NODE_XML: &str = "<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <test:runstate>5</test:runstate>
    <name>vm1</name>
    <uuid>6a1f0f4e-2f0c-4a57-9d2b-1c3d5e7f9a0b</uuid>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type='block' device='disk'>
        <source dev='/dev/vg1/vm1'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</node>
";

const NEW_XML: &str = "<domain type='kvm'><name>vm9</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><source file='/x.qcow2'/><target dev='vda' bus='virtio'/></disk><serial type='pty'/></devices></domain>";

struct T {
    _dir: tempfile::TempDir,
    state: String,
    engine: Engine,
    rt: tokio::runtime::Runtime,
}

fn setup(extra: &str) -> Option<T> {
    if !support::have("virsh") {
        support::skip_or_fail(
            "lifecycle_plans",
            "virsh is not installed (scripts/setup.sh installs libvirt-clients)",
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(&node, NODE_XML).unwrap();
    let state = dir.path().join("state").display().to_string();
    let cfg = Config::from_toml_str(
        &format!(
            "[libvirt]\nuri = \"test://{}\"\n[cluster]\nnode = \"t1\"\nstate_dir = \"{state}\"\n{extra}",
            node.display()
        ),
        "test",
    )
    .unwrap();
    let engine = Engine::new(cfg, Secret::from_string("x".repeat(32)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(T {
        _dir: dir,
        state,
        engine,
        rt,
    })
}

impl T {
    fn run(&self, action: ActionKind, vm: &str, dry_run: bool, p: Params) -> ActionReport {
        self.rt.block_on(self.engine.run(ActionRequest {
            action,
            vm: vm.into(),
            to: None,
            dry_run,
            lifecycle: p,
        }))
    }
}

fn all_commands(r: &ActionReport) -> String {
    r.plan
        .iter()
        .map(|s| {
            format!(
                "{}: {} | undo {}",
                s.step,
                s.does.join(" ; "),
                s.undo.join(" ; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn create(size: &str, xml: &str, image: Option<&str>) -> Params {
    Params {
        size: Some(size.into()),
        vg: Some("vg1".into()),
        from_image: image.map(String::from),
        xml: Some(xml.into()),
        ..Default::default()
    }
}

#[test]
fn create_dry_run_prints_the_commands_and_changes_nothing() {
    let Some(t) = setup("") else { return };
    let r = t.run(
        ActionKind::Create,
        "vm9",
        true,
        create("8G", NEW_XML, Some("/srv/images/base.qcow2")),
    );
    assert_eq!(r.result, "planned", "{}", r.text());
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "create_preflight",
            "disk_create",
            "lock_exclusive",
            "image_copy",
            "release_lock",
            "define"
        ]
    );
    let c = all_commands(&r);
    assert!(
        c.contains("lvm lvcreate -an -Zn -L 8589934592b -n vm9 vg1"),
        "{c}"
    );
    assert!(c.contains("undo lvm lvremove -y vg1/vm9"), "{c}");
    assert!(c.contains("lvm lvchange -aey vg1/vm9"), "{c}");
    assert!(
        c.contains(
            "qemu-img convert -n -f FORMAT_FROM_INFO -O raw /srv/images/base.qcow2 /dev/vg1/vm9"
        ),
        "{c}"
    );
    assert!(
        c.contains("qemu-img info --output=json /srv/images/base.qcow2"),
        "{c}"
    );
    assert!(
        c.contains("virsh -q -c test://") && c.contains(" define "),
        "{c}"
    );
    assert!(
        c.contains("--key vmwarden --set") && c.contains("stop"),
        "{c}"
    );
    assert!(
        c.contains("undo virsh -q -c test://") && c.contains("undefine --keep-nvram vm9"),
        "{c}"
    );
    // Nothing was written: no journal, no XML.
    assert!(!std::path::Path::new(&t.state)
        .join("journal/vm9.json")
        .exists());
    assert!(!std::path::Path::new(&t.state)
        .join("create/vm9.xml")
        .exists());
    // Without an image: no lock is taken at all.
    let r = t.run(
        ActionKind::Create,
        "vm9",
        true,
        create("512M", NEW_XML, None),
    );
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["create_preflight", "disk_create", "define"]);
}

#[test]
fn create_refusals_before_anything_is_made() {
    let Some(t) = setup("") else { return };
    let r = t.run(ActionKind::Create, "vm8", true, create("8G", NEW_XML, None));
    assert_eq!(r.result, "refused");
    assert!(
        r.message.contains("names the VM \"vm9\", not \"vm8\""),
        "{}",
        r.message
    );
    let r = t.run(ActionKind::Create, "vm9", true, create("8", NEW_XML, None));
    assert!(r.message.contains("no unit"), "{}", r.message);
    let r = t.run(
        ActionKind::Create,
        "vm9",
        true,
        Params {
            vg: None,
            ..create("8G", NEW_XML, None)
        },
    );
    assert!(
        r.message.contains("--vg VG") && r.message.contains("[lifecycle] vg"),
        "{}",
        r.message
    );
    let r = t.run(
        ActionKind::Create,
        "vm9",
        true,
        create("8G", NEW_XML, Some("rel/img.qcow2")),
    );
    assert!(r.message.contains("absolute path"), "{}", r.message);
    // A name libvirt already knows here: refused in the preflight, nothing made, journal closed.
    let xml = NEW_XML.replace("vm9", "vm1");
    let r = t.run(ActionKind::Create, "vm1", false, create("8G", &xml, None));
    assert_eq!(r.result, "refused", "{}", r.text());
    assert!(
        r.message.contains("vm1 is already defined on t1"),
        "{}",
        r.message
    );
    assert_eq!(r.steps.len(), 1);
    assert!(!std::path::Path::new(&t.state)
        .join("journal/vm1.json")
        .exists());
}

#[test]
fn grow_disks_remove_plans() {
    let Some(t) = setup("") else { return };
    let grow = |size: &str| Params {
        size: Some(size.into()),
        disk: Some("vda".into()),
        ..Default::default()
    };
    let r = t.run(ActionKind::Grow, "vm1", true, grow("+2G"));
    assert_eq!(r.result, "planned", "{}", r.text());
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    // Stopped: the lock is taken and given back around the lvextend.
    assert_eq!(
        steps,
        [
            "grow_preflight",
            "lock_exclusive",
            "extend_disk",
            "release_lock"
        ]
    );
    let c = all_commands(&r);
    assert!(c.contains("lvm lvextend -L +2147483648b vg1/vm1"), "{c}");
    let r = t.run(ActionKind::Grow, "vm1", true, grow("-1G"));
    assert!(r.message.contains("never shrinks"), "{}", r.message);
    let r = t.run(
        ActionKind::Grow,
        "vm1",
        true,
        Params {
            disk: Some("vdq".into()),
            ..grow("+1G")
        },
    );
    assert!(
        r.message.contains("no disk \"vdq\"") && r.message.contains("vda (/dev/vg1/vm1)"),
        "{}",
        r.message
    );

    let r = t.run(ActionKind::ActivateDisks, "vm1", true, Params::default());
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "disks_preflight",
            "lock_exclusive",
            "mark_maintenance",
            "map_partitions"
        ]
    );
    let c = all_commands(&r);
    assert!(
        c.contains("lvm lvchange -aey vg1/vm1") && c.contains("kpartx -a -v -s /dev/vg1/vm1"),
        "{c}"
    );
    let r = t.run(ActionKind::DeactivateDisks, "vm1", true, Params::default());
    let c = all_commands(&r);
    assert!(
        c.contains("kpartx -d -v -s /dev/vg1/vm1") && c.contains("lvm lvchange -an vg1/vm1"),
        "{c}"
    );

    let r = t.run(ActionKind::Remove, "vm1", true, Params::default());
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "remove_preflight",
            "lock_exclusive",
            "undefine",
            "undefine_peers",
            "remove_disks",
            "release_after_remove"
        ]
    );
    let c = all_commands(&r);
    assert!(
        c.contains("lvm lvremove -y vg1/vm1") && c.contains("undefine --keep-nvram vm1"),
        "{c}"
    );
    assert!(c.contains("undo virsh") && c.contains(" define "), "{c}");
    let r = t.run(
        ActionKind::Remove,
        "vm1",
        true,
        Params {
            keep_disks: true,
            ..Default::default()
        },
    );
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps.last(), Some(&"release_lock"));
    assert!(!all_commands(&r).contains("lvremove"));
}

#[test]
fn maintenance_refuses_start_and_remove_and_names_the_way_out() {
    let Some(t) = setup("") else { return };
    maintenance::write(
        &t.state,
        &Marker {
            vm: "vm1".into(),
            node: "t1".into(),
            since_unix: maintenance::now_unix() - 600,
            action_id: "vm1-activate_disks-1".into(),
            devices: vec!["/dev/vg1/vm1".into()],
        },
    )
    .unwrap();
    let r = t.run(ActionKind::Start, "vm1", false, Params::default());
    assert_eq!(r.result, "refused", "{}", r.text());
    assert!(
        r.message.contains("activated for maintenance on node t1")
            && r.message.contains("vmwarden ctl disks deactivate vm1"),
        "{}",
        r.message
    );
    let r = t.run(ActionKind::Remove, "vm1", false, Params::default());
    assert_eq!(r.result, "refused", "{}", r.text());
    assert!(
        r.message.contains("activated for maintenance"),
        "{}",
        r.message
    );
    let r = t.run(ActionKind::ActivateDisks, "vm1", false, Params::default());
    assert!(r.message.contains("already"), "{}", r.message);
    let (text, stale) =
        maintenance::report(&maintenance::all(&t.state), maintenance::now_unix(), 60.0);
    assert!(stale && text.contains("MAINTENANCE: vm1's disks"), "{text}");
}
