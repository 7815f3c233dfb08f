//! `gatehouse sessions`: incident response from the command line, against the configured
//! Redis store. Counting and ending go through the same store operations as the running
//! instances, so what ends here ends everywhere.
//!
//! Rules:
//! 1. Ending by `sub` or `sid` is a back-channel logout without the provider: the sessions'
//!    records are deleted and their indexes pruned, so every instance answers 401 from the
//!    next request on, and open WebSockets of those sessions are closed by the instances'
//!    re-validation.
//! 2. Tokens are **not** revoked at the provider: a record opens only with the key its
//!    browser's cookie carries, so nothing but that browser can read the tokens (a store dump
//!    reveals none). Revoke the user's grants at the provider as well.
//! 3. The memory store is refused: its sessions live inside the running process.

use std::time::Duration;

use crate::config::{Config, StoreConfig};
use crate::session::{Sessions, Store, StoreError};

/// What `gatehouse sessions` was asked.
#[derive(Debug, Clone)]
pub enum Action {
    Count { sub: Option<String> },
    EndBySub(String),
    EndBySid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "session.store is \"memory\": its sessions live inside the running gatehouse process; \
         the sessions command needs session.store = \"redis\""
    )]
    MemoryStore,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs `action` and returns the line to print.
pub async fn run(mut config: Config, action: Action) -> Result<String, AdminError> {
    if matches!(config.session.store, StoreConfig::Memory { .. }) {
        return Err(AdminError::MemoryStore);
    }
    // One attempt is enough for a command an operator reruns; but not a hair trigger.
    let timeout = config.session.store_timeout.max(Duration::from_secs(5));
    let store = Store::new(&config.session.store, timeout)?;
    let keys = std::mem::replace(
        &mut config.session.keys,
        crate::cookie::KeyRing::new(Vec::new()),
    );
    let sessions = Sessions::new(&config.session, store, keys);
    Ok(match action {
        Action::Count { sub } => {
            let n = sessions.count(sub.as_deref()).await?;
            match sub {
                Some(_) => format!("{n} live session(s) of that subject"),
                None => format!("{n} session(s)"),
            }
        }
        Action::EndBySub(sub) => {
            let n = sessions.end_by_sub(&sub).await?;
            format!("ended {n} session(s) of that subject")
        }
        Action::EndBySid(sid) => {
            let n = sessions.end_by_sid(&sid).await?;
            format!("ended {n} session(s) of that provider session")
        }
    })
}
