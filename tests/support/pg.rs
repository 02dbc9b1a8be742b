//! PostgreSQL for tests. Two kinds, each for what only it can do:
//!
//! - [`TestDb`]: a throwaway database per test on the shared server `KWPIPE_TEST_PG`
//!   names (default `postgresql://postgres@127.0.0.1:5432`; `scripts/test-env`
//!   starts it). Every test has its own database, so they share the server.
//! - [`PrivatePg`]: a server of the test's own, for tests that stop or restart it.
//!
//! Plus [`scalar`], [`text`] and [`exec`]: one statement from synchronous code
//! (the fault suite), each on a connection of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kwpipe_components::kwdb::tokio_postgres::{self, Client, NoTls};

use super::free_port;

pub fn server_url() -> String {
    std::env::var("KWPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into())
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e} (run `eval \"$(scripts/test-env)\"`)")
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database with a random name, dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new(prefix: &str) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "kwt_{prefix}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&format!("{}/postgres", server_url())).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let url = format!("{}/{name}", server_url());
        TestDb { name, url }
    }

    /// [`TestDb::new`] from synchronous code.
    pub fn blocking(prefix: &str) -> TestDb {
        block_on(TestDb::new(prefix))
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) =
                    tokio_postgres::connect(&format!("{}/postgres", server_url()), NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

// ---- a server of the test's own ---------------------------------------------

/// A PostgreSQL server of a test's own (initdb in a temporary directory, on a free
/// port), so stopping or restarting it disturbs no other test on the shared server.
/// Dropping it stops the server whatever happened: a failed test never leaves it
/// down or running.
pub struct PrivatePg {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let mut versions: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed (scripts/test-env)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        versions.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
        let bin = PathBuf::from(format!(
            "/usr/lib/postgresql/{}/bin",
            versions.pop().expect("a PostgreSQL version")
        ));
        // The server refuses to run as root: it runs as `postgres` then.
        let as_postgres = unsafe_is_root();
        let dir = std::env::temp_dir().join(format!(
            "kwpipe-test-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of {dir:?} failed");
        }
        let pg = PrivatePg {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg
    }

    /// `tool` of the server's version, run as `postgres` when we are root.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }

    pub fn stop_server(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name` (with `psql`, so it works inside and outside a
    /// runtime) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", &self.url("postgres"), "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = self.command("pg_ctl").args(args).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

// ---- one statement from synchronous code -----------------------------------------

/// `f` on a runtime of its own (called outside any runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The first column of the one row `sql` returns, as i64; None when the server
/// cannot be reached or the query fails (a server being stopped is expected).
pub fn scalar(url: &str, sql: &str) -> Option<i64> {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = c.query_one(sql, &[]).await.ok()?;
        Some(row.get::<_, i64>(0))
    })
}

/// [`scalar`] for a text column (NULL reads as "").
pub fn text(url: &str, sql: &str) -> Option<String> {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = c.query_one(sql, &[]).await.ok()?;
        Some(row.get::<_, Option<String>>(0).unwrap_or_default())
    })
}

/// Runs `sql`; panics when it fails.
pub fn exec(url: &str, sql: &str) {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        tokio::spawn(conn);
        c.batch_execute(sql).await.unwrap();
    })
}
