//! The migration compatibility decision (src/actions/compat.rs) on real capability outputs:
//! this machine's `virsh domcapabilities`/`capabilities`/`version` (AMD EPYC-Milan, libvirt
//! 9.0.0, QEMU 7.2.22) and libvirt's own test data of other hosts (an Intel Skylake-Client-IBRS
//! with QEMU 4.2, an AMD EPYC-Rome with QEMU 7.2, the host-model CPU of a Core i7-8700):
//! tests/fixtures/compat/README.md says where each comes from.

mod support;

use support::fixture;
use vmwarden::actions::compat::{
    decide, parse_domcaps, parse_guest, parse_machines, parse_virsh_version, CpuMode, Decision,
    HostCaps, Sides, Usable, Verdict,
};

fn this_host() -> HostCaps {
    let (libvirt, qemu) = parse_virsh_version(&fixture("compat/this-host.version.txt"));
    HostCaps {
        domcaps: Some(fixture("compat/this-host-epyc-milan.domcaps.xml")),
        machines: parse_machines(&fixture("compat/this-host.capabilities.xml"), "x86_64").unwrap(),
        qemu,
        libvirt,
        ..Default::default()
    }
}

/// A libvirt test-data host: its domain capabilities and the qemu version of its name (libvirt's
/// files carry no machine list).
fn libvirt_host(file: &str, qemu: &str) -> HostCaps {
    HostCaps {
        domcaps: Some(fixture(&format!("compat/{file}"))),
        qemu: Some(qemu.into()),
        ..Default::default()
    }
}

fn intel_skylake() -> HostCaps {
    libvirt_host("libvirt-qemu_4.2.0-q35.x86_64.domcaps.xml", "4.2.0")
}

fn amd_rome() -> HostCaps {
    libvirt_host("libvirt-qemu_7.2.0-q35.x86_64.domcaps.xml", "7.2.0")
}

fn domain(machine: &str, cpu: &str) -> String {
    format!(
        "<domain type='kvm'><name>g</name><memory>65536</memory>\
         <os><type arch='x86_64' machine='{machine}'>hvm</type></os>{cpu}</domain>"
    )
}

fn judge(xml: &str, here: &HostCaps, there: &HostCaps) -> Verdict {
    decide(
        xml,
        &Sides {
            here: "n1",
            there: "n2",
            here_caps: here,
            there_caps: there,
        },
    )
}

fn refused(v: &Verdict) -> &str {
    match &v.decision {
        Decision::Refuse(why) => why,
        d => panic!("expected a refusal, got {d:?} ({:?})", v.notes),
    }
}

#[test]
fn fixtures_parse_as_libvirt_wrote_them() {
    let here = parse_domcaps(&fixture("compat/this-host-epyc-milan.domcaps.xml")).unwrap();
    let hm = here.host_model.as_ref().unwrap();
    assert_eq!(
        (hm.vendor.as_str(), hm.model.as_str()),
        ("AMD", "EPYC-Milan")
    );
    assert!(hm.require.contains("x2apic") && hm.disable.contains("avx2"));
    assert_eq!(here.passthrough, Some(true));
    assert_eq!(here.models["pentium3"].usable, Usable::Yes);
    let intel =
        parse_domcaps(&fixture("compat/libvirt-qemu_4.2.0-q35.x86_64.domcaps.xml")).unwrap();
    let hm = intel.host_model.as_ref().unwrap();
    assert_eq!(
        (hm.vendor.as_str(), hm.model.as_str()),
        ("Intel", "Skylake-Client-IBRS")
    );
    assert!(hm.require.contains("vmx"));
    assert_eq!(intel.maximum, Some(false));
    assert_eq!(intel.models["EPYC"].usable, Usable::No);
    let machines = parse_machines(&fixture("compat/this-host.capabilities.xml"), "x86_64").unwrap();
    for m in ["pc-i440fx-7.2", "pc-q35-7.2", "pc", "q35"] {
        assert!(machines.iter().any(|x| x == m), "{m} in {machines:?}");
    }
    assert!(!machines.iter().any(|x| x == "pc-q35-8.2"));
    let g = parse_guest(&domain(
        "pc-q35-7.2",
        &fixture("compat/libvirt-cpuid-Core-i7-8700-guest.xml"),
    ))
    .unwrap();
    assert_eq!(g.mode, CpuMode::Custom);
    assert_eq!(g.model.as_deref(), Some("Skylake-Client-IBRS"));
    assert!(g.required.contains("vmx") && g.required.contains("sgx"));
}

