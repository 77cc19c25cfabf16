//! Suppression files: import (the API's format: `email[,reason]` per line) and export (CSV),
//! for one tenant; imported addresses reach the engines' suppression feed like API imports.

use std::io::{Read, Write};

use super::tenants::check_exists;
use super::{progress, AdminError, Ctx};
use crate::routes::suppressions::{export_page, import_stream, SuppressionImport, EXPORT_HEADER};

/// Imports the file at `path` (`-`: stdin) for `tenant`, with a progress bar over its size.
pub async fn import(ctx: &Ctx, tenant: i64, path: &str) -> Result<SuppressionImport, AdminError> {
    check_exists(&ctx.db, tenant).await?;
    let (reader, size): (Box<dyn std::io::Read + Send>, Option<u64>) = if path == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f =
            std::fs::File::open(path).map_err(|e| AdminError::Invalid(format!("{path}: {e}")))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size)
    };
    let pb = progress::bar(size, "bytes");
    // The file is read in 64 KiB chunks on a blocking thread and streamed to the importer.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let reader_task = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let state = ctx.state().await?;
    let report = import_stream(state, tenant, stream, |n| pb.inc(n as u64)).await?;
    pb.finish_and_clear();
    let _ = reader_task.await;
    Ok(report)
}

/// Writes every suppression of `tenant` as CSV to `out`; returns how many.
pub async fn export(ctx: &Ctx, tenant: i64, out: &mut dyn Write) -> Result<u64, AdminError> {
    check_exists(&ctx.db, tenant).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM suppressions WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&ctx.db)
        .await?;
    let pb = progress::bar(Some(total.max(0) as u64), "suppressions");
    out.write_all(EXPORT_HEADER.as_bytes())?;
    let mut after = String::new();
    let mut n = 0u64;
    loop {
        let rows = export_page(&ctx.db, tenant, &after).await?;
        let Some(last) = rows.last() else { break };
        after = last.email.clone();
        for r in &rows {
            out.write_all(r.csv_line().as_bytes())?;
        }
        n += rows.len() as u64;
        pb.inc(rows.len() as u64);
    }
    out.flush()?;
    pb.finish_and_clear();
    Ok(n)
}
