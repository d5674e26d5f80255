//! What the connector's own code costs per connect, without the network: create a session, open it, complete the
//! callback (hashing, sealing, store writes) over the in-memory store and a fake Atlassian; and sealing/opening
//! credentials alone. `cargo bench -p tests --bench connect_flow`; results go to BENCHMARKS.md.

use atlassian::fake::FakeAtlassian;
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};
use store::MemoryStore;
use time::OffsetDateTime;
use tokens::connect::{self, AuthorizeSettings, CallbackParams, CompleteSettings, ReturnUrlAllowList, SessionSettings};
use tokens::credentials::{self, Credentials};
use tokens::{KeyRing, scopes};
use url::Url;

fn per_op(total: Duration, n: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(n))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).expect("key ring");
    let sessions = SessionSettings {
        public_base_url: Url::parse("https://connector.example").unwrap(),
        ttl: time::Duration::minutes(15),
        return_urls: ReturnUrlAllowList::default(),
    };
    let authorize = AuthorizeSettings {
        authorize_url: Url::parse("https://auth.atlassian.com/authorize").unwrap(),
        audience: "api.atlassian.com".into(),
        client_id: "cid".into(),
        redirect_uri: Url::parse("https://connector.example/oauth/callback").unwrap(),
        scopes: scopes::defaults(),
        state_ttl: time::Duration::minutes(10),
    };
    let settings = CompleteSettings { required_scopes: scopes::defaults() };
    let atlassian = FakeAtlassian::granting(&scopes::defaults()).reusable();

    let flows = 20_000u32;
    let store = MemoryStore::new();
    let run = |i: u32| {
        let (store, sessions, authorize, settings, atlassian, keys) =
            (&store, &sessions, &authorize, &settings, &atlassian, &keys);
        async move {
            let now = OffsetDateTime::now_utc();
            let session = connect::create_session(store, sessions, &format!("tenant-{i}"), None, now).await.unwrap();
            let begun = connect::begin(store, authorize, Some(session.session_id.expose_secret()), now).await.unwrap();
            let state = begun.authorize_url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
            let params = CallbackParams {
                code: Some(atlassian::AuthorizationCode::new("code".into())),
                state: Some(SecretString::from(state)),
                error: None,
                browser: Some(begun.browser),
            };
            connect::complete(store, atlassian, keys, settings, params, now).await.unwrap();
        }
    };
    for i in 0..500 {
        run(i).await;
    }
    let start = Instant::now();
    for i in 500..500 + flows {
        run(i).await;
    }
    let flow_time = start.elapsed();

    let credentials = Credentials {
        access_token: atlassian::AccessToken::new("a".repeat(1200)),
        refresh_token: Some(atlassian::RefreshToken::new("r".repeat(1200))),
        expires_at: OffsetDateTime::now_utc(),
    };
    let seals = 50_000u32;
    let start = Instant::now();
    let mut sealed = None;
    for _ in 0..seals {
        sealed = Some(credentials::seal(&keys, "con_1", &credentials).unwrap());
    }
    let seal_time = start.elapsed();
    let sealed = sealed.unwrap();
    let start = Instant::now();
    for _ in 0..seals {
        credentials::open(&keys, "con_1", &sealed).unwrap();
    }
    let open_time = start.elapsed();

    println!("| what | per operation |");
    println!("|---|---|");
    println!(
        "| connect flow: create session + open + complete (memory store, fake Atlassian) | {} |",
        per_op(flow_time, flows)
    );
    println!("| seal credentials (2.4 KB of tokens, AES-256-GCM envelope) | {} |", per_op(seal_time, seals));
    println!("| open credentials | {} |", per_op(open_time, seals));
    println!("| sealed blob size | {} bytes |", sealed.blob.len());
    println!("| peak RSS of the bench process ({} flows stored in memory) | {} KiB |", flows + 500, peak_rss_kib());
}
