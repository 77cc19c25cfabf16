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

/// An error, as every error response carries it (RFC 9457 problem+json).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: crate::error renders the same fields
struct Problem {
    /// `https://hikyaku.dev/problems/<kind>`.
    #[schema(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// The request field at fault, where one is.
    field: Option<String>,
}

/// Documents the error answers every operation can give, from what it takes: a key (401,
/// 403 scope, 429 rate with `Retry-After`), path or query parameters (400 unparsable, 404
/// not this tenant's, 422 invalid), a body (400, 413, 415, 422), and a dependency (503).
/// Each error response, declared here or on the handler, carries a [`Problem`] as
/// `application/problem+json`. The handlers' annotations keep their success bodies and the
/// errors particular to them (409, 403 quota).
struct Errors;

impl Errors {
    fn problem(description: &str) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    }

    fn describe(op: &mut utoipa::openapi::path::Operation) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{HeaderBuilder, ObjectBuilder, RefOr, Type};
        let keyed = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let params = op.parameters.as_deref().unwrap_or_default();
        let path = params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Path));
        let query = params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query));
        let body = op.request_body.is_some();
        let mut add: Vec<(&str, &str)> = vec![("503", "PostgreSQL or Redis unavailable")];
        if keyed {
            add.push(("401", "no valid API key"));
            add.push(("403", "the key lacks the scope this route needs"));
            add.push((
                "429",
                "over the key's request rate; retry after Retry-After seconds",
            ));
        }
        if path || query || body {
            add.push(("400", "a parameter or the body cannot be parsed"));
            add.push(("422", "a value is invalid (the problem names the field)"));
        }
        if path {
            add.push(("404", "no such resource for this tenant"));
        }
        if body {
            add.push(("413", "body too large"));
            add.push(("415", "unsupported content type"));
        }
        let responses = &mut op.responses.responses;
        for (code, description) in add {
            responses
                .entry(code.to_owned())
                .or_insert_with(|| RefOr::T(Self::problem(description)));
        }
        for (code, response) in responses.iter_mut() {
            let RefOr::T(r) = response else { continue };
            if code.starts_with(['4', '5']) && r.content.is_empty() {
                let described = if r.description.is_empty() {
                    "error"
                } else {
                    r.description.as_str()
                };
                *r = Self::problem(described);
            }
            if code == "429" {
                r.headers.insert(
                    "Retry-After".into(),
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("seconds to wait"))
                        .build(),
                );
            }
        }
    }
}

impl Modify for Errors {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                Self::describe(op);
            }
        }
    }
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "hikyaku",
        description = "Bulk mail delivery: lists, subscribers, campaigns. Any route with a key may also answer 401 (no valid key), 403 (the key lacks the route's scope: read for every GET, send for campaign routes, admin for lists, subscribers and suppressions), 429 (the key's request rate, with Retry-After) and 503 (PostgreSQL or Redis unavailable), as application/problem+json."
    ),
    modifiers(&Bearer, &Errors),
    components(schemas(Problem)),
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
