//! `atlassian-sandbox [--port N] [--users N] [--groups N] [--projects N] [--spaces N] [--sites N] [--latency-ms MS]
//!  [--rate-limit-every N [--retry-after SECONDS]] [--error-every N] [--drop-every N]
//!  [--client-id ID] [--client-secret SECRET] [--access-token-ttl SECONDS] [--reuse-leeway SECONDS]`: serves the
//! sandbox on 127.0.0.1. Faults can also be changed while it runs: `POST /__sandbox/faults`.

use anyhow::{Context, bail};
use std::time::Duration;
use tests::sandbox::{Sandbox, SandboxConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = SandboxConfig::default();
    let mut port: u16 = 9911;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = value()?.parse().context("--port")?,
            "--users" => config.org.users = value()?.parse().context("--users")?,
            "--groups" => config.org.groups = value()?.parse().context("--groups")?,
            "--projects" => config.org.projects = value()?.parse().context("--projects")?,
            "--spaces" => config.org.spaces = value()?.parse().context("--spaces")?,
            "--sites" => config.org.sites = value()?.parse().context("--sites")?,
            "--latency-ms" => config.faults.latency_ms = value()?.parse().context("--latency-ms")?,
            "--rate-limit-every" => config.faults.rate_limit_every = value()?.parse().context("--rate-limit-every")?,
            "--retry-after" => config.faults.retry_after_secs = value()?.parse().context("--retry-after")?,
            "--error-every" => config.faults.error_every = value()?.parse().context("--error-every")?,
            "--drop-every" => config.faults.drop_every = value()?.parse().context("--drop-every")?,
            "--client-id" => config.client_id = value()?,
            "--client-secret" => config.client_secret = value()?,
            "--access-token-ttl" => {
                config.access_token_ttl = Duration::from_secs(value()?.parse().context("--access-token-ttl")?)
            }
            "--reuse-leeway" => config.reuse_leeway = Duration::from_secs(value()?.parse().context("--reuse-leeway")?),
            "-h" | "--help" => {
                println!(
                    "atlassian-sandbox [--port N] [--users N] [--groups N] [--projects N] [--spaces N] [--sites N] \
                     [--latency-ms MS] [--rate-limit-every N [--retry-after S]] [--error-every N] [--drop-every N] \
                     [--client-id ID] [--client-secret S] [--access-token-ttl S] [--reuse-leeway S]"
                );
                return Ok(());
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding port {port}"))?;
    let sandbox = Sandbox::new(config);
    let org = sandbox.org();
    println!(
        "atlassian sandbox on http://{} ({} users, {} groups, {} projects, {} spaces, {} sites)",
        listener.local_addr()?,
        org.users.len(),
        org.groups.len(),
        org.projects.len(),
        org.spaces.len(),
        org.sites.len()
    );
    sandbox.serve(listener).await?;
    Ok(())
}
