//! A throwaway PostgreSQL database per test, on the server `KWPIPE_TEST_PG` names
//! (default `postgresql://postgres@127.0.0.1:5432`; `scripts/test-env` starts it).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use components::kwdb::tokio_postgres::{self, Client, NoTls};

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
