//! Where the store is and how many connections a process opens to it: the settings the
//! gateway and the worker share.

use crate::StoreOptions;

/// `DATABASE_URL` and `DB_MAX_CONNECTIONS`, flattened into each binary's settings.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreSettings {
    /// Store: `sqlite://PATH` (created if missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/chat.db")]
    pub database_url: String,

    /// Most database connections this process opens (SQLite: one writer and up to 3 readers, each on a thread of its own).
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

impl StoreSettings {
    /// The connection bounds for [`crate::Store::connect`].
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.db_max_connections,
            ..StoreOptions::default()
        }
    }
}
