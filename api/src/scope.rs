//! What an API key may do. A key holds one or more scopes; each route needs one, decided
//! here in one table from its method and path template so the whole map can be read (and
//! tested) at once. A route this table does not know needs `admin`: new routes fail closed.

use axum::http::Method;

/// One scope of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET`: lists, subscribers, campaigns, events, stats, suppressions, exports.
    Read,
    /// Campaigns: create, edit, delete, test-send, send, schedule, pause, resume, cancel.
    Send,
    /// Lists, subscribers and imports, suppressions: create, change, delete.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Send, Scope::Admin];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Send => "send",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s`, if any.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The scope a request to the route `path` (its template, e.g. `/v1/campaigns/{id}/send`)
/// with `method` needs.
pub fn required(method: &Method, path: &str) -> Scope {
    if *method == Method::GET || *method == Method::HEAD {
        return Scope::Read;
    }
    if path == "/v1/campaigns" || path.starts_with("/v1/campaigns/") {
        return Scope::Send;
    }
    Scope::Admin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sends_and_everything_else_is_admin() {
        assert_eq!(required(&Method::GET, "/v1/lists/{id}"), Scope::Read);
        assert_eq!(
            required(&Method::GET, "/v1/suppressions/export"),
            Scope::Read
        );
        assert_eq!(required(&Method::POST, "/v1/campaigns"), Scope::Send);
        assert_eq!(
            required(&Method::POST, "/v1/campaigns/{id}/send"),
            Scope::Send
        );
        assert_eq!(required(&Method::DELETE, "/v1/campaigns/{id}"), Scope::Send);
        assert_eq!(
            required(&Method::POST, "/v1/lists/{id}/subscribers/import"),
            Scope::Admin
        );
        assert_eq!(
            required(&Method::DELETE, "/v1/suppressions/{email}"),
            Scope::Admin
        );
        assert_eq!(required(&Method::POST, "/v1/campaignsx"), Scope::Admin);
        assert_eq!(required(&Method::PUT, "/v1/anything-new"), Scope::Admin);
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
