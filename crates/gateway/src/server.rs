//! Network server (placeholder: the lead replaces this file).
// placeholder: the lead replaces this file
pub async fn run(
    _c: crate::config::Config,
    _s: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    Ok(())
}