#[test]
fn same_host_is_compatible_in_every_cpu_mode() {
    let h = this_host();
    for cpu in [
        "",
        "<cpu mode='host-model'/>",
        "<cpu mode='host-passthrough'/>",
        "<cpu mode='custom'><model>pentium3</model></cpu>",
    ] {
        let v = judge(&domain("pc-i440fx-7.2", cpu), &h, &h);
        assert_eq!(v.decision, Decision::Compatible, "{cpu}: {:?}", v.notes);
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("machine type pc-i440fx-7.2: supported")),
            "{:?}",
            v.notes
        );
    }
}

#[test]
fn host_model_guest_of_an_amd_host_is_refused_on_an_intel_host_with_an_older_qemu() {
    let v = judge(
        &domain("pc-i440fx-7.2", "<cpu mode='host-model'/>"),
        &this_host(),
        &intel_skylake(),
    );
    let why = refused(&v);
    assert!(
        why.contains("host-model CPU (EPYC-Milan) is an AMD model")
            && why.contains("Intel Skylake-Client-IBRS"),
        "{why}"
    );
    assert!(
        why.contains("machine type pc-i440fx-7.2 is not supported by n2's qemu 4.2.0"),
        "{why}"
    );
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("older qemu (4.2.0) than n1 (7.2.22)")),
        "{:?}",
        v.notes
    );
}

#[test]
fn host_passthrough_between_unlike_cpus_is_refused() {
    let v = judge(
        &domain("pc-q35-7.2", "<cpu mode='host-passthrough'/>"),
        &this_host(),
        &amd_rome(),
    );
    let why = refused(&v);
    assert!(
        why.contains("host-passthrough")
            && why.contains("n2's CPU (AMD EPYC-Rome) is not n1's (AMD EPYC-Milan)"),
        "{why}"
    );
    // maximum: not even supported by the QEMU 4.2 host.
    let why = judge(
        &domain("pc-q35-4.2", "<cpu mode='maximum'/>"),
        &amd_rome(),
        &intel_skylake(),
    );
    assert!(refused(&why).contains("does not support the maximum CPU mode"));
}

#[test]
fn core_i7_8700_guest_on_a_skylake_host_is_compared_feature_by_feature() {
    // (Coming from a host with another CPU: on two like hosts the check stops at "same CPU".)
    // Same model (Skylake-Client-IBRS), so every feature the i7-8700's host-model adds and the
    // QEMU 4.2 host's does not is missing there; vmx, which both have, is not named.
    let guest = domain(
        "pc-q35-4.2",
        &fixture("compat/libvirt-cpuid-Core-i7-8700-guest.xml"),
    );
    let v = judge(&guest, &this_host(), &intel_skylake());
    let why = refused(&v);
    assert!(
        why.contains("n2's CPU lacks") && why.contains("sgx") && why.contains("mpx"),
        "{why}"
    );
    let lacks = why.split("lacks ").nth(1).unwrap_or("");
    assert!(!lacks.contains("vmx") && !lacks.contains("invtsc"), "{why}");
    // On the AMD host: another vendor's model it cannot use.
    let why = judge(&guest, &this_host(), &amd_rome());
    assert!(
        refused(&why).contains("is an Intel model and n2's CPU is an AMD one"),
        "{why:?}"
    );
}

#[test]
fn custom_models_usable_on_the_target_pass_and_unlisted_features_cannot_be_told() {
    let rome = amd_rome();
    let v = judge(
        &domain("pc-q35-7.2", "<cpu mode='custom'><model>EPYC</model></cpu>"),
        &this_host(),
        &rome,
    );
    assert_eq!(v.decision, Decision::Compatible, "{:?}", v.notes);
    // A feature on top of EPYC that the EPYC-Rome host's description does not mention.
    let v = judge(
        &domain(
            "pc-q35-7.2",
            "<cpu mode='custom'><model>EPYC</model><feature policy='require' name='pku'/><feature policy='require' name='x2apic'/></cpu>",
        ),
        &this_host(),
        &rome,
    );
    match &v.decision {
        Decision::Unknown(why) => assert!(why.contains("pku") && !why.contains("x2apic"), "{why}"),
        d => panic!("{d:?}"),
    }
    // A model the target's qemu does not know at all.
    let why = judge(
        &domain(
            "pc-q35-4.2",
            "<cpu mode='custom'><model>EPYC-Rome</model></cpu>",
        ),
        &rome,
        &intel_skylake(),
    );
    assert!(refused(&why).contains("EPYC-Rome"), "{why:?}");
}

