//! The JSON of the gateway: what clients send and get, with the OpenAPI schema derived
//! from the same types, and the conversions from the services' messages. Field names
//! are the documents' (`likes_count`, `created_at`), times are RFC 3339, ids are
//! strings, counters numbers. Request bodies reject unknown fields.

use serde::{Deserialize, Serialize};
use social_proto::{
    common::v1::Media as WireMedia,
    engagement::v1::{Comment as WireComment, Like as WireLike},
    graph::v1::Follow as WireFollow,
    notification::v1::{
        Notification as WireNotification, NotificationGroup as WireGroup, NotificationType,
    },
    post::v1::Post as WirePost,
    user::v1::{Session as WireSession, User as WireUser},
};
use utoipa::ToSchema;

/// RFC 3339 of a wire timestamp (empty when absent).
pub fn time(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        let ms = t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000;
        bson::DateTime::from_millis(ms).try_to_rfc3339_string().ok()
    })
    .unwrap_or_default()
}

/// Who acted or wrote: what a client shows beside an item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub full_name: String,
    pub profile_picture_url: String,
}

impl From<&WireUser> for Account {
    fn from(u: &WireUser) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            full_name: u.full_name.clone(),
            profile_picture_url: u.profile_picture_url.clone(),
        }
    }
}

/// A user's profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    /// Only on the caller's own profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub full_name: String,
    pub bio: String,
    pub profile_picture_url: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WireUser> for User {
    fn from(u: WireUser) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: Some(u.email).filter(|e| !e.is_empty()),
            full_name: u.full_name,
            bio: u.bio,
            profile_picture_url: u.profile_picture_url,
            followers_count: u.followers_count,
            following_count: u.following_count,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
        }
    }
}

/// An image, video or gif attached to a post or comment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// `image`, `video` or `gif`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(image|video|gif)$")]
    pub kind: String,
    /// Absolute http(s) URL, at most 2048 characters.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Optional preview image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thumbnail_url: String,
    /// Pixels, 1..=16384.
    #[schema(minimum = 1, maximum = 16384)]
    pub width: i32,
    /// Pixels, 1..=16384.
    #[schema(minimum = 1, maximum = 16384)]
    pub height: i32,
    /// Seconds, > 0: required for `video` and `gif`, absent for `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

impl From<WireMedia> for Media {
    fn from(m: WireMedia) -> Self {
        Self {
            kind: m.r#type,
            url: m.url,
            thumbnail_url: m.thumbnail_url,
            width: m.width,
            height: m.height,
            duration: m.duration,
        }
    }
}

impl From<Media> for WireMedia {
    fn from(m: Media) -> Self {
        Self {
            r#type: m.kind,
            url: m.url,
            thumbnail_url: m.thumbnail_url,
            width: m.width,
            height: m.height,
            duration: m.duration,
        }
    }
}

/// A post.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Post {
    pub id: String,
    /// The author's id.
    pub user_id: String,
    /// The author (in lists and on a single post).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Account>,
    pub content: String,
    pub media: Vec<Media>,
    pub likes_count: i64,
    pub comments_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WirePost> for Post {
    fn from(p: WirePost) -> Self {
        Self {
            id: p.id,
            user_id: p.user_id,
            author: None,
            content: p.content,
            media: p.media.into_iter().map(Into::into).collect(),
            likes_count: p.likes_count,
            comments_count: p.comments_count,
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
        }
    }
}

/// A comment on a post.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comment {
    pub id: String,
    pub post_id: String,
    /// The author's id.
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Account>,
    pub content: String,
    pub media: Vec<Media>,
    pub likes_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WireComment> for Comment {
    fn from(c: WireComment) -> Self {
        Self {
            id: c.id,
            post_id: c.post_id,
            user_id: c.user_id,
            author: None,
            content: c.content,
            media: c.media.into_iter().map(Into::into).collect(),
            likes_count: c.likes_count,
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        }
    }
}

/// A like of a post.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Like {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    pub post_id: String,
    pub created_at: String,
}

impl From<WireLike> for Like {
    fn from(l: WireLike) -> Self {
        Self {
            user_id: l.user_id,
            account: None,
            post_id: l.post_id,
            created_at: time(l.created_at),
        }
    }
}

/// One account following another.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Follow {
    pub follower_id: String,
    pub followee_id: String,
    /// The other account of the list: the follower in a followers list, the followee
    /// in a following list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    pub created_at: String,
}

impl From<WireFollow> for Follow {
    fn from(f: WireFollow) -> Self {
        Self {
            follower_id: f.follower_id,
            followee_id: f.followee_id,
            account: None,
            created_at: time(f.created_at),
        }
    }
}

/// How the caller and another account stand.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Relationship {
    /// The caller follows the account.
    pub following: bool,
    /// The account follows the caller.
    pub followed_by: bool,
    /// The caller blocks the account.
    pub blocking: bool,
    /// The account blocks the caller.
    pub blocked_by: bool,
    /// The caller mutes the account.
    pub muting: bool,
}

