//! Schema migrations that do not stall a running fleet (rolling upgrades: the first API of a
//! release migrates while the previous release's nodes keep working).
//!
//! A migration's DDL waits for its table's lock behind every transaction using the table, and
//! while it waits, every later query of that table queues behind *it*: a migration held up by
//! one long report query would stop the recorder, imports and the API with it — the classic
//! migration outage. So migrations run on one connection with `lock_timeout` set to
//! [`LOCK_WAIT`]: a migration that cannot have its locks within that gives up (sqlx runs each
//! in its own transaction, so nothing of it stays), the queue behind it drains, and it tries
//! again after a pause, up to [`ATTEMPTS`] times; the API starts once they are through. A
//! migration that sets its own `SET LOCAL lock_timeout` (0010: a minute) keeps its own.
//!
//! The rules for writing one (README, "Upgrades without downtime"): only add while the
//! previous release runs; take short locks (`ADD COLUMN … DEFAULT` of a constant is instant
//! since PostgreSQL 11; an index on a large table is built `CONCURRENTLY` in a migration of its
//! own marked `-- no-transaction`); move data in batches outside the migration, never as one
//! statement under a lock.

use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

/// How long a migration waits for a lock before it gives up and tries again later.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Tries a migration makes before the API gives up starting.
pub const ATTEMPTS: u32 = 60;

/// Longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs the API's migrations ([`run_with`] with the defaults).
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    run_with(pool, &sqlx::migrate!("./migrations"), LOCK_WAIT, ATTEMPTS).await
}

/// Runs `migrator`'s pending migrations, each waiting at most `lock_wait` for a lock and
/// tried up to `attempts` times.
pub async fn run_with(
    pool: &PgPool,
    migrator: &Migrator,
    lock_wait: Duration,
    attempts: u32,
) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("SET lock_timeout = '{}ms'", lock_wait.as_millis()))
        .execute(&mut *conn)
        .await?;
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    let result = loop {
        // `run_direct`: `run` over a borrowed connection is not `Send` in a spawned task.
        match migrator.run_direct(&mut *conn).await {
            Err(e) if attempt < attempts && is_lock_timeout(&e) => {
                tracing::warn!(attempt, error = %e, "a migration could not have its locks; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                attempt += 1;
            }
            other => break other,
        }
    };
    // The connection goes back to the pool as any other.
    let _ = sqlx::query("RESET lock_timeout").execute(&mut *conn).await;
    result
}

/// Whether a migration failed only because a lock was not granted in time (SQLSTATE 55P03).
fn is_lock_timeout(e: &MigrateError) -> bool {
    let db = match e {
        MigrateError::Execute(sqlx::Error::Database(db))
        | MigrateError::ExecuteMigration(sqlx::Error::Database(db), _) => db,
        _ => return false,
    };
    db.code().as_deref() == Some("55P03")
}
