//! hikyaku's customer API: tenants, lists, subscribers and campaigns in PostgreSQL (the system
//! of record, written only here); campaign expansion into the Redis queues through
//! `hikyaku-queue-schema`; the recorder that brings the engine's events back; the inbound
//! listener for bounces and complaints; and the admin CLI `hikyaku`. The API speaks SMTP only to
//! receive reports; the engine never reads PostgreSQL.
//!
//! # Layout
//!
//! - [`server`]: `app(state)` (the router) and `run(config, listener, shutdown)`; [`cli`]: the
//!   daemon's command line.
//! - [`routes`]: one router per resource (`lists`, `subscribers`, `import`, `campaigns`,
//!   `health`); [`openapi`]: `/openapi.json` and `/docs`.
//! - [`auth`] (Bearer key → tenant and scope check), [`scope`] (what each route needs),
//!   [`quota`] (each tenant's monthly sending quota), [`secrets`] (files or env only), [`keys`] (key making and hashing), [`error`]
//!   (problem+json), [`json`] (body extractor naming the bad field), [`address`] (validation).
//! - [`tokens`]: signed per-recipient tokens, for one-click unsubscribe (`routes::unsubscribe`
//!   serves them) and tracking (`routes::tracking`).
//! - [`tracking`]: the open pixel and click redirects put into a tracked campaign's HTML body.
//! - [`import_rows`]: CSV/NDJSON import lines → rows (pure, fuzzed).
//! - [`text`]: CSV cells (formula-neutralised), terminal-safe text, and the invisible Unicode
//!   formatting refused in header-bound fields.
//! - [`expansion`]: freezing a campaign and expanding its list into the queues, resumably.
//! - [`recorder`]: events streams → PostgreSQL, idempotently, with counters and suppressions.
//! - [`inbound`]: the SMTP listener for DSNs (VERP) and ARF complaints → suppressions;
//!   [`suppression_feed`]: every suppression published to the engines' last check.
//! - [`admin`]: tenant and key administration for the CLI; [`config`]: settings;
//!   [`metrics`]: `/metrics`.
//! - [`partitions`]: day partitions of `delivery_events`, created ahead, dropped by the purge.
//! - Migrations: `api/migrations`, run by [`migrate`] with short lock waits and retries so
//!   that a migration never queues the running fleet's queries behind it.

pub mod address;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod expansion;
pub mod import_rows;
pub mod inbound;
pub mod json;
pub mod keys;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod partitions;
pub mod quota;
pub mod recorder;
pub mod routes;
pub mod scope;
pub mod secrets;
pub mod server;
pub mod state;
pub mod suppression_feed;
pub mod text;
pub mod tokens;
pub mod tracking;

pub use config::ApiConfig;
pub use server::{app, run};
