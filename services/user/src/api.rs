//! `social.user.v1.UserService`: request → validated value → store → response. No
//! MongoDB types here beyond the ids the store takes.

use bson::{DateTime, Document, oid::ObjectId};
use social_kit::{
    Error, Result,
    auth::{TokenIssuer, caller, optional_caller},
    error::Violations,
    time::to_timestamp,
    validate,
};
use social_proto::user::v1::{
    BatchGetUsersByUsernameRequest, BatchGetUsersRequest, BatchGetUsersResponse,
    ChangePasswordRequest, GetUserByUsernameRequest, GetUserRequest, LoginRequest, LoginResponse,
    RegisterRequest, RegisterResponse, UpdateUserRequest, User, user_service_server::UserService,
};
use tonic::{Request, Response, Status};

use crate::{
    password::Hasher,
    store::{Store, Taken, UserDoc},
};

/// The same answer for an unknown user and a wrong password.
const LOGIN_FAILED: &str = "invalid username, email or password";

pub struct Api {
    store: Store,
    tokens: TokenIssuer,
    hasher: Hasher,
}

impl Api {
    pub fn new(store: Store, tokens: TokenIssuer, hasher: Hasher) -> Self {
        Self {
            store,
            tokens,
            hasher,
        }
    }
}

/// The wire form of a stored user as `viewer` may see it (email to its owner only).
fn to_wire(doc: UserDoc, viewer: Option<ObjectId>) -> User {
    let own = viewer == Some(doc.id);
    User {
        id: doc.id.to_hex(),
        username: doc.username,
        email: if own { doc.email } else { String::new() },
        full_name: doc.full_name,
        bio: doc.bio,
        profile_picture_url: doc.profile_picture_url,
        // Events may land out of order (an unfollow before its follow): the stored
        // counts converge; a client never sees them below zero.
        followers_count: doc.followers_count.max(0),
        following_count: doc.following_count.max(0),
        created_at: Some(to_timestamp(doc.created_at)),
        updated_at: Some(to_timestamp(doc.updated_at)),
    }
}

fn taken(t: Taken) -> Error {
    Error::AlreadyExists {
        field: match t {
            Taken::Username => "username",
            Taken::Email => "email",
        },
    }
}

/// A validated registration.
struct NewUser {
    username: String,
    email: String,
    password: String,
    full_name: String,
}

