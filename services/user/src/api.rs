//! `social.user.v1.UserService`: request → validated value → store → response. No
//! MongoDB types here beyond the ids the store takes.

use bson::{DateTime, Document, oid::ObjectId};
use futures::{StreamExt, stream::BoxStream};
use social_events::{Payload, new_envelope, outbox::RelayWaker, pb::UserDeleted};
use social_kit::client::Peer;
use social_kit::{
    Error, Result,
    auth::{TokenIssuer, caller, session},
    error::Violations,
    paging::PageRequest,
    time::to_timestamp,
    validate,
};
use social_proto::user::v1::{
    BatchGetUsersByUsernameRequest, BatchGetUsersRequest, BatchGetUsersResponse,
    ChangePasswordRequest, DeleteAccountRequest, EndedSession, GetUserByUsernameRequest,
    GetUserRequest, ListEndedSessionsRequest, ListEndedSessionsResponse, ListSessionsRequest,
    ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest, RefreshSessionRequest,
    RefreshSessionResponse, RegisterRequest, RegisterResponse, RevokeOtherSessionsRequest,
    RevokeOtherSessionsResponse, RevokeSessionRequest, Session, UpdateUserRequest, User,
    user_service_server::UserService,
};
use social_proto::{
    engagement::v1::{
        ExportUserEngagementRequest, engagement_record,
        engagement_service_client::EngagementServiceClient,
    },
    graph::v1::{ExportUserFollowsRequest, social_graph_service_client::SocialGraphServiceClient},
    post::v1::{ExportUserPostsRequest, post_service_client::PostServiceClient},
    user::v1::{
        ExportAccountRequest, ExportRecord, ListReportsRequest, ListReportsResponse, Report,
        ReportAccountRequest, ReportCommentRequest, ReportPostRequest, ResolveReportRequest,
        export_record::Record,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    moderation,
    names::{Holder, Kind},
    password::{self, Hasher},
    reports::Target,
    sessions::{Refreshed, SessionDoc, Sessions},
    store::{Profile, Store, Taken, UserDoc},
    throttle::{Reserved, Subject, Throttle},
};

/// The RPCs only other services may call (the gate refuses them without the service
/// credential): they serve other services and some cost many counts per request.
pub const INTERNAL: &[&str] = &["BatchGetUsersByUsername", "ListEndedSessions"];

/// The RPCs that establish who the caller is: a token sent with them is ignored, so
/// that a client still attaching its expired token can log in again.
pub const AUTHENTICATING: &[&str] = &["Login", "Register"];

/// How an export that took longer than it may ends.
const EXPORT_LATE: &str = "the export took longer than it may, or was not read; ask for it again";

/// The same answer for an unknown user and a wrong password.
const LOGIN_FAILED: &str = "invalid username, email or password";
/// The same answer for every refresh token that does not work.
const REFRESH_FAILED: &str = "the refresh token is invalid, expired or revoked; log in again";

pub struct Api {
    pub store: Store,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub tokens: TokenIssuer,
    pub hasher: Hasher,
    /// Wakes the relay of the users' outboxes (`user.user.deleted`).
    pub relay: RelayWaker,
    /// How long a deleted account's username stays reserved.
    pub quarantine: std::time::Duration,
    /// How soon after an exchange a refresh token gets the same successor again.
    pub refresh_grace: std::time::Duration,
    /// How long an export may stream.
    pub export_within: std::time::Duration,
    pub peers: Peers,
}

/// The services an export asks.
pub struct Peers {
    pub posts: Peer,
    pub engagement: Peer,
    pub graph: Peer,
}

/// What a new session hands out: access token and expiry, refresh token and expiry, id.
struct Issued {
    access_token: String,
    expires_at: prost_types::Timestamp,
    refresh_token: String,
    refresh_expires_at: prost_types::Timestamp,
    session_id: String,
}

impl Api {
    /// `caller`'s session, if it is still active and under the account's current
    /// password: a password change whose end of the other sessions failed half-way
    /// leaves none of them able to act for the account (two point lookups).
    pub(crate) async fn active(&self, caller: &social_kit::auth::Caller) -> Result<SessionDoc> {
        let session = self.sessions.active(caller).await?;
        let account = self.store.by_id(caller.user).await?;
        if account.is_none_or(|u| session.credential_version < u.credential_version) {
            return Err(crate::sessions::NOT_ACTIVE);
        }
        Ok(session)
    }

    /// Who reads the profiles of `users`, as far as emails go (each shown to its owner
    /// only): the caller, if they are among them and their session is still active (an
    /// ended session reads as anybody). One session read, only for one's own profile.
    async fn viewer<T>(
        &self,
        request: &Request<T>,
        users: &[&UserDoc],
    ) -> Result<Option<ObjectId>> {
        let Some(caller) = request.extensions().get::<social_kit::auth::Caller>() else {
            return Ok(None);
        };
        if !users.iter().any(|u| u.id == caller.user) {
            return Ok(Some(caller.user));
        }
        Ok(match self.active(caller).await {
            Ok(_) => Some(caller.user),
            Err(Error::Unauthenticated(_)) => None,
            Err(e) => return Err(e),
        })
    }

    /// The profiles of accounts `ids` in the order asked for, as a caller who is none of
    /// them sees them (those who block the caller left out), read through the cache.
    async fn profiles<T>(&self, request: &Request<T>, ids: &[ObjectId]) -> Result<Vec<User>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = self.store.profiles(ids).await?;
        let viewer = social_kit::auth::optional_caller(request);
        let hidden = self.store.blocks.hidden_from(viewer, ids).await?;
        found.retain(|p| !hidden.contains(&p.id));
        found.sort_by_key(|p| ids.iter().position(|id| *id == p.id));
        Ok(found.into_iter().map(profile_to_wire).collect())
    }

    /// Drops from `users` those who block the caller: to a blocked reader, the blocker's
    /// profile is absent (a service asking on its own behalf sees everyone).
    async fn hide_blockers<T>(&self, request: &Request<T>, users: &mut Vec<UserDoc>) -> Result<()> {
        let viewer = social_kit::auth::optional_caller(request);
        let ids: Vec<ObjectId> = users.iter().map(|u| u.id).collect();
        let hidden = self.store.blocks.hidden_from(viewer, &ids).await?;
        users.retain(|u| !hidden.contains(&u.id));
        Ok(())
    }

    /// Counts a password check of `subject` from `client`'s network before it is made:
    /// `RESOURCE_EXHAUSTED` with a retry delay when that network is refused for now (see
    /// `crate::throttle`).
    async fn guessing(&self, subject: Subject) -> Result<Reserved> {
        match self.throttle.reserve(subject).await? {
            Ok(attempt) => Ok(attempt),
            Err(wait) => {
                social_kit::metrics::login_throttled();
                Err(throttled(wait))
            }
        }
    }

    /// An access token for `session` with its refresh token.
    fn issue(&self, session: &SessionDoc, refresh_token: String) -> Result<Issued> {
        let (access_token, expires_at) = self.tokens.issue_for(session.user_id, session.id)?;
        Ok(Issued {
            access_token,
            expires_at: to_timestamp(expires_at),
            refresh_token,
            refresh_expires_at: to_timestamp(DateTime::from_millis(session.expires_ms())),
            session_id: session.id.to_hex(),
        })
    }

    /// The answer to a registration `new` wanting what `t` holds: the account
    /// `username_lower` if the request that registered it sent `key` too and `new`'s
    /// password is its own (a retry whose first answer was lost), with a new session;
    /// else the refusal (see [`taken`]).
    async fn taken(
        &self,
        t: Taken,
        key: Option<&str>,
        username_lower: &str,
        new: &NewUser,
        client: Option<std::net::IpAddr>,
    ) -> Result<Response<RegisterResponse>, Status> {
        match self.registered_before(key, username_lower, new, client).await? {
            Some(again) => Ok(Response::new(again)),
            None => Err(taken(t, key).into()),
        }
    }

    /// The answer to a registration that was made before (see [`Api::taken`]), or `None`.
    /// The password is checked as a login by username checks it, throttled and counted
    /// with those logins (`crate::throttle`), so that a key alone opens nothing and a
    /// retry is no way around the login's limits.
    async fn registered_before(
        &self,
        key: Option<&str>,
        username_lower: &str,
        new: &NewUser,
        client: Option<std::net::IpAddr>,
    ) -> Result<Option<RegisterResponse>> {
        let Some(key) = key else {
            return Ok(None);
        };
        let Some(user) = self.store.by_username(username_lower).await? else {
            return Ok(None);
        };
        if user.request_key.as_deref() != Some(key) || user.email != new.email {
            return Ok(None);
        }
        let slot = self.hasher.reserve().await?;
        let attempt = self.guessing(Subject::login(username_lower, Some(user.id), client)).await?;
        let own = slot.verify(new.password.clone(), Some(user.password_hash.clone())).await?;
        drop(slot);
        if !own {
            self.throttle.failed(attempt).await?;
            return Ok(None);
        }
        self.throttle.succeeded(attempt).await?;
        let issued = self.start_session(&user, new.device.clone()).await?;
        tracing::info!(user_id = %user.id, "a registration retried: a new session");
        let id = user.id;
        Ok(Some(RegisterResponse {
            user: Some(to_wire(user, Some(id))),
            access_token: issued.access_token,
            expires_at: Some(issued.expires_at),
            refresh_token: issued.refresh_token,
            refresh_expires_at: Some(issued.refresh_expires_at),
            session_id: issued.session_id,
        }))
    }

    /// Starts a session of `user`, as read before its password was checked, on `device`
    /// and issues its tokens. The account is read again once the session is stored: a
    /// deletion or a password change that raced the login (its version moved on) ends
    /// the session either way, by its own end of every session or by this check.
    async fn start_session(&self, user: &UserDoc, device: String) -> Result<Issued> {
        // Tests hold a login here, between its password check and its session.
        if let Some(ms) = injected_pause_ms() {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let (session, refresh_token) =
            self.sessions.start(user.id, device, user.credential_version).await?;
        let now = self.store.by_id(user.id).await?;
        if now.is_none_or(|u| u.credential_version != user.credential_version) {
            self.sessions.end(user.id, session.id, "the account changed while logging in").await?;
            return Err(Error::Unauthenticated(LOGIN_FAILED));
        }
        // Best effort: a login is not refused for what it could not end (the next one
        // ends it).
        if let Err(e) = self.sessions.keep_within_limit(user.id, session.id).await {
            tracing::warn!(user = %user.id, error = %e, "could not end the sessions past the account's limit");
        }
        self.issue(&session, refresh_token)
    }
}

/// How long tests hold a login before its session is stored (`user::before_session`,
/// `return(<ms>)`).
fn injected_pause_ms() -> Option<u64> {
    fail::fail_point!("user::before_session", |ms: Option<String>| {
        social_kit::faults::record("user::before_session");
        ms.and_then(|ms| ms.parse().ok())
    });
    None
}

/// A session's device label: trimmed, at most 100 characters.
fn device(label: &str, v: &mut Violations) -> String {
    let (label, fits) = validate::trimmed(label, 100);
    v.check("device", fits);
    label.to_owned()
}

/// The wire form of a session; `current` is the caller's own session, if any.
fn session_to_wire(s: SessionDoc, current: Option<ObjectId>) -> Session {
    Session {
        id: s.id.to_hex(),
        device: s.device.clone(),
        created_at: Some(to_timestamp(s.created_at)),
        last_used_at: Some(to_timestamp(DateTime::from_millis(s.last_used_ms))),
        expires_at: Some(to_timestamp(DateTime::from_millis(s.expires_ms()))),
        current: current == Some(s.id),
    }
}

/// The wire form of a stored user as `viewer` may see it (email to its owner only).
pub(crate) fn to_wire(mut doc: UserDoc, viewer: Option<ObjectId>) -> User {
    let email = std::mem::take(&mut doc.email);
    let own = viewer == Some(doc.id);
    User { email: if own { email } else { String::new() }, ..profile_to_wire(doc.into()) }
}

/// An account as anyone but its owner sees it.
fn profile_to_wire(p: Profile) -> User {
    User {
        id: p.id.to_hex(),
        username: p.username,
        email: String::new(),
        full_name: p.full_name,
        bio: p.bio,
        profile_picture_url: p.profile_picture_url,
        // Events may land out of order (an unfollow before its follow): the stored
        // counts converge; a client never sees them below zero.
        followers_count: p.followers_count.max(0),
        following_count: p.following_count.max(0),
        created_at: Some(to_timestamp(p.created_at)),
        updated_at: Some(to_timestamp(p.updated_at)),
    }
}

/// The answer to a registration wanting a value somebody holds: `UNAVAILABLE` when
/// that is an earlier try of the same registration (same idempotency key) still under
/// way or stopped half-way, `ALREADY_EXISTS` naming the field otherwise.
fn taken(t: Taken, key: Option<&str>) -> Error {
    if let Holder::InFlight(Some(earlier)) = &t.holder
        && key == Some(earlier.as_str())
    {
        return Error::Unavailable(
            "an earlier try of this registration is under way; retry in a minute".into(),
        );
    }
    Error::AlreadyExists {
        field: match t.kind {
            Kind::Username => "username",
            Kind::Email => "email",
        },
    }
}

/// A validated registration.
struct NewUser {
    username: String,
    email: String,
    password: String,
    full_name: String,
    device: String,
}

impl TryFrom<RegisterRequest> for NewUser {
    type Error = Error;
    fn try_from(r: RegisterRequest) -> Result<Self> {
        let mut v = Violations::default();
        let username = r.username;
        v.check("username", validate::username(&username));
        let email = v.take("email", validate::email(&r.email)).unwrap_or_default();
        v.check("password", validate::password(&r.password));
        let (full_name, fits) = validate::trimmed(&r.full_name, 50);
        v.check("full_name", fits);
        let full_name = full_name.to_owned();
        let device = device(&r.device, &mut v);
        v.finish()?;
        Ok(Self { username, email, password: r.password, full_name, device })
    }
}

/// Profile fields an update may set, from `update_mask` (AIP-134: no mask means every
/// field the request populates).
fn profile_update(user: &User, paths: &[String], v: &mut Violations) -> Document {
    const MUTABLE: [&str; 3] = ["full_name", "bio", "profile_picture_url"];
    let paths: Vec<&str> = if paths.is_empty() {
        MUTABLE
            .into_iter()
            .filter(|p| match *p {
                "full_name" => !user.full_name.is_empty(),
                "bio" => !user.bio.is_empty(),
                _ => !user.profile_picture_url.is_empty(),
            })
            .collect()
    } else if paths.len() > MUTABLE.len() + 1 {
        v.add("update_mask.paths", "must name at most full_name, bio, profile_picture_url or *");
        Vec::new()
    } else if paths.iter().any(|p| p == "*") {
        MUTABLE.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let mut set = Document::new();
    for path in paths {
        match path {
            "full_name" => {
                let (value, fits) = validate::trimmed(&user.full_name, 50);
                v.check("user.full_name", fits);
                set.insert("full_name", value);
            }
            "bio" => {
                let (value, fits) = validate::trimmed(&user.bio, 160);
                v.check("user.bio", fits);
                set.insert("bio", value);
            }
            "profile_picture_url" => {
                let (value, valid) = validate::optional_url(&user.profile_picture_url);
                v.check("user.profile_picture_url", valid);
                set.insert("profile_picture_url", value);
            }
            other => v.add(
                "update_mask.paths",
                format!(
                    "`{}` cannot be updated; use full_name, bio or profile_picture_url",
                    validate::quoted(other)
                ),
            ),
        }
    }
    set
}

fn throttled(retry_after: std::time::Duration) -> Error {
    Error::Throttled {
        message:
            "too many failed password checks for this account from this network; try again later, \
             or from a network this account signed in from recently"
                .into(),
        retry_after,
    }
}

fn require(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "is required");
    }
}