/// The caller mutes an account: its posts leave the caller's home feed and, if
/// `notifications`, what it does no longer notifies the caller. It notices nothing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Mute {
    pub muter_id: String,
    pub muted_id: String,
    pub notifications: bool,
    /// When the mute ends by itself; absent: when unmuted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The muted account (in a list of mutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    pub created_at: String,
}

impl From<social_proto::graph::v1::Mute> for Mute {
    fn from(m: social_proto::graph::v1::Mute) -> Self {
        Self {
            muter_id: m.muter_id,
            muted_id: m.muted_id,
            notifications: m.notifications,
            expires_at: m.expires_at.map(|t| time(Some(t))),
            account: None,
            created_at: time(m.created_at),
        }
    }
}

/// The caller blocks an account: no follow either way, no like, comment or mention
/// between the two, and to the blocked account the caller's profile, posts and comments
/// are absent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Block {
    pub blocker_id: String,
    pub blocked_id: String,
    /// The blocked account (in a list of blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    pub created_at: String,
}

impl From<social_proto::graph::v1::Block> for Block {
    fn from(b: social_proto::graph::v1::Block) -> Self {
        Self {
            blocker_id: b.blocker_id,
            blocked_id: b.blocked_id,
            account: None,
            created_at: time(b.created_at),
        }
    }
}

/// A notification of the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    pub id: String,
    /// `FOLLOW`, `POST_LIKE`, `COMMENT_LIKE`, `POST_COMMENT` or `MENTION`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who acted.
    pub source_user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
    pub is_read: bool,
    pub created_at: String,
    /// The group it belongs to (`NotificationGroup.group_key`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group_key: String,
    /// Orders what lists and the stream say of this notification: keep, per id, what
    /// came with the greatest `version`; a notification whose version is below that of
    /// a removal of the same id (`event: removed`, `event: removals`) was removed since.
    pub version: i64,
}

impl From<WireNotification> for Notification {
    fn from(n: WireNotification) -> Self {
        let kind = type_name(n.r#type);
        Self {
            id: n.id,
            kind,
            source_user_id: n.source_user_id,
            account: None,
            post_id: n.post_id,
            comment_id: n.comment_id,
            is_read: n.is_read,
            created_at: time(n.created_at),
            group_key: n.group_key,
            version: n.version,
        }
    }
}

fn type_name(wire: i32) -> String {
    NotificationType::try_from(wire).map(|t| t.as_str_name().to_owned()).unwrap_or_default()
}

/// Notifications of the caller shown as one line ("alice and 12 others liked your
/// post"): likes of one post, likes of one comment, or follows, within one window of
/// time; a comment or a mention is a group of one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationGroup {
    /// Stable for the group's life; what `POST /v1/notification-groups/{group_key}/read`
    /// takes.
    pub group_key: String,
    /// `FOLLOW`, `POST_LIKE`, `COMMENT_LIKE`, `POST_COMMENT` or `MENTION`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
    /// How many notifications the group holds, and how many of them are unread.
    pub notifications_count: i64,
    pub unread_count: i64,
    /// Up to five of the most recent distinct actors, newest first.
    pub sample_account_ids: Vec<String>,
    /// Their accounts, in the same order (a deleted one is left out).
    pub sample_accounts: Vec<Account>,
    pub most_recent_notification_id: String,
    pub latest_at: String,
    /// Grows with every change of the group: of two `event: group` updates of one
    /// group, keep the one with the greater version (they may come out of order).
    pub version: i64,
}

impl From<WireGroup> for NotificationGroup {
    fn from(g: WireGroup) -> Self {
        Self {
            group_key: g.group_key,
            kind: type_name(g.r#type),
            post_id: g.post_id,
            comment_id: g.comment_id,
            notifications_count: g.notifications_count,
            unread_count: g.unread_count,
            sample_account_ids: g.sample_account_ids,
            sample_accounts: Vec::new(),
            most_recent_notification_id: g.most_recent_notification_id,
            latest_at: time(g.latest_at),
            version: g.version,
        }
    }
}

/// One of the caller's sessions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    /// The label given at login.
    pub device: String,
    pub created_at: String,
    pub last_used_at: String,
    /// When it ends unless refreshed before.
    pub expires_at: String,
    /// Whether the request's access token belongs to it.
    pub current: bool,
}

impl From<WireSession> for Session {
    fn from(s: WireSession) -> Self {
        Self {
            id: s.id,
            device: s.device,
            created_at: time(s.created_at),
            last_used_at: time(s.last_used_at),
            expires_at: time(s.expires_at),
            current: s.current,
        }
    }
}

/// What signing up, logging in and refreshing hand out.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tokens {
    /// `Authorization: Bearer <access_token>`; short-lived.
    pub access_token: String,
    pub expires_at: String,
    /// For `POST /v1/sessions/refresh`; returned only here.
    pub refresh_token: String,
    pub refresh_expires_at: String,
    pub session_id: String,
    /// The account (on sign-up and log-in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

/// A count.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Count {
    pub count: i64,
}

/// How many things a request changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Updated {
    pub updated_count: i64,
}

