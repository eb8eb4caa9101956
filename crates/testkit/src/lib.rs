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

pub use nats::{NatsOptions, NatsServer};
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

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `N` distinct free loopback ports: every listener is held until all are chosen (calling
/// [`free_port`] `N` times may return one port twice, as the kernel reuses a released port).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("free port").port())
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
