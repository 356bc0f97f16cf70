//! The watchdog's policy simulator over every case in tests/sim/: each folder holds a `script` of
//! events on a simulated clock and the `expected.log` of decisions (src/watchdog/sim.rs says the
//! script language). A new case is a new folder. A mismatch prints both logs line by line.
//! `VMWARDEN_SIM_BLESS=1` writes `expected.log` from the current output (review it before committing).

use std::path::Path;

#[test]
fn every_simulated_case_matches_its_log() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("script").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 13,
        "expected the simulator cases in {}",
        dir.display()
    );
    let bless = std::env::var("VMWARDEN_SIM_BLESS").is_ok();
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let script = std::fs::read_to_string(case.join("script")).unwrap();
        let got = vmwarden::watchdog::sim::run(&script).unwrap_or_else(|e| panic!("{name}: {e}"));
        let exp_path = case.join("expected.log");
        if bless {
            std::fs::write(&exp_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", exp_path.display()));
        if got != want {
            let mut diff = String::new();
            let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
            for i in 0..g.len().max(w.len()) {
                let (a, b) = (w.get(i).copied(), g.get(i).copied());
                if a != b {
                    diff.push_str(&format!(
                        "  line {}:\n    expected: {}\n    got:      {}\n",
                        i + 1,
                        a.unwrap_or("(none)"),
                        b.unwrap_or("(none)")
                    ));
                }
            }
            failed.push(format!("{name}:\n{diff}"));
        }
    }
    assert!(
        failed.is_empty(),
        "simulator cases differ:\n{}",
        failed.join("\n")
    );
}

#[test]
fn a_bad_script_is_an_error_with_its_line() {
    let e = vmwarden::watchdog::sim::run("vm a run running\nat 5 explode a\n").unwrap_err();
    assert!(e.starts_with("line 2:"), "{e}");
    let e = vmwarden::watchdog::sim::run("at 5 end\nat 4 end\n").unwrap_err();
    assert!(e.contains("backwards"), "{e}");
}