impl TryFrom<RegisterRequest> for NewUser {
    type Error = Error;
    fn try_from(r: RegisterRequest) -> Result<Self> {
        let mut v = Violations::default();
        let username = r.username.trim().to_owned();
        v.check("username", validate::username(&username));
        let email = v
            .take("email", validate::email(&r.email))
            .unwrap_or_default();
        v.check("password", validate::password(&r.password));
        let full_name = r.full_name.trim().to_owned();
        v.check("full_name", validate::max_chars(&full_name, 50));
        v.finish()?;
        Ok(Self {
            username,
            email,
            password: r.password,
            full_name,
        })
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
    } else if paths.iter().any(|p| p == "*") {
        MUTABLE.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let mut set = Document::new();
    for path in paths {
        match path {
            "full_name" => {
                let value = user.full_name.trim();
                v.check("user.full_name", validate::max_chars(value, 50));
                set.insert("full_name", value);
            }
            "bio" => {
                let value = user.bio.trim();
                v.check("user.bio", validate::max_chars(value, 160));
                set.insert("bio", value);
            }
            "profile_picture_url" => {
                let value = user.profile_picture_url.trim();
                if !value.is_empty() {
                    v.check("user.profile_picture_url", validate::url(value));
                }
                set.insert("profile_picture_url", value);
            }
            other => v.add(
                "update_mask.paths",
                format!("`{other}` cannot be updated; use full_name, bio or profile_picture_url"),
            ),
        }
    }
    set
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
        let new = NewUser::try_from(request.into_inner())?;
        let username_lower = new.username.to_lowercase();
        // Cheap check first so a taken name costs no hash; the unique indexes decide races.
        if let Some(t) = self.store.taken(&username_lower, &new.email).await? {
            return Err(taken(t).into());
        }
        let password_hash = self.hasher.hash(new.password).await?;
        let now = DateTime::now();
        let doc = UserDoc {
            id: ObjectId::new(),
            username: new.username,
            username_lower,
            email: new.email,
            password_hash,
            full_name: new.full_name,
            bio: String::new(),
            profile_picture_url: String::new(),
            followers_count: 0,
            following_count: 0,
            created_at: now,
            updated_at: now,
            recount_ms: 0,
            counter_version: 0,
        };
        self.store.insert(&doc).await?.map_err(taken)?;
        let (access_token, expires_at) = self.tokens.issue(doc.id)?;
        tracing::info!(user_id = %doc.id, "registered");
        let id = doc.id;
        Ok(Response::new(RegisterResponse {
            user: Some(to_wire(doc, Some(id))),
            access_token,
            expires_at: Some(to_timestamp(expires_at)),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::default();
        let who = r.username_or_email.trim().to_lowercase();
        require(&mut v, "username_or_email", &who);
        require(&mut v, "password", &r.password);
        if validate::chars(&r.password) > 128 {
            v.add("password", "must be at most 128 characters");
        }
        v.finish()?;
        let user = if who.contains('@') {
            self.store.by_email(&who).await?
        } else {
            self.store.by_username(&who).await?
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.hasher.verify(r.password, hash).await?;
        let user = match user {
            Some(u) if ok => u,
            _ => return Err(Error::Unauthenticated(LOGIN_FAILED).into()),
        };
        let (access_token, expires_at) = self.tokens.issue(user.id)?;
        let id = user.id;
        Ok(Response::new(LoginResponse {
            access_token,
            expires_at: Some(to_timestamp(expires_at)),
            user: Some(to_wire(user, Some(id))),
        }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let viewer = optional_caller(&request);
        let id = validate::object_id(&request.get_ref().id).map_err(|d| Error::invalid("id", d))?;
        let user = self.store.by_id(id).await?.ok_or(Error::NotFound("user"))?;
        Ok(Response::new(to_wire(user, viewer)))
    }

    async fn get_user_by_username(
        &self,
        request: Request<GetUserByUsernameRequest>,
    ) -> Result<Response<User>, Status> {
        let viewer = optional_caller(&request);
        let username = request.get_ref().username.trim();
        validate::username(username).map_err(|d| Error::invalid("username", d))?;
        let user = self
            .store
            .by_username(&username.to_lowercase())
            .await?
            .ok_or(Error::NotFound("user"))?;
        Ok(Response::new(to_wire(user, viewer)))
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let viewer = optional_caller(&request);
        let mut v = Violations::default();
        let ids = validate::id_batch("ids", &request.get_ref().ids, &mut v);
        v.finish()?;
        let mut found = self.store.by_ids(&ids).await?;
        // In the order asked for.
        found.sort_by_key(|u| ids.iter().position(|id| *id == u.id));
        let users = found.into_iter().map(|u| to_wire(u, viewer)).collect();
        Ok(Response::new(BatchGetUsersResponse { users }))
    }

    async fn batch_get_users_by_username(
        &self,
        request: Request<BatchGetUsersByUsernameRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let viewer = optional_caller(&request);
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
        found.sort_by_key(|u| lowers.iter().position(|l| *l == u.username_lower));
        let users = found.into_iter().map(|u| to_wire(u, viewer)).collect();
        Ok(Response::new(BatchGetUsersResponse { users }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let me = caller(&request)?;
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
        let updated = self
            .store
            .update_profile(me, set)
            .await?
            .ok_or(Error::NotFound("user"))?;
        Ok(Response::new(to_wire(updated, Some(me))))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::default();
        require(&mut v, "old_password", &r.old_password);
        v.check("new_password", validate::password(&r.new_password));
        v.finish()?;
        let user = self.store.by_id(me).await?.ok_or(Error::NotFound("user"))?;
        if !self
            .hasher
            .verify(r.old_password, Some(user.password_hash.clone()))
            .await?
        {
            return Err(
                Error::invalid("old_password", "does not match the current password").into(),
            );
        }
        let new_hash = self.hasher.hash(r.new_password).await?;
        if !self
            .store
            .set_password(me, &user.password_hash, &new_hash)
            .await?
        {
            // Changed by a concurrent request between our read and write.
            return Err(
                Error::invalid("old_password", "does not match the current password").into(),
            );
        }
        tracing::info!(user_id = %me, "password changed");
        Ok(Response::new(()))
    }
}
