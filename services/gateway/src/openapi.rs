//! The OpenAPI document, derived from the handlers and types themselves, and how
//! `GET /openapi.json` serves it.

use axum::{Router, http::header, response::IntoResponse, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{accounts, context::AppState, error, graph, moderation, notifications, posts, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "social network API",
        description = "The HTTP/JSON API for web and mobile clients. Errors are \
            `{\"error\": {\"code\", \"status\", \"message\", \"details\"}}`; lists take \
            `page_size` and `page_token` and answer `next_page_token` and a `Link` header.",
        version = "1"
    ),
    modifiers(&Bearer),
    components(schemas(error::ErrorBody, error::ErrorStatus, error::FieldViolation))
)]
struct ApiDoc;

/// The bearer scheme of the OpenAPI document.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The access_token of POST /v1/accounts, POST /v1/sessions or \
                         POST /v1/sessions/refresh",
                    ))
                    .build(),
            ),
        );
    }
}

/// The errors every route may answer, documented on each operation that does not say
/// more itself: 401 (any request may carry a bad token), 429 (the rate limits), 503 and
/// 504 (a service down or slow), and, for operations that take input, 400 and (with a
/// body) 413.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder, header::HeaderBuilder, schema::Type,
        };
        let error = |description: &str, retry: bool| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            );
            if retry {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("seconds to wait before retrying"))
                        .build(),
                );
            }
            response.build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
                    .into_iter()
                    .flatten()
            {
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || op.request_body.is_some();
                let mut common = vec![
                    ("401", error("the access token is missing, invalid or expired", false)),
                    ("429", error("too many requests: retry after Retry-After seconds", true)),
                    (
                        "503",
                        error("a service is unavailable: retry after Retry-After seconds", true),
                    ),
                    (
                        "504",
                        error(
                            "a service did not answer in time (the request may have been carried out)",
                            false,
                        ),
                    ),
                ];
                if takes_input {
                    common.push((
                        "400",
                        error("a parameter or field is invalid; details name it", false),
                    ));
                }
                if op.request_body.is_some() {
                    common.push(("413", error("the body is larger than any valid request", false)));
                }
                for (status, response) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| response.into());
                }
            }
        }
    }
}

/// The routes and their OpenAPI document.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(posts::routes())
        .merge(graph::routes())
        .merge(moderation::routes())
        .merge(notifications::routes())
        .merge(stream::routes())
        .split_for_parts();
    // After the merge: the routes' operations are only there now.
    CommonErrors.modify(&mut doc);
    (routes, doc)
}

/// The OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The OpenAPI document as served: written once, and gzipped once, at start-up. Every
/// request for it is a copy of the same bytes: compressing ~100 KiB again for each
/// (the document is outside the rate limits) would be CPU for anyone to take.
#[derive(Clone)]
struct Document {
    plain: axum::body::Bytes,
    gzip: Option<axum::body::Bytes>,
}

impl Document {
    fn new(json: Vec<u8>) -> Self {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = encoder.write_all(&json).and_then(|()| encoder.finish()).ok().map(Into::into);
        Self { plain: json.into(), gzip }
    }

    /// The document, gzipped if `headers` accept it.
    fn answer(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        let gzip_accepted = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or_default().trim();
                // `q=0` (written with up to three decimals) refuses it.
                let refused = parts.any(|p| {
                    p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0)
                });
                name.eq_ignore_ascii_case("gzip") && !refused
            });
        let vary = (header::VARY, "accept-encoding");
        let json = (header::CONTENT_TYPE, "application/json");
        match &self.gzip {
            // Already encoded: the compression layer leaves it as it is.
            Some(gzip) if gzip_accepted => {
                ([json, vary, (header::CONTENT_ENCODING, "gzip")], gzip.clone()).into_response()
            }
            _ => ([json, vary], self.plain.clone()).into_response(),
        }
    }
}

/// The API's routes, and `GET /openapi.json` serving their document.
pub(crate) fn routes() -> anyhow::Result<Router<AppState>> {
    let (routes, openapi) = api();
    let openapi = Document::new(serde_json::to_vec(&openapi)?);
    Ok(routes.route(
        "/openapi.json",
        get(move |headers: axum::http::HeaderMap| {
            let openapi = openapi.clone();
            async move { openapi.answer(&headers) }
        }),
    ))
}
