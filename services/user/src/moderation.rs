//! Reports and moderators' RPCs of `social.user.v1.UserService` (the store is
//! `crate::reports`): anyone reports an account, a post or a comment; moderators list
//! the open reports with their targets and resolve them, removing a post or comment
//! through its service's usual deletion.

use bson::oid::ObjectId;
use social_kit::{
    Error, Result, auth::session, client::Peer, error::Violations, paging::PageRequest,
    time::to_timestamp, validate,
};
use social_proto::{
    engagement::v1::{
        GetCommentRequest, RemoveCommentRequest, engagement_service_client::EngagementServiceClient,
    },
    post::v1::{
        BatchGetPostsRequest, GetPostRequest, RemovePostRequest,
        post_service_client::PostServiceClient,
    },
    user::v1::{ListReportsRequest, ListReportsResponse, Report, ReportAction, ReportCategory},
};
use tonic::{Code, Request};

use crate::{
    api::{Api, to_wire},
    reports::{self, ReportDoc, Target},
};

/// Longest comment of a report.
const MAX_COMMENT: usize = 1000;

impl From<ReportDoc> for Report {
    fn from(r: ReportDoc) -> Self {
        Self {
            id: r.id.to_hex(),
            reporter_id: r.reporter_id.to_hex(),
            target_type: r.target_type,
            target_id: r.target_id.to_hex(),
            target_user_id: r.target_user_id.to_hex(),
            category: ReportCategory::from_str_name(&r.category).unwrap_or(ReportCategory::Other)
                as i32,
            comment: r.comment,
            status: r.status,
            created_at: Some(to_timestamp(r.created_at)),
            resolution: r.resolution.unwrap_or_default(),
            resolved_by: r.resolved_by.map(|m| m.to_hex()).unwrap_or_default(),
            resolved_at: r.resolved_at.map(to_timestamp),
            ..Default::default()
        }
    }
}

/// What a report request says besides its target: the category and the comment,
/// validated.
pub struct Reason {
    category: &'static str,
    comment: String,
}

/// Validates a report's target id (`field`), category and comment, recording violations.
pub fn reason(
    field: &str,
    target: &str,
    category: i32,
    comment: &str,
) -> Result<(ObjectId, Reason)> {
    let mut v = Violations::default();
    let id = v.take(field, validate::object_id(target));
    let category = match ReportCategory::try_from(category) {
        Ok(ReportCategory::Unspecified) | Err(_) => {
            v.add("category", "must be SPAM, HARASSMENT, HATE, VIOLENCE, ILLEGAL or OTHER");
            ""
        }
        Ok(c) => c.as_str_name(),
    };
    let (comment, fits) = validate::trimmed(comment, MAX_COMMENT);
    v.check("comment", fits);
    v.finish()?;
    Ok((id.unwrap_or_default(), Reason { category, comment: comment.to_owned() }))
}

/// The author of post `id`, from the post service (NOT_FOUND if it is gone).
async fn post_author(posts: &Peer, id: ObjectId) -> Result<ObjectId> {
    let request = GetPostRequest { id: id.to_hex() };
    match social_kit::call!(posts, PostServiceClient.get_post(request)) {
        Ok(p) => ObjectId::parse_str(&p.user_id).map_err(Error::internal),
        Err(s) if s.code() == Code::NotFound => Err(Error::NotFound("post")),
        Err(s) => Err(posts.error(s)),
    }
}

