//! The OpenAPI 3.1 document, generated from the handlers' annotations, and its docs page.

use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable};

use crate::routes::{campaigns, health, import, lists, subscribers, suppressions, unsubscribe};
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
    info(title = "hikyaku", description = "Bulk mail delivery: lists, subscribers, campaigns."),
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
