//! What the `kwdb` sink and the `kwdb-poll` source share: connection options
//! ([`conn`], read beside a component's own by [`options_table`]) and TLS
//! (`tls`), checked and quoted identifiers ([`ident`]), the SQL of the two
//! dialects ([`dialect`]), values as SQL text ([`values`]) and the catalog with its
//! schema cache ([`catalog`]).
//!
//! Layered downwards, each file importing only those below it: `error` and
//! `server` (which server, [`Dialect`]) at the bottom; `rules`, `values`,
//! `ident`, `dialect`, `catalog`, `dedup` above them; `tls` below `conn`, and
//! `options_table` above `conn`. This file only declares and re-exports.

pub mod catalog;
pub mod conn;
pub mod dedup;
pub mod dialect;
mod error;
pub mod ident;
pub mod options_table;
pub mod rules;
#[cfg(test)]
mod rules_proptest;
mod server;
mod tls;
pub mod values;

pub use catalog::{Catalog, TableInfo};
pub use conn::{ConnUrl, ConnectParams, ConnectionOptions, Secret, SslMode};
pub use dialect::{DatabaseKind, Sql};
pub use error::{classify, classify_state, connect_message, ErrorClass, KwdbError};
pub use ident::Ident;
pub use server::Dialect;
/// The client the connections are made with, for callers that query them.
pub use tokio_postgres;
