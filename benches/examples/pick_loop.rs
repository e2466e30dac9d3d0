//! `pick`'s loop without criterion, for counting instructions per pick, a figure that does
//! not move with the host's load the way wall-clock time does:
//!
//! ```sh
//! cargo build --release -p lb-benches --example pick_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/pick_loop p2c-ewma 100 1000000
//! # "I refs" / 1000000 = instructions per pick (plus the loop's own few)
//! ```
//!
//! Arguments: a strategy label of the `pick` bench (`roundrobin`, `p2c-ewma`, ...), the
//! number of servers, the number of picks. It also prints the wall-clock time per pick.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use lb_benches::workloads::pick::{CASES, Steps, balancer, case_named};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [label, servers, picks] => case_named(label)
            .zip(servers.parse::<usize>().ok().filter(|&n| n > 0))
            .zip(picks.parse::<u64>().ok()),
        _ => None,
    };
    let Some(((case, servers), picks)) = parsed else {
        let labels: Vec<&str> = CASES.iter().map(|c| c.label).collect();
        eprintln!(
            "usage: pick_loop <strategy> <servers> <picks>; strategies: {}",
            labels.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let now = Instant::now();
    let (b, cookie) = balancer(case, servers, now);
    let mut steps = Steps::new(now);
    let started = Instant::now();
    let mut chosen = 0usize;
    for _ in 0..picks {
        let ctx = steps.next(&cookie);
        let pick = b.pick(black_box(&ctx));
        chosen = chosen.wrapping_add(black_box(pick.map(|p| p.index())).unwrap_or(0));
    }
    let elapsed = started.elapsed();
    println!(
        "{} at {servers} servers: {:.1} ns per pick ({picks} picks, index sum {chosen})",
        case.label,
        elapsed.as_nanos() as f64 / picks.max(1) as f64
    );
    ExitCode::SUCCESS
}
