//! Reports and moderation (the user service): anyone reports an account, a post or a
//! comment; moderators read the open reports, with what they are about, and resolve
//! them.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use social_proto::user::v1::{
    ListReportsRequest, ReportAccountRequest, ReportAction, ReportCategory, ReportCommentRequest,
    ReportPostRequest, ResolveReportRequest,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Body, Listing, PageQuery, Path, SignedIn, ask},
    error::{ApiResult, ErrorBody},
    model::{NewReport, Report, ReportPage, ReportReason, ReportTarget, Resolution, ResolveAction},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(open_reports))
        .routes(routes!(resolve))
}

/// The wire category of `reason`.
fn category(reason: ReportReason) -> i32 {
    (match reason {
        ReportReason::Spam => ReportCategory::Spam,
        ReportReason::Harassment => ReportCategory::Harassment,
        ReportReason::Hate => ReportCategory::Hate,
        ReportReason::Violence => ReportCategory::Violence,
        ReportReason::Illegal => ReportCategory::Illegal,
        ReportReason::Other => ReportCategory::Other,
    }) as i32
}

/// Reports an account, a post or a comment to the moderators (again while the first is
/// open: the same report). 400 for one's own account or content, 404 for an unknown
/// target.
#[utoipa::path(post, path = "/v1/reports", tag = "reports", request_body = NewReport, security(("bearer" = [])),
    responses((status = 201, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn report(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Body(body): Body<NewReport>,
) -> ApiResult<Response> {
    let (kind, id) = (body.target_type, body.target_id);
    let (category, comment) = (category(body.category), body.comment);
    let r = match kind {
        ReportTarget::Account => {
            let request = ReportAccountRequest { user_id: id, category, comment };
            ask!(state, who, users.report_account(request))?
        }
        ReportTarget::Post => {
            let request = ReportPostRequest { post_id: id, category, comment };
            ask!(state, who, users.report_post(request))?
        }
        ReportTarget::Comment => {
            let request = ReportCommentRequest { comment_id: id, category, comment };
            ask!(state, who, users.report_comment(request))?
        }
    };
    Ok((StatusCode::CREATED, Json(Report::from(r))).into_response())
}

/// Moderators: the open reports, oldest first, each with what it is about as it is now.
/// 403 for anyone else.
#[utoipa::path(get, path = "/v1/admin/reports", tag = "reports", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = ReportPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn open_reports(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
) -> ApiResult<Response> {
    let request: ListReportsRequest = list.request();
    let r = ask!(state, who, users.list_reports(request))?;
    let items = r.reports.into_iter().map(Report::from).collect();
    Ok(list.answer(ReportPage::of(items, r.next_page_token)))
}

/// Moderators: closes an open report: `dismiss`, or `remove` the reported post or
/// comment (its comments, likes and notifications follow; every open report of it
/// closes). 403 for anyone else.
#[utoipa::path(post, path = "/v1/admin/reports/{id}/resolve", tag = "reports",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), request_body = Resolution, security(("bearer" = [])),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resolve(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
    Body(body): Body<Resolution>,
) -> ApiResult<Json<Report>> {
    let action = match body.action {
        ResolveAction::Dismiss => ReportAction::Dismiss,
        ResolveAction::Remove => ReportAction::RemoveContent,
    };
    let request = ResolveReportRequest { id, action: action as i32 };
    let r = ask!(state, who, users.resolve_report(request))?;
    Ok(Json(r.into()))
}
