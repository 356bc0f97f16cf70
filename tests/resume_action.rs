//! The resume action through the real engine against a real libvirt (the `test:///` driver: a
//! node file with a running, a paused and a stopped VM, no daemon needed) and real virsh: its
//! plan (`--dry-run`), its refusal of a VM that is not paused, and the recovery of a resume left
//! unfinished by a crash — decided from libvirt's state alone, never replayed.

mod support;

use vmwarden::actions::journal::{self, Journal, Record};
use vmwarden::actions::{ActionKind, ActionReport, ActionRequest, Engine};
use vmwarden::config::Config;
use vmwarden::secret::Secret;

fn domain(name: &str, uuid: &str, runstate: u8) -> String {
    format!(
        "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <test:runstate>{runstate}</test:runstate>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type='block' device='disk'>
        <source dev='/dev/vg1/{name}'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
"
    )
}

struct T {
    _dir: tempfile::TempDir,
    state: String,
    engine: Engine,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Option<T> {
    if !support::have("virsh") {
        support::skip_or_fail(
            "resume_action",
            "virsh is not installed (scripts/setup.sh installs libvirt-clients)",
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    // libvirt's test driver run states: 1 running, 3 paused, 5 shut off.
    let xml = format!(
        "<node>\n{}{}{}</node>\n",
        domain("vmr", "6a1f0f4e-2f0c-4a57-9d2b-1c3d5e7f9a01", 1),
        domain("vmp", "6a1f0f4e-2f0c-4a57-9d2b-1c3d5e7f9a02", 3),
        domain("vmoff", "6a1f0f4e-2f0c-4a57-9d2b-1c3d5e7f9a03", 5),
    );
    std::fs::write(&node, xml).unwrap();
    let state = dir.path().join("state").display().to_string();
    let cfg = Config::from_toml_str(
        &format!(
            "[libvirt]\nuri = \"test://{}\"\n[cluster]\nnode = \"t1\"\nstate_dir = \"{state}\"\n",
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
    fn resume(&self, vm: &str, dry_run: bool) -> ActionReport {
        self.rt.block_on(self.engine.run(ActionRequest {
            action: ActionKind::Resume,
            vm: vm.into(),
            to: None,
            dry_run,
            lifecycle: Default::default(),
        }))
    }

    /// The journals in `done/` for `vm`.
    fn done(&self, vm: &str) -> Vec<String> {
        let dir = journal::journal_dir(&self.state).join("done");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with(&format!("-{vm}.json"))
                    })
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[test]
fn the_resume_plan_and_its_refusal() {
    let Some(t) = setup() else { return };
    let r = t.resume("vmp", true);
    assert_eq!(r.result, "planned", "{}", r.text());
    let steps: Vec<&str> = r.plan.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["resume_preflight", "virsh_resume"], "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("resume vmp") && text.contains("lock held exclusive here"),
        "{text}"
    );
    assert!(t.done("vmp").is_empty(), "a dry run journals nothing");
    // A stopped VM is not resumed: refused in the preflight, nothing changed.
    let r = t.resume("vmoff", false);
    assert_eq!(r.result, "refused", "{}", r.text());
    assert!(
        r.message
            .contains("only a VM paused on an I/O error or by a user is resumed"),
        "{}",
        r.message
    );
    let r = t.resume("vmr", false);
    assert_eq!(r.result, "refused", "{}", r.text());
    assert!(r.message.contains("running"), "{}", r.message);
}

#[test]
fn a_resume_left_unfinished_is_recovered_from_libvirt_never_replayed() {
    let Some(t) = setup() else { return };
    // An agent that died in `virsh resume` of each VM.
    for vm in ["vmr", "vmp", "vmoff"] {
        let mut j = Journal::create(
            &t.state,
            vm,
            Record::Header {
                id: format!("{vm}-resume-1"),
                action: "resume".into(),
                vm: vm.into(),
                node: "t1".into(),
                to: None,
                live: false,
                started_unix: 1,
                steps: vec!["resume_preflight".into(), "virsh_resume".into()],
                disks: vec![format!("/dev/vg1/{vm}")],
            },
        )
        .unwrap();
        j.write(&Record::Begin {
            step: "resume_preflight".into(),
        })
        .unwrap();
        j.write(&Record::Done {
            step: "resume_preflight".into(),
        })
        .unwrap();
        j.write(&Record::Begin {
            step: "virsh_resume".into(),
        })
        .unwrap();
    }
    assert_eq!(journal::unfinished(&t.state).len(), 3);
    let left = t.rt.block_on(t.engine.recover_all());
    assert_eq!(left, 0, "{:?}", journal::unfinished(&t.state));
    let one = |vm: &str| {
        let d = t.done(vm);
        assert_eq!(d.len(), 1, "{vm}: {d:?}");
        d[0].clone()
    };
    let r = one("vmr");
    assert!(
        r.contains("\"result\":\"completed\"") && r.contains("the VM runs: it was resumed"),
        "{r}"
    );
    for vm in ["vmp", "vmoff"] {
        let r = one(vm);
        assert!(
            r.contains("\"result\":\"failed\"") && r.contains("never resumed from the journal"),
            "{vm}: {r}"
        );
    }
}
