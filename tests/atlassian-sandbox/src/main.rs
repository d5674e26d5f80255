//! `atlassian-sandbox [--port N] [--users N] [--groups N] [--projects N] [--spaces N] [--sites N] [--latency-ms MS]
//!  [--rate-limit-every N [--retry-after SECONDS]] [--error-every N] [--drop-every N] [--lose-refresh-replies N]
//!  [--users-page-cap N] [--short-pages-every N] [--big-group N]
//!  [--quota-points N] [--tenant-quota-points N] [--quota-window-secs SECONDS] [--beta-headers]
//!  [--client-id ID] [--client-secret SECRET] [--access-token-ttl SECONDS] [--reuse-leeway SECONDS]`: serves the
//! sandbox on 127.0.0.1. Faults and the quota can also be changed while it runs: `POST /__sandbox/faults`,
//! `POST /__sandbox/quota`.

use anyhow::{Context, bail};
use atlassian_sandbox::{Sandbox, SandboxConfig};
use std::time::Duration;

const HELP: &str = "\
atlassian-sandbox: Atlassian's OAuth 2.0 (3LO), Jira, Confluence and Admin APIs over a seeded org, on 127.0.0.1

  --port N                  listen port (9911)
  --users N, --groups N, --projects N, --spaces N, --sites N
                            the seeded org's size (25, 6, 5, 4, 2); project and space ids repeat across sites
  --users-page-cap N        most users a users/search page serves, whatever maxResults asks (100)
  --short-pages-every N     every Nth users page is half as long, mid-list; only an empty page ends it (0: off)
  --big-group N             the first group holds the first N users (0: as small as the others)
  --latency-ms MS           added to every REST answer
  --rate-limit-every N      every Nth REST request answers a burst 429 (RateLimit-Reason: jira-burst-based)
  --retry-after S           the Retry-After of those 429s (0 is sent as 0)
  --error-every N           every Nth REST request answers 500
  --drop-every N            every Nth REST request drops its connection mid-answer
  --truncate-every N        every Nth REST request answers 200 with JSON cut off mid-way
  --garbage-every N         every Nth REST request answers 200 with an HTML page instead of JSON
  --stall-every N           every Nth REST request stalls --stall-ms before it answers (past a client's timeout)
  --stall-ms MS             how long those requests stall
  --mutate-every N          every Nth REST request first changes the org (one round of mutation), --mutations times
  --mutations N             how many times --mutate-every changes the org (0: never)
  --lose-refresh-replies N  the next N refreshes rotate the tokens, then drop the connection before the answer
  --quota-points N          the app's global points pool per quota window (unlimited)
  --tenant-quota-points N   each cloud id's own points pool per window (none)
  --quota-window-secs S     the quota window, fractions allowed (3600); windows are aligned to the Unix epoch
  --beta-headers            send Beta-RateLimit-Policy / Beta-RateLimit instead of RateLimit-Policy / RateLimit
  --client-id ID, --client-secret S
                            the OAuth app's credentials
  --access-token-ttl S      access token lifetime (3600)
  --reuse-leeway S          how long a rotated refresh token still works (600)

While it runs: POST /__sandbox/faults (JSON Faults), POST /__sandbox/quota
({\"global_points\", \"tenant_points\", \"window_secs\", \"beta_headers\"}), GET /__sandbox/stats, POST /__sandbox/org/mutate,
POST /__sandbox/org/keep-users ({\"keep\": N}), POST /__sandbox/org/groups/{id}/members ({\"account_id\"}).";

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
            "--truncate-every" => config.faults.truncate_every = value()?.parse().context("--truncate-every")?,
            "--garbage-every" => config.faults.garbage_every = value()?.parse().context("--garbage-every")?,
            "--stall-every" => config.faults.stall_every = value()?.parse().context("--stall-every")?,
            "--stall-ms" => config.faults.stall_ms = value()?.parse().context("--stall-ms")?,
            "--mutate-every" => config.faults.mutate_every = value()?.parse().context("--mutate-every")?,
            "--mutations" => config.faults.mutations = value()?.parse().context("--mutations")?,
            "--lose-refresh-replies" => {
                config.faults.lose_refresh_replies = value()?.parse().context("--lose-refresh-replies")?
            }
            "--users-page-cap" => config.users_page_cap = value()?.parse().context("--users-page-cap")?,
            "--big-group" => config.big_group = value()?.parse().context("--big-group")?,
            "--short-pages-every" => config.short_pages_every = value()?.parse().context("--short-pages-every")?,
            "--quota-points" => config.quota.global_points = Some(value()?.parse().context("--quota-points")?),
            "--tenant-quota-points" => {
                config.quota.tenant_points = Some(value()?.parse().context("--tenant-quota-points")?)
            }
            "--quota-window-secs" => {
                let secs: f64 = value()?.parse().context("--quota-window-secs")?;
                config.quota.window = Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|w| !w.is_zero())
                    .context("--quota-window-secs must be a positive number of seconds")?;
            }
            "--beta-headers" => config.quota.beta_headers = true,
            "--client-id" => config.client_id = value()?,
            "--client-secret" => config.client_secret = value()?,
            "--access-token-ttl" => {
                config.access_token_ttl = Duration::from_secs(value()?.parse().context("--access-token-ttl")?)
            }
            "--reuse-leeway" => config.reuse_leeway = Duration::from_secs(value()?.parse().context("--reuse-leeway")?),
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding port {port}"))?;
    let quota = &config.quota;
    let quota = match (quota.global_points, quota.tenant_points) {
        (None, None) => String::new(),
        (global, tenant) => format!(
            "; quota {} global, {} a tenant, per {:?} window",
            global.map_or("unlimited".into(), |q| q.to_string()),
            tenant.map_or("unlimited".into(), |q| q.to_string()),
            quota.window
        ),
    };
    let users_page_cap = config.users_page_cap;
    let sandbox = Sandbox::new(config);
    let org = sandbox.org();
    println!(
        "atlassian sandbox on http://{} ({} users, {} groups, {} projects, {} spaces, {} sites; users pages of {}{})",
        listener.local_addr()?,
        org.users.len(),
        org.groups.len(),
        org.projects.len(),
        org.spaces.len(),
        org.sites.len(),
        users_page_cap,
        quota
    );
    sandbox.serve(listener).await?;
    Ok(())
}
