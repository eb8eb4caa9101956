//! Real infrastructure for tests and for `mychat up`: a `nats-server` and a PostgreSQL server,
//! started as child processes on loopback, each in its own directory, and stopped on drop.
//!
//! No mocks: tests run against the same servers production uses. Ports are free ports chosen at
//! start ("always use dynamic ports so tests can run in parallel", as nats.rs's own tests do).
//!
//! Binaries are found as follows. nats-server: `$NATS_SERVER_BIN`, then `<workspace>/.tools/bin/`,
//! then `$PATH`. PostgreSQL: `$PG_BIN_DIR`, then `/usr/lib/postgresql/<newest>/bin`, then `$PATH`.
//! PostgreSQL refuses to run as root, so when the uid is 0 the server runs as the `postgres` user.

pub mod nats;
pub mod postgres;

pub use nats::{refuse_new_messages, NatsOptions, NatsServer};
pub use postgres::{Postgres, PostgresOptions};

use std::net::TcpListener;
use std::path::PathBuf;

/// The workspace root (where `nats.conf`, `migrations/` and `.tools/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A TCP port that was free on 127.0.0.1 a moment ago, chosen as [`free_ports`] chooses.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// The lowest port [`free_ports`] hands out: above the registered services most machines run.
const LOWEST_TEST_PORT: u16 = 10_000;

/// `N` distinct loopback ports that were free a moment ago, every one held until all are chosen.
///
/// They are taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, read from
/// `/proc`; 32768 when unreadable), never from it as a `bind(…:0)` would: between this call and
/// the moment a server binds the port, an outgoing connection of any process may take an
/// ephemeral port as its local port, and a loop that connects to a port of that range while
/// nothing listens there can connect to itself (TCP simultaneous open), so a server looks ready
/// that has not started. Each process walks the range from its own starting point (its pid and
/// the clock), so parallel test processes rarely meet; a port something already holds is skipped.
/// When the range below is too small, the ephemeral range is used after all.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();

    let top = ephemeral_range_start();
    let span = u32::from(top.saturating_sub(LOWEST_TEST_PORT));
    if span < 1_000 {
        let listeners: Vec<TcpListener> = (0..N)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        return std::array::from_fn(|i| listeners[i].local_addr().expect("free port").port());
    }
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos) % span
    });
    let mut listeners = Vec::with_capacity(N);
    for _ in 0..span {
        if listeners.len() == N {
            break;
        }
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST_TEST_PORT + ((start + step) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    assert_eq!(listeners.len(), N, "{N} free ports below {top}");
    std::array::from_fn(|i| listeners[i].local_addr().expect("free port").port())
}

/// The first port of the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Makes `cmd`'s child the leader of its own process group and, on Linux, asks the kernel to
/// send it `signal` when the thread that spawns it dies (so the process's death).
fn own_group_and_parent_death(cmd: &mut std::process::Command, signal: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from));
    }
}

/// Waits until `127.0.0.1:port` accepts TCP connections, up to `timeout`.
fn wait_for_port(port: u16, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}
