//! The `mychat up` harness shared by the end-to-end tests: the binary with its embedded
//! nats-server and PostgreSQL in a temp dir, every port a free one, stopped with SIGTERM on drop.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Up {
    pub child: Child,
    pub api: String,
    pub admin: String,
    pub ws: String,
    pub nats_url: String,
    pub database_url: String,
    pub metrics: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

pub fn start_up() -> Up {
    start_up_with(&[])
}

/// [`start_up`] with extra environment variables for the `mychat up` child (e.g.
/// `MYCHAT_CORS_ORIGINS`, `RUST_LOG`).
pub fn start_up_with(env: &[(&str, &str)]) -> Up {
    let dir = tempfile::Builder::new()
        .prefix("mychat-e2e")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let [user, admin, ws, nats, pg, metrics] = testkit::free_ports::<6>();
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .arg("up")
        .env_remove("MYCHAT_NATS_URL")
        .env_remove("MYCHAT_DATABASE_URL")
        .env("MYCHAT_DATA_DIR", dir.path().join("data"))
        .env("MYCHAT_USER_ADDR", format!("127.0.0.1:{user}"))
        .env("MYCHAT_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("MYCHAT_WS_ADDR", format!("127.0.0.1:{ws}"))
        .env("MYCHAT_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("MYCHAT_NATS_PORT", nats.to_string())
        .env("MYCHAT_PG_PORT", pg.to_string())
        .env("MYCHAT_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut up = Up {
        child,
        api: format!("http://127.0.0.1:{user}"),
        admin: format!("http://127.0.0.1:{admin}"),
        ws: format!("ws://127.0.0.1:{ws}"),
        nats_url: format!("nats://127.0.0.1:{nats}"),
        database_url: format!(
            "postgres://{}@127.0.0.1:{pg}/mychat",
            testkit::postgres::PG_USER
        ),
        metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in [user, admin, ws, metrics] {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!(
                    "mychat up exited ({status}) before it listened on {p}; log: {}",
                    log_of(&up)
                );
            }
            assert!(
                Instant::now() < deadline,
                "mychat up did not listen on {p}; log: {}",
                std::fs::read_to_string(up.dir.path().join("up.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    up
}

/// The `mychat up` log so far.
pub fn log_of(up: &Up) -> String {
    std::fs::read_to_string(up.dir.path().join("up.log")).unwrap_or_default()
}
