//! Print a realistic DRBD 8.4 /proc/drbd with N minors (default 1000), for benchmarks:
//! `cargo run --release --example gen_proc_drbd -- 1000 > /tmp/procfs/drbd`.

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    print!("{}", vmwarden::probe::drbd::generate_proc_drbd(n));
}
