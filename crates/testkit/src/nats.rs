//! A real `nats-server` with JetStream, configured by the project's `nats.conf`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{free_port, wait_for_port, workspace_root};

/// Where and how to run nats-server.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Client port on 127.0.0.1 (0 = a free one).
    pub port: u16,
    /// JetStream store directory.
    pub store_dir: PathBuf,
    /// The config file (default: the workspace's `nats.conf`).
    pub config: PathBuf,
    /// Where the server's log goes (default: `<store_dir>/../nats.log`).
    pub log_file: Option<PathBuf>,
}

/// The Go runtime's processors (`GOMAXPROCS`) nats-server is started with, unless the
/// environment sets its own. With `sync_interval: always` every message is fsynced in a
/// blocking system call, one stream after another but many streams at once (16 chat shards);
/// with as many processors as cores (2 here) the goroutines that could run wait until Go hands
/// a blocked thread's processor over. Measured (`mychat bench ws`, 16 shards, 10,000 sockets,
/// 5,000 msg/s, five alternated pairs): p99 6.8–10.0 ms (median 7.4) with 8 against 8.1–11.7 ms
/// (median 10.9) with the default; nats-server's CPU 0.78–0.80 core against 0.66.
/// docs/benchmarks.md, the gateway; compose.yaml sets the same.
pub const NATS_GOMAXPROCS: &str = "8";

/// The `GOMAXPROCS` a nats-server started here runs with: the environment's, else
/// [`NATS_GOMAXPROCS`].
pub fn gomaxprocs() -> String {
    std::env::var("GOMAXPROCS").unwrap_or_else(|_| NATS_GOMAXPROCS.to_string())
}

/// A running nats-server child process; killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    options: NatsOptions,
    _temp: Option<tempfile::TempDir>,
    embedded: bool,
}

/// The nats-server binary to run.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    for candidate in [".tools/bin/nats-server", ".tools/py/bin/nats-server"] {
        let p = workspace_root().join(candidate);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a fresh server on a free port with a temporary store.
    ///
    /// # Errors
    /// When nats-server cannot be started or does not listen within 10 s.
    pub fn start() -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new().prefix("mychat-nats").tempdir()?;
        let mut server = Self::start_with(NatsOptions {
            port: 0,
            store_dir: temp.path().join("jetstream"),
            config: workspace_root().join("nats.conf"),
            log_file: Some(temp.path().join("nats.log")),
        })?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts a server with explicit options (used by `mychat up` for its persistent store).
    ///
    /// # Errors
    /// When nats-server cannot be started or does not listen within 10 s.
    pub fn start_with(mut options: NatsOptions) -> anyhow::Result<Self> {
        if options.port == 0 {
            options.port = free_port();
        }
        std::fs::create_dir_all(&options.store_dir)?;
        let mut server = Self {
            child: None,
            options,
            _temp: None,
            embedded: false,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Like [`NatsServer::start_with`], for a server this process owns for its whole life
    /// (`mychat up`): it runs in its own process group, so the signals a terminal, `docker
    /// stop` or systemd send to this process's group reach only this process, which stops the
    /// server itself, in order; and it gets SIGTERM if this process dies without stopping it
    /// (Linux parent-death signal). Call it from a thread that lives as long as the process
    /// (the main thread): the parent-death signal follows the thread that started the child.
    ///
    /// # Errors
    /// As [`NatsServer::start_with`].
    pub fn start_embedded(mut options: NatsOptions) -> anyhow::Result<Self> {
        if options.port == 0 {
            options.port = free_port();
        }
        std::fs::create_dir_all(&options.store_dir)?;
        let mut server = Self {
            child: None,
            options,
            _temp: None,
            embedded: true,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let o = &self.options;
        let log = o
            .log_file
            .clone()
            .unwrap_or_else(|| o.store_dir.with_extension("log"));
        let mut cmd = Command::new(nats_server_bin());
        cmd.arg("-c")
            .arg(&o.config)
            .args(["-a", "127.0.0.1", "-p", &o.port.to_string(), "-sd"])
            .arg(&o.store_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.env("GOMAXPROCS", gomaxprocs());
        if self.embedded {
            crate::own_group_and_parent_death(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", nats_server_bin().display()))?;
        self.child = Some(child);
        wait_for_port(o.port, Duration::from_secs(10))
            .with_context(|| format!("nats-server did not start; see {}", log.display()))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.options.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.options.store_dir
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL (a crash), without waiting for a clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// A client connection.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(self.url()).await?)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A write fault on one JetStream stream, the others unaffected: stream `name` is made to refuse
/// new messages (its `max_messages` becomes the count it holds, with `discard: new`, so
/// nats-server answers every publish to it with an error, "maximum messages exceeded") while
/// reads go on. Returns the stream's configuration before, to put back with `update_stream`.
///
/// # Errors
/// When the stream cannot be read or updated.
pub async fn refuse_new_messages(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> anyhow::Result<async_nats::jetstream::stream::Config> {
    let mut stream = js.get_stream(name).await?;
    let info = stream.info().await?;
    let original = info.config.clone();
    let mut full = original.clone();
    full.max_messages = i64::try_from(info.state.messages)?;
    full.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(&full).await?;
    Ok(original)
}
