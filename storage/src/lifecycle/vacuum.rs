//! Vacuum: deleting files removed from the table log once the grace period has passed.

use super::*;

/// Deletes files removed more than `grace` ago; returns how many.
///
/// # Errors
/// Storage or commit errors.
pub async fn vacuum(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    grace: Duration,
) -> Result<usize> {
    let Some(table) = storage.open_table(tenant, kind).await? else {
        return Ok(0);
    };
    let retention =
        chrono::Duration::from_std(grace).map_err(|e| Error::Internal(e.to_string()))?;
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await?;
    Ok(metrics.files_deleted.len())
}
