//! The OpenAPI 3.1 document, generated from the handlers' annotations, and its docs page.

use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable};

use crate::routes::{
    campaigns, health, import, lists, subscribers, suppressions, tracking, unsubscribe,
};
use crate::state::AppState;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "hikyaku",
        description = "Bulk mail delivery: lists, subscribers, campaigns. Any route with a key may also answer 401 (no valid key), 403 (the key lacks the route's scope: read for every GET, send for campaign routes, admin for lists, subscribers and suppressions), 429 (the key's request rate, with Retry-After) and 503 (PostgreSQL or Redis unavailable), as application/problem+json."
    ),
    modifiers(&Bearer),
    paths(
        health::healthz, health::readyz,
        lists::create, lists::list, lists::show, lists::update, lists::remove,
        subscribers::create, subscribers::page, subscribers::show, subscribers::update, subscribers::remove,
        import::import,
        campaigns::create, campaigns::list, campaigns::show, campaigns::send, campaigns::stats,
        campaigns::schedule, campaigns::pause, campaigns::resume, campaigns::cancel, campaigns::remove, campaigns::events,
        campaigns::update, campaigns::test_send,
        suppressions::add, suppressions::page, suppressions::remove, suppressions::import, suppressions::export,
        unsubscribe::page, unsubscribe::one_click,
        tracking::open, tracking::click,
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The document as JSON (tests walk its paths so no route escapes them).
    pub fn openapi_json() -> serde_json::Value {
        serde_json::to_value(Self::openapi()).unwrap_or_default()
    }
}

/// `/openapi.json` and the browsable `/docs`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
}

#[cfg(test)]
mod tests {
    use super::ApiDoc;

    /// Every route registered in `src/routes` is in the OpenAPI document, so the tenant-wall test
    /// (which walks the document's paths) cannot miss a new route.
    #[test]
    fn every_route_is_documented() {
        let doc = ApiDoc::openapi_json();
        let paths = doc["paths"].as_object().expect("paths");
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("routes dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
            for piece in text.split(".route(\"").skip(1) {
                let path = piece.split('"').next().expect("path");
                assert!(
                    paths.contains_key(path),
                    "{path} is routed but not in the OpenAPI document"
                );
                seen += 1;
            }
        }
        assert!(seen >= 15, "found {seen} routes");
    }
}