/// A page of a list, newest first unless the route says otherwise; `next_page_token`
/// (also in the `Link` header, `rel="next"`) is empty on the last page.
macro_rules! page {
    ($name:ident, $item:ty) => {
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            pub next_page_token: String,
        }

        impl $name {
            /// `items`, and the token of the page after them.
            pub fn of(items: Vec<$item>, next_page_token: String) -> Self {
                Self { items, next_page_token }
            }
        }

        impl crate::context::Page for $name {
            fn next_page_token(&self) -> &str {
                &self.next_page_token
            }
        }
    };
}
page!(PostPage, Post);
page!(CommentPage, Comment);
page!(LikePage, Like);
page!(FollowPage, Follow);
page!(BlockPage, Block);
page!(MutePage, Mute);
page!(ReportPage, Report);
page!(NotificationPage, Notification);
page!(NotificationGroupPage, NotificationGroup);
page!(SessionPage, Session);

/// A report to the moderators.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub id: String,
    pub reporter_id: String,
    /// `account`, `post` or `comment`.
    pub target_type: String,
    pub target_id: String,
    /// The account reported, or the author of the post or comment.
    pub target_user_id: String,
    /// `SPAM`, `HARASSMENT`, `HATE`, `VIOLENCE`, `ILLEGAL` or `OTHER`.
    pub category: String,
    pub comment: String,
    /// `open` or `resolved`.
    pub status: String,
    pub created_at: String,
    /// Once resolved: `dismissed` or `removed`, by whom, when.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resolution: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resolved_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// In the moderators' list: the account reported, as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    /// In the moderators' list: the post reported, as it is now (absent: gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<Post>,
    /// In the moderators' list: the comment reported, as it is now (absent: gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_reported: Option<Comment>,
}

impl From<social_proto::user::v1::Report> for Report {
    fn from(r: social_proto::user::v1::Report) -> Self {
        let category = social_proto::user::v1::ReportCategory::try_from(r.category)
            .map(|c| c.as_str_name())
            .unwrap_or("OTHER");
        Self {
            id: r.id,
            reporter_id: r.reporter_id,
            target_type: r.target_type,
            target_id: r.target_id,
            target_user_id: r.target_user_id,
            category: category.into(),
            comment: r.comment,
            status: r.status,
            created_at: time(r.created_at),
            resolution: r.resolution,
            resolved_by: r.resolved_by,
            resolved_at: r.resolved_at.map(|t| time(Some(t))),
            account: r.target_account.as_ref().map(Account::from),
            post: r.target_post.map(Into::into),
            comment_reported: r.target_comment.map(Into::into),
        }
    }
}

// Request bodies.

/// What is reported.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportTarget {
    Account,
    Post,
    Comment,
}

/// Why it is reported.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportReason {
    Spam,
    Harassment,
    Hate,
    Violence,
    Illegal,
    Other,
}

/// A report of an account, a post or a comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    #[serde(deserialize_with = "crate::context::word")]
    pub target_type: ReportTarget,
    /// The account's, post's or comment's id.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub target_id: String,
    #[serde(deserialize_with = "crate::context::word")]
    pub category: ReportReason,
    /// What the moderators should know.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub comment: String,
}

/// What a moderator does with a report.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResolveAction {
    /// Nothing is removed.
    Dismiss,
    /// The reported post or comment is deleted (not for an account).
    Remove,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    #[serde(deserialize_with = "crate::context::word")]
    pub action: ResolveAction,
}

/// How to mute; `{}` mutes for good, notifications too.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteSettings {
    /// How long, in seconds: 0 (the default) until unmuted, else 60 to 31536000.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000)]
    pub duration_seconds: i64,
    /// Whether what the account does stops notifying the caller too (default: true).
    #[serde(default)]
    pub notifications: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// 3 to 30 letters, digits and `_`; unique, whatever the case.
    #[schema(pattern = "^[A-Za-z0-9_]{3,30}$")]
    pub username: String,
    #[schema(max_length = 254)]
    pub email: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[serde(default)]
    #[schema(max_length = 50)]
    pub full_name: String,
    /// A label for the session this starts.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub device: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogIn {
    pub username_or_email: String,
    pub password: String,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub device: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

/// The fields to change; absent ones stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    #[schema(max_length = 50)]
    pub full_name: Option<String>,
    #[schema(max_length = 160)]
    pub bio: Option<String>,
    /// An absolute http(s) URL, or empty to remove it.
    #[schema(max_length = 2048)]
    pub profile_picture_url: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub old_password: String,
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub password: String,
}

/// A new post or comment: text, media, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBody {
    #[serde(default)]
    #[schema(max_length = 500)]
    pub content: String,
    #[serde(default, deserialize_with = "crate::context::objects")]
    #[schema(max_items = 4)]
    pub media: Vec<Media>,
}

/// The parts of a post or comment to change; absent ones stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyChange {
    #[schema(max_length = 500)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "crate::context::some_objects")]
    #[schema(max_items = 4)]
    pub media: Option<Vec<Media>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// 1..=100 notification ids.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
}
