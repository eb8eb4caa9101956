//! A real PostgreSQL server in its own data directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::free_port;

/// The role every mychat database is owned by (trust auth, loopback only).
pub const PG_USER: &str = "mychat";

/// Where and how to run PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// TCP port on 127.0.0.1 (0 = a free one).
    pub port: u16,
    /// The data directory (initialised with `initdb` if empty).
    pub data_dir: PathBuf,
    /// Trade durability for speed (`fsync=off`): for tests only.
    pub ephemeral: bool,
}

/// A running PostgreSQL server; stopped on drop.
pub struct Postgres {
    child: Option<Child>,
    options: PostgresOptions,
    _temp: Option<tempfile::TempDir>,
    embedded: bool,
}

/// The directory holding `initdb` and `postgres`.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PG_BIN_DIR") {
        return Some(PathBuf::from(p));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn pg_command(name: &str) -> Command {
    let program = pg_bin_dir()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// When running as root, the uid and gid of the `postgres` user to run the server as.
fn postgres_ids() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn chown_tree(path: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = postgres_ids() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()?;
        if !status.success() {
            bail!("chown -R {} failed", path.display());
        }
    }
    Ok(())
}

/// Runs `initdb` into `dir` (which must not exist or be empty).
///
/// # Errors
/// When initdb fails (its output is in the error).
pub fn initdb(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    chown_tree(dir)?;
    if nix::unistd::Uid::effective().is_root() && postgres_ids().is_none() {
        bail!("running as root but there is no `postgres` user to run PostgreSQL as");
    }
    let out = pg_command("initdb")
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            // Byte-order collation; a UTF-8 character classification, so that pg_trgm takes
            // Chinese characters as word characters (group message search).
            "--locale=C",
            "--lc-ctype=C.UTF-8",
            "--no-sync",
        ])
        .output()
        .context("running initdb (is PostgreSQL installed? scripts/run installs it)")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A cluster initialised once per machine and PostgreSQL build and copied for each test (initdb
/// takes ~1 s): `$TMPDIR/mychat-pg-template-<uid>-<build>`, where `<build>` names the `postgres`
/// binary. It is made in a private directory and renamed into place, so concurrent test processes
/// either win the rename or use the winner's copy, and no process leaves one behind.
fn template() -> anyhow::Result<&'static Path> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| shared_template().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(|p| p.as_path())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn shared_template() -> anyhow::Result<PathBuf> {
    let build = pg_bin_dir()
        .and_then(|d| {
            d.parent()
                .and_then(|v| v.file_name())
                .map(|v| v.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "path".to_owned());
    let uid = nix::unistd::Uid::effective().as_raw();
    let dir = std::env::temp_dir().join(format!("mychat-pg-template-{uid}-{build}-utf8"));
    if dir.join("PG_VERSION").exists() {
        return Ok(dir);
    }
    let staging = tempfile::Builder::new()
        .prefix("mychat-pg-template-staging")
        .tempdir()?;
    chown_tree(staging.path())?;
    let fresh = staging.path().join("data");
    initdb(&fresh)?;
    match std::fs::rename(&fresh, &dir) {
        Ok(()) => Ok(dir),
        // Another process renamed its copy into place first: use that one.
        Err(_) if dir.join("PG_VERSION").exists() => Ok(dir),
        Err(e) => {
            Err(e).with_context(|| format!("moving the template cluster to {}", dir.display()))
        }
    }
}

impl Postgres {
    /// Starts a fresh, throwaway server (fsync off) on a free port.
    ///
    /// # Errors
    /// When PostgreSQL cannot be initialised or started.
    pub fn start() -> anyhow::Result<Self> {
        Self::throwaway(true)
    }

    /// Starts a fresh, throwaway server on a free port that keeps PostgreSQL's durability (fsync
    /// and `synchronous_commit` on): for measuring a design whose tables are the record.
    ///
    /// # Errors
    /// When PostgreSQL cannot be initialised or started.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::throwaway(false)
    }

    /// A copy of the template cluster in a temporary directory, started (`ephemeral`: fsync off).
    fn throwaway(ephemeral: bool) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new().prefix("mychat-pg").tempdir()?;
        let data_dir = temp.path().join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template()?)
            .arg(&data_dir)
            .status()?;
        if !status.success() {
            bail!("copying the template cluster failed");
        }
        chown_tree(temp.path())?;
        let mut pg = Self::start_with(PostgresOptions {
            port: 0,
            data_dir,
            ephemeral,
        })?;
        pg._temp = Some(temp);
        Ok(pg)
    }

    /// Starts a server on `options.data_dir`, running `initdb` first if it is empty.
    ///
    /// # Errors
    /// When PostgreSQL cannot be initialised or started.
    pub fn start_with(mut options: PostgresOptions) -> anyhow::Result<Self> {
        if options.port == 0 {
            options.port = free_port();
        }
        if !options.data_dir.join("PG_VERSION").exists() {
            initdb(&options.data_dir)?;
        }
        let mut pg = Self {
            child: None,
            options,
            _temp: None,
            embedded: false,
        };
        pg.spawn()?;
        Ok(pg)
    }

    /// Like [`Postgres::start_with`], for a server this process owns for its whole life
    /// (`mychat up`): the postmaster runs in its own process group, so a terminal's, `docker
    /// stop`'s or systemd's signal to this process's group reaches only this process, which
    /// stops the server itself (fast shutdown) once nothing uses it any more; and it gets SIGINT
    /// (fast shutdown) if this process dies without stopping it (Linux parent-death signal).
    /// Call it from a thread that lives as long as the process (the main thread).
    ///
    /// # Errors
    /// As [`Postgres::start_with`].
    pub fn start_embedded(mut options: PostgresOptions) -> anyhow::Result<Self> {
        if options.port == 0 {
            options.port = free_port();
        }
        if !options.data_dir.join("PG_VERSION").exists() {
            initdb(&options.data_dir)?;
        }
        let mut pg = Self {
            child: None,
            options,
            _temp: None,
            embedded: true,
        };
        pg.spawn()?;
        Ok(pg)
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let o = &self.options;
        let _ = std::fs::remove_file(o.data_dir.join("postmaster.pid"));
        let mut cmd = pg_command("postgres");
        cmd.arg("-D")
            .arg(&o.data_dir)
            .args([
                "-p",
                &o.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(&o.data_dir)
            .args(["-c", "max_connections=200"]);
        if o.ephemeral {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        // Extra server settings, e.g. `-c shared_preload_libraries=pg_stat_statements` to
        // profile a benchmark (split on whitespace).
        if let Ok(extra) = std::env::var("TESTKIT_PG_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        if self.embedded {
            crate::own_group_and_parent_death(&mut cmd, nix::sys::signal::Signal::SIGINT);
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(o.data_dir.with_extension("log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting postgres")?);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Accepting TCP is not enough: wait until the server answers a query.
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "postgres exited with {status}; see {}",
                        o.data_dir.with_extension("log").display()
                    );
                }
            }
            let ready = pg_command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &o.port.to_string(),
                    "-U",
                    PG_USER,
                    "-d",
                    "postgres",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres did not become ready on port {}", o.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// `postgres://mychat@127.0.0.1:<port>/<db>`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", self.options.port)
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates database `db` if it does not exist.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn ensure_database(&self, db: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url()).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(db)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{}\"", db.replace('"', "")))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Stops the server with a fast shutdown (SIGINT) and waits for it.
    pub fn stop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGINT, Duration::from_secs(20));
    }

    /// Kills the server (SIGKILL on the postmaster; its backends exit on their own).
    pub fn kill(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let deadline = std::time::Instant::now() + timeout;
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

    /// Restarts the server on the same port and data.
    ///
    /// # Errors
    /// When it does not come back.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// A crash and a restart: SIGKILL to the postmaster and every backend at once (what a
    /// machine losing the processes looks like: WAL still in shared buffers is gone), then the
    /// server starts again on the same data and recovers from its WAL.
    ///
    /// # Errors
    /// When it does not come back.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            let mut pids = vec![pid];
            // The backends are the postmaster's children (/proc/<pid>/stat, field 4: the ppid).
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
                        continue;
                    };
                    let stat =
                        std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                    let ppid = stat
                        .rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<i32>().ok());
                    if ppid == Some(pid) {
                        pids.push(p);
                    }
                }
            }
            for p in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
            // The backends are gone once no process holds the data directory's shared memory.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let alive = |p: &i32| {
                // A zombie (state `Z`) holds nothing any more.
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        != Some("Z")
                })
            };
            while std::time::Instant::now() < deadline && pids[1..].iter().any(alive) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.spawn()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A throwaway cluster needs no checkpoint: immediate shutdown. A kept one: fast shutdown.
        let signal = if self.options.ephemeral {
            nix::sys::signal::Signal::SIGQUIT
        } else {
            nix::sys::signal::Signal::SIGINT
        };
        self.signal_and_wait(signal, Duration::from_secs(20));
    }
}
