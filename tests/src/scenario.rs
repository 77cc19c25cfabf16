//! Shared pieces of the 100,000-message fault scenarios: Google-hosted and other domains in the
//! zone, the recipients spread over them, their two sinks, and a generated list sent as a
//! campaign through the API.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use axum::http::{Method, StatusCode};
use hikyaku_loadtest::sink::Profile;
use serde_json::json;

use crate::api::TestApi;

/// A zone with `g<i>.test` (MX at the Google-profile sink, 127.0.0.2) and `o<i>.test` (MX at
/// the plain sink, 127.0.0.5) for `i` below `domains`.
pub fn zone(domains: u64) -> String {
    let mut z = String::from("mx1.google.test A 127.0.0.2\nmx.other.test A 127.0.0.5\n");
    for i in 0..domains {
        let _ = writeln!(z, "g{i}.test MX 10 mx1.google.test");
        let _ = writeln!(z, "o{i}.test MX 10 mx.other.test");
    }
    z
}

/// Recipient `i`: the first `google` go to the Google-hosted domains, the rest to the others.
pub fn rcpt(i: u64, google: u64, domains: u64) -> String {
    if i < google {
        format!("r{i}@g{}.test", i % domains)
    } else {
        format!("r{i}@o{}.test", i % domains)
    }
}

/// The usual sinks of [`zone`]: a well-behaved Google profile and a plain MTA.
pub fn usual_sinks() -> Vec<(Ipv4Addr, Profile)> {
    sinks(
        Profile::provider(hikyaku_loadtest::sink::ProviderKind::Google),
        Profile::plain("other"),
    )
}

/// The two sinks of [`zone`]: `google` on 127.0.0.2, `other` on 127.0.0.5.
pub fn sinks(google: Profile, other: Profile) -> Vec<(Ipv4Addr, Profile)> {
    vec![
        (Ipv4Addr::new(127, 0, 0, 2), google),
        (Ipv4Addr::new(127, 0, 0, 5), other),
    ]
}

impl TestApi {
    /// A list of `total` subscribers, [`rcpt`]`(i, google, domains)` each, written straight
    /// into the table through `db` (the import path has tests of its own); its id.
    pub async fn generated_list(
        &self,
        db: &sqlx::PgPool,
        total: u64,
        google: u64,
        domains: u64,
    ) -> i64 {
        let (s, list) = self
            .json(Method::POST, "/v1/lists", json!({"name": "generated"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{list}");
        let list_id = list["id"].as_i64().expect("id");
        sqlx::query(
            "INSERT INTO subscribers (list_id, tenant_id, email, email_lower) \
             SELECT $1, $2, e, e FROM (SELECT CASE WHEN g < $3 \
             THEN 'r' || g || '@g' || (g % $5) || '.test' \
             ELSE 'r' || g || '@o' || (g % $5) || '.test' END AS e \
             FROM generate_series(0, $4 - 1) AS g) s",
        )
        .bind(list_id)
        .bind(self.tenant)
        .bind(google as i64)
        .bind(total as i64)
        .bind(domains as i64)
        .execute(db)
        .await
        .expect("subscribers");
        list_id
    }

    /// Creates a plain-text campaign to `list_id` and sends it; its id.
    pub async fn send_campaign(&self, list_id: i64, name: &str) -> i64 {
        let (s, campaign) = self
            .json(
                Method::POST,
                "/v1/campaigns",
                json!({
                    "name": name, "list_id": list_id, "from_name": "Acme",
                    "from_addr": "news@acme.test", "subject": "Hello",
                    "text_body": "News for {{email}}.\n"
                }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{campaign}");
        let cid = campaign["id"].as_i64().expect("id");
        let (s, sent) = self
            .json(
                Method::POST,
                &format!("/v1/campaigns/{cid}/send"),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{sent}");
        cid
    }

    /// The campaign's stats.
    pub async fn campaign_stats(&self, cid: i64) -> serde_json::Value {
        self.get(&format!("/v1/campaigns/{cid}/stats")).await.1
    }
}