/// Comment `id`, from the engagement service (`None` if it is gone).
async fn comment_of(
    engagement: &Peer,
    id: ObjectId,
) -> Result<Option<social_proto::engagement::v1::Comment>> {
    let request = GetCommentRequest { id: id.to_hex() };
    match social_kit::call!(engagement, EngagementServiceClient.get_comment(request)) {
        Ok(c) => Ok(Some(c)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(engagement.error(s)),
    }
}

impl Api {
    /// Files `reporter`'s report of `target_id` (a `target`), once while it is open.
    pub async fn report(
        &self,
        reporter: ObjectId,
        target: Target,
        target_id: ObjectId,
        reason: Reason,
    ) -> Result<Report> {
        let field = match target {
            Target::Account => "user_id",
            Target::Post => "post_id",
            Target::Comment => "comment_id",
        };
        let target_user = match target {
            Target::Account => {
                self.store.by_id(target_id).await?.ok_or(Error::NotFound("user"))?.id
            }
            Target::Post => post_author(&self.peers.posts, target_id).await?,
            Target::Comment => {
                let comment = comment_of(&self.peers.engagement, target_id)
                    .await?
                    .ok_or(Error::NotFound("comment"))?;
                ObjectId::parse_str(&comment.user_id).map_err(Error::internal)?
            }
        };
        if target_user == reporter {
            return Err(Error::invalid(field, "you cannot report yourself or what you made"));
        }
        let report = reports::new_report(
            reporter,
            (target, target_id, target_user),
            reason.category,
            reason.comment,
        );
        let (report, created) = self.store.reports.open(report).await?;
        if created {
            tracing::info!(report = %report.id, %reporter, target = target.as_str(), %target_id, "reported");
        }
        Ok(report.into())
    }

    /// The caller, if their session holds (a deleted account's, or one ended by a new
    /// password, reports nothing).
    pub async fn reporter<T>(&self, request: &Request<T>) -> Result<ObjectId> {
        let caller = session(request)?;
        self.active(&caller).await?;
        Ok(caller.user)
    }

    /// The caller, if their session holds and their account moderates; else
    /// PERMISSION_DENIED.
    async fn moderator<T>(&self, request: &Request<T>) -> Result<ObjectId> {
        let caller = session(request)?;
        self.active(&caller).await?;
        let account = self.store.by_id(caller.user).await?;
        if !reports::moderates(account.as_ref().and_then(|a| a.role.as_deref())) {
            return Err(Error::PermissionDenied("only moderators may do this"));
        }
        Ok(caller.user)
    }

    /// A page of the open reports, oldest first, each with its target as it is now.
    pub async fn list_reports(
        &self,
        request: &Request<ListReportsRequest>,
    ) -> Result<ListReportsResponse> {
        self.moderator(request).await?;
        let page = PageRequest::of(request.get_ref(), "reports:open".into())?;
        let docs = self.store.reports.open_page(&page).await?;
        let (docs, next_page_token) = page.finish(docs, |r| r.sort_key);
        let of = |kind: Target| -> Vec<ObjectId> {
            docs.iter().filter(|r| r.target_type == kind.as_str()).map(|r| r.target_id).collect()
        };
        let (accounts, posts, comments) =
            (of(Target::Account), of(Target::Post), of(Target::Comment));
        let accounts = self.store.by_ids(&accounts).await?;
        let posts = if posts.is_empty() {
            Vec::new()
        } else {
            let peer = &self.peers.posts;
            let ids = posts.iter().map(|p| p.to_hex()).collect();
            let request = BatchGetPostsRequest { ids };
            let found = social_kit::call!(peer, PostServiceClient.batch_get_posts(request));
            found.map_err(|s| peer.error(s))?.posts
        };
        // One call per comment (a page holds at most 100), eight at a time; one that
        // fails shows its report without the comment rather than failing the page.
        let mut found = Vec::with_capacity(comments.len());
        for chunk in comments.chunks(8) {
            let calls = chunk.iter().map(|id| comment_of(&self.peers.engagement, *id));
            for (id, got) in chunk.iter().zip(futures::future::join_all(calls).await) {
                found.push(got.unwrap_or_else(|e| {
                    tracing::warn!(comment = %id, error = %e, "could not fetch a reported comment");
                    None
                }));
            }
        }
        let comments = found;
        let reports = docs
            .into_iter()
            .map(|doc| {
                let target = doc.target_id.to_hex();
                let mut report = Report::from(doc);
                match report.target_type.as_str() {
                    "account" => {
                        report.target_account = accounts
                            .iter()
                            .find(|u| u.id.to_hex() == target)
                            .map(|u| to_wire(u.clone(), None));
                    }
                    "post" => report.target_post = posts.iter().find(|p| p.id == target).cloned(),
                    _ => {
                        report.target_comment =
                            comments.iter().flatten().find(|c| c.id == target).cloned();
                    }
                }
                report
            })
            .collect();
        Ok(ListReportsResponse { reports, next_page_token })
    }

    /// Resolves report `id` with `action` (see the proto).
    pub async fn resolve_report<T>(
        &self,
        request: &Request<T>,
        (id, action): (&str, i32),
    ) -> Result<Report> {
        let mut v = Violations::default();
        let id = v.take("id", validate::object_id(id));
        let action = match ReportAction::try_from(action) {
            Ok(a @ (ReportAction::Dismiss | ReportAction::RemoveContent)) => Some(a),
            _ => {
                v.add("action", "must be DISMISS or REMOVE_CONTENT");
                None
            }
        };
        v.finish()?;
        let (Some(id), Some(action)) = (id, action) else {
            return Err(Error::invalid("id", "is required"));
        };
        let moderator = self.moderator(request).await?;
        let report = self.store.reports.get(id).await?.ok_or(Error::NotFound("report"))?;
        if !reports::is_open(&report) {
            return Ok(report.into());
        }
        match action {
            ReportAction::RemoveContent => {
                let target = self.remove_target(&report, moderator).await?;
                self.store
                    .reports
                    .resolve_all_of(target, report.target_id, "removed", moderator)
                    .await?;
            }
            _ => {
                self.store.reports.resolve(id, "dismissed", moderator).await?;
            }
        }
        tracing::info!(report = %id, %moderator, action = action.as_str_name(), "report resolved");
        let resolved = self.store.reports.get(id).await?;
        Ok(resolved.ok_or(Error::NotFound("report"))?.into())
    }

    /// Deletes the post or comment `report` is about, through its service; which kind.
    async fn remove_target(&self, report: &ReportDoc, moderator: ObjectId) -> Result<Target> {
        let (id, moderator_id) = (report.target_id.to_hex(), moderator.to_hex());
        match report.target_type.as_str() {
            "post" => {
                let peer = &self.peers.posts;
                let request = RemovePostRequest { id, moderator_id };
                social_kit::call!(peer, PostServiceClient.remove_post(request))
                    .map_err(|s| peer.error(s))?;
                Ok(Target::Post)
            }
            "comment" => {
                let peer = &self.peers.engagement;
                let request = RemoveCommentRequest { id, moderator_id };
                social_kit::call!(peer, EngagementServiceClient.remove_comment(request))
                    .map_err(|s| peer.error(s))?;
                Ok(Target::Comment)
            }
            _ => Err(Error::invalid("action", "an account is not removed by a report: DISMISS it")),
        }
    }
}