#[test]
fn machine_types_newer_than_the_target_qemu_are_refused() {
    let h = this_host();
    let why = judge(&domain("pc-q35-8.2", ""), &h, &h);
    assert!(
        refused(&why).contains(
            "machine type pc-q35-8.2 is not supported by n2's qemu 7.2.22 (its newest of that family: pc-q35-7.2)"
        ),
        "{why:?}"
    );
    // Without a machine list the version decides.
    let why = judge(
        &domain("pc-q35-8.2", "<cpu mode='custom'><model>EPYC</model></cpu>"),
        &h,
        &amd_rome(),
    );
    assert!(refused(&why).contains("pc-q35-8.2 is not supported by n2's qemu 7.2.0"));
}

#[test]
fn blockers_name_what_is_missing_less_what_the_guest_disables() {
    // The EPYC-Milan entry of libvirt's tests/domaincapsdata/qemu_8.2.0-q35.x86_64.xml (an
    // EPYC-Rome host, libvirt with <blockers>).
    let caps = "<domainCapabilities><domain>kvm</domain><arch>x86_64</arch><cpu>\
        <mode name='host-model' supported='yes'><model fallback='forbid'>EPYC-Rome</model><vendor>AMD</vendor>\
        <feature policy='require' name='x2apic'/></mode>\
        <mode name='custom' supported='yes'>\
        <model usable='no' vendor='AMD' canonical='EPYC-Milan-v1'>EPYC-Milan</model>\
        <blockers model='EPYC-Milan'><feature name='erms'/><feature name='fsrm'/><feature name='ibrs'/>\
        <feature name='invpcid'/><feature name='pcid'/><feature name='pku'/><feature name='xsaves'/></blockers>\
        </mode></cpu></domainCapabilities>";
    let there = HostCaps {
        domcaps: Some(caps.into()),
        qemu: Some("8.2.0".into()),
        ..Default::default()
    };
    let v = judge(
        &domain(
            "pc-q35-7.2",
            "<cpu mode='custom'><model>EPYC-Milan</model><feature policy='disable' name='pku'/><feature policy='disable' name='xsaves'/></cpu>",
        ),
        &this_host(),
        &there,
    );
    let why = refused(&v);
    assert!(
        why.contains("n2's CPU lacks erms, fsrm, ibrs, invpcid, pcid that the guest's custom CPU (EPYC-Milan) uses"),
        "{why}"
    );
    let v = judge(
        &domain(
            "pc-q35-7.2",
            "<cpu mode='custom'><model>EPYC-Milan</model>\
             <feature policy='disable' name='erms'/><feature policy='disable' name='fsrm'/><feature policy='disable' name='ibrs'/>\
             <feature policy='disable' name='invpcid'/><feature policy='disable' name='pcid'/><feature policy='disable' name='pku'/>\
             <feature policy='disable' name='xsaves'/></cpu>",
        ),
        &this_host(),
        &there,
    );
    assert_eq!(v.decision, Decision::Compatible, "{:?}", v.notes);
}

#[test]
fn missing_capabilities_mean_cannot_tell_never_a_refusal() {
    let h = this_host();
    let old_agent = HostCaps::default();
    let v = judge(
        &domain("pc-i440fx-7.2", "<cpu mode='host-model'/>"),
        &h,
        &old_agent,
    );
    assert!(matches!(v.decision, Decision::Unknown(_)), "{v:?}");
    let broken = HostCaps {
        domcaps: Some("<domainCapabilities".into()),
        errors: vec!["machine types: `virsh capabilities` failed".into()],
        ..Default::default()
    };
    let v = judge(&domain("pc-i440fx-7.2", ""), &h, &broken);
    assert!(matches!(v.decision, Decision::Unknown(_)), "{v:?}");
}