#[tonic::async_trait]
impl UserService for Api {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let client = social_kit::auth::client_address(&request);
        let key = social_kit::validate::idempotency_key(&request)?;
        let new = NewUser::try_from(request.into_inner())?;
        let context = vec![new.username.clone(), new.email.clone(), new.full_name.clone()];
        if let Some(why) = password::too_guessable(new.password.clone(), context).await? {
            return Err(Error::invalid("password", why).into());
        }
        let username_lower = new.username.to_lowercase();
        // Cheap check first so a taken name costs no hash; the reservations decide races.
        if let Some(t) = self.store.taken(&username_lower, &new.email).await? {
            return self.taken(t, key.as_deref(), &username_lower, &new, client).await;
        }
        let password_hash = self.hasher.reserve().await?.hash(new.password.clone()).await?;
        let now = DateTime::now();
        let doc = UserDoc {
            id: ObjectId::new(),
            username: new.username.clone(),
            username_lower,
            email: new.email.clone(),
            password_hash,
            full_name: new.full_name.clone(),
            bio: String::new(),
            profile_picture_url: String::new(),
            followers_count: 0,
            following_count: 0,
            created_at: now,
            updated_at: now,
            credential_version: 0,
            recount_ms: 0,
            counter_version: 0,
            deleted_ms: None,
            cleared_by: Vec::new(),
            deletion_finished_ms: None,
            request_key: key.clone(),
            role: None,
        };
        if let Err(t) = self.store.insert(&doc).await? {
            // A retry that raced its own first try.
            return self.taken(t, key.as_deref(), &doc.username_lower, &new, client).await;
        }
        let issued = self.start_session(&doc, new.device.clone()).await?;
        // The network it registered from is the owner's, as far as guessing goes.
        self.throttle.known(doc.id, client).await?;
        tracing::info!(user_id = %doc.id, "registered");
        let id = doc.id;
        Ok(Response::new(RegisterResponse {
            user: Some(to_wire(doc, Some(id))),
            access_token: issued.access_token,
            expires_at: Some(issued.expires_at),
            refresh_token: issued.refresh_token,
            refresh_expires_at: Some(issued.refresh_expires_at),
            session_id: issued.session_id,
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client = social_kit::auth::client_address(&request);
        let r = request.into_inner();
        let mut v = Violations::default();
        let who = r.username_or_email.trim().to_lowercase();
        require(&mut v, "username_or_email", &who);
        // No username or email is longer: refused before any look-up.
        if validate::chars(&r.username_or_email) > 254 {
            v.add("username_or_email", "must be at most 254 characters");
        }
        require(&mut v, "password", &r.password);
        if validate::chars(&r.password) > 128 {
            v.add("password", "must be at most 128 characters");
        }
        let device = device(&r.device, &mut v);
        v.finish()?;
        // A slot first: in a storm, the excess is refused before any more work.
        let slot = self.hasher.reserve().await?;
        let user = if who.contains('@') {
            self.store.by_email(&who).await?
        } else {
            self.store.by_username(&who).await?
        };
        // Each identifier its own counts (a username's block tells nothing of its
        // account's email); the account's networks known whichever was typed; an
        // unknown identifier alike.
        let account = user.as_ref().map(|u| u.id);
        let attempt = self.guessing(Subject::login(&who, account, client)).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = slot.verify(r.password, hash).await?;
        drop(slot);
        let user = match user {
            Some(u) if ok => u,
            _ => {
                self.throttle.failed(attempt).await?;
                return Err(Error::Unauthenticated(LOGIN_FAILED).into());
            }
        };
        self.throttle.succeeded(attempt).await?;
        let issued = self.start_session(&user, device).await?;
        let id = user.id;
        Ok(Response::new(LoginResponse {
            access_token: issued.access_token,
            expires_at: Some(issued.expires_at),
            user: Some(to_wire(user, Some(id))),
            refresh_token: issued.refresh_token,
            refresh_expires_at: Some(issued.refresh_expires_at),
            session_id: issued.session_id,
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        let client = social_kit::auth::client_address(&request);
        let token = request.get_ref().refresh_token.trim();
        if token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required").into());
        }
        match self.sessions.refresh(token, self.refresh_grace).await? {
            Refreshed::Rotated(session, next) => {
                // A session outlives neither its account nor a change of its password.
                let account = self.store.by_id(session.user_id).await?;
                if account.is_none_or(|u| u.credential_version != session.credential_version) {
                    self.sessions
                        .end(session.user_id, session.id, "the account's credentials changed")
                        .await?;
                    return Err(Error::Unauthenticated(REFRESH_FAILED).into());
                }
                let issued = self.issue(&session, next)?;
                // A client that stays signed in keeps its network known.
                self.throttle.known(session.user_id, client).await?;
                Ok(Response::new(RefreshSessionResponse {
                    access_token: issued.access_token,
                    expires_at: Some(issued.expires_at),
                    refresh_token: issued.refresh_token,
                    refresh_expires_at: Some(issued.refresh_expires_at),
                    session_id: issued.session_id,
                }))
            }
            Refreshed::Reused | Refreshed::Invalid => {
                Err(Error::Unauthenticated(REFRESH_FAILED).into())
            }
        }
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<()>, Status> {
        let caller = session(&request)?;
        // Any active session may end itself, even one under an older password.
        let current = self.sessions.active(&caller).await?;
        self.sessions.end(caller.user, current.id, "logged out").await?;
        Ok(Response::new(()))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = session(&request)?;
        self.active(&caller).await?;
        let r = request.get_ref();
        let page = PageRequest::of(r, format!("sessions:{}", caller.user))?;
        let docs = self.sessions.list(caller.user, &page).await?;
        let (docs, next_page_token) = page.finish(docs, |s| s.sort_key);
        Ok(Response::new(ListSessionsResponse {
            sessions: docs.into_iter().map(|s| session_to_wire(s, caller.session)).collect(),
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let id = validate::object_id(&request.get_ref().session_id)
            .map_err(|d| Error::invalid("session_id", d))?;
        self.active(&session(&request)?).await?;
        // Another user's session is as unknown as a session that never was.
        if !self.sessions.end(me, id, "revoked").await? {
            return Err(Error::NotFound("session").into());
        }
        Ok(Response::new(()))
    }

    async fn report_account(
        &self,
        request: Request<ReportAccountRequest>,
    ) -> Result<Response<Report>, Status> {
        let me = self.reporter(&request).await?;
        let r = request.get_ref();
        let (target, reason) = moderation::reason("user_id", &r.user_id, r.category, &r.comment)?;
        let report = self.report(me, Target::Account, target, reason).await?;
        Ok(Response::new(report))
    }

    async fn report_post(
        &self,
        request: Request<ReportPostRequest>,
    ) -> Result<Response<Report>, Status> {
        let me = self.reporter(&request).await?;
        let r = request.get_ref();
        let (target, reason) = moderation::reason("post_id", &r.post_id, r.category, &r.comment)?;
        let report = self.report(me, Target::Post, target, reason).await?;
        Ok(Response::new(report))
    }

    async fn report_comment(
        &self,
        request: Request<ReportCommentRequest>,
    ) -> Result<Response<Report>, Status> {
        let me = self.reporter(&request).await?;
        let r = request.get_ref();
        let (target, reason) =
            moderation::reason("comment_id", &r.comment_id, r.category, &r.comment)?;
        let report = self.report(me, Target::Comment, target, reason).await?;
        Ok(Response::new(report))
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        Ok(Response::new(Api::list_reports(self, &request).await?))
    }

    async fn resolve_report(
        &self,
        request: Request<ResolveReportRequest>,
    ) -> Result<Response<Report>, Status> {
        let r = request.get_ref();
        let what = (r.id.as_str(), r.action);
        Ok(Response::new(Api::resolve_report(self, &request, what).await?))
    }

    async fn list_ended_sessions(
        &self,
        request: Request<ListEndedSessionsRequest>,
    ) -> Result<Response<ListEndedSessionsResponse>, Status> {
        let r = request.get_ref();
        let after = match r.after_session_id.as_str() {
            "" => None,
            id => Some(ObjectId::parse_str(id).map_err(|_| {
                Error::invalid("after_session_id", "must be a session id (24 hex digits)")
            })?),
        };
        let since = r.since.as_ref().map(|t| social_events::sessions::Cursor {
            ended_ms: social_kit::time::millis(t),
            after,
        });
        let (ended, more) = self.sessions.ended_since(since).await?;
        let at = |t: std::time::SystemTime| {
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            to_timestamp(DateTime::from_millis(ms))
        };
        Ok(Response::new(ListEndedSessionsResponse {
            sessions: ended
                .into_iter()
                .map(|e| EndedSession {
                    session_id: e.session.to_hex(),
                    ended_at: Some(to_timestamp(DateTime::from_millis(e.ended_ms))),
                    tokens_expire_at: Some(at(e.tokens_expire)),
                })
                .collect(),
            more,
        }))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<RevokeOtherSessionsRequest>,
    ) -> Result<Response<RevokeOtherSessionsResponse>, Status> {
        let caller = session(&request)?;
        self.active(&caller).await?;
        let revoked = self
            .sessions
            .end_all_but(caller.user, caller.session, "revoked with the others")
            .await?;
        Ok(Response::new(RevokeOtherSessionsResponse {
            revoked_count: i64::try_from(revoked).unwrap_or(i64::MAX),
        }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = validate::object_id(&request.get_ref().id).map_err(|d| Error::invalid("id", d))?;
        if social_kit::auth::optional_caller(&request) != Some(id) {
            // Anyone else's view: the profile, through the cache.
            let user = self.profiles(&request, &[id]).await?.pop();
            return Ok(Response::new(user.ok_or(Error::NotFound("user"))?));
        }
        let mut found = self.store.by_id(id).await?.into_iter().collect();
        self.hide_blockers(&request, &mut found).await?;
        let user = found.pop().ok_or(Error::NotFound("user"))?;
        let viewer = self.viewer(&request, &[&user]).await?;
        Ok(Response::new(to_wire(user, viewer)))
    }

    async fn get_user_by_username(
        &self,
        request: Request<GetUserByUsernameRequest>,
    ) -> Result<Response<User>, Status> {
        let username = request.get_ref().username.trim();
        validate::username(username).map_err(|d| Error::invalid("username", d))?;
        let mut found =
            self.store.by_username(&username.to_lowercase()).await?.into_iter().collect();
        self.hide_blockers(&request, &mut found).await?;
        let user = found.pop().ok_or(Error::NotFound("user"))?;
        let viewer = self.viewer(&request, &[&user]).await?;
        Ok(Response::new(to_wire(user, viewer)))
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let mut v = Violations::default();
        let ids = validate::id_batch("ids", &request.get_ref().ids, &mut v);
        v.finish()?;
        // Others' profiles through the cache; the caller's own, with its email, from
        // MongoDB.
        let me = social_kit::auth::optional_caller(&request).filter(|me| ids.contains(me));
        let others: Vec<ObjectId> = ids.iter().copied().filter(|id| Some(*id) != me).collect();
        let mut users = self.profiles(&request, &others).await?;
        if let Some(me) = me
            && let Some(own) = self.store.by_id(me).await?
        {
            let viewer = self.viewer(&request, &[&own]).await?;
            users.push(to_wire(own, viewer));
            // In the order asked for.
            users.sort_by_cached_key(|u| {
                let id = ObjectId::parse_str(&u.id).ok();
                ids.iter().position(|asked| Some(*asked) == id)
            });
        }
        Ok(Response::new(BatchGetUsersResponse { users }))
    }

    async fn batch_get_users_by_username(
        &self,
        request: Request<BatchGetUsersByUsernameRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let names = &request.get_ref().usernames;
        let mut v = Violations::default();
        let mut lowers: Vec<String> = Vec::with_capacity(names.len());
        // Over the limit: refused before any name is looked at.
        if validate::batch_size("usernames", names.len(), "usernames", &mut v) {
            let mut seen = std::collections::HashSet::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let name = name.trim();
                v.check(&format!("usernames[{i}]"), validate::username(name));
                let lower = name.to_lowercase();
                if seen.insert(lower.clone()) {
                    lowers.push(lower);
                }
            }
        }
        v.finish()?;
        let mut found = self.store.by_usernames(&lowers).await?;
        self.hide_blockers(&request, &mut found).await?;
        let viewer = self.viewer(&request, &found.iter().collect::<Vec<_>>()).await?;
        found.sort_by_key(|u| lowers.iter().position(|l| *l == u.username_lower));
        let users = found.into_iter().map(|u| to_wire(u, viewer)).collect();
        Ok(Response::new(BatchGetUsersResponse { users }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let me = caller(&request)?;
        self.active(&session(&request)?).await?;
        let r = request.into_inner();
        let mut v = Violations::default();
        let Some(user) = r.user else {
            return Err(Error::invalid("user", "is required").into());
        };
        let id = v.take("user.id", validate::object_id(&user.id));
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let set = profile_update(&user, &paths, &mut v);
        v.finish()?;
        if id != Some(me) {
            return Err(Error::PermissionDenied("you can only update your own profile").into());
        }
        let updated = self.store.update_profile(me, set).await?.ok_or(Error::NotFound("user"))?;
        Ok(Response::new(to_wire(updated, Some(me))))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let mut v = Violations::default();
        require(&mut v, "password", &request.get_ref().password);
        v.finish()?;
        let slot = self.hasher.reserve().await?;
        let Some(user) = self.store.any_by_id(me).await? else {
            return Err(Error::NotFound("user").into());
        };
        if user.deleted_ms.is_some() {
            // Deleted already: a retry after a failure ends the sessions (again), so
            // that a try whose session cleanup failed leaves none behind.
            self.sessions.end_all_but(me, None, "account deleted").await?;
            return Ok(Response::new(()));
        }
        self.active(&session(&request)?).await?;
        let attempt = self
            .guessing(Subject::password_of(me, social_kit::auth::client_address(&request)))
            .await?;
        let password = request.into_inner().password;
        if !slot.verify(password, Some(user.password_hash)).await? {
            self.throttle.failed(attempt).await?;
            return Err(Error::invalid("password", "does not match the current password").into());
        }
        self.throttle.succeeded(attempt).await?;
        drop(slot);
        let event = new_envelope(me, Payload::UserDeleted(UserDeleted { user_id: me.to_hex() }));
        if self.store.delete(me, self.quarantine, &event).await? {
            self.relay.wake();
            tracing::info!(user_id = %me, "account deletion requested");
        }
        self.sessions.end_all_but(me, None, "account deleted").await?;
        Ok(Response::new(()))
    }

    type ExportAccountStream = BoxStream<'static, Result<ExportRecord, Status>>;

    async fn export_account(
        &self,
        request: Request<ExportAccountRequest>,
    ) -> Result<Response<Self::ExportAccountStream>, Status> {
        let me = caller(&request)?;
        self.active(&session(&request)?).await?;
        let user = self.store.by_id(me).await?.ok_or(Error::NotFound("user"))?;
        let profile = ExportRecord { record: Some(Record::Profile(to_wire(user, Some(me)))) };
        // A whole account takes longer than an RPC's usual deadline.
        let long = self.export_within;
        let user_id = me.to_hex();
        let posts = self.peers.posts.with_timeout(long);
        let engagement = self.peers.engagement.with_timeout(long);
        let graph = self.peers.graph.with_timeout(long);
        let fail = |peer: &Peer| {
            let peer = peer.clone();
            move |status: Status| Status::from(peer.error(status))
        };
        let post_stream = PostServiceClient::new(posts.channel())
            .export_user_posts(posts.request(ExportUserPostsRequest { user_id: user_id.clone() }))
            .await
            .map_err(fail(&posts))?
            .into_inner()
            .map({
                let fail = fail(&posts);
                move |r| r.map(|p| ExportRecord { record: Some(Record::Post(p)) }).map_err(&fail)
            });
        let engagement_stream = EngagementServiceClient::new(engagement.channel())
            .export_user_engagement(
                engagement.request(ExportUserEngagementRequest { user_id: user_id.clone() }),
            )
            .await
            .map_err(fail(&engagement))?
            .into_inner()
            .map({
                let fail = fail(&engagement);
                move |r| {
                    r.map(|e| ExportRecord {
                        record: e.record.map(|r| match r {
                            engagement_record::Record::Like(l) => Record::Like(l),
                            engagement_record::Record::Comment(c) => Record::Comment(c),
                        }),
                    })
                    .map_err(&fail)
                }
            });
        let follow_stream = SocialGraphServiceClient::new(graph.channel())
            .export_user_follows(graph.request(ExportUserFollowsRequest { user_id }))
            .await
            .map_err(fail(&graph))?
            .into_inner()
            .map({
                let fail = fail(&graph);
                move |r| r.map(|f| ExportRecord { record: Some(Record::Follow(f)) }).map_err(&fail)
            });
        let records = futures::stream::once(async move { Ok(profile) })
            .chain(post_stream)
            .chain(engagement_stream)
            .chain(follow_stream)
            .boxed();
        let late = Status::deadline_exceeded(EXPORT_LATE);
        let patience = social_kit::export::PATIENCE;
        let records = social_kit::export::within(records, long, patience, Err(late));
        Ok(Response::new(records))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = session(&request)?;
        let me = caller.user;
        let client = social_kit::auth::client_address(&request);
        let r = request.into_inner();
        let mut v = Violations::default();
        require(&mut v, "old_password", &r.old_password);
        v.check("new_password", validate::password(&r.new_password));
        v.finish()?;
        self.active(&caller).await?;
        let slot = self.hasher.reserve().await?;
        let user = self.store.by_id(me).await?.ok_or(Error::NotFound("user"))?;
        let context = vec![user.username.clone(), user.email.clone(), r.old_password.clone()];
        if let Some(why) = password::too_guessable(r.new_password.clone(), context).await? {
            return Err(Error::invalid("new_password", why).into());
        }
        // Guessing the current password through this call is counted as for a login.
        let attempt = self.guessing(Subject::password_of(me, client)).await?;
        if !slot.verify(r.old_password, Some(user.password_hash.clone())).await? {
            self.throttle.failed(attempt).await?;
            return Err(
                Error::invalid("old_password", "does not match the current password").into()
            );
        }
        self.throttle.succeeded(attempt).await?;
        let new_hash = slot.hash(r.new_password).await?;
        drop(slot);
        let Some(version) = self.store.set_password(me, &user.password_hash, &new_hash).await?
        else {
            // Changed by a concurrent request between our read and write.
            return Err(
                Error::invalid("old_password", "does not match the current password").into()
            );
        };
        // This session goes on under the new password; whoever knew the old one is
        // signed out everywhere else (and no session under it can be refreshed).
        if let Some(current) = caller.session {
            self.sessions.carry_over(me, current, version).await?;
        }
        let ended = self.sessions.end_all_but(me, caller.session, "password changed").await?;
        tracing::info!(user_id = %me, other_sessions_ended = ended, "password changed");
        Ok(Response::new(()))
    }
}
