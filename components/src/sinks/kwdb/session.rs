//! One worker's connection: opened when first needed and again after it broke,
//! set up so timestamp text means the same whatever the server's defaults, with
//! the COPY statements prepared on it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::{Client, Statement};

use crate::kwdb::{ConnectParams, KwdbError, Sql};

pub(super) struct Session {
    params: Arc<ConnectParams>,
    sql: Sql,
    client: Option<Client>,
    /// Prepared COPY statements per table; they die with the connection.
    copy_statements: HashMap<String, Statement>,
}

impl Session {
    pub fn new(params: Arc<ConnectParams>) -> Self {
        Session {
            sql: Sql(params.dialect),
            params,
            client: None,
            copy_statements: HashMap::new(),
        }
    }

    /// The connection, opened (again) if there is none or it closed.
    pub async fn connect(&mut self) -> Result<&Client, KwdbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.copy_statements.clear();
            let client = self.params.connect().await?;
            // Timestamp text without a zone into TIMESTAMPTZ must not depend on
            // the server's or the user's default time zone.
            for stmt in self.sql.session_setup() {
                client
                    .batch_execute(stmt)
                    .await
                    .map_err(|e| KwdbError::db("cannot set up the session", e))?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    /// The connected session, without reconnecting: inside a transaction a lost
    /// session must fail it, not be replaced by a new one outside it. Every
    /// caller connected first.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("connected")
    }

    /// Whether a session is open (it may have closed since).
    pub fn is_open(&self) -> bool {
        self.client.is_some()
    }

    /// Drops the connection: whatever broke may have left it in an unknown state.
    pub fn drop_connection(&mut self) {
        self.client = None;
        self.copy_statements.clear();
    }

    /// The table changed: its prepared COPY names the old columns.
    pub fn forget(&mut self, table: &str) {
        self.copy_statements.remove(table);
    }

    pub fn copy_statement(&self, table: &str) -> Option<Statement> {
        self.copy_statements.get(table).cloned()
    }

    pub fn keep_copy_statement(&mut self, table: &str, stmt: Statement) {
        self.copy_statements.insert(table.to_string(), stmt);
    }
}
