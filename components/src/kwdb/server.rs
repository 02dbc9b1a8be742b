//! Which server a connection talks to ([`Dialect`]) and what that alone decides:
//! ports, default users, the admin database, COPY. Its own module, below
//! [`super::ident`], [`super::values`] and [`super::dialect`] (the SQL), which all
//! ask it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Kwdb,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Kwdb => "kwdb",
            Dialect::Postgres => "postgres",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Dialect::Kwdb => 26257,
            Dialect::Postgres => 5432,
        }
    }

    pub fn default_user(self) -> &'static str {
        match self {
            Dialect::Kwdb => "root",
            Dialect::Postgres => "postgres",
        }
    }

    /// The database to connect to when the target one may not exist yet.
    pub fn admin_database(self) -> &'static str {
        match self {
            Dialect::Kwdb => "defaultdb",
            Dialect::Postgres => "postgres",
        }
    }

    /// Whether COPY FROM STDIN may be used (KWDB has none on time-series tables).
    pub fn supports_copy(self) -> bool {
        self == Dialect::Postgres
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kwdb" => Ok(Dialect::Kwdb),
            "postgres" => Ok(Dialect::Postgres),
            other => Err(format!(
                "unknown dialect \"{other}\"; expected kwdb or postgres"
            )),
        }
    }
}