/// The features of a CPU model, from the copy of libvirt 9.0's CPU map in the fixtures (what
/// each agent reads from its own `/usr/share/libvirt/cpu_map`).
fn base_features(model: &str) -> Option<Vec<String>> {
    let dir = support::repo().join("tests/fixtures/compat/cpu_map");
    Some(
        vmwarden::actions::compat::cpu_map_features(&dir, model)
            .unwrap()
            .into_iter()
            .collect(),
    )
}

/// The namespace lab's host (kvm-pvm: host-model is kvm64 with SSE3 off, only 486/pentium* usable)
/// and the live XML of its pentium3 guest (tests/lab_compat.rs): libvirt adds apic, x2apic and
/// hypervisor to it as required features.
fn lab_host() -> HostCaps {
    let (libvirt, qemu) = parse_virsh_version(&fixture("compat/this-host.version.txt"));
    HostCaps {
        domcaps: Some(fixture("compat/lab-host-kvm-pvm.domcaps.xml")),
        machines: parse_machines(&fixture("compat/this-host.capabilities.xml"), "x86_64").unwrap(),
        qemu,
        libvirt,
        host_model_features: base_features("kvm64"),
        ..Default::default()
    }
}

fn lab_guest(extra_feature: Option<&str>) -> String {
    let xml = fixture("compat/lab-guest-pentium3.live.xml");
    match extra_feature {
        Some(f) => xml.replacen(
            "<feature policy='require' name='hypervisor'/>",
            &format!(
                "<feature policy='require' name='hypervisor'/>\n    <feature policy='require' name='{f}'/>"
            ),
            1,
        ),
        None => xml,
    }
}

#[test]
fn cpu_map_models_parse() {
    let f = base_features("Skylake-Client-IBRS").unwrap();
    assert!(f.iter().any(|x| x == "x2apic") && f.iter().any(|x| x == "apic"));
    assert!(!f.iter().any(|x| x == "la57"));
    let dir = support::repo().join("tests/fixtures/compat/cpu_map");
    let e = vmwarden::actions::compat::cpu_map_features(&dir, "../x86_kvm64").unwrap_err();
    assert!(e.contains("not a CPU model name"), "{e}");
    assert!(vmwarden::actions::compat::cpu_map_features(&dir, "Nehalem").is_err());
}

/// The defect the lab showed: a guest's features beyond its model (apic, x2apic — libvirt adds
/// them to every KVM guest) looked up in a target whose host CPU is described relative to
/// another model were "cannot tell". With the base model's features from libvirt's CPU map
/// they are decided: present → compatible, absent → refused naming the feature.
#[test]
fn features_beyond_the_model_are_decided_with_the_targets_cpu_map() {
    let here = lab_host();
    // The EPYC-Milan host of this-host-epyc-milan.domcaps.xml (QEMU 7.2.22, the same machine list).
    let mut milan = this_host();
    let v = judge(&lab_guest(None), &here, &milan);
    assert!(
        matches!(&v.decision, Decision::Unknown(w) if w.contains("apic")),
        "without the base model's features: {v:?}"
    );
    milan.host_model_features = base_features("EPYC-Milan");
    let v = judge(&lab_guest(None), &here, &milan);
    assert_eq!(v.decision, Decision::Compatible, "{v:?}");
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("pentium3: usable on n2, with every feature")),
        "{v:?}"
    );
    // la57 (5-level paging): the lab's CPU has it, EPYC-Milan does not.
    let why = refused(&judge(&lab_guest(Some("la57")), &here, &milan)).to_string();
    assert!(
        why.contains("n2's CPU lacks la57 that the guest's custom CPU (pentium3) uses"),
        "{why}"
    );
    // The Intel Skylake host with QEMU 4.2: the machine type and the feature, both named.
    let mut sky = intel_skylake();
    sky.host_model_features = base_features("Skylake-Client-IBRS");
    let why = refused(&judge(&lab_guest(Some("la57")), &here, &sky)).to_string();
    assert!(
        why.contains("machine type pc-i440fx-7.2 is not supported by n2's qemu 4.2.0")
            && why.contains("n2's CPU lacks la57"),
        "{why}"
    );
    // The same host on both sides: "the same CPU" at once.
    let v = judge(&lab_guest(Some("la57")), &here, &lab_host());
    assert_eq!(v.decision, Decision::Compatible, "{v:?}");
}
