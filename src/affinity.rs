//! Keeping a SQLite server on one CPU.
//!
//! sqlx runs a SQLite connection on a thread of its own and hands it every statement through a
//! channel: a statement is two thread wake-ups, one there and one back. SQLite has one writer, so
//! every write of every call waits in that one chain of hand-offs. When the async task and the
//! connection's thread sit on different CPUs, each wake-up is an inter-processor interrupt, and on the
//! virtual machines this project is measured on that costs more than the statement itself: the same
//! SQLite server did twice the creates and reads per second when kept on one CPU (bench/RESULTS.md).
//!
//! A PostgreSQL server is the opposite case: its statements run in PostgreSQL's own processes, which
//! need the other CPUs, and the same pinning cost it a third of its throughput. Hence `auto`: one CPU
//! for SQLite, all for PostgreSQL (`--cpu-affinity`, see `config`).

use anyhow::Context;

/// Restricts every thread of this process, and so every thread it starts later (threads inherit
/// their creator's affinity), to the CPU the calling thread is running on. Returns that CPU.
#[cfg(target_os = "linux")]
pub fn keep_on_one_cpu() -> anyhow::Result<usize> {
    use nix::{
        errno::Errno,
        sched::{CpuSet, sched_getcpu, sched_setaffinity},
        unistd::Pid,
    };

    let cpu = sched_getcpu().context("which CPU this thread is on")?;
    let mut one = CpuSet::new();
    one.set(cpu).context("a CPU set of one")?;
    for entry in std::fs::read_dir("/proc/self/task").context("the threads of this process")? {
        let name = entry?.file_name();
        let Some(tid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &one) {
            // A thread that ended meanwhile needs nothing.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(e).with_context(|| format!("keeping thread {tid} on CPU {cpu}")),
        }
    }
    Ok(cpu)
}

#[cfg(not(target_os = "linux"))]
pub fn keep_on_one_cpu() -> anyhow::Result<usize> {
    anyhow::bail!("keeping the process on one CPU is implemented for Linux only")
}
