//! Reports to the moderators (`reports`), and who moderates: an account's `role`.
//!
//! A report names its target (an account, a post or a comment) and the account behind it,
//! and stays `open` until a moderator resolves it. One open report per reporter and
//! target: a unique index on (reporter, target, `open_key`), where `open_key` is `open`
//! while the report is, and its own id once resolved (out of the unique key's way, so a
//! later report of the same target is a new one). Moderators read open reports oldest
//! first; removing a post or comment closes every open report of it.

use bson::{DateTime, doc, oid::ObjectId};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::{
    Result, mongo,
    paging::{self, Order, PageRequest},
};

/// The collection this store owns.
pub const COLLECTION: &str = "reports";

const OPEN: &str = "open";
const RESOLVED: &str = "resolved";

/// Roles an account may have; `user` unless an operator set another.
pub const ROLES: &[&str] = &["user", "moderator", "admin"];

/// Whether `role` may read and resolve reports.
pub fn moderates(role: Option<&str>) -> bool {
    matches!(role, Some("moderator" | "admin"))
}

/// What is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Account,
    Post,
    Comment,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Post => "post",
            Self::Comment => "comment",
        }
    }
}

/// One report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub reporter_id: ObjectId,
    /// `account`, `post` or `comment`.
    pub target_type: String,
    pub target_id: ObjectId,
    /// The account reported, or the author of the post or comment.
    pub target_user_id: ObjectId,
    /// The `ReportCategory` name (`SPAM`, ...).
    pub category: String,
    pub comment: String,
    /// `open` or `resolved`.
    pub status: String,
    /// `open` while open; the report's id once resolved.
    pub open_key: String,
    pub created_at: DateTime,
    /// Orders the moderators' queue (see `social_kit::paging`).
    pub sort_key: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<ObjectId>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "social_kit::mongo::lenient::optional_date"
    )]
    pub resolved_at: Option<DateTime>,
}

/// Access to `reports`. Cheap to clone.
#[derive(Clone)]
pub struct Reports {
    db: mongo::Db,
    reports: Collection<ReportDoc>,
}

impl Reports {
    pub fn new(db: &mongo::Db) -> Self {
        Self { db: db.clone(), reports: db.collection(COLLECTION) }
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> anyhow::Result<()> {
        self.db
            .ensure_indexes(
                &self.reports,
                vec![
                    // One open report per reporter and target.
                    mongo::index(
                        "reporter_target_open_unique",
                        doc! { "reporter_id": 1, "target_type": 1, "target_id": 1, "open_key": 1 },
                        true,
                    ),
                    // The moderators' queue, oldest first.
                    mongo::index("status_sorted", doc! { "status": 1, "sort_key": 1 }, false),
                    // The open reports of one target, closed together.
                    mongo::index(
                        "target_status",
                        doc! { "target_type": 1, "target_id": 1, "status": 1 },
                        false,
                    ),
                    mongo::sort_key_index(None),
                ],
            )
            .await?;
        Ok(())
    }

    /// Stores a new open report, or returns the reporter's open report of the same
    /// target (and `false`).
    pub async fn open(&self, mut report: ReportDoc) -> Result<(ReportDoc, bool)> {
        for _ in 0..3 {
            if mongo::insert_keyed(&self.reports, &mut report, None, |r| &mut r.sort_key).await? {
                return Ok((report, true));
            }
            let existing = self
                .reports
                .find_one(doc! {
                    "reporter_id": mongo::equals_id(report.reporter_id),
                    "target_type": &report.target_type,
                    "target_id": mongo::equals_id(report.target_id),
                    "open_key": OPEN,
                })
                .await?;
            if let Some(r) = existing {
                return Ok((r, false));
            }
            // Resolved between our insert and read: the key is free again.
        }
        Err(social_kit::Error::Unavailable("the report could not be stored; retry".into()))
    }

    /// Forgets what deleted account `reporter` wrote in its reports (the reports stay,
    /// for the moderators); idempotent.
    pub async fn forget_reporter(&self, reporter: ObjectId) -> Result<()> {
        self.reports
            .update_many(
                doc! { "reporter_id": mongo::equals_id(reporter) },
                doc! { "$set": { "comment": "" } },
            )
            .await?;
        Ok(())
    }

    /// Report `id`, if any.
    pub async fn get(&self, id: ObjectId) -> Result<Option<ReportDoc>> {
        Ok(self.reports.find_one(doc! { "_id": id }).await?)
    }

    /// A page of the open reports, oldest first.
    pub async fn open_page(&self, page: &PageRequest) -> Result<Vec<ReportDoc>> {
        Ok(mongo::page(&self.reports, Order::OldestFirst, doc! { "status": OPEN }, page, doc! {})
            .await?)
    }

    /// Closes report `id` (if still open) with `resolution`, by `moderator`.
    pub async fn resolve(&self, id: ObjectId, resolution: &str, moderator: ObjectId) -> Result<()> {
        self.reports
            .update_one(
                doc! { "_id": id, "open_key": OPEN },
                doc! { "$set": {
                    "status": RESOLVED, "open_key": id.to_hex(), "resolution": resolution,
                    "resolved_by": moderator, "resolved_at": DateTime::now(),
                } },
            )
            .await?;
        Ok(())
    }

    /// Closes every open report of `target` with `resolution`, by `moderator` (in pages
    /// of 100: a viral post may have thousands).
    pub async fn resolve_all_of(
        &self,
        target: Target,
        target_id: ObjectId,
        resolution: &str,
        moderator: ObjectId,
    ) -> Result<()> {
        loop {
            let ids = mongo::ids(
                &self.reports,
                doc! {
                    "target_type": target.as_str(),
                    "target_id": mongo::equals_id(target_id),
                    "status": OPEN,
                },
                Some(100),
            )
            .await?;
            if ids.is_empty() {
                return Ok(());
            }
            for id in ids {
                self.resolve(id, resolution, moderator).await?;
            }
        }
    }
}

/// A new open report of `target_id` (a `target`, behind which stands `target_user`) by
/// `reporter`.
pub fn new_report(
    reporter: ObjectId,
    (target, target_id, target_user): (Target, ObjectId, ObjectId),
    category: &str,
    comment: String,
) -> ReportDoc {
    let now = DateTime::now();
    ReportDoc {
        id: ObjectId::new(),
        reporter_id: reporter,
        target_type: target.as_str().into(),
        target_id,
        target_user_id: target_user,
        category: category.into(),
        comment,
        status: OPEN.into(),
        open_key: OPEN.into(),
        created_at: now,
        sort_key: paging::sort_key(now),
        resolution: None,
        resolved_by: None,
        resolved_at: None,
    }
}

/// Whether `report` is open.
pub fn is_open(report: &ReportDoc) -> bool {
    report.status == OPEN
}
