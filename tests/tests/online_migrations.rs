//! Migrations run while the fleet works (rolling upgrades): a migration that cannot have its
//! table lock at once gives up and tries again later instead of waiting in the lock queue, where
//! every later query of the table would wait behind it. While a long transaction holds the
//! table, readers keep being answered; once it ends, the migration goes through.

use std::time::Duration;

use hikyaku_tests::api::TestDb;
use sqlx::migrate::Migrator;
use sqlx::Connection;

async fn migrator(dir: &std::path::Path, files: &[(&str, &str)]) -> Migrator {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).expect("migration");
    }
    Migrator::new(dir).await.expect("migrator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waiting_for_a_lock_never_stalls_the_tables_readers() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let base = std::env::temp_dir().join(format!("hk-online-mig-{}", std::process::id()));
    let first = (
        "0001_t.sql",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    );
    let second = (
        "0002_note.sql",
        "ALTER TABLE t ADD COLUMN note text NOT NULL DEFAULT '';",
    );
    let m1 = migrator(&base.join("one"), &[first]).await;
    hikyaku_api::migrate::run_with(&pool, &m1, Duration::from_millis(300), 5)
        .await
        .expect("first migration");

    // A long transaction reading the table (a report, say) holds it for three seconds.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.expect("holder");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query("SELECT * FROM t")
        .execute(&mut *tx)
        .await
        .expect("read");
    let m2 = migrator(&base.join("two"), &[first, second]).await;
    let migrating = {
        let pool = pool.clone();
        tokio::spawn(async move {
            hikyaku_api::migrate::run_with(&pool, &m2, Duration::from_millis(300), 100).await
        })
    };
    // Meanwhile the table's readers are answered: the migration is not in their way.
    let mut reader = sqlx::PgConnection::connect(&db.url).await.expect("reader");
    let mut slowest = Duration::ZERO;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let t = tokio::time::Instant::now();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut reader)
            .await
            .expect("count");
        assert_eq!(n, 1);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a reader waited {slowest:?} behind the migration"
    );
    assert!(!migrating.is_finished(), "the migration waits its turn");
    tx.commit().await.expect("commit");
    migrating
        .await
        .expect("task")
        .expect("the migration went through once the table was free");
    let note: String = sqlx::query_scalar("SELECT note FROM t")
        .fetch_one(&pool)
        .await
        .expect("the column exists");
    assert_eq!(note, "");
    let _ = std::fs::remove_dir_all(&base);
}
